--- Digest authentication for requests: answering 401/407 on the client
-- side, and req:authenticate on the server side. Loaded by sip.
--
-- Scripts do not call this module: they give credentials once, and every
-- 401 or 407 to `ua:request`, `ua:invite`, `call:request` (re-INVITE,
-- INFO ...) and `ua:register` is answered without the script seeing it.
-- The credentials come from the `auth` option of the call, else from
-- `sip.ua{ auth = ... }`:
--
-- - `{ user = "alice", password = "secret" }`, or `{ user =, ha1 = }` with
--   the hex `H(user:realm:password)` for the algorithm the server asks;
-- - or `function(realm, res)` returning such a table (nil: do not answer).
--
-- The strongest challenge is taken (SHA-512-256, SHA-256, then MD5, each
-- also `-sess`), `qop=auth` when offered; `stale=true` is answered again
-- with the new nonce; a wrong password fails after one retry (the request
-- ends with that 401/407), never loops. A registration keeps its nonce,
-- so its refreshes carry credentials at once.
--
-- The server side is `msg:authenticate` and `call:authenticate`; the
-- digest engine under both is `sip.core.auth`. docs/auth.md has the rules.
-- @module sip.auth

local core = require "sip.core"
local A = core.auth

local M = {}

local function check_creds(creds, fname)
  if creds == nil then return nil end
  if type(creds) == "function" then return creds end
  if type(creds) ~= "table" or type(creds.user) ~= "string" or
     (type(creds.password) ~= "string" and type(creds.ha1) ~= "string") then
    error("bad argument to '" .. fname .. "' (auth must be { user =, password = } or a function)", 3)
  end
  return creds
end
M.check_creds = check_creds

--- Per request chain: one client state per challenge kind, so nc grows
-- per nonce and a repeated nonce (wrong password) ends the retries.
-- @local
function M.new_state(creds)
  return { creds = creds, clients = {}, extra = {} }
end

--- Headers for a new request with the nonces this state already holds
-- (nc counts up per nonce), so refreshes and later requests need no
-- 401 round trip. nil when there is nothing to reuse.
-- @local
function M.preempt(state, method, uri, body)
  if not state or not state.creds or type(state.creds) ~= "table" or not next(state.clients) then
    return nil
  end
  local extra = {}
  for kind, client in pairs(state.clients) do
    local ok, value = pcall(client.authorize, client, { method = method, uri = uri,
      user = state.creds.user, password = state.creds.password, ha1 = state.creds.ha1, body = body })
    if ok then extra[kind] = value end
  end
  if not next(extra) then return nil end
  -- a challenge after a reused nonce is not a wrong password yet
  state.extra = {}
  state.preempted = true
  return extra
end

--- The header to add to answer res (401/407), or nil when we cannot or
-- must not (no credentials, wrong password already tried).
-- @local
function M.answer(state, res, method, uri, body)
  if not state or not state.creds then return nil end
  if state.preempted then
    state.preempted = false
    state.extra = {}
  end
  local proxy = res.status == 407
  local values = res:headers(proxy and "Proxy-Authenticate" or "WWW-Authenticate")
  if #values == 0 then return nil end
  local kind = proxy and "Proxy-Authorization" or "Authorization"
  local client = state.clients[kind] or A.client()
  state.clients[kind] = client
  local ok, answer_it, ch = client:update(values)
  if not ok or not answer_it then return nil end
  -- challenged again after answering, and not for a stale nonce: the
  -- credentials are wrong (servers send a fresh nonce each time)
  if state.extra[kind] and not ch.stale then return nil end
  local creds = state.creds
  if type(creds) == "function" then
    creds = creds(ch.realm, res)
    if type(creds) ~= "table" then return nil end
  end
  local value = client:authorize{ method = method, uri = uri, user = creds.user,
                                  password = creds.password, ha1 = creds.ha1, body = body }
  state.extra[kind] = value
  return state.extra
end

--- Merge the Authorization headers into a copy of opts for the retry.
-- @local
function M.retry_opts(opts, extra, res)
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  local h = {}
  for k, v in pairs(o.headers or {}) do h[k] = v end
  for k, v in pairs(extra) do h[k] = v end
  o.headers = h
  if res then
    o.call_id = res.call_id
    o.from = res.from
    o.cseq = (res.cseq or 1) + 1
  end
  return o
end

---------------------------------------------------------------------------
-- Server side

local servers = {}      -- realm -> AuthServer (random secret per process)

local function server_for(realm, expires)
  local key = realm .. "\0" .. tostring(expires or 300)
  local s = servers[key]
  if not s then
    s = A.new(nil, { expires = expires })
    servers[key] = s
  end
  return s
end

--- req:authenticate{realm=, credentials=, proxy=, algorithms=, expires=}
-- @return the user name, or nil after the 401/407 challenge was sent
-- @local
function M.authenticate(req, opts, reply)
  if type(opts) ~= "table" then
    error("bad argument #1 to 'authenticate' (table expected, got " .. type(opts) .. ")", 3)
  end
  local realm = opts.realm
  if type(realm) ~= "string" or realm == "" or realm:find("[\r\n\"]") then
    error("bad argument #1 to 'authenticate' (opts.realm must be a non-empty string)", 3)
  end
  local creds = opts.credentials
  if type(creds) ~= "table" and type(creds) ~= "function" then
    error("bad argument #1 to 'authenticate' (opts.credentials must be a table or a function)", 3)
  end
  local srv = server_for(realm, opts.expires)
  local name = opts.proxy and "Proxy-Authorization" or "Authorization"
  local stale = false
  for _, text in ipairs(req:headers(name)) do
    local user, reason = srv:verify(text, req.method, realm, creds,
                                    { body = req.body, algorithms = opts.algorithms })
    if user then return user end
    if reason == "stale" then stale = true end
    if reason ~= "realm mismatch" then break end
  end
  local values = { srv:challenge(realm, { algorithms = opts.algorithms, stale = stale or nil }) }
  local headers = { [opts.proxy and "Proxy-Authenticate" or "WWW-Authenticate"] = values }
  if reply then
    reply(opts.proxy and 407 or 401, headers)
  else
    req:reply(opts.proxy and 407 or 401, nil, { headers = headers })
  end
  return nil
end

return M
