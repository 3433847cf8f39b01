--- A presence server: phones publish their state, watchers subscribe to it.
--
--   usage: luasip examples/presence.lua [listen]
--   e.g.   luasip examples/presence.lua udp:127.0.0.1:5060
--
-- What a softphone's buddy list or a BLF key needs (RFC 3856, 3903):
--
-- - PUBLISH, event presence: a phone says how it is (a PIDF document);
--   sip.publications keeps it, with its entity tag and expiry.
-- - SUBSCRIBE, event presence: a watcher asks for someone's state. It gets
--   the current state in the first NOTIFY, then a NOTIFY at every change,
--   until it unsubscribes or the subscription expires. Other event
--   packages get 489 Bad Event.
-- - REGISTER: answered 200 (no authentication, no location service), so
--   that phones which register before they publish are content.
--
-- An entity (a presentity) is the Request-URI of the PUBLISH or SUBSCRIBE
-- without its parameters, lower-cased: a phone that publishes to
-- sip:alice@example.com is seen by who subscribes to sip:alice@example.com.
-- Nothing published (or all of it expired) reads as closed.
--
-- One line is printed per change of state and per NOTIFY sent, e.g.
--   presence: sip:alice@127.0.0.1:5060 is open
--   presence: notify sip:alice@127.0.0.1:5060 open to sip:bob@127.0.0.1: ok
local sip = require "sip"

local listen = ... or "udp:127.0.0.1:5060"
local MAX_EXPIRES = 3600

local ua = assert(sip.ua{ listen = listen, user_agent = "luasip-presence" })
print("presence: listening on " .. ua:address())

-- The entity a request is about: the same key sip.publications files a
-- PUBLISH under, so that a SUBSCRIBE finds what was published.
local function entity(uri)
  return (uri:match("^([^;?]*)") or uri):lower()
end

local function xml_escape(s)
  return (s:gsub("[&<>\"]", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;" }))
end

-- A PIDF document (RFC 3863) saying `basic` ("open" or "closed") for uri.
local function pidf(uri, basic)
  return table.concat({
    '<?xml version="1.0" encoding="UTF-8"?>',
    '<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="' .. xml_escape(uri) .. '">',
    '  <tuple id="luasip">',
    '    <status><basic>' .. basic .. '</basic></status>',
    '  </tuple>',
    '</presence>',
  }, "\r\n") .. "\r\n"
end

-- What a PIDF says in its first <basic> element, for the log.
local function basic_of(body)
  return body:match("<[%w%-%.]*:?basic%s*>%s*([^<%s]+)") or "?"
end

-- Published state, by entity and event. on_change runs (in a coroutine of
-- its own) whenever an entity's state was published, modified, removed or
-- expired; it is defined further down, with the watchers.
local on_change
local store = sip.publications{
  events = { "presence" },
  max_expires = MAX_EXPIRES,
  on_change = function(uri) on_change(uri) end,
}

-- The state to send for an entity: the last published body. A presence
-- agent would compose several publications (one per device) into one
-- document; this one takes the freshest, the one that expires last, which
-- is the last one published or refreshed. Nothing published: closed.
local function current(uri)
  local last
  for _, p in ipairs(store:get(uri, "presence")) do
    if not last or p.expires > last.expires then last = p end
  end
  if last then return last.body, last.content_type end
  return pidf(uri, "closed"), "application/pidf+xml"
end

-- Watchers, by entity: watchers[uri] = { [sub] = true }. A subscription is
-- in its entity's table from the moment it is accepted until it ends.
local watchers = {}

local function watch(uri, sub)
  local set = watchers[uri] or {}
  watchers[uri] = set
  set[sub] = true
end

local function unwatch(uri, sub)
  local set = watchers[uri]
  if not set then return end
  set[sub] = nil
  if next(set) == nil then watchers[uri] = nil end
end

-- One line per NOTIFY sent: entity, state, watcher, outcome.
local function report(uri, body, sub, ok, err)
  print(string.format("presence: notify %s %s to %s: %s", uri, basic_of(body),
                      sub.request.from_uri, ok and "ok" or ("failed (" .. tostring(err) .. ")")))
end

-- A change of an entity's state goes to each of its watchers, each NOTIFY
-- in a coroutine of its own so that a watcher slow to answer delays no
-- other. (A NOTIFY that fails with 481 or a timeout ends its subscription:
-- its handler below then drops the watcher.)
on_change = function(uri)
  local body, content_type = current(uri)
  print("presence: " .. uri .. " is " .. basic_of(body))
  local list = {}
  for sub in pairs(watchers[uri] or {}) do list[#list + 1] = sub end
  for _, sub in ipairs(list) do
    sip.spawn(function()
      local ok, err = sub:notify{ body = body, content_type = content_type }
      report(uri, body, sub, ok, err)
    end)
  end
end

ua:on("PUBLISH", function(req)
  return store:handle(req)
end)

-- A subscription lives in its handler: accepted with the current state,
-- watched until it ends (un-SUBSCRIBE, expiry, a failed NOTIFY).
ua:on("SUBSCRIBE", function(sub)
  if sub.event ~= "presence" then return 489 end
  local uri = entity(sub.request.uri)
  local body, content_type = current(uri)
  -- watched before the first NOTIFY is out: a change meanwhile is sent after it
  watch(uri, sub)
  local ok, err = sub:accept{ body = body, content_type = content_type,
                              expires = math.min(sub.expires, MAX_EXPIRES) }
  report(uri, body, sub, ok, err)
  local reason = sub:wait()
  unwatch(uri, sub)
  print("presence: " .. sub.request.from_uri .. " stopped watching " .. uri ..
        " (" .. tostring(reason) .. ")")
end)

-- REGISTER: 200 with the contacts echoed and the Expires granted. No
-- bindings are kept; this is not a registrar.
ua:on("REGISTER", function(req)
  local expires = math.min(tonumber(req:header("Expires") or "") or MAX_EXPIRES, MAX_EXPIRES)
  local headers = { Expires = tostring(expires) }
  if expires > 0 then headers.Contact = req:headers("Contact") end
  return 200, nil, { headers = headers }
end)
