--- Presence against Kamailio's presence server (spec/kamailio/presence.cfg,
-- modules presence and presence_xml, state in db_text tables written
-- here): alice publishes her PIDF with ua:publish, bob subscribes with
-- ua:subscribe and gets it in Kamailio's NOTIFYs, as it changes, until he
-- unsubscribes and alice withdraws it.
local sip = require "sip"
local helper = require "helper"

-- the db_text tables presence and presence_xml open, as Kamailio 5.6's
-- schema has them (utils/kamctl/dbtext/kamailio), with their versions
local TABLES = {
  presentity = { 5, "id(int,auto) username(string) domain(string) event(string) etag(string) " ..
    "expires(int) received_time(int) body(string) sender(string) priority(int) ruid(string,null)" },
  active_watchers = { 12, "id(int,auto) presentity_uri(string) watcher_username(string) " ..
    "watcher_domain(string) to_user(string) to_domain(string) event(string) event_id(string,null) " ..
    "to_tag(string) from_tag(string) callid(string) local_cseq(int) remote_cseq(int) contact(string) " ..
    "record_route(string,null) expires(int) status(int) reason(string,null) version(int) " ..
    "socket_info(string) local_contact(string) from_user(string) from_domain(string) updated(int) " ..
    "updated_winfo(int) flags(int) user_agent(string,null)" },
  watchers = { 3, "id(int,auto) presentity_uri(string) watcher_username(string) watcher_domain(string) " ..
    "event(string) status(int) reason(string,null) inserted_time(int)" },
  xcap = { 4, "id(int,auto) username(string) domain(string) doc(string) doc_type(int) etag(string) " ..
    "source(int) doc_uri(string) port(int)" },
}

-- a db_text database in dir: one file per table, and the version table
local function write_db(dir)
  os.execute("mkdir -p " .. helper.shell_quote(dir))
  local version = { "id(int,auto) table_name(string) table_version(int)" }
  for name, t in pairs(TABLES) do
    local f = assert(io.open(dir .. "/" .. name, "w"))
    f:write(t[2], "\n")
    f:close()
    version[#version + 1] = "0:" .. name .. ":" .. t[1]
  end
  local f = assert(io.open(dir .. "/version", "w"))
  f:write(table.concat(version, "\n"), "\n")
  f:close()
end

local function pidf(entity, basic, note)
  return '<?xml version="1.0" encoding="UTF-8"?>\n' ..
    '<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="' .. entity .. '">\n' ..
    '  <tuple id="t1">\n' ..
    '    <status><basic>' .. basic .. '</basic></status>\n' ..
    '    <note>' .. note .. '</note>\n' ..
    '  </tuple>\n' ..
    '</presence>\n'
end

-- the next NOTIFY of sub whose body holds `want` (any NOTIFY without it):
-- Kamailio may send the state we have again first (it notifies on a
-- PUBLISH refresh too); nil after timeout seconds without one
local function next_notify(sub, timeout, want)
  for n in sub:notifies(timeout) do
    if not want or (n.body and n.body:find(want, 1, true)) then return n end
  end
  return nil
end

describe("presence through Kamailio (presence, presence_xml)", function()
  local ua = helper.uas(after_each)
  local k, rundir, seen

  before_each(function()
    rundir = helper.tmp .. "/kamailio-presence-" .. math.random(1, 1e9)
    write_db(rundir .. "/db")
    k = helper.kamailio{ cfg = "presence.cfg", rundir = rundir,
                         args = { "-A", 'DBURL="text://' .. rundir .. '/db"' } }
    seen = {}
    sip.trace(function(dir, _, peer, text)
      seen[#seen + 1] = dir .. " " .. peer .. "\n" .. text
    end)
  end)
  after_each(function()
    sip.trace(false)
    if k then k.stop() end
    k = nil
    helper.stop_all()
    os.execute("rm -rf " .. helper.shell_quote(rundir))
  end)

  -- what to show when an assertion fails: the SIP exchange and Kamailio's log
  local function story()
    return "\n--- SIP:\n" .. table.concat(seen, "\n") .. "\n--- Kamailio:\n" .. k.proc.log()
  end

  it("delivers alice's published PIDF to bob's subscription, and each change of it", function()
    local presentity = "sip:alice@127.0.0.1:" .. k.port
    local alice, bob = ua(), ua()
    helper.run(function()
      local pub, err, res = alice:publish{ uri = presentity, event = "presence",
        content_type = "application/pidf+xml", expires = 60,
        body = pidf("sip:alice@127.0.0.1", "open", "At my desk") }
      assert.is_nil(err, tostring(err) .. (res and ("\n" .. res:raw()) or "") .. story())
      assert.is_string(pub.etag)
      assert.are_not.equal("", pub.etag)
      assert.are.equal("published", pub.state)
      assert.is_true(pub.expires > 0 and pub.expires <= 60, tostring(pub.expires))

      local sub
      sub, err, res = bob:subscribe(presentity, { event = "presence", accept = "application/pidf+xml",
                                                  expires = 60, timeout = 30, from = "<sip:bob@127.0.0.1>" })
      assert.is_nil(err, tostring(err) .. (res and ("\n" .. res:raw()) or "") .. story())
      assert.are.equal("active", sub.state)
      assert.are.equal("presence", sub.event)
      assert.is_true(sub.expires > 0 and sub.expires <= 60, tostring(sub.expires))

      -- the first NOTIFY: active, alice's state
      local n = next_notify(sub, 10)
      assert.is_table(n, "no NOTIFY" .. story())
      assert.are.equal("active", n.state)
      assert.matches("^application/pidf%+xml", n.content_type)
      assert.truthy(n.body:find("<basic>open</basic>", 1, true), n.body)
      assert.truthy(n.body:find("At my desk", 1, true), n.body)

      -- alice changes her state: bob hears of it
      local etag = pub.etag
      local ok
      ok, err = pub:modify{ body = pidf("sip:alice@127.0.0.1", "closed", "Gone home") }
      assert.is_truthy(ok, tostring(err) .. story())
      assert.are.equal("published", pub.state)
      assert.is_string(pub.etag)
      assert.are_not.equal(etag, pub.etag)          -- a new entity tag per change (RFC 3903 6)
      n = next_notify(sub, 10, "<basic>closed</basic>")
      assert.is_table(n, "no NOTIFY with the closed state" .. story())
      assert.are.equal("active", n.state)
      assert.truthy(n.body:find("Gone home", 1, true), n.body)
      assert.is_nil(n.body:find("<basic>open</basic>", 1, true), n.body)

      -- bob leaves: the last NOTIFY says terminated
      ok, err = sub:unsubscribe(10)
      assert.is_true(ok, tostring(err) .. story())
      assert.are.equal("terminated", sub.state)

      -- alice withdraws her state
      ok, err = pub:remove()
      assert.is_true(ok, tostring(err) .. story())
      assert.are.equal("removed", pub.state)

      -- and a new watcher no longer sees her open
      sub, err = bob:subscribe(presentity, { event = "presence", accept = "application/pidf+xml",
                                             expires = 60, timeout = 30, from = "<sip:bob@127.0.0.1>" })
      assert.is_nil(err, tostring(err) .. story())
      n = next_notify(sub, 10)
      assert.is_table(n, "no NOTIFY" .. story())
      assert.is_nil((n.body or ""):find("<basic>open</basic>", 1, true), n.body)
      assert.is_true(sub:unsubscribe(10))
    end, 90)
  end)

  it("keeps a short publication and subscription alive with refreshes in their dialogs", function()
    local presentity = "sip:carol@127.0.0.1:" .. k.port
    local carol, dave = ua(), ua()
    helper.run(function()
      -- 4 s each: refreshed every 2 s, SIP-If-Match without a body and
      -- SUBSCRIBE within the dialog
      local pub, err = carol:publish{ uri = presentity, event = "presence", expires = 4,
        content_type = "application/pidf+xml", body = pidf("sip:carol@127.0.0.1", "open", "Here") }
      assert.is_nil(err, tostring(err) .. story())
      local sub
      sub, err = dave:subscribe(presentity, { event = "presence", accept = "application/pidf+xml",
                                              expires = 4, timeout = 30, from = "<sip:dave@127.0.0.1>" })
      assert.is_nil(err, tostring(err) .. story())
      assert.are.equal("active", sub.state)
      local deadline = sip.now() + 30
      while ((sub.refreshes or 0) < 2 or pub.refreshes < 2) and sip.now() < deadline do
        sip.sleep(0.1)
      end
      assert.is_true((sub.refreshes or 0) >= 2, "subscription refreshes: " .. tostring(sub.refreshes) .. story())
      assert.is_true(pub.refreshes >= 2, "publication refreshes: " .. pub.refreshes .. story())
      assert.are.equal("active", sub.state)
      assert.are.equal("published", pub.state)
      -- still carol's state, past the 4 s first granted: the refreshes
      -- brought NOTIFYs of it (RFC 6665 4.2.1.2), after the first one
      local count = 0
      for n in sub:notifies(10) do
        count = count + 1
        assert.are.equal("active", n.state)
        assert.truthy(n.body:find("<basic>open</basic>", 1, true), n.body)
        if count == 3 then break end
      end
      assert.are.equal(3, count, "NOTIFYs" .. story())
      assert.is_true(sub:unsubscribe(10))
      assert.is_true(pub:remove())
    end, 90)
  end)
end)
