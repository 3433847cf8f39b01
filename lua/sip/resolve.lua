--- DNS for SIP (RFC 3263): the `dns` option of `sip.ua` and
-- `sip.resolve`. The lookups themselves run in the C core (c-ares on the
-- loop, csrc/core/dns.c); requests to a host name use them by
-- themselves. Loaded by sip (init.lua); not required directly.
-- @module sip

local check = require "sip.check"

local error, ipairs, type, tostring, getmetatable, pcall =
      error, ipairs, type, tostring, getmetatable, pcall

local M = {}

local DNS_OPTIONS = { servers = "table", timeout = "number", blacklist = "number" }

local function server_ok(s)
  return type(s) == "string" and (s:match("^%d+%.%d+%.%d+%.%d+$") or s:match("^%d+%.%d+%.%d+%.%d+:%d+$")
    or s:match("^%[[%x:%.]+%]:%d+$") or s:match("^%[[%x:%.]+%]$") or s:match("^[%x]*:[%x:%.]+$"))
end

--- Check `sip.ua`'s `dns` option (raises at the level of sip.ua's caller).
-- @local
function M.check(dns, fname, argn)
  check.opts(dns, fname, argn, DNS_OPTIONS, 3)
  for i, s in ipairs(dns.servers or {}) do
    if not server_ok(s) then
      error("bad argument #" .. argn .. " to '" .. fname .. "' (option 'dns.servers[" .. i ..
            "]' must be an address as \"127.0.0.1:5353\" or \"[::1]:53\", got " .. tostring(s) .. ")", 3)
    end
  end
  if (dns.timeout and dns.timeout <= 0) or (dns.blacklist and dns.blacklist < 0) then
    error("bad argument #" .. argn .. " to '" .. fname .. "' (options 'dns.timeout' must be " ..
          "positive and 'dns.blacklist' not negative)", 3)
  end
  return dns
end

local RESOLVE_OPTIONS = { ua = "userdata", servers = "table", timeout = "number" }

function M.install(sip)
  local sched = require "sip.sched"
  local current, wait = sched.current, sched.wait
  -- resolvers of their own for sip.resolve without a UA: a UA with no
  -- listener, one per settings, kept for the cache
  local resolvers = {}

  local function resolver(opts)
    local servers = opts.servers or {}
    local key = table.concat(servers, ",") .. "|" .. tostring(opts.timeout)
    local ua = resolvers[key]
    if not ua then
      local err
      ua, err = sip.ua{ listen = {}, dns = { servers = servers, timeout = opts.timeout } }
      if not ua then return nil, err end
      resolvers[key] = ua
    end
    return ua
  end

  --- Look up where requests to `uri` go (RFC 3263): NAPTR, SRV, then A
  -- and AAAA, as the core does for a request to a host name, with the
  -- same cache. The targets come in the order a request tries them
  -- (SRV priority, a random order weighted by SRV weight within one;
  -- blacklisted targets last). A numeric host needs no lookup.
  -- Options: `ua` (use its resolver, cache and blacklist), or `servers`
  -- and `timeout` as in `sip.ua{ dns = }`; by default the system's servers.
  -- @string uri a SIP URI, e.g. `"sip:example.com"`, `"sips:example.com"`,
  -- `"sip:example.com;transport=tcp"`
  -- @tab[opt] opts `ua`, `servers`, `timeout`
  -- @treturn {table,...} the targets, each `{ transport = "udp"|"tcp"|"tls",
  -- addr = "192.0.2.1", port = 5060, priority = 10, weight = 60 }`
  -- @return[2] nil
  -- @treturn[2] string `"dns: example.com: not found"`, `"dns: ...: timeout"`,
  -- `"dns: ...: no address"`, `"dns: ...: service not available"`,
  -- `"dns: ...: bad answer"`, `"dns: ...: server unreachable"`
  function sip.resolve(uri, opts)
    if type(uri) ~= "string" then
      error("bad argument #1 to 'sip.resolve' (SIP URI string expected, got " .. type(uri) .. ")", 2)
    end
    opts = check.opts(opts, "sip.resolve", 2, RESOLVE_OPTIONS)
    if opts.servers then
      M.check({ servers = opts.servers, timeout = opts.timeout }, "sip.resolve", 2)
    end
    local co = current("sip.resolve")
    local ua = opts.ua
    if ua then
      if getmetatable(ua) ~= sip.core.UA or not pcall(ua.address, ua) then
        check.arg(2, "sip.resolve", "option 'ua' must be an open sip.UA")
      end
    else
      local err
      ua, err = resolver(opts)
      if not ua then return nil, err end
    end
    local r, err, bad_uri = ua:_resolve(uri, co)
    if bad_uri then error("bad argument #1 to 'sip.resolve' (" .. err .. ")", 2) end
    if r == true then r, err = wait() end
    return r, err
  end
end

return M
