--- The robustness limits of sip.ua{...} as a peer sees them (issue 8):
-- max_udp, max_message (streams), max_headers, max_header_line,
-- max_connections, max_connections_per_ip, idle_timeout, header_timeout
-- (slowloris) and max_server_transactions (503 + Retry-After).
--
-- Each limit is set small and driven with raw luasocket sockets, so the
-- test controls every byte; every drop must be counted in ua:stats() and
-- logged through sip.log with a line naming the reason. All traffic is to
-- and from 127.0.0.x addresses of our own sockets (the Via headers name
-- them), so nothing needs a private network namespace.
local sip = require "sip"
local core = require "sip.core"
local helper = require "helper"
local socket = require "socket"

---------------------------------------------------------------------------
-- helpers

-- drive the loop until poll() is true or `seconds` pass
local function pump(poll, seconds)
  local deadline = core.now() + seconds
  repeat
    core.step(0.01)
    if poll() then return true end
  until core.now() > deadline
  return false
end

local logs
-- a UA whose log lines (debug and up) go to `logs`
local function new_ua(opts)
  logs = {}
  local ua = assert(sip.ua(opts))
  sip.log("debug", function(_, msg) logs[#logs + 1] = msg end)
  ua:on("OPTIONS", function() return 200 end)
  local port = tonumber(ua:address():match(":(%d+)$"))
  return ua, port
end

local function logged(pattern)
  for _, l in ipairs(logs or {}) do
    if l:find(pattern, 1, true) then return l end
  end
end

local function all_logs()
  return table.concat(logs or {}, "\n")
end

local seq = 0
local function uniq()
  seq = seq + 1
  return string.format("%d%d", seq, math.random(1, 1e9))
end

--- A request's text. o: method, port (the UA's), via ("UDP 127.0.0.1:5"),
-- extra (list of header lines), body.
local function request(o)
  local method = o.method or "OPTIONS"
  local id = uniq()
  local lines = {
    string.format("%s sip:uas@127.0.0.1:%d SIP/2.0", method, o.port),
    "Via: SIP/2.0/" .. o.via .. ";branch=z9hG4bK-lim" .. id .. ";rport",
    "Max-Forwards: 70",
    "From: <sip:tester@127.0.0.1>;tag=t" .. id,
    "To: <sip:uas@127.0.0.1>",
    "Call-ID: lim" .. id .. "@127.0.0.1",
    "CSeq: 1 " .. method,
  }
  for _, h in ipairs(o.extra or {}) do lines[#lines + 1] = h end
  local body = o.body or ""
  if #body > 0 then lines[#lines + 1] = "Content-Type: text/plain" end
  lines[#lines + 1] = "Content-Length: " .. (o.content_length or #body)
  return table.concat(lines, "\r\n") .. "\r\n\r\n" .. body
end

local function status_of(text)
  return tonumber(text:match("^SIP/2%.0 (%d%d%d)"))
end

-- a UDP socket of ours on 127.0.0.1 and its port
local function udp_peer()
  local s = socket.udp()
  assert(s:setsockname("127.0.0.1", 0))
  s:settimeout(0)
  local _, port = s:getsockname()
  return s, tonumber(port)
end

-- send over UDP, return the final status or nil when none came in `wait`
local function udp_exchange(s, text, port, wait)
  assert(s:sendto(text, "127.0.0.1", port))
  local status
  pump(function()
    local d = s:receivefrom()
    if d then
      local st = status_of(d)
      if st and st >= 200 then status = st end
    end
    return status ~= nil
  end, wait or 2)
  return status
end

-- connect over TCP from `src` (127.0.0.x), the loop running meanwhile
local function tcp_connect(port, src)
  local s = socket.tcp()
  if src then assert(s:bind(src, 0)) end
  s:settimeout(2)
  assert(s:connect("127.0.0.1", port))
  s:settimeout(0)
  return s
end

-- true when the peer closed the connection (EOF or reset); drains data
local function is_closed(s)
  while true do
    local d, err = s:receive(4096)
    if not d then return err ~= "timeout" end
  end
end

-- read one response (framed by Content-Length) from a TCP socket
local function tcp_read_status(s, seconds)
  local buf, status = "", nil
  pump(function()
    local d, _, partial = s:receive(4096)
    d = d or partial
    if d and #d > 0 then buf = buf .. d end
    local st = status_of(buf)
    if st and buf:find("\r\n\r\n", 1, true) then status = st end
    return status ~= nil
  end, seconds or 2)
  return status, buf
end

local uas = {}
local socks = {}
local function track(x) socks[#socks + 1] = x; return x end

local function cleanup()
  for _, s in ipairs(socks) do pcall(s.close, s) end
  socks = {}
  for _, ua in ipairs(uas) do pcall(ua.close, ua) end
  uas = {}
  sip.log("error", false)
end

local function ua_for(opts)
  local ua, port = new_ua(opts)
  uas[#uas + 1] = ua
  return ua, port
end

---------------------------------------------------------------------------

describe("limits", function()
  after_each(cleanup)

  describe("max_udp", function()
    it("answers a datagram of exactly max_udp bytes and drops a larger one with a log line",
       function()
      local ua, port = ua_for{ listen = "udp:127.0.0.1:0", max_udp = 1000 }
      local s, myport = udp_peer()
      track(s)
      local via = "UDP 127.0.0.1:" .. myport
      local head = request{ port = port, via = via, body = "" }
      -- pad with a body so the datagram is exactly 1000, then 1001 bytes
      local function sized(n)
        local text
        local pad = n - #head - 30
        repeat
          text = request{ port = port, via = via, body = string.rep("x", pad) }
          pad = pad + (n - #text)
        until #text == n
        return text
      end
      assert.are.equal(200, udp_exchange(s, sized(1000), port))
      local dropped = ua:stats().dropped
      assert.is_nil(udp_exchange(s, sized(1001), port, 0.5))
      assert.are.equal(dropped + 1, ua:stats().dropped)
      assert.truthy(logged("datagram larger than max_udp"), all_logs())
    end)

    it("accepts a 60000-byte datagram by default (65507)", function()
      local _, port = ua_for{ listen = "udp:127.0.0.1:0" }
      local s, myport = udp_peer()
      track(s)
      local st = udp_exchange(s, request{ port = port, via = "UDP 127.0.0.1:" .. myport,
                                          body = string.rep("y", 60000) }, port)
      assert.are.equal(200, st, all_logs())
    end)
  end)

  describe("max_message on a stream", function()
    it("closes the connection on a Content-Length over the limit before the body arrives",
       function()
      local ua, port = ua_for{ listen = "tcp:127.0.0.1:0", max_message = 4096 }
      local s = track(tcp_connect(port))
      -- a message inside the limit is served on this connection
      local ok = request{ port = port, via = "TCP 127.0.0.1:1", body = string.rep("a", 3000) }
      assert(s:send(ok))
      assert.are.equal(200, (tcp_read_status(s)))
      -- only the header section, announcing 5000 bytes of body
      local dropped = ua:stats().dropped
      assert(s:send(request{ port = port, via = "TCP 127.0.0.1:1", content_length = 5000 }))
      assert.is_true(pump(function() return is_closed(s) end, 1),
                     "connection still open: " .. all_logs())
      assert.are.equal(dropped + 1, ua:stats().dropped)
      assert.truthy(logged("Content-Length beyond the stream limit"), all_logs())
      assert.are.equal(0, ua:stats().connections)
    end)

    it("closes at the default 64 KiB limit too", function()
      local _, port = ua_for{ listen = "tcp:127.0.0.1:0" }
      local s = track(tcp_connect(port))
      assert(s:send(request{ port = port, via = "TCP 127.0.0.1:1", content_length = 65537 }))
      assert.is_true(pump(function() return is_closed(s) end, 1),
                     "connection still open: " .. all_logs())
      assert.truthy(logged("Content-Length beyond the stream limit"), all_logs())
    end)

    it("closes a connection whose header section grows past the limit", function()
      local ua, port = ua_for{ listen = "tcp:127.0.0.1:0", max_message = 4096,
                               max_headers = 10000 }
      local s = track(tcp_connect(port))
      local head = string.format("OPTIONS sip:uas@127.0.0.1:%d SIP/2.0\r\n", port)
      assert(s:send(head .. string.rep("X-Filler: 0123456789012345678901234567\r\n", 150)))
      assert.is_true(pump(function() return is_closed(s) end, 1),
                     "connection still open: " .. all_logs())
      assert.truthy(logged("header section larger than the stream limit"), all_logs())
      assert.are.equal(0, ua:stats().connections)
    end)
  end)

  describe("max_headers", function()
    local function extra(n)
      local t = {}
      for i = 1, n do t[i] = "X-H" .. i .. ": v" end
      return t
    end

    it("serves max_headers header lines and drops one more with a log line (UDP)", function()
      local ua, port = ua_for{ listen = "udp:127.0.0.1:0", max_headers = 20 }
      local s, myport = udp_peer()
      track(s)
      local via = "UDP 127.0.0.1:" .. myport
      -- request() writes 7 header lines (Via .. CSeq, Content-Length)
      assert.are.equal(200, udp_exchange(s, request{ port = port, via = via, extra = extra(13) },
                                         port), all_logs())
      local dropped = ua:stats().dropped
      assert.is_nil(udp_exchange(s, request{ port = port, via = via, extra = extra(14) }, port, 0.5))
      assert.are.equal(dropped + 1, ua:stats().dropped)
      assert.truthy(logged("more header lines than max_headers"), all_logs())
    end)

    it("drops a message with too many header lines on a stream", function()
      local ua, port = ua_for{ listen = "tcp:127.0.0.1:0", max_headers = 20 }
      local s = track(tcp_connect(port))
      local dropped = ua:stats().dropped
      assert(s:send(request{ port = port, via = "TCP 127.0.0.1:1", extra = extra(300) }))
      assert.is_true(pump(function() return ua:stats().dropped > dropped end, 1), all_logs())
      assert.truthy(logged("more header lines than max_headers"), all_logs())
      -- the framing is intact: the next message on the connection is served
      assert(s:send(request{ port = port, via = "TCP 127.0.0.1:1" }))
      assert.are.equal(200, (tcp_read_status(s)))
    end)
  end)

  describe("max_header_line", function()
    it("drops a header line longer than max_header_line with a log line", function()
      local ua, port = ua_for{ listen = "udp:127.0.0.1:0", max_header_line = 200 }
      local s, myport = udp_peer()
      track(s)
      local via = "UDP 127.0.0.1:" .. myport
      local function line(n) return "X-Long: " .. string.rep("z", n - 8) end
      assert.are.equal(200, udp_exchange(s, request{ port = port, via = via,
                                                     extra = { line(199) } }, port), all_logs())
      local dropped = ua:stats().dropped
      assert.is_nil(udp_exchange(s, request{ port = port, via = via, extra = { line(201) } },
                                 port, 0.5))
      assert.are.equal(dropped + 1, ua:stats().dropped)
      assert.truthy(logged("header line longer than max_header_line"), all_logs())
      -- the default (8192) drops a 9000-byte line too
      local ua2, port2 = ua_for{ listen = "udp:127.0.0.1:0" }
      assert.is_nil(udp_exchange(s, request{ port = port2, via = via, extra = { line(9000) } },
                                 port2, 0.5))
      assert.are.equal(1, ua2:stats().dropped)
    end)

    it("counts the length of a line without its CRLF (a line of exactly the limit is served)",
       function()
      local _, port = ua_for{ listen = "udp:127.0.0.1:0", max_header_line = 200 }
      local s, myport = udp_peer()
      track(s)
      local l = "X-Long: " .. string.rep("z", 192)
      assert.are.equal(200, #l)
      assert.are.equal(200, udp_exchange(s, request{ port = port, via = "UDP 127.0.0.1:" .. myport,
                                                     extra = { l } }, port, 1), all_logs())
    end)
  end)

  describe("connections", function()
    it("max_connections: the connections beyond the limit are closed at once", function()
      local ua, port = ua_for{ listen = "tcp:127.0.0.1:0", max_connections = 3 }
      local open = {}
      for i = 1, 3 do
        open[i] = track(tcp_connect(port, "127.0.0." .. i))
        assert.is_true(pump(function() return ua:stats().connections == i end, 1))
      end
      local extra = track(tcp_connect(port, "127.0.0.4"))
      assert.is_true(pump(function() return is_closed(extra) end, 1), "extra connection kept")
      assert.truthy(logged("connection limit reached"), all_logs())
      assert.are.equal(3, ua:stats().connections)
      -- the ones inside the limit are open and served
      for _, s in ipairs(open) do
        assert.is_false(is_closed(s))
        assert(s:send(request{ port = port, via = "TCP 127.0.0.1:1" }))
        assert.are.equal(200, (tcp_read_status(s)))
      end
      -- a freed slot is taken again
      open[1]:close()
      assert.is_true(pump(function() return ua:stats().connections == 2 end, 1))
      local again = track(tcp_connect(port, "127.0.0.5"))
      assert.is_true(pump(function() return ua:stats().connections == 3 end, 1))
      helper.spin(0.1)
      assert.is_false(is_closed(again))
    end)

    it("max_connections_per_ip: more from one address are closed, others still accepted",
       function()
      local ua, port = ua_for{ listen = "tcp:127.0.0.1:0", max_connections_per_ip = 2 }
      local a1 = track(tcp_connect(port, "127.0.0.1"))
      local a2 = track(tcp_connect(port, "127.0.0.1"))
      assert.is_true(pump(function() return ua:stats().connections == 2 end, 1))
      local a3 = track(tcp_connect(port, "127.0.0.1"))
      assert.is_true(pump(function() return is_closed(a3) end, 1), "third connection kept")
      assert.truthy(logged("per-address connection limit reached"), all_logs())
      local b1 = track(tcp_connect(port, "127.0.0.2"))
      assert.is_true(pump(function() return ua:stats().connections == 3 end, 1))
      helper.spin(0.1)
      for _, s in ipairs{ a1, a2, b1 } do assert.is_false(is_closed(s)) end
      assert(b1:send(request{ port = port, via = "TCP 127.0.0.2:1" }))
      assert.are.equal(200, (tcp_read_status(b1)))
    end)
  end)

  describe("idle_timeout", function()
    it("closes an idle connection and keeps a busy one", function()
      local ua, port = ua_for{ listen = "tcp:127.0.0.1:0", idle_timeout = 0.5 }
      local idle = track(tcp_connect(port))
      local busy = track(tcp_connect(port, "127.0.0.2"))
      assert.is_true(pump(function() return ua:stats().connections == 2 end, 1))
      local t0 = core.now()
      local closed_at, next_send, served = nil, t0, 0
      pump(function()
        if not closed_at and is_closed(idle) then closed_at = core.now() end
        if core.now() >= next_send then
          next_send = next_send + 0.2
          assert(busy:send(request{ port = port, via = "TCP 127.0.0.2:1" }))
          local st = tcp_read_status(busy, 1)
          if st == 200 then served = served + 1 end
        end
        return core.now() - t0 > 1.5
      end, 3)
      assert.is_not_nil(closed_at, "idle connection not closed: " .. all_logs())
      assert.is_near(0.5, closed_at - t0, 0.35)
      assert.truthy(logged("closed: idle timeout"), all_logs())
      assert.is_false(is_closed(busy), "the busy connection was closed")
      assert.is_true(served >= 6, "served " .. served)
      assert.are.equal(1, ua:stats().connections)
    end)
  end)

  describe("header_timeout (slowloris)", function()
    it("closes a connection trickling a message byte by byte, though bytes keep arriving",
       function()
      local ua, port = ua_for{ listen = "tcp:127.0.0.1:0", header_timeout = 1, idle_timeout = 30 }
      local s = track(tcp_connect(port))
      assert.is_true(pump(function() return ua:stats().connections == 1 end, 1))
      local msg = request{ port = port, via = "TCP 127.0.0.1:1" }
      local t0 = core.now()
      local i, next_send, closed_at, sent_after = 0, t0, nil, 0
      pump(function()
        if is_closed(s) then closed_at = core.now(); return true end
        if core.now() >= next_send then
          i = i + 1
          next_send = next_send + 0.2
          local ok = s:send(msg:sub(i, i))
          if ok and core.now() - t0 > 0.7 then sent_after = sent_after + 1 end
        end
        return false
      end, 3)
      assert.is_not_nil(closed_at, "trickling connection still open after 3 s: " .. all_logs())
      assert.is_true(closed_at - t0 < 1.5, "closed only after " .. (closed_at - t0) .. " s")
      assert.is_true(closed_at - t0 > 0.8, "closed too early: " .. (closed_at - t0) .. " s")
      assert.is_true(sent_after >= 1, "bytes were arriving until the close")
      assert.is_true(i < #msg)
      assert.are.equal(0, ua:stats().connections)
    end)

    it("does not close a busy connection whose reads keep ending inside a message", function()
      -- each send completes the previous message and starts the next, so
      -- the connection always holds part of a message, but messages keep
      -- completing: the deadline is per message, not per connection
      local ua, port = ua_for{ listen = "tcp:127.0.0.1:0", header_timeout = 1, idle_timeout = 30 }
      local s = track(tcp_connect(port))
      assert.is_true(pump(function() return ua:stats().connections == 1 end, 1))
      local msgs = {}
      for k = 1, 12 do msgs[k] = request{ port = port, via = "TCP 127.0.0.1:1" } end
      local half = math.floor(#msgs[1] / 2)
      local buf, answered = "", 0
      assert(s:send(msgs[1]:sub(1, half)))
      for k = 1, 12 do
        helper.spin(0.2)
        local chunk = msgs[k]:sub(half + 1) .. (msgs[k + 1] and msgs[k + 1]:sub(1, half) or "")
        local ok = s:send(chunk)
        if not ok then break end
      end
      pump(function()
        local d, _, partial = s:receive(65536)
        d = d or partial
        if d then buf = buf .. d end
        local n = 0
        for _ in buf:gmatch("SIP/2%.0 200") do n = n + 1 end
        answered = n
        return answered == 12
      end, 1)
      assert.are.equal(12, answered, "answered " .. answered .. " of 12 over 2.4 s: " .. all_logs())
      assert.is_false(is_closed(s))
    end)
  end)

  describe("max_server_transactions", function()
    it("answers 503 with Retry-After beyond the limit, and serves again once slots free",
       function()
      -- T1 0.02 s: Timer J (64*T1) frees a finished transaction in 1.3 s
      local ua, port = ua_for{ listen = "udp:127.0.0.1:0", max_server_transactions = 5,
                               t1 = 0.02, t2 = 0.1 }
      local release, held = false, 0
      ua:on("MESSAGE", function()
        held = held + 1
        while not release do sip.sleep(0.02) end
        return 200
      end)
      local s, myport = udp_peer()
      track(s)
      local via = "UDP 127.0.0.1:" .. myport
      local replies = {}
      local function drain()
        while true do
          local d = s:receivefrom()
          if not d then break end
          replies[#replies + 1] = d
        end
      end
      for _ = 1, 5 do assert(s:sendto(request{ method = "MESSAGE", port = port, via = via },
                                      "127.0.0.1", port)) end
      assert.is_true(pump(function() return held == 5 end, 1), "held " .. held)
      assert.are.equal(5, ua:stats().server_transactions)
      local dropped = ua:stats().dropped
      assert(s:sendto(request{ method = "MESSAGE", port = port, via = via }, "127.0.0.1", port))
      pump(function() drain(); return #replies > 0 end, 1)
      assert.are.equal(1, #replies, "replies: " .. table.concat(replies, "\n----\n"))
      assert.are.equal(503, status_of(replies[1]))
      local ra = replies[1]:match("\r\nRetry%-After:%s*(%d+)")
      assert.is_not_nil(ra, "503 without Retry-After:\n" .. replies[1])
      assert.are.equal(5, held, "the 6th request reached a handler")
      assert.are.equal(dropped + 1, ua:stats().dropped)
      assert.truthy(logged("server transaction limit reached"), all_logs())
      -- the held ones are answered 200 when released
      replies = {}
      release = true
      pump(function() drain(); return #replies >= 5 end, 1)
      assert.are.equal(5, #replies)
      for _, r in ipairs(replies) do assert.are.equal(200, status_of(r)) end
      -- after Timer J the slots are free again
      assert.is_true(pump(function() return ua:stats().server_transactions == 0 end, 3))
      replies = {}
      assert(s:sendto(request{ method = "MESSAGE", port = port, via = via }, "127.0.0.1", port))
      pump(function() drain(); return #replies > 0 end, 1)
      assert.are.equal(200, replies[1] and status_of(replies[1]))
    end)
  end)
end)
