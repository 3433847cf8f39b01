--- Event state publication (RFC 3903): `ua:publish` keeps a state
-- published (SIP-ETag, SIP-If-Match, refreshes, modify, remove, 412 and
-- 423 recovery), and `sip.publications` is the server side: a store that
-- answers PUBLISH requests, issues entity tags and expires what is not
-- refreshed. Loaded by sip (init.lua); not required directly.
-- @module sip

local core = require "sip.core"
local sched = require "sip.sched"
local state = require "sip.state"
local class = require "sip.class"
local check = require "sip.check"

local current, wait, wake_now, spawn_with, log =
  sched.current, sched.wait, sched.wake_now, sched.spawn_with, sched.log
local UA = class.methods(core.UA)

local M = {}

--- A published event state (`sip.Publication`), made by `ua:publish`.
-- The core refreshes it before it expires; `pub:modify` replaces the
-- state, `pub:remove` withdraws it.
--
-- Fields: `uri`, `event`, `etag` (the entity tag the server gave it),
-- `expires` (seconds granted), `state` (`"published"`, `"removed"`, or
-- `"failed"` after a refresh that could not be recovered, or once the UA
-- was closed), `error` (why it failed: `"closed"`...), `refreshes`.
-- @type Publication
local Publication = {}
local PubMT = { __index = Publication, __name = "sip.Publication" }

local DEFAULT_EXPIRES = 3600

local function refresh_in(e)
  return e > 64 and e - 32 or math.max(e / 2, 0.5)
end

-- one PUBLISH: body nil is a refresh (or a removal with expires 0);
-- etag nil an initial publication. 423 is followed once.
local function send(p, body, expires, etag)
  for _ = 1, 2 do
    local h = { Event = p.event, Expires = tostring(expires) }
    if etag then h["SIP-If-Match"] = etag end
    for k, v in pairs(p._headers or {}) do h[k] = h[k] or v end
    -- one Call-ID and From tag for the life of the publication, as a
    -- registration's: a server (or SIPp) sees one conversation
    p._cseq = p._cseq + 1
    local res, err = p.ua:request("PUBLISH", p.uri, {
      headers = h, body = body, content_type = body and p.content_type or nil,
      auth = p._auth, proxy = p._proxy, timeout = p._timeout,
      from = p._from, to = p._to, call_id = p._call_id, cseq = p._cseq,
    })
    if not res then return nil, err end
    p._cseq = math.max(p._cseq, res.cseq or p._cseq)
    if res.status == 423 and expires > 0 then
      local min = tonumber(res:header("Min-Expires") or "")
      if not min or min <= expires then return nil, "423 Interval Too Brief", res end
      expires = min
      p._asked = min
    elseif res.status >= 200 and res.status < 300 then
      local tag = res:header("SIP-ETag")
      if not tag and expires > 0 then return nil, "2xx without SIP-ETag", res end
      p.etag = tag or p.etag
      p.expires = tonumber(res:header("Expires") or "") or expires
      return res
    else
      return nil, res.status .. " " .. res.reason, res
    end
  end
  return nil, "423 Interval Too Brief"
end

-- a refresh or modification; on 412 the server lost our entity: the whole
-- state goes again without SIP-If-Match (RFC 3903 4.3 / 6)
local function update(p, body)
  local res, err, r = send(p, body, p._asked, p.etag)
  if not res and r and r.status == 412 then
    log("info", "publication " .. p.uri .. ": 412, publishing the state again")
    res, err, r = send(p, p.body, p._asked, nil)
  end
  return res, err, r
end

local function keeper(p)
  while p.state == "published" do
    p._sleeping = current("publication")
    local _ <close> = core.timer(refresh_in(p.expires), p._sleeping)
    wait()
    p._sleeping = nil
    if p.state ~= "published" then break end
    if not state.handlers[p.ua] then
      p.state, p.error = "failed", "closed"       -- the UA was closed
      break
    end
    local res, err = update(p, nil)
    if p.state ~= "published" then break end
    if res then
      p.refreshes = p.refreshes + 1
    else
      p.state, p.error = "failed", err
      log("warn", "publication " .. p.uri .. ": refresh failed: " .. tostring(err))
    end
  end
end

local PUBLISH_OPTS = {
  uri = "string", event = "string", body = "string", content_type = "string",
  expires = "number", headers = "table", auth = "table|function", proxy = "string",
  timeout = "number",
}

--- @type UA

--- Publish an event state (RFC 3903) and keep it published: refreshed
-- before it expires with SIP-If-Match, published whole again when the
-- server answers 412, and 423 Min-Expires followed. Options: `uri`
-- (required: the presentity, e.g. `"sip:alice@example.com"`), `event`
-- (required: `"presence"`...), `body` (required) and `content_type`
-- (`"application/pidf+xml"`), `expires` (3600), `headers`, `auth`,
-- `proxy`, `timeout`.
-- @tab opts the options above
-- @treturn Publication the publication
-- @return[2] nil
-- @treturn[2] string `"489 Bad Event"`, `"timeout"`, ...
-- @treturn[2] ?Message the response, when there was one
function UA:publish(opts)
  state.check_ua(self, "ua:publish")
  opts = check.opts(opts, "ua:publish", 1, PUBLISH_OPTS)
  check.lines(opts, "ua:publish", 1, { "uri", "event", "content_type", "proxy" })
  if not opts.uri or opts.uri:find("%s") then
    check.arg(1, "ua:publish", "option 'uri' must be a SIP URI")
  end
  if not opts.event or not opts.event:match("^[%w%-%.!%%%*_%+`'~]+$") then
    check.arg(1, "ua:publish", "option 'event' must be an event package name")
  end
  if not opts.body then check.arg(1, "ua:publish", "option 'body' is required") end
  if opts.expires and opts.expires <= 0 then
    check.arg(1, "ua:publish", "option 'expires' must be positive")
  end
  current("ua:publish")
  local p = setmetatable({
    ua = self, uri = opts.uri, event = opts.event, body = opts.body,
    content_type = opts.content_type or "application/pidf+xml", refreshes = 0,
    _asked = opts.expires or DEFAULT_EXPIRES, _headers = opts.headers, _auth = opts.auth,
    _proxy = opts.proxy, _timeout = opts.timeout, _call_id = core.token(20), _cseq = 0,
  }, PubMT)
  -- From and To name the presentity (its URI without parameters)
  local aor = opts.uri:match("^([^;?]*)")
  p._from = "<" .. aor .. ">;tag=" .. core.token(10)
  p._to = "<" .. aor .. ">"
  local res, err, r = send(p, p.body, p._asked, nil)
  if not res then return nil, err, r end
  p.state = "published"
  p.response = res
  spawn_with(nil, keeper, p)
  return p
end

--- @type Publication

--- Replace the published state (PUBLISH with the new body and
-- SIP-If-Match).
-- @tab opts `body` (required), `content_type`
-- @treturn Message the 2xx
-- @return[2] nil
-- @treturn[2] string why
function Publication:modify(opts)
  check.self(self, PubMT, "sip.Publication", "pub:modify")
  opts = check.opts(opts, "pub:modify", 1, { body = "string", content_type = "string" })
  if not opts.body then check.arg(1, "pub:modify", "option 'body' is required") end
  if self.state ~= "published" then return nil, "publication is " .. tostring(self.state) end
  local old_body, old_type = self.body, self.content_type
  self.body = opts.body
  self.content_type = opts.content_type or self.content_type
  local res, err, r = update(self, self.body)
  if not res then
    self.body, self.content_type = old_body, old_type
    return nil, err, r
  end
  return res
end

--- Withdraw the state: PUBLISH with Expires 0 and SIP-If-Match.
-- Idempotent.
-- @treturn boolean true
-- @return[2] nil
-- @treturn[2] string why (it is not refreshed any more all the same)
function Publication:remove()
  check.self(self, PubMT, "sip.Publication", "pub:remove")
  if self.state == "removed" then return true end
  local was = self.state
  self.state = "removed"
  if self._sleeping then wake_now(self._sleeping) end
  if was ~= "published" then return true end
  local res, err, r = send(self, nil, 0, self.etag)
  if not res then return nil, err, r end
  return true
end

-- The server side: an event state compositor's store ----------------------

--- A store of published event state (`sip.Publications`), made by
-- `sip.publications`: `store:handle(req)` answers a PUBLISH as RFC 3903
-- section 6 says, and `store:get(uri, event)` returns what is published.
-- @type Publications
local Store = {}
local StoreMT = { __index = Store, __name = "sip.Publications" }

local STORE_OPTS = {
  events = "table", min_expires = "number", max_expires = "number", on_change = "function",
  max_entries = "number",
}

--- Make a store of published state (the server side of RFC 3903).
-- Options: `events` (the packages accepted, e.g. `{ "presence" }`; others
-- get 489; default any), `min_expires` (shorter asks get 423, default
-- 60), `max_expires` (longer ones are cut, default 3600), `max_entries`
-- (past it 503, default 100000), `on_change` (`function(uri, event,
-- store)` when the state of an entity changed: published, modified,
-- removed or expired; it runs in a coroutine of its own).
-- @function publications
-- @tab[opt] opts the options above
-- @treturn Publications the store
function M.publications(opts)
  opts = check.opts(opts, "sip.publications", 1, STORE_OPTS)
  local events
  for i, e in ipairs(opts.events or {}) do
    if type(e) ~= "string" then check.arg(1, "sip.publications", "events[" .. i .. "] must be a string") end
    events = events or {}
    events[e:lower()] = true
  end
  return setmetatable({
    _events = events, _min = opts.min_expires or 60, _max = opts.max_expires or 3600,
    _max_entries = opts.max_entries or 100000, _on_change = opts.on_change,
    _by_tag = {}, _by_key = {}, _n = 0,
  }, StoreMT)
end

-- the entity a PUBLISH is about: its Request-URI without parameters
local function entity(uri)
  return (uri:match("^([^;?]*)") or uri):lower()
end

local function changed(store, uri, event)
  if store._on_change then
    spawn_with(function(ok, tb)
      if not ok then log("error", "publications on_change failed: " .. tostring(tb)) end
    end, store._on_change, uri, event, store)
  end
end

local function drop(store, e)
  store._by_tag[e.etag] = nil
  local list = store._by_key[e.key]
  if list then
    list[e.etag] = nil
    if next(list) == nil then store._by_key[e.key] = nil end
  end
  store._n = store._n - 1
end

-- expired entries go at the next look (and a sweeper wakes for the
-- earliest, so that on_change hears of them in time)
local function sweep(store)
  local now, soonest = core.now(), nil
  for tag, e in pairs(store._by_tag) do
    if e.expires_at <= now then
      drop(store, e)
      changed(store, e.uri, e.event)
      log("debug", "publication " .. tag .. " expired")
    elseif not soonest or e.expires_at < soonest then
      soonest = e.expires_at
    end
  end
  return soonest
end

local function ensure_sweeper(store)
  if store._sweeper then
    wake_now(store._sweeper)        -- the earliest expiry may have moved
    return
  end
  spawn_with(nil, function()
    store._sweeper = current("sip.publications")
    while true do
      local soonest = sweep(store)
      if not soonest then break end
      local _ <close> = core.timer(soonest - core.now() + 0.01, store._sweeper)
      wait()
    end
    store._sweeper = nil
  end)
end

--- Answer a PUBLISH (RFC 3903 section 6): a new state gets a new
-- SIP-ETag; SIP-If-Match with no body refreshes, with a body modifies,
-- with Expires 0 removes; an unknown tag gets 412, a short Expires 423,
-- an event not in `events` 489. Use it as the handler:
-- `ua:on("PUBLISH", function(req) return store:handle(req) end)`.
-- @tparam Message req the PUBLISH
-- @treturn int the status sent
function Store:handle(req)
  check.self(self, StoreMT, "sip.Publications", "store:handle")
  local function answer(status, reason, headers)
    req:reply(status, reason, headers and { headers = headers } or nil)
    return status
  end
  local ev = (req:header("Event") or ""):match("^%s*([^;%s]+)")
  if not ev then return answer(400, "Missing Event header") end
  ev = ev:lower()
  if self._events and not self._events[ev] then
    local allow = {}
    for e in pairs(self._events) do allow[#allow + 1] = e end
    table.sort(allow)
    return answer(489, "Bad Event", { ["Allow-Events"] = table.concat(allow, ", ") })
  end
  local expires = tonumber(req:header("Expires") or "") or self._max
  if expires > 0 and expires < self._min then
    return answer(423, nil, { ["Min-Expires"] = tostring(self._min) })
  end
  expires = math.min(expires, self._max)
  local uri = entity(req.uri)
  local key = uri .. "\0" .. ev
  local match = req:header("SIP-If-Match")
  local has_body = req.body ~= ""
  local e
  if match then
    e = self._by_tag[match]
    if not e or e.key ~= key or e.expires_at <= core.now() then return answer(412) end
    drop(self, e)
    if expires == 0 then
      changed(self, uri, ev)
      return answer(200, nil, { ["SIP-ETag"] = match, Expires = "0" })
    end
    if has_body then
      e.body, e.content_type = req.body, req.content_type
    end
  else
    if not has_body then return answer(400, "PUBLISH without a body or SIP-If-Match") end
    if expires == 0 then return answer(200, nil, { Expires = "0" }) end
    e = { uri = uri, event = ev, key = key, body = req.body, content_type = req.content_type }
  end
  if self._n >= self._max_entries then return answer(503, nil, { ["Retry-After"] = "5" }) end
  e.etag = core.token(16)
  e.expires_at = core.now() + expires
  self._by_tag[e.etag] = e
  local list = self._by_key[key] or {}
  self._by_key[key] = list
  list[e.etag] = e
  self._n = self._n + 1
  ensure_sweeper(self)
  if has_body then changed(self, uri, ev) end
  return answer(200, nil, { ["SIP-ETag"] = e.etag, Expires = tostring(expires) })
end

--- What is published for an entity: a list of `{ body =, content_type =,
-- etag =, expires = }` (seconds left), oldest first by nothing in
-- particular (compose them as the package says).
-- @string uri the entity (a PUBLISH's Request-URI; parameters ignored)
-- @string event the package
-- @treturn table the list, empty when nothing is published
function Store:get(uri, event)
  check.self(self, StoreMT, "sip.Publications", "store:get")
  local out, now = {}, core.now()
  for tag, e in pairs(self._by_key[entity(uri) .. "\0" .. tostring(event):lower()] or {}) do
    if e.expires_at > now then
      out[#out + 1] = { body = e.body, content_type = e.content_type, etag = tag,
                        expires = e.expires_at - now }
    end
  end
  return out
end

return M
