--- A registrar, location service and small PBX in one script.
--
--   usage: luasip examples/registrar.lua udp:127.0.0.1:5060
--
-- Phones REGISTER with digest authentication (users in USERS below), one
-- or more contacts per user, each with its own expiry and q-value. A call
-- to a registered user rings all of that user's contacts at once.
--
-- Calls: B2BUA-style forking, not a 302 redirect. A redirect would hand
-- the contact list to the caller, and every caller would have to follow
-- 3xx and fork by itself; as a B2BUA the PBX rings every contact in
-- parallel (sip.b2bua with the list of contacts): their ringing reaches
-- the caller, the first to answer wins and its SDP answer goes back to
-- the caller, the other legs are cancelled (or hung up if they answer too
-- late), and when either side hangs up the other is hung up too. When no
-- contact answers, the caller gets their failure (486, 408...). Only
-- signalling is bridged: there is no media relay (media = "direct"), the
-- phones send RTP to each other.
-- Limits: an INVITE without SDP is refused with 488 (the offer would come
-- in the callee's 200, too late to pass through).
--
-- Callers authenticate too (407): only USERS may place calls. One domain:
-- bindings are kept per user name, whatever the host of the AOR.
local sip = require "sip"

local USERS = { alice = "alice-secret", bob = "bob-secret", carol = "carol-secret",
                dave = "dave-secret" }
local REALM = "luasip"
local MIN_EXPIRES, MAX_EXPIRES, DEFAULT_EXPIRES = 60, 3600, 3600
local RING_TIME = 30

local listen = ... or "udp:127.0.0.1:5060"
local ua = assert(sip.ua{ listen = listen, user_agent = "luasip-registrar" })
print("registrar on " .. ua:address())

-- location service: user -> { [contact URI] = { uri, q, expires_at, call_id, cseq } }
local bindings = {}

-- the live bindings of a user, highest q first (expired ones are dropped here)
local function lookup(user)
  local list, now = {}, sip.now()
  for uri, b in pairs(bindings[user] or {}) do
    if b.expires_at <= now then bindings[user][uri] = nil else list[#list + 1] = b end
  end
  table.sort(list, function(x, y) return x.q > y.q end)
  return list
end

-- Contact values split at commas outside <...> and "...":
-- { { uri =, q =, expires = } ... }, and true when one of them was "*"
local function contacts_of(req)
  local list, star = {}, false
  for _, value in ipairs(req:headers("Contact")) do
    local items, depth, quoted, start = {}, 0, false, 1
    for i = 1, #value + 1 do
      local ch = value:sub(i, i)
      if ch == '"' then quoted = not quoted
      elseif ch == "<" and not quoted then depth = depth + 1
      elseif ch == ">" and not quoted then depth = depth - 1
      elseif (ch == "," or ch == "") and not quoted and depth == 0 then
        items[#items + 1] = value:sub(start, i - 1):match("^%s*(.-)%s*$")
        start = i + 1
      end
    end
    for _, item in ipairs(items) do
      if item == "*" then
        star = true
      else
        local uri, params = item:match("<([^>]*)>(.*)$")
        if not uri then uri, params = item:match("^([^;]+)(.*)$") end
        params = (params or ""):lower()
        list[#list + 1] = { uri = uri,
          q = tonumber(params:match(";%s*q%s*=%s*([%d.]+)")) or 1,
          expires = tonumber(params:match(";%s*expires%s*=%s*(%d+)")) }
      end
    end
  end
  return list, star
end

local function user_of(uri)
  return uri and uri:match("^sips?:([^@;:]+)@")
end

ua:on("REGISTER", function(req)
  local user = req:authenticate{ realm = REALM, credentials = USERS }
  if not user then return end                       -- the 401 was sent
  if user_of(req.to_uri) ~= user then return 403, "Not Your AOR" end
  local contacts, star = contacts_of(req)
  local header = tonumber(req:header("Expires"))
  if star then                                      -- "Contact: *" removes all
    if #contacts > 0 or header ~= 0 then return 400, "Bad Wildcard" end
    bindings[user] = nil
    print(user .. ": all bindings removed")
  end
  local mine = bindings[user] or {}
  for _, c in ipairs(contacts) do                   -- check all before changing any
    c.expires = math.min(c.expires or header or DEFAULT_EXPIRES, MAX_EXPIRES)
    if c.expires > 0 and c.expires < MIN_EXPIRES then
      return 423, "Interval Too Brief", { headers = { ["Min-Expires"] = tostring(MIN_EXPIRES) } }
    end
    local old = mine[c.uri]
    if old and old.call_id == req.call_id and old.cseq >= req.cseq then
      return 500, "Out of Order"                    -- RFC 3261 10.3 step 7
    end
  end
  for _, c in ipairs(contacts) do
    if c.expires == 0 then
      if mine[c.uri] then print(user .. ": removed " .. c.uri) end
      mine[c.uri] = nil
    else
      if not mine[c.uri] then print(user .. ": added " .. c.uri) end
      mine[c.uri] = { uri = c.uri, q = c.q, expires_at = sip.now() + c.expires,
                      call_id = req.call_id, cseq = req.cseq }
    end
  end
  bindings[user] = next(mine) and mine or nil
  -- the 200 lists every current binding with the time it has left
  local list = {}
  for _, b in ipairs(lookup(user)) do
    list[#list + 1] = string.format("<%s>;expires=%d;q=%g", b.uri,
                                    math.ceil(b.expires_at - sip.now()), b.q)
  end
  return 200, nil, { headers = { Contact = list, Date = os.date("!%a, %d %b %Y %H:%M:%S GMT") } }
end)

ua:on("INVITE", function(call)
  local caller = call:authenticate{ realm = REALM, credentials = USERS, proxy = true }
  if not caller then return end                     -- the 407 was sent
  local callee = user_of(call.invite.uri)
  if not USERS[callee] then return 404 end
  local contacts = {}
  for i, b in ipairs(lookup(callee)) do contacts[i] = b.uri end
  if #contacts == 0 then return 480 end
  print(caller .. " calls " .. callee .. " (" .. #contacts .. " contacts)")
  -- every contact rings; the phones see the caller's From (with a tag of ours)
  local from = call.invite.from:gsub(";%s*[Tt][Aa][Gg]=[^;]*", "")
  local by, why = sip.b2bua(call, contacts, { media = "direct", timeout = RING_TIME, from = from })
  if by then
    print(caller .. " to " .. callee .. ": ended by " .. (by == "a" and caller or callee) .. " (" .. why .. ")")
  else
    print(caller .. " to " .. callee .. ": not connected (" .. why .. ")")
  end
end)
