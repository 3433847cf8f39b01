--- sip.test: a scripted SIP peer and a loop driver for users' specs.
--
-- busted has no asynchronous tests, so a spec runs its flow with
-- `sip.test.run(fn, timeout)`: fn runs in a luasip coroutine and the loop
-- turns until it returns (its results are returned) or raises (the error
-- is raised again, with the coroutine's traceback), or until the deadline.
--
-- The peer is a raw socket on 127.0.0.1 (no transaction layer, no
-- automatic answers): it sees every message as sent, retransmissions
-- aside, and sends exactly the text it is given.
--
--     local sip = require "sip"
--     it("rings, answers and hangs up", function()
--       local peer <close> = sip.test.peer{ transport = "udp" }
--       local ua <close> = assert(sip.ua{})
--       sip.test.run(function()
--         sip.spawn(function() ... ua:invite(peer:uri("bob")) ... end)
--         local inv = assert(peer:expect("INVITE", 5))
--         peer:reply(inv, 180)
--         peer:reply(inv, 200, nil, { body = peer:sdp() })
--         assert(peer:expect("ACK"))
--         peer:reply(assert(peer:expect("BYE")), 200)
--       end, 10)
--     end)
--
-- `peer:send(text, vars)` sends raw text after replacing placeholders
-- (SIPp's names): [local_ip] [local_port] [remote_ip] [remote_port]
-- [transport] [branch] (a new one each send) [call_id] [tag] [cseq]
-- [uri] (sip:remote_ip:remote_port) [len] (the body's length), and any
-- [name] that `vars` gives. Its lines are trimmed of blanks and joined
-- with CRLF, the header block ended by an empty line, so it can be
-- written as an indented Lua long string; `vars.exact` sends the text
-- as it is (placeholders still replaced), for malformed messages.
-- @module sip.test

local core = require "sip.core"
local check = require "sip.check"

local M = {}

local sip_mod
local function sip()
  sip_mod = sip_mod or require "sip"
  return sip_mod
end

--- Run fn(...) in a luasip coroutine and turn the loop until it ends or
-- `timeout` seconds (default 30) pass.
-- @func fn the flow
-- @number[opt=30] timeout seconds
-- @return what fn returned; raises fn's error with its traceback, or
-- "sip.test.run: still running after N s"
function M.run(fn, timeout, ...)
  check.type(fn, "function", 1, "sip.test.run")
  check.type(timeout, "number|nil", 2, "sip.test.run")
  timeout = timeout or 30
  local s = sip()
  -- the loop's clock may be old (a spec's own work ran in between): what
  -- fn arms in its first slice must count from now
  local deadline = core.now() + timeout
  local done, ok, res = false, true, nil
  s._spawn_with(function(success, ...)
    done, ok = true, success
    res = table.pack(...)
  end, fn, ...)
  while not done do
    if core.now() > deadline then
      error("sip.test.run: still running after " .. timeout .. " s", 2)
    end
    core.step(0.05)
  end
  if not ok then error(res[1], 0) end
  return table.unpack(res, 1, res.n)
end

---------------------------------------------------------------------------
-- The peer

local Peer = {}
Peer.__index = Peer
Peer.__name = "sip.test.Peer"

local REASONS = {
  [100] = "Trying", [180] = "Ringing", [181] = "Call Is Being Forwarded", [182] = "Queued",
  [183] = "Session Progress", [200] = "OK", [202] = "Accepted", [301] = "Moved Permanently",
  [302] = "Moved Temporarily", [400] = "Bad Request", [401] = "Unauthorized", [403] = "Forbidden",
  [404] = "Not Found", [405] = "Method Not Allowed", [407] = "Proxy Authentication Required",
  [408] = "Request Timeout", [480] = "Temporarily Unavailable",
  [481] = "Call/Transaction Does Not Exist", [486] = "Busy Here", [487] = "Request Terminated",
  [488] = "Not Acceptable Here", [491] = "Request Pending", [500] = "Server Internal Error",
  [501] = "Not Implemented", [503] = "Service Unavailable", [603] = "Decline",
}

local origin = setmetatable({}, { __mode = "k" })  -- message -> the address it came from

local peer_options = { transport = "string", host = "string", port = "integer", user = "string",
                       retransmissions = "boolean" }

--- A scripted peer listening on `host` (default 127.0.0.1) and a free
-- port (or `port`).
-- @tab[opt] opts `transport` ("udp", default, or "tcp"), `host`, `port`,
-- `user` (the user part of its URIs, default "peer"), `retransmissions`
-- (true: a message identical to one already received is delivered again;
-- by default it is dropped)
-- @return the peer; raises when the socket cannot be opened
function M.peer(opts)
  opts = check.opts(opts, "sip.test.peer", 1, peer_options)
  local transport = (opts.transport or "udp"):lower()
  if transport ~= "udp" and transport ~= "tcp" then
    check.arg(1, "sip.test.peer", "option 'transport' must be \"udp\" or \"tcp\"")
  end
  local sock, err = core.socket.open(transport, opts.host or "127.0.0.1", opts.port or 0)
  if not sock then check.arg(1, "sip.test.peer", "cannot open the socket: " .. err) end
  local addr = sock:address()
  local ip, port = addr:match("^%[?(.-)%]?:(%d+)$")
  local self = setmetatable({
    sock = sock, transport = transport, ip = ip, port = tonumber(port), addr = addr,
    user = opts.user or "peer", dedupe = not opts.retransmissions,
    queue = {}, seen = {}, nseen = 0, streams = {}, tags = {},
    call_id = core.token(20) .. "@" .. ip, tag = core.token(10), cseq = 1,
    remote = nil,          -- the last address a message came from
    garbage = {},          -- what arrived and did not parse: { text =, why =, from = }
  }, Peer)
  return self
end

local function host_port(addr)
  local h, p = addr:match("^(%[.-%]):(%d+)$")
  if not h then h, p = addr:match("^(.*):(%d+)$") end
  return h, p
end

--- The peer's SIP URI, with an optional user (default: opts.user).
function Peer:uri(user)
  local h = self.ip:find(":") and ("[" .. self.ip .. "]") or self.ip
  local u = "sip:" .. (user or self.user) .. "@" .. h .. ":" .. self.port
  if self.transport == "tcp" then u = u .. ";transport=tcp" end
  return u
end

--- The peer's address, "ip:port".
function Peer:address()
  return self.addr
end

-- a whole message arrived from `from`
local function deliver(self, text, from)
  if text:match("^[\r\n]*$") then return end              -- keep-alive
  if self.dedupe then
    if self.seen[text] then return end
    if self.nseen > 4096 then self.seen, self.nseen = {}, 0 end
    self.seen[text] = true
    self.nseen = self.nseen + 1
  end
  local msg, why = core.parse(text)
  if not msg then
    self.garbage[#self.garbage + 1] = { text = text, why = why, from = from }
    return
  end
  origin[msg] = from
  self.remote = from
  self.queue[#self.queue + 1] = msg
end

-- TCP: frame the bytes of each connection by Content-Length
local function stream_in(self, data, from)
  if data == "" then
    self.streams[from] = nil
    return
  end
  local buf = (self.streams[from] or "") .. data
  while true do
    buf = buf:gsub("^[\r\n]+", "")
    local hend = buf:find("\r\n\r\n", 1, true)
    if not hend then break end
    local head = buf:sub(1, hend + 3)
    local cl = tonumber(head:match("\n[Cc]ontent%-[Ll]ength%s*:%s*(%d+)") or
                        head:match("\n[Ll]%s*:%s*(%d+)") or "0")
    if #buf < hend + 3 + cl then break end
    deliver(self, buf:sub(1, hend + 3 + cl), from)
    buf = buf:sub(hend + 4 + cl)
  end
  self.streams[from] = buf ~= "" and buf or nil
end

-- take whatever the socket has queued
local function drain(self)
  while true do
    local data, from = self.sock:recv()
    if not data then return end
    if self.transport == "tcp" then stream_in(self, data, from) else deliver(self, data, from) end
  end
end

local function matcher(what)
  if what == nil then return function() return true end end
  if type(what) == "function" then return what end
  if math.type(what) == "integer" then
    return function(m) return m.status == what end
  end
  if type(what) == "string" then
    local class = what:match("^(%d)xx$")
    if class then
      return function(m) return m.status ~= nil and m.status // 100 == tonumber(class) end
    end
    local method = what:upper()
    return function(m) return m.is_request and m.method == method end
  end
  return nil
end

--- Wait for a message: the first received (and not yet taken) that
-- matches `what`. Messages that do not match stay queued for a later
-- expect; `peer:queued()` lists them.
-- @param[opt] what a method ("INVITE"), a status (180), a class ("2xx"),
-- a function(msg) -> boolean, or nil for any message
-- @number[opt=5] timeout seconds
-- @return the sip.Message
-- @return[2] nil
-- @treturn[2] string "timeout" or "closed"
function Peer:expect(what, timeout)
  local match = matcher(what)
  if not match then
    check.arg(1, "peer:expect", "a method, a status, \"2xx\", a function or nil expected, got " .. type(what))
  end
  check.type(timeout, "number|nil", 2, "peer:expect")
  local s = sip()
  local co = s._current("peer:expect")
  local deadline = core.now() + (timeout or 5)
  while true do
    if not self.sock then return nil, "closed" end
    drain(self)
    for i, m in ipairs(self.queue) do
      if match(m) then
        table.remove(self.queue, i)
        return m
      end
    end
    local left = deadline - core.now()
    if left <= 0 then return nil, "timeout" end
    self.sock:wait(co, left)
    local ok, why = s._wait()
    if self.sock then self.sock:cancel() end
    -- ended early from outside (sip.first, the hangup of a call it belongs to)
    if ok == nil then return nil, why or "cancelled" end
    if not ok and core.now() >= deadline then
      drain(self)
      for i, m in ipairs(self.queue) do
        if match(m) then
          table.remove(self.queue, i)
          return m
        end
      end
      return nil, self.sock and "timeout" or "closed"
    end
  end
end

--- The messages received and not taken by expect, oldest first.
function Peer:queued()
  drain(self)
  return { table.unpack(self.queue) }
end

-- CRLF line endings, blanks around each line trimmed
local function normalize(text)
  local lines = {}
  text = text:gsub("\r\n", "\n")
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = line:match("^%s*(.-)%s*$") end
  -- leading blank lines go; the header block ends with one empty line
  while lines[1] == "" do table.remove(lines, 1) end
  local out, blank = {}, nil
  for i, l in ipairs(lines) do
    if l == "" and not blank then blank = i end
    out[i] = l
  end
  if not blank then
    while out[#out] == "" do out[#out] = nil end
    return table.concat(out, "\r\n") .. "\r\n\r\n"
  end
  local head = table.concat(out, "\r\n", 1, blank - 1)
  local body_lines = {}
  for i = blank + 1, #out do body_lines[#body_lines + 1] = out[i] end
  while body_lines[#body_lines] == "" do body_lines[#body_lines] = nil end
  local body = #body_lines > 0 and (table.concat(body_lines, "\r\n") .. "\r\n") or ""
  return head .. "\r\n\r\n" .. body
end

local function dest(self, to, fname)
  to = to or self.remote
  if not to then
    check.arg(2, fname, "no destination: give 'to' (\"ip:port\"), or receive a message first", 3)
  end
  -- a SIP URI names its host and port
  local h, p = to:match("^sips?:[^@]*@?(%[?[%w%.:%-]-%]?):(%d+)")
  if h and p then to = h .. ":" .. p end
  return to
end

--- Send raw text, its placeholders replaced (see the module's header).
-- @string text
-- @tab[opt] vars values for placeholders; `to` ("ip:port" or a SIP URI)
-- is where it goes (default: where the last message came from); `exact`
-- (true: no line clean-up)
-- @treturn string the text sent
-- @return[2] nil
-- @treturn[2] string why (a transport error)
function Peer:send(text, vars)
  check.type(text, "string", 1, "peer:send")
  check.type(vars, "table|nil", 2, "peer:send")
  if not self.sock then return nil, "closed" end
  vars = vars or {}
  local to = dest(self, vars.to, "peer:send")
  local rip, rport = host_port(to)
  rip = rip:gsub("^%[(.*)%]$", "%1")
  local lip = self.ip:find(":") and ("[" .. self.ip .. "]") or self.ip
  local builtin = {
    local_ip = lip, local_port = tostring(self.port), remote_ip = rip, remote_port = rport,
    transport = self.transport:upper(), call_id = self.call_id, tag = self.tag,
    cseq = tostring(self.cseq), uri = "sip:" .. (rip:find(":") and ("[" .. rip .. "]") or rip) .. ":" .. rport,
  }
  local out = vars.exact and text or normalize(text)
  local bad
  out = out:gsub("%[([%a_][%w_]*)%]", function(name)
    if name == "len" then return nil end
    if name == "branch" then return "z9hG4bK" .. core.token(16) end
    local v = vars[name]
    if v == nil then v = builtin[name] end
    if v == nil then bad = bad or name; return nil end
    return tostring(v)
  end)
  if bad then check.arg(1, "peer:send", "unknown placeholder [" .. bad .. "]") end
  local hend = out:find("\r\n\r\n", 1, true)
  local blen = hend and (#out - hend - 3) or 0
  out = out:gsub("%[len%]", tostring(blen))
  local ok, err = self.sock:send(out, to)
  if not ok then return nil, err end
  return out
end

local function dialog_creating(method)
  return method == "INVITE" or method == "SUBSCRIBE" or method == "REFER" or method == "NOTIFY"
end

local reply_options = { headers = "table", body = "string", content_type = "string", tag = "string",
                        contact = "string|boolean", to = "string" }

--- Answer a request received by expect.
-- @tparam sip.Message req
-- @int status
-- @string[opt] reason default: the usual phrase
-- @tab[opt] opts `headers` (name -> value or list of values), `body`,
-- `content_type` (default application/sdp for a body starting "v=",
-- else text/plain), `tag` (our To tag; default one per Call-ID, so a 180
-- and the 200 share it), `contact` (a value, or false for none; default
-- the peer's URI on 1xx/2xx to dialog-creating requests), `to` (where to)
-- @treturn string the text sent
-- @return[2] nil
-- @treturn[2] string why
function Peer:reply(req, status, reason, opts)
  if type(req) ~= "userdata" or not req.is_request then
    check.arg(1, "peer:reply", "a request received by peer:expect expected")
  end
  check.type(status, "integer", 2, "peer:reply")
  if status < 100 or status > 699 then check.arg(2, "peer:reply", "status must be 100..699") end
  check.type(reason, "string|nil", 3, "peer:reply")
  opts = check.opts(opts, "peer:reply", 4, reply_options)
  local lines = { "SIP/2.0 " .. status .. " " .. (reason or REASONS[status] or "Unknown") }
  for _, v in ipairs(req:headers("Via")) do lines[#lines + 1] = "Via: " .. v end
  lines[#lines + 1] = "From: " .. req.from
  local to = req.to
  if status > 100 and not req.to_tag then
    local tag = opts.tag
    if not tag then
      tag = self.tags[req.call_id] or core.token(10)
      self.tags[req.call_id] = tag
    end
    to = to .. ";tag=" .. tag
  end
  lines[#lines + 1] = "To: " .. to
  lines[#lines + 1] = "Call-ID: " .. req.call_id
  lines[#lines + 1] = "CSeq: " .. req.cseq .. " " .. req.cseq_method
  local contact = opts.contact
  if contact == nil or contact == true then
    contact = status > 100 and status < 300 and dialog_creating(req.method) and ("<" .. self:uri() .. ">")
  end
  if contact then lines[#lines + 1] = "Contact: " .. contact end
  for name, v in pairs(opts.headers or {}) do
    if type(v) == "table" then
      for _, x in ipairs(v) do lines[#lines + 1] = name .. ": " .. tostring(x) end
    else
      lines[#lines + 1] = name .. ": " .. tostring(v)
    end
  end
  local body = opts.body or ""
  if body ~= "" then
    lines[#lines + 1] = "Content-Type: " .. (opts.content_type or
      (body:match("^v=") and "application/sdp" or "text/plain"))
  end
  lines[#lines + 1] = "Content-Length: " .. #body
  local text = table.concat(lines, "\r\n") .. "\r\n\r\n" .. body
  for _, l in ipairs(lines) do
    if l:find("[\r\n]") then check.arg(4, "peer:reply", "a header value contains CR or LF") end
  end
  if not self.sock then return nil, "closed" end
  local ok, err = self.sock:send(text, opts.to or origin[req] or dest(self, nil, "peer:reply"))
  if not ok then return nil, err end
  return text
end

--- A minimal SDP (PCMU, PCMA, telephone-event) on the peer's address, for
-- an answer or an offer.
-- @int[opt=4000] port the audio port it names
function Peer:sdp(port)
  local fam = self.ip:find(":") and "IP6" or "IP4"
  return table.concat({
    "v=0", "o=peer 1 1 IN " .. fam .. " " .. self.ip, "s=-", "c=IN " .. fam .. " " .. self.ip, "t=0 0",
    "m=audio " .. (port or 4000) .. " RTP/AVP 0 8 101", "a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-15", "a=sendrecv", "" }, "\r\n")
end

--- Close the socket (idempotent); `local peer <close> = ...` works.
function Peer:close()
  if self.sock then
    self.sock:close()
    self.sock = nil
  end
end
Peer.__close = Peer.close

function Peer:__tostring()
  return "sip.test.Peer (" .. self.transport .. " " .. self.addr .. (self.sock and "" or ", closed") .. ")"
end

return M
