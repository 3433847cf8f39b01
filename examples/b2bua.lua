-- usage: luasip examples/b2bua.lua [listen] [-m relay|direct] [-t user=uri]... [-n calls]
--
-- A routing B2BUA: each incoming call is looked up in a dial plan by the
-- user part of its Request-URI, and put through to the target (or rung at
-- once on several targets: the first to answer wins, the others stop
-- ringing). Ringing and early media reach the caller, the caller is
-- answered when the callee answers, and either side hanging up ends both
-- calls. A user with no route is answered 404.
--
--   luasip examples/b2bua.lua udp:127.0.0.1:5060 -t bob=sip:bob@127.0.0.1:5070
--   then call sip:bob@127.0.0.1:5060 from a softphone
--
--   -m relay    media anchored here: each side talks RTP to us (the default)
--   -m direct   the SDP passes through: RTP flows from phone to phone
--   -t user=uri a route for that user, before the dial plan below; give the
--               same user several times to ring several phones at once
--   -n calls    stop after that many calls (default: serve until Ctrl-C)
--
-- One line per call, once it is over, e.g.
--   b2bua: call 1 from sip:alice@127.0.0.1 to bob: ended by the caller (bye)
--   b2bua: call 2 from sip:alice@127.0.0.1 to sales: not connected (486 Busy Here)
--   b2bua: call 3 from sip:alice@127.0.0.1 to zoe: no route (404)

local sip = require "sip"

-- The dial plan: the Request-URI's user is matched against each Lua
-- pattern in turn, and the first that matches gives the target, or a
-- list of targets rung in parallel. In a target, %1, %2... are the
-- pattern's captures and %0 the whole match.
local DIAL_PLAN = {
  { "^echo$",  "sip:echo@127.0.0.1:5070" },
  { "^sales$", { "sip:ann@127.0.0.1:5071", "sip:bob@127.0.0.1:5072" } },   -- both ring
  { "^9(%d+)$", "sip:%1@127.0.0.1:5080" },                                -- a gateway, without the 9
}
local RING_TIME = 60                  -- seconds a target may ring
local MEDIA_PORTS = "16384-32767"     -- RTP ports for relayed media

local USAGE = "usage: luasip examples/b2bua.lua [listen] [-m relay|direct] [-t user=uri]... [-n calls]"

local function usage()
  io.stderr:write(USAGE, "\n")
  os.exit(2)
end

local listen, mode, max_calls = "udp:127.0.0.1:5060", "relay", nil
local routes = {}                     -- from -t, ahead of the dial plan
do
  local argv, i = arg or {}, 1
  while i <= #argv do
    local a, v = argv[i], argv[i + 1]
    if a == "-m" and (v == "relay" or v == "direct") then
      mode, i = v, i + 1
    elseif a == "-n" and tonumber(v) then
      max_calls, i = tonumber(v), i + 1
    elseif a == "-t" and v and v:match("^[^=]+=sips?:") then
      local user, uri = v:match("^([^=]+)=(.*)$")
      local pattern = "^" .. user:gsub("%p", "%%%0") .. "$"
      local found
      for _, r in ipairs(routes) do
        if r[1] == pattern then found = r end
      end
      if found then
        table.insert(found[2], uri)
      else
        routes[#routes + 1] = { pattern, { uri } }
      end
      i = i + 1
    elseif a:match("^%a+:.+:%d+$") then
      listen = a
    else
      usage()
    end
    i = i + 1
  end
end
for _, r in ipairs(DIAL_PLAN) do routes[#routes + 1] = r end

local host = listen:match("^%a+:%[?([^%]]+)%]?:%d+$")
local ua = assert(sip.ua{ listen = listen, user_agent = "luasip-b2bua",
  media = { addr = (host == "0.0.0.0") and "127.0.0.1" or host, ports = MEDIA_PORTS,
            codecs = { "PCMU", "PCMA", "telephone-event" } } })
print("b2bua: listening on " .. ua:address() .. ", media " .. mode)

-- a target with the captures of `pattern` in `user` put in
local function expand(target, user, pattern)
  local found = { user:find(pattern) }
  return (target:gsub("%%(%d)", function(d)
    d = tonumber(d)
    if d == 0 then return user:sub(found[1], found[2]) end
    return found[d + 2] or ""
  end))
end

-- the URIs to call for a user, or nil when no route matches
local function lookup(user)
  for _, r in ipairs(routes) do
    local pattern, targets = r[1], r[2]
    if user:find(pattern) then
      local uris = {}
      for i, t in ipairs(type(targets) == "table" and targets or { targets }) do
        uris[i] = expand(t, user, pattern)
      end
      return uris
    end
  end
end

local served = 0
ua:on("INVITE", function(call)
  served = served + 1
  local n = served
  local user = call.invite.uri:match("^sips?:([^@;:]+)@") or ""
  local outcome
  local targets = lookup(user)
  if not targets then
    call:reject(404)
    outcome = "no route (404)"
  else
    -- the callee sees the caller's From (a tag of our own goes with it)
    local from = call.invite.from:gsub(";%s*[Tt][Aa][Gg]=[^;]*", "")
    local by, why = sip.b2bua(call, targets, { media = mode, timeout = RING_TIME, from = from })
    if by then
      outcome = "ended by the " .. (by == "a" and "caller" or "callee") .. " (" .. why .. ")"
    else
      outcome = "not connected (" .. why .. ")"
    end
  end
  print("b2bua: call " .. n .. " from " .. call.invite.from_uri .. " to " .. user .. ": " .. outcome)
  if max_calls and n >= max_calls then ua:close() end
end)
