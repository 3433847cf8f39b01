--- Test certificates for the TLS specs, made at test time with the openssl
-- command (OpenSSL 3.0 CLI) in a fresh temporary directory.
--
--   local tlscerts = require "tlscerts"
--   local C = tlscerts.generate()     -- once per spec file
--   C.ca                              -- the test CA (PEM)
--   C.server.cert, C.server.key       -- CN=localhost, SAN DNS:localhost,
--                                     -- IP:127.0.0.1, URI:sip:example.test
--   ...                               -- the others: see `leaves` below
--   C:remove()                        -- from the spec's teardown
--
-- All keys are P-256 EC keys: quick to make, so the whole set takes well
-- under a second. Every leaf but `other`/`other_client` is signed by C.ca;
-- those two by C.other_ca, a CA nobody trusts. `expired` was valid in
-- January 2020 only (made with `openssl ca -startdate/-enddate`, the way
-- the 3.0 CLI backdates: `x509 -not_before` came in 3.4).
local tlscerts = {}

local function q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function read(path)
  local f = io.open(path)
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

-- the certificates signed for the specs: name -> subject, extensions
local leaves = {
  -- what a Lua TLS UA serves in most specs
  server = { cn = "localhost",
             san = "DNS:localhost,IP:127.0.0.1,URI:sip:example.test" },
  -- same identities, signed by the CA nobody trusts
  other = { cn = "localhost", san = "DNS:localhost,IP:127.0.0.1", ca = "other_ca" },
  -- same identities, valid in January 2020 only
  expired = { cn = "localhost", san = "DNS:localhost,IP:127.0.0.1", expired = true },
  -- a good chain for the wrong name
  wrong = { cn = "wrong.example", san = "DNS:wrong.example" },
  -- wildcards: *.0.1 covers "127.0.1", the inet_aton spelling of
  -- 127.0.0.1 (see spec/tls_spec.lua for why)
  wildcard = { cn = "*.example.test", san = "DNS:*.example.test,DNS:*.0.1" },
  -- the SIP domain as a URI SAN only (RFC 5922 7.1)
  uri_example = { cn = "example.test", san = "URI:sip:example.test" },
  uri_localhost = { cn = "uri-only.invalid", san = "URI:sip:localhost" },
  -- no SAN at all: the CN is the identity
  cn_only = { cn = "localhost" },
  -- a SAN that does not name localhost: the CN must then be ignored
  cn_ignored = { cn = "localhost", san = "DNS:elsewhere.example" },
  -- the address only
  ip_only = { cn = "127.0.0.1", san = "IP:127.0.0.1" },
  -- client certificates for mutual TLS
  client = { cn = "luasip client", client = true },
  other_client = { cn = "intruder client", client = true, ca = "other_ca" },
}
tlscerts.leaves = leaves

--- Make the whole set in a new temporary directory.
-- @return a table of paths (see the module comment) with :remove()
function tlscerts.generate()
  local p = io.popen("mktemp -d /tmp/luasip-tls.XXXXXX")
  local dir = p:read("l")
  p:close()
  assert(dir and dir ~= "", "mktemp -d failed")
  local log = dir .. "/openssl.log"

  local function openssl(...)
    local args = { "openssl" }
    for i, a in ipairs{ ... } do args[i + 1] = q(a) end
    local cmd = "cd " .. q(dir) .. " && " .. table.concat(args, " ") .. " >>" .. q(log) .. " 2>&1"
    if not os.execute(cmd) then
      error("tlscerts: " .. cmd .. " failed:\n" .. read(log), 2)
    end
  end

  local function newkey_csr(name, cn)
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", name .. ".key", "-out", name .. ".csr", "-subj", "/CN=" .. cn)
  end

  local function make_ca(name, cn)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", name .. ".key", "-out", name .. ".pem", "-days", "30", "-subj", "/CN=" .. cn,
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-addext", "subjectKeyIdentifier=hash")
  end

  make_ca("ca", "luasip test CA")
  make_ca("other_ca", "unrelated test CA")

  -- `openssl ca` (for the backdated certificate) wants a database
  os.execute("mkdir -p " .. q(dir .. "/newcerts"))
  write(dir .. "/index.txt", "")
  write(dir .. "/serial", "1000\n")
  write(dir .. "/ca.cnf", table.concat({
    "[ca]", "default_ca = test_ca",
    "[test_ca]", "database = ./index.txt", "new_certs_dir = ./newcerts", "serial = ./serial",
    "default_md = sha256", "policy = any", "unique_subject = no", "copy_extensions = none",
    "[any]", "commonName = supplied", "" }, "\n"))

  local C = { dir = dir, ca = dir .. "/ca.pem", other_ca = dir .. "/other_ca.pem" }
  local serial = 1
  for name, l in pairs(leaves) do
    newkey_csr(name, l.cn)
    local ext = { "[v3]", "basicConstraints = critical,CA:FALSE",
                  "keyUsage = critical,digitalSignature,keyEncipherment",
                  "extendedKeyUsage = " .. (l.client and "clientAuth" or "serverAuth,clientAuth") }
    if l.san then ext[#ext + 1] = "subjectAltName = " .. l.san end
    write(dir .. "/" .. name .. ".ext", table.concat(ext, "\n") .. "\n")
    local ca = l.ca or "ca"
    if l.expired then
      openssl("ca", "-config", "ca.cnf", "-batch", "-notext", "-cert", ca .. ".pem",
              "-keyfile", ca .. ".key", "-startdate", "20200101000000Z", "-enddate", "20200201000000Z",
              "-extfile", name .. ".ext", "-extensions", "v3", "-in", name .. ".csr",
              "-out", name .. ".pem")
    else
      serial = serial + 1
      openssl("x509", "-req", "-in", name .. ".csr", "-CA", ca .. ".pem", "-CAkey", ca .. ".key",
              "-set_serial", tostring(serial), "-days", "30", "-sha256",
              "-extfile", name .. ".ext", "-extensions", "v3", "-out", name .. ".pem")
    end
    C[name] = { cert = dir .. "/" .. name .. ".pem", key = dir .. "/" .. name .. ".key", cn = l.cn }
  end

  function C.remove()
    if dir:match("^/tmp/luasip%-tls%.") then os.execute("rm -rf " .. q(dir)) end
  end
  return C
end

return tlscerts
