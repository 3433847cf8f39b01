--- NAT traversal for registrations (issue 18), against a registrar
-- scripted on a raw UDP socket: it answers REGISTER as a registrar behind
-- which we sit behind a NAT would (its 2xx's Via carries the `received`
-- and `rport` it saw, RFC 3581), and it sees every datagram we send,
-- keep-alives included (a SIP stack drops those silently).
--
-- * `keepalive`: a registration over UDP pings its registrar with CRLF
--   (RFC 5626 4.4.1) every `keepalive` seconds, from the socket its
--   REGISTER left by.
-- * `rewrite_contact`: the binding moves to the public address: one
--   REGISTER drops the old contact (expires=0) and binds the new; the
--   UA's calls name it from then on.
-- The TCP flow (a connection kept open by pings, calls coming back on
-- it) is in spec/interop/nat_spec.lua, with Kamailio.
local sip = require "sip"
local core = require "sip.core"
local helper = require "helper"

-- the registrar: `public` ("198.51.100.7:40112") is where it says it saw
-- us; it records every datagram as { text, from }
local function registrar(public)
  local sock = assert(core.socket.open("udp", "127.0.0.1", 0))
  local r = { sock = sock, got = {}, registers = {}, pings = 0, others = {} }
  local rcv_host, rcv_port = public:match("^(.*):(%d+)$")
  function r.pump()
    while true do
      local data, from = sock:recv()
      if not data then return end
      r.got[#r.got + 1] = { text = data, from = from }
      if data == "\r\n\r\n" then
        r.pings = r.pings + 1
      else
        local m = assert(core.parse(data))
        if m.method == "REGISTER" then
          r.registers[#r.registers + 1] = m
          local via = m:header("Via"):gsub(";rport", ";received=" .. rcv_host .. ";rport=" .. rcv_port)
          local contacts = {}
          for _, c in ipairs(m:headers("Contact")) do
            for part in (c .. ","):gmatch("%s*([^,]+),") do
              if not part:find("expires=0", 1, true) then contacts[#contacts + 1] = part end
            end
          end
          local expires = m:header("Expires") or "3600"
          local contact = #contacts > 0 and "Contact: " .. contacts[#contacts] .. ";expires=" ..
                          expires .. "\r\n" or ""
          sock:send("SIP/2.0 200 OK\r\nVia: " .. via .. "\r\nFrom: " .. m.from .. "\r\nTo: " ..
                    m.to .. ";tag=reg1\r\nCall-ID: " .. m.call_id .. "\r\nCSeq: " .. m.cseq ..
                    " REGISTER\r\n" .. contact .. "Content-Length: 0\r\n\r\n", from)
        else
          r.others[#r.others + 1] = m
        end
      end
    end
  end
  function r.uri() return "sip:" .. sock:address() end
  function r.close()
    r.closed = true
    sock:close()
  end
  -- it answers while the flows under test wait
  sip.spawn(function()
    while not r.closed do
      r.pump()
      sip.sleep(0.01)
    end
  end)
  return r
end

-- turn the loop until cond() or a generous deadline
local function until_true(cond, timeout)
  local deadline = sip.now() + (timeout or 10)
  while sip.now() < deadline do
    if cond() then return true end
    sip.sleep(0.02)
  end
  return cond()
end

describe("registrations behind a NAT", function()
  local uas = {}
  local function track(ua) uas[#uas + 1] = ua; return ua end
  after_each(function()
    for _, ua in ipairs(uas) do ua:close() end
    uas = {}
  end)

  it("pings the registrar with CRLF over UDP every `keepalive` seconds, from the REGISTER's socket", function()
    local reg = registrar("127.0.0.1:1")
    finally(reg.close)
    local ua = track(assert(sip.ua{ listen = "udp:127.0.0.1:0", keepalive = 0.3 }))
    helper.run(function()
      local r = assert(ua:register{ registrar = reg.uri(), aor = "sip:bob@example.com" })
      assert.equal("registered", r.state)
      assert.is_true(until_true(function() return reg.pings >= 3 end),
                     "pings seen: " .. reg.pings)
      -- from the socket the REGISTER left by: the NAT binding it keeps open
      local pings_from = {}
      for _, g in ipairs(reg.got) do
        if g.text == "\r\n\r\n" then pings_from[g.from] = true end
      end
      assert.same({ [ua:address():match("^udp:(.*)$")] = true }, pings_from)
      r:unregister()
      -- none once unregistered
      local n = reg.pings
      until_true(function() return false end, 1)
      assert.is_true(reg.pings <= n + 1, "pings after unregister: " .. reg.pings - n)
    end, 30)
  end)

  it("takes the registration's own keepalive over the UA's, and none without either", function()
    local reg = registrar("127.0.0.1:1")
    finally(reg.close)
    local ua = track(assert(sip.ua{ listen = "udp:127.0.0.1:0" }))
    helper.run(function()
      local r = assert(ua:register{ registrar = reg.uri(), aor = "sip:bob@example.com" })
      until_true(function() return false end, 1)
      assert.equal(0, reg.pings)
      r:unregister()
      r = assert(ua:register{ registrar = reg.uri(), aor = "sip:bob@example.com", keepalive = 0.2 })
      assert.is_true(until_true(function() return reg.pings >= 2 end))
      r:unregister()
    end, 30)
  end)

  it("moves the binding to the address the registrar saw (rewrite_contact), and calls name it", function()
    local reg = registrar("198.51.100.7:40112")
    finally(reg.close)
    local ua = track(assert(sip.ua{ listen = "udp:127.0.0.1:0" }))
    local ours = "sip:bob@" .. ua:address():match("^udp:(.*)$")
    helper.run(function()
      local r = assert(ua:register{ registrar = reg.uri(), aor = "sip:bob@example.com",
                                    rewrite_contact = true })
      assert.equal("registered", r.state)
      assert.equal("sip:bob@198.51.100.7:40112", r.contact_uri)
      assert.equal(2, #reg.registers)
      assert.equal("<" .. ours .. ">", reg.registers[1]:header("Contact"))
      -- one REGISTER: the old binding goes, the public one comes
      assert.equal("<" .. ours .. ">;expires=0, <sip:bob@198.51.100.7:40112>",
                   reg.registers[2]:header("Contact"))
      assert.equal(r.call_id, reg.registers[2].call_id)
      assert.is_true(reg.registers[2].cseq > reg.registers[1].cseq)
      assert.equal(3600, r.expires)
      -- the UA's requests name the public address from now on
      sip.spawn(function() ua:invite(reg.uri(), { timeout = 0.5 }) end)
      assert.is_true(until_true(function() return #reg.others > 0 end))
      assert.equal("INVITE", reg.others[1].method)
      assert.matches("^<sip:[^@]*@?198%.51%.100%.7:40112", reg.others[1]:header("Contact"))
      -- a refresh finds the contact public already: no more rewriting
      r:unregister()
      assert.equal("<sip:bob@198.51.100.7:40112>", reg.registers[3]:header("Contact"))
    end, 30)
  end)

  it("leaves the contact alone without rewrite_contact, or when the registrar saw it as it is", function()
    local reg = registrar("198.51.100.7:40112")
    finally(reg.close)
    local ua = track(assert(sip.ua{ listen = "udp:127.0.0.1:0" }))
    local ours = "sip:bob@" .. ua:address():match("^udp:(.*)$")
    helper.run(function()
      local r = assert(ua:register{ registrar = reg.uri(), aor = "sip:bob@example.com" })
      assert.equal(ours, r.contact_uri)
      assert.equal(1, #reg.registers)
      r:unregister()
    end, 30)
    local same = registrar(ua:address():match("^udp:(.*)$"))
    finally(same.close)
    helper.run(function()
      local r = assert(ua:register{ registrar = same.uri(), aor = "sip:bob@example.com",
                                    rewrite_contact = true })
      assert.equal(ours, r.contact_uri)
      assert.equal(1, #same.registers)
      r:unregister()
    end, 30)
  end)

  it("registers again over a new connection when its TCP flow stops answering pings", function()
    -- a TCP registrar that pongs the first ping of each connection only,
    -- as a peer does until the path to it dies
    local sock = assert(core.socket.open("tcp", "127.0.0.1", 0))
    local closed = false
    finally(function() closed = true; sock:close() end)
    local registers, bufs, pongs = {}, {}, {}
    sip.spawn(function()
      while not closed do
        local data, from = sock:recv()
        if data then
          local buf = (bufs[from] or "") .. data
          while true do
            if buf:find("^\r\n\r\n") then
              buf = buf:sub(5)
              if not pongs[from] then
                pongs[from] = true
                sock:send("\r\n", from)
              end
            else
              local hend = buf:find("\r\n\r\n", 1, true)
              if not hend then break end
              local m = assert(core.parse(buf:sub(1, hend + 3)))
              buf = buf:sub(hend + 4)
              registers[#registers + 1] = { from = from, msg = m }
              sock:send("SIP/2.0 200 OK\r\nVia: " .. m:header("Via") .. "\r\nFrom: " .. m.from ..
                        "\r\nTo: " .. m.to .. ";tag=r\r\nCall-ID: " .. m.call_id .. "\r\nCSeq: " ..
                        m.cseq .. " REGISTER\r\nContact: " .. m:header("Contact") ..
                        ";expires=600\r\nContent-Length: 0\r\n\r\n", from)
            end
          end
          bufs[from] = buf
        else
          sip.sleep(0.01)
        end
      end
    end)
    local ua = track(assert(sip.ua{ listen = "udp:127.0.0.1:0", keepalive = 0.3 }))
    helper.run(function()
      local r = assert(ua:register{ registrar = "sip:" .. sock:address() .. ";transport=tcp",
                                    aor = "sip:bob@example.com" })
      assert.is_true(until_true(function() return #registers >= 2 end, 15),
                     "REGISTERs: " .. #registers)
      -- the second over a connection of its own, the first one gone
      assert.are_not.equal(registers[1].from, registers[2].from)
      assert.equal(registers[1].msg.call_id, registers[2].msg.call_id)
      assert.is_true(until_true(function() return r.state == "registered" end))
      assert.is_true(pongs[registers[1].from])
      r:unregister()
    end, 40)
  end)

  it("checks the options: keepalive, rewrite_contact, and a contact with CR or LF raises", function()
    helper.raises("bad argument #1 to 'sip.ua' %(option 'keepalive' must not be negative",
                  sip.ua, { keepalive = -1 })
    helper.raises("bad argument #1 to 'sip.ua' %(option 'keepalive' must be a number",
                  sip.ua, { keepalive = "30" })
    helper.raises("bad argument #1 to 'sip.ua' %(option 'contact' must be one line",
                  sip.ua, { contact = "<sip:me@192.0.2.1>\r\nX-Evil: 1" })
    local ua = track(assert(sip.ua{ listen = "udp:127.0.0.1:0" }))
    helper.run(function()
      helper.raises("bad argument #1 to 'ua:register' %(option 'keepalive' must not be negative",
                    ua.register, ua, { registrar = "sip:127.0.0.1:9", aor = "sip:a@b", keepalive = -2 })
      helper.raises("bad argument #1 to 'ua:register' %(option 'contact' must be one line",
                    ua.register, ua, { registrar = "sip:127.0.0.1:9", aor = "sip:a@b",
                                       contact = "sip:a@b\r\nX-Evil: 1" })
      helper.raises("bad argument #2 to 'ua:invite' %(option 'contact' must be one line",
                    ua.invite, ua, "sip:127.0.0.1:9", { contact = "<sip:a@b>\nX-Evil: 1" })
      helper.raises("bad argument #3 to 'ua:request' %(option 'contact' must be one line",
                    ua.request, ua, "OPTIONS", "sip:127.0.0.1:9", { contact = "<sip:a@b>\rX: 1" })
      helper.raises("bad argument #1 to 'ua:register' %(option 'rewrite_contact' must be a boolean",
                    ua.register, ua, { registrar = "sip:127.0.0.1:9", aor = "sip:a@b",
                                       rewrite_contact = "yes" })
    end)
  end)
end)
