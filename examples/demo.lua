-- examples/demo.lua: two user agents talk to each other on loopback, in one
-- process, and every SIP message that goes over the wire is printed as a
-- line of a ladder diagram.
--
--   ./bin/luasip examples/demo.lua        (or: make demo)
--
-- The script body runs as a coroutine (bin/luasip does that), so a request
-- reads as a plain function call that returns the final response. Each
-- exchange is one entry of `exchanges` below: add yours to the list.

local sip = require "sip"

---------------------------------------------------------------------------
-- The two parties. Port 0 lets the system pick free ports.

local server = assert(sip.ua{ listen = "udp:127.0.0.1:0", user_agent = "demo-server" })
local client = assert(sip.ua{ listen = "udp:127.0.0.1:0", user_agent = "demo-client" })

-- a port where nobody listens: bind one, then let it go
local nobody
do
  local ua = assert(sip.ua{ listen = "udp:127.0.0.1:0" })
  nobody = ua:address():match("^%a+:(.*)$")
  ua:close()
end

-- the server's handlers: each request runs its handler in a new coroutine
server:on("MESSAGE", function(req)
  print(string.format("%12s  server got a MESSAGE from %s: %q", "", req.from_uri, req.body))
  req:reply(202, "Accepted")
end)
-- OPTIONS needs no handler: the core answers 200 with Allow. A method the
-- server does not serve gets 405, one the core does not know 501.

---------------------------------------------------------------------------
-- The ladder: sip.trace reports every message sent and received with the
-- peer's address. Each message is printed once, when it is sent: a
-- request's sender is in its top Via, a response comes from where the
-- request with the same Via branch went.

local names = {}                 -- "host:port" -> party name
local rank, columns = {}, 0      -- party name -> column (left to right)

local function party(ua_or_addr, name)
  columns = columns + 1
  rank[name] = columns
  if type(ua_or_addr) == "string" then
    names[ua_or_addr] = name
    return
  end
  local i = 1
  while ua_or_addr:address(i) do
    names[ua_or_addr:address(i):match("^%a+:(.*)$")] = name
    i = i + 1
  end
end
party(client, "client")
party(server, "server")
party(nobody, "nobody")

local function header(text, long, compact)
  for line in text:gmatch("[^\r\n]+") do
    local name, value = line:match("^([%w%-]+)%s*:%s*(.*)$")
    if name then
      name = name:lower()
      if name == long or name == compact then return value end
    end
  end
end

local sent_to = {}               -- Via branch of a request -> receiver
local t0                         -- times are printed from here

local function ladder(dir, proto, peer, text)
  if dir ~= "out" then return end
  local first = text:match("^[^\r\n]*")
  local via = header(text, "via", "v") or ""
  local branch = via:match(";%s*branch=([^;,%s]+)")
  local from, to, what
  if first:match("^SIP/2%.0 ") then
    to = names[peer] or peer
    from = branch and sent_to[branch] or "?"
    local cseq = header(text, "cseq") or ""
    what = first:sub(9) .. "  (" .. (cseq:match("%a+$") or "?") .. ")"
  else
    from = names[via:match("^%S+%s+([^;%s]+)")] or "?"
    to = names[peer] or peer
    if branch then sent_to[branch] = to end
    what = first:gsub("%s+SIP/2%.0$", "")
  end
  -- the party more to the left is printed first; the arrow shows the way
  local left, right, arrow = from, to, "-->"
  if (rank[from] or 99) > (rank[to] or 99) then left, right, arrow = to, from, "<--" end
  print(string.format("%9.1f ms  %-6s %s %-6s  %s  %s", (sip.now() - t0) * 1000,
                      left, arrow, right, proto, what))
  local body = text:match("\r?\n\r?\n(.*)$")
  if body and body ~= "" then
    print(string.format("%12s  %-15s  body: %q", "", "", body))
  end
end

---------------------------------------------------------------------------
-- The exchanges, one section each.

local function outcome(res, err, started)
  local ms = (sip.now() - started) * 1000
  if res then
    return string.format("=> %d %s, after %.1f ms", res.status, res.reason or "", ms)
  end
  return string.format("=> failed: %s, after %.1f ms", err, ms)
end

local exchanges = {
  { "OPTIONS: is the server there, and what does it allow?", function()
    local started = sip.now()
    local res, err = client:request("OPTIONS", server:uri(), { timeout = 5 })
    print(outcome(res, err, started))
    if res then print("   Allow: " .. tostring(res:header("Allow"))) end
    return res ~= nil and res.status == 200
  end },

  { "MESSAGE with a body: the server prints it and answers 202", function()
    local started = sip.now()
    local res, err = client:request("MESSAGE", server:uri("bob"), {
      body = "Hello, Bob!", content_type = "text/plain", timeout = 5,
      headers = { Subject = "demo" } })
    print(outcome(res, err, started))
    return res ~= nil and res.status == 202
  end },

  { "INFO, which the server does not serve: a 405 is a result, not a failure", function()
    local started = sip.now()
    local res, err = client:request("INFO", server:uri("bob"), { timeout = 5 })
    print(outcome(res, err, started))
    return res ~= nil and res.status == 405
  end },

  { "OPTIONS to a dead port: the ICMP error fails the request at once", function()
    local started = sip.now()
    local res, err = client:request("OPTIONS", "sip:" .. nobody, { timeout = 5 })
    print(outcome(res, err, started))
    return res == nil and sip.now() - started < 1
  end },
}

---------------------------------------------------------------------------

sip.trace(ladder)
t0 = sip.now()

print(string.format("client %s, server %s, nobody at %s", client:address(), server:address(), nobody))
local failed = 0
for i, ex in ipairs(exchanges) do
  print(string.format("\n== %d. %s", i, ex[1]))
  if not ex[2]() then
    failed = failed + 1
    print("   (not what the demo expected)")
  end
end

sip.trace(false)
client:close()
server:close()
print(failed == 0 and "\ndone" or ("\n" .. failed .. " exchange(s) went wrong"))
if failed > 0 then os.exit(1) end
