--- PUBLISH (RFC 3903): ua:publish against sip.publications (refresh,
-- modify, remove, expiry, the store's refusals) and against SIPp as a
-- compositor that loses the entity (412: the state is published again).
local sip = require "sip"
local helper = require "helper"

describe("publications", function()
  local ua = helper.uas(after_each)
  after_each(function() helper.stop_all() end)

  -- a server UA with a store; changes lists "uri event count body"
  local function compositor(opts)
    local srv = ua()
    local changes = {}
    opts = opts or {}
    opts.on_change = function(uri, event, store)
      local l = store:get(uri, event)
      changes[#changes + 1] = event .. " " .. #l .. " " .. (l[1] and l[1].body or "-")
    end
    local store = sip.publications(opts)
    srv:on("PUBLISH", function(req) return store:handle(req) end)
    return srv, store, changes
  end

  it("publishes, refreshes, modifies and removes a state", function()
    local srv, store, changes = compositor{ events = { "presence" }, min_expires = 1 }
    helper.run(function()
      local pub = assert(ua():publish{ uri = srv:uri("alice"), event = "presence", body = "open",
                                       content_type = "text/plain", expires = 2 })
      local first = pub.etag
      assert.are.equal(2, pub.expires)
      sip.sleep(1.5)                          -- refreshed at 1 s, with a new tag
      assert.are.equal(1, pub.refreshes)
      assert.are_not.equal(first, pub.etag)
      local now = store:get(srv:uri("alice") .. ";transport=udp", "presence")
      assert.are.equal(1, #now)
      assert.are.equal("open", now[1].body)
      assert(pub:modify{ body = "closed" })
      assert.are.equal("closed", store:get(srv:uri("alice"), "presence")[1].body)
      assert.is_true(pub:remove())
      assert.are.same({}, store:get(srv:uri("alice"), "presence"))
      assert.is_true(pub:remove())            -- idempotent
    end, 20)
    assert.are.same({ "presence 1 open", "presence 1 closed", "presence 0 -" }, changes)
  end)

  it("expires what is not refreshed, and says so", function()
    local srv, store, changes = compositor{ min_expires = 1 }
    local c = ua()
    helper.run(function()
      assert(c:publish{ uri = srv:uri("bob"), event = "dialog", body = "x", expires = 1 })
      c:close()                               -- no refresh from now on
      sip.sleep(2)
    end, 20)
    assert.are.same({}, store:get(srv:uri("bob"), "dialog"))
    assert.are.same({ "dialog 1 x", "dialog 0 -" }, changes)
  end)

  it("refuses what RFC 3903 refuses: 489, 423, 412, 400", function()
    local srv = compositor{ events = { "presence" }, min_expires = 30 }
    helper.run(function()
      local c = ua()
      local pub, err, res = c:publish{ uri = srv:uri("a"), event = "dialog", body = "x" }
      assert.is_nil(pub)
      assert.are.equal("489 Bad Event", err)
      assert.are.equal("presence", res:header("Allow-Events"))
      -- 423: published again for Min-Expires
      pub = assert(c:publish{ uri = srv:uri("a"), event = "presence", body = "x", expires = 5 })
      assert.are.equal(30, pub.expires)
      res = assert(c:request("PUBLISH", srv:uri("a"), {
        headers = { Event = "presence", ["SIP-If-Match"] = "unknown", Expires = "60" } }))
      assert.are.equal(412, res.status)
      res = assert(c:request("PUBLISH", srv:uri("a"), { headers = { Event = "presence" } }))
      assert.are.equal(400, res.status)
      res = assert(c:request("PUBLISH", srv:uri("a"), { body = "x" }))
      assert.are.equal(400, res.status)
    end, 20)
  end)

  it("raises on a wrong argument, naming the function and the option", function()
    local c = ua()
    helper.run(function()
      helper.raises("ua:publish.*body", function() c:publish{ uri = "sip:a@127.0.0.1", event = "presence" } end)
      helper.raises("ua:publish.*event", function() c:publish{ uri = "sip:a@127.0.0.1", body = "x" } end)
      helper.raises("ua:publish.*nope", function()
        c:publish{ uri = "sip:a@127.0.0.1", event = "presence", body = "x", nope = 1 }
      end)
      helper.raises("sip.publications.*nope", function() sip.publications{ nope = 1 } end)
    end)
  end)

  it("publishes the state again when SIPp's compositor answers 412", function()
    local port = helper.free_port()
    local sipp = helper.sipp{ sf = "uas_publish_412.xml", port = port, args = { "-m", "1" } }
    helper.run(function()
      local pub = assert(ua():publish{ uri = "sip:alice@127.0.0.1:" .. port, event = "presence",
                                       body = "open", content_type = "text/plain", expires = 60 })
      assert.are.equal("e1", pub.etag)
      sip.sleep(2)                            -- its refresh at 1 s met the 412
      assert.are.equal("e2", pub.etag)
      assert.are.equal("published", pub.state)
      assert.is_true(pub:remove())
    end, 30)
    assert.are.equal(0, sipp:wait(15), sipp.log())
  end)
end)
