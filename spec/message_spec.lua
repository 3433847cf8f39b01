--- sip.Message: what a handler and a client read off requests and
-- responses, and the mistakes that must raise. Two in-process UAs talk
-- over UDP on loopback.
local sip = require "sip"
local helper = require "helper"

local function hostport(ua)
  return (ua:address():match("^%a+:(.*)$"))
end

-- a server UA and a client UA, both closed by the spec's finally
local function pair()
  local server = assert(sip.ua{ listen = "udp:127.0.0.1:0" })
  local client = assert(sip.ua{ listen = "udp:127.0.0.1:0" })
  finally(function()
    client:close()
    server:close()
  end)
  return server, client
end

local function raises(pattern, fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error matching '" .. pattern .. "'")
  assert.matches(pattern, tostring(err))
  return err
end

describe("sip.Message", function()
  it("exposes every field of a received request and of its response", function()
    local server, client = pair()
    local seen
    server:on("MESSAGE", function(req)
      seen = {
        method = req.method, uri = req.uri, body = req.body,
        content_type = req.content_type, call_id = req.call_id,
        cseq = req.cseq, cseq_method = req.cseq_method,
        from = req.from, to = req.to, from_tag = req.from_tag, to_tag = req.to_tag,
        from_uri = req.from_uri, to_uri = req.to_uri, via = req.via,
        source = req.source, transport = req.transport, is_request = req.is_request,
        status = req.status, reason = req.reason,
        h_from = req:header("From"), h_f = req:header("f"), h_from_lc = req:header("from"),
        h_i = req:header("i"), h_call_id = req:header("Call-ID"),
        h_subject = req:header("Subject"), h_s = req:header("s"),
        h_c = req:header("c"), h_custom = req:header("x-custom"),
        multi = req:headers("X-Multi"), none = req:headers("X-None"),
        h_none = req:header("X-None"),
        str = tostring(req),
      }
      req:reply(202, "Got It", {
        headers = { ["X-Reply"] = "yes", ["X-Reply-Multi"] = { "1", "2" } },
        body = "pong", content_type = "text/plain",
      })
    end)
    helper.run(function()
      local uri = "sip:bob@" .. hostport(server)
      local res, err = client:request("MESSAGE", uri, {
        body = "héllo\r\nworld",
        content_type = "text/plain;charset=utf-8",
        headers = { ["X-Custom"] = "42", Subject = "greetings",
                    ["X-Multi"] = { "first", "second" } },
        timeout = 5,
      })
      assert.is_nil(err)
      assert.truthy(res)
      assert.truthy(seen, "the handler did not run")

      -- request side
      assert.are.equal("MESSAGE", seen.method)
      assert.are.equal(uri, seen.uri)
      assert.are.equal("héllo\r\nworld", seen.body)
      assert.are.equal("text/plain;charset=utf-8", seen.content_type)
      assert.is_true(seen.is_request)
      assert.is_nil(seen.status)
      assert.is_nil(seen.reason)
      assert.is_string(seen.call_id)
      assert.is_true(#seen.call_id > 0)
      assert.are.equal(seen.h_call_id, seen.h_i)
      assert.are.equal(seen.h_call_id, seen.call_id)
      assert.are.equal(1, seen.cseq)
      assert.are.equal("MESSAGE", seen.cseq_method)
      assert.is_string(seen.from_tag)
      assert.is_true(#seen.from_tag > 0)
      assert.is_nil(seen.to_tag)
      assert.matches(";tag=" .. seen.from_tag:gsub("%p", "%%%0"), seen.from)
      assert.matches("^sip:", seen.from_uri)
      assert.are.equal(uri, seen.to_uri)
      assert.matches("bob@", seen.to)
      assert.matches("^SIP/2%.0/UDP ", seen.via)
      assert.matches("branch=z9hG4bK", seen.via)
      assert.are.equal(hostport(client), seen.source)
      assert.are.equal("udp", seen.transport:lower())
      -- header(): any case, long and compact forms
      assert.are.equal(seen.from, seen.h_from)
      assert.are.equal(seen.from, seen.h_f)
      assert.are.equal(seen.from, seen.h_from_lc)
      assert.are.equal("greetings", seen.h_subject)
      assert.are.equal("greetings", seen.h_s)
      assert.are.equal("text/plain;charset=utf-8", seen.h_c)
      assert.are.equal("42", seen.h_custom)
      assert.is_nil(seen.h_none)
      -- headers(): every value, in order
      assert.are.same({ "first", "second" }, seen.multi)
      assert.are.same({}, seen.none)
      assert.matches("^sip%.Message: MESSAGE", seen.str)

      -- response side
      assert.are.equal(202, res.status)
      assert.are.equal("Got It", res.reason)
      assert.is_false(res.is_request)
      assert.is_nil(res.uri)
      assert.are.equal(seen.h_call_id, res:header("Call-ID"))
      assert.are.equal(seen.call_id, res.call_id)
      assert.are.equal(1, res.cseq)
      assert.are.equal("MESSAGE", res.cseq_method)
      assert.are.equal(seen.from_tag, res.from_tag)
      assert.is_string(res.to_tag)
      assert.is_true(#res.to_tag > 0)
      assert.are.equal("yes", res:header("X-Reply"))
      assert.are.same({ "1", "2" }, res:headers("X-Reply-Multi"))
      assert.are.equal("pong", res.body)
      assert.are.equal("text/plain", res.content_type)
      assert.are.equal(hostport(server), res.source)
      assert.are.equal("udp", res.transport:lower())
      assert.matches("^sip%.Message: 202 Got It", tostring(res))
      assert.matches("SIP/2.0 202 Got It\r\n", res:raw(), 1, true)
      assert.matches("\r\n\r\npong$", res:raw())
    end, 10)
  end)

  it("call_id is the whole Call-ID, host part included", function()
    local server, client = pair()
    local got
    server:on("OPTIONS", function(req)
      got = { req.call_id, req:header("Call-ID") }
      return 200
    end)
    helper.run(function()
      local cid = "abc123@host.example"
      local res = assert(client:request("OPTIONS", "sip:" .. hostport(server),
                                        { call_id = cid, timeout = 5 }))
      assert.are.same({ cid, cid }, got)
      assert.are.equal(cid, res.call_id)
      assert.matches("call%-id abc123@host%.example", tostring(res))
      -- and the generated one
      res = assert(client:request("OPTIONS", "sip:" .. hostport(server), { timeout = 5 }))
      assert.are.equal(res:header("Call-ID"), res.call_id)
    end, 10)
  end)

  it("has read-only fields", function()
    local server, client = pair()
    server:on("OPTIONS", function() return 200 end)
    helper.run(function()
      local res = assert(client:request("OPTIONS", "sip:" .. hostport(server), { timeout = 5 }))
      raises("read%-only", function() res.status = 404 end)
    end, 10)
  end)

  it("set_header replaces every header of a name, or removes it with nil", function()
    local server, client = pair()
    server:on("OPTIONS", function()
      return 200, "OK", { headers = { ["X-Multi"] = { "a", "b" }, Subject = "one" } }
    end)
    helper.run(function()
      local res = assert(client:request("OPTIONS", "sip:" .. hostport(server), { timeout = 5 }))
      assert.are.same({ "a", "b" }, res:headers("X-Multi"))
      local call_id, body = res.call_id, res.body

      res:set_header("X-Multi", "c")
      assert.are.same({ "c" }, res:headers("X-Multi"))
      assert.are.equal("c", res:header("x-multi"))

      -- the compact name replaces the long one
      res:set_header("s", "two")
      assert.are.same({ "two" }, res:headers("Subject"))

      res:set_header("X-New", "new")
      assert.are.equal("new", res:header("X-New"))

      res:set_header("X-Multi", nil)
      assert.is_nil(res:header("X-Multi"))
      assert.are.same({}, res:headers("X-Multi"))

      -- the rest of the message is untouched
      assert.are.equal(200, res.status)
      assert.are.equal(call_id, res.call_id)
      assert.are.equal(body, res.body)
      assert.is_nil(res:raw():find("X-Multi", 1, true))
    end, 10)
  end)

  describe("raises on a programmer's mistake", function()
    it("CR or LF in a request header value, naming the header", function()
      local server, client = pair()
      server:on("OPTIONS", function() return 200 end)
      helper.run(function()
        local uri = "sip:" .. hostport(server)
        local err = raises("X%-Evil", client.request, client, "OPTIONS", uri,
          { headers = { ["X-Evil"] = "a\r\nInjected: 1" } })
        assert.matches("CR", err)
        raises("X%-Evil", client.request, client, "OPTIONS", uri,
          { headers = { ["X-Evil"] = "a\nb" } })
        raises("X%-Evil", client.request, client, "OPTIONS", uri,
          { headers = { ["X-Evil"] = { "fine", "bad\rvalue" } } })
        -- nothing was sent for them
        assert.are.equal(0, client:stats().client_transactions)
      end, 10)
    end)

    it("a bad header name", function()
      local server, client = pair()
      server:on("OPTIONS", function() return 200 end)
      helper.run(function()
        local uri = "sip:" .. hostport(server)
        raises("header name", client.request, client, "OPTIONS", uri,
          { headers = { ["Bad Name"] = "x" } })
        raises("header name", client.request, client, "OPTIONS", uri,
          { headers = { ["X-A:"] = "x" } })
        raises("header name", client.request, client, "OPTIONS", uri,
          { headers = { [""] = "x" } })
      end, 10)
    end)

    it("in reply and set_header: CR/LF, bad names, status out of range; a second reply is fail",
       function()
      local server, client = pair()
      local errs = {}
      local function catch(key, fn, ...)
        local ok, err = pcall(fn, ...)
        errs[key] = ok and "did not raise" or tostring(err)
      end
      server:on("MESSAGE", function(req)
        catch("crlf", req.reply, req, 200, "OK", { headers = { ["X-Evil"] = "a\r\nb: c" } })
        catch("name", req.reply, req, 200, "OK", { headers = { ["X Bad"] = "1" } })
        catch("s99", req.reply, req, 99)
        catch("s700", req.reply, req, 700)
        catch("reason", req.reply, req, 200, "OK\r\nX: y")
        catch("set_crlf", req.set_header, req, "X-Set", "a\r\nb")
        catch("set_name", req.set_header, req, "X Set", "a")
        errs.first = table.pack(req:reply(200))
        errs.second = table.pack(req:reply(486))
      end)
      helper.run(function()
        local res = assert(client:request("MESSAGE", "sip:" .. hostport(server),
                                          { body = "x", timeout = 5 }))
        -- none of the bad replies went out: the first good one did
        assert.are.equal(200, res.status)
        assert.matches("X%-Evil", errs.crlf)
        assert.matches("CR", errs.crlf)
        assert.matches("header name", errs.name)
        assert.matches("status", errs.s99)
        assert.matches("status", errs.s700)
        assert.matches("reason", errs.reason)
        assert.matches("CR", errs.set_crlf)
        assert.matches("header name", errs.set_name)
        assert.are.same({ true, n = 1 }, errs.first)
        assert.are.same({ nil, "already answered", n = 2 }, errs.second)
      end, 10)
    end)
  end)
end)
