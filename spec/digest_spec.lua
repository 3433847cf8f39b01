--- Digest authentication (sip.core.auth): RFC 7616 §3.9.1 and RFC 2617
-- §3.5 vectors, the other algorithms checked against the openssl command,
-- challenge parsing and choice, the server's stateless nonces (expiry,
-- realm binding, nc replay) and malformed input that must fail cleanly.
local core = require "sip.core"
local auth = assert(core.auth, "sip.core.auth is not registered: see the header of csrc/l_auth.c")

local function raises(pattern, fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error matching '" .. pattern .. "'")
  assert.matches(pattern, tostring(err))
  return err
end

-- an independent hash: the openssl command line tool
local dgst_names = { MD5 = "md5", ["SHA-256"] = "sha256", ["SHA-512-256"] = "sha512-256" }
local function H(hash, s)
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
  local p = assert(io.popen("openssl dgst -" .. dgst_names[hash] .. " -r < '" .. path .. "'"))
  local out = p:read("a")
  p:close()
  os.remove(path)
  return (assert(out:match("^(%x+)"), "openssl dgst failed"))
end

-- the RFC 7616 §3.9.1 request
local rfc7616 = {
  user = "Mufasa", password = "Circle of Life", realm = "http-auth@example.org",
  nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
  cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
  nc = "00000001", qop = "auth", uri = "/dir/index.html", method = "GET",
  opaque = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS",
}
local function with(t, extra)
  local r = {}
  for k, v in pairs(t) do r[k] = v end
  for k, v in pairs(extra or {}) do
    if v == false then r[k] = nil else r[k] = v end   -- false removes a field
  end
  return r
end

local ALGS = { "MD5", "MD5-sess", "SHA-256", "SHA-256-sess", "SHA-512-256", "SHA-512-256-sess" }
local NOW = 1700000000

-- one client request answering the challenge text, as the UA core will do it
local function answer(challenge, creds)
  local cl = auth.client()
  assert(cl:update(challenge))
  return cl:authorize(with({ method = "REGISTER", uri = "sip:example.com", user = "alice",
                             password = "secret" }, creds)), cl
end

describe("sip.core.auth digest", function()
  describe("client responses", function()
    it("matches RFC 7616 §3.9.1 with MD5", function()
      local value, response = auth.digest_response(rfc7616)
      assert.equal("8ca523f5e9506fed4657c9700eebdbec", response)
      local cr = assert(auth.parse_credentials(value))
      assert.same({ username = "Mufasa", realm = "http-auth@example.org", nonce = rfc7616.nonce,
                    uri = "/dir/index.html", response = response, algorithm = "MD5",
                    qop = "auth", cnonce = rfc7616.cnonce, nc = 1, opaque = rfc7616.opaque,
                    userhash = false }, cr)
    end)

    it("matches RFC 7616 §3.9.1 with SHA-256", function()
      local value, response = auth.digest_response(with(rfc7616, { algorithm = "SHA-256" }))
      assert.equal("753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1", response)
      assert.matches('algorithm=SHA%-256', value)
      assert.matches('response="753927fa', value, 1, false)
    end)

    it("matches RFC 2617 §3.5", function()
      local _, response = auth.digest_response{
        user = "Mufasa", password = "Circle Of Life", realm = "testrealm@host.com",
        nonce = "dcd98b7102dd2f0e8b11d0f600bfb0c093", cnonce = "0a4f113b", nc = 1,
        qop = "auth", uri = "/dir/index.html", method = "GET",
        opaque = "5ccc069c403ebaf9f0171e9517f40e41" }
      assert.equal("6629fae49393a05397450978507c4ef1", response)
    end)

    it("gives the same response from a precomputed HA1", function()
      for _, alg in ipairs(ALGS) do
        local ha1 = auth.ha1(alg, "Mufasa", rfc7616.realm, "Circle of Life")
        local _, r1 = auth.digest_response(with(rfc7616, { algorithm = alg }))
        local _, r2 = auth.digest_response(with(rfc7616, { algorithm = alg, password = false,
                                                           ha1 = ha1:upper() }))
        assert.equal(r1, r2, alg)
      end
    end)

    it("computes every algorithm, -sess, auth-int and the RFC 2069 form as RFC 7616 says", function()
      local body = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n"
      for _, alg in ipairs(ALGS) do
        local hash, sess = alg:match("^(.-)(%-sess)$")
        hash = hash or alg
        for _, qop in ipairs{ "auth", "auth-int", false } do
          local t = with(rfc7616, { algorithm = alg, qop = qop, body = body })
          local value, response = auth.digest_response(t)
          local ha1 = H(hash, "Mufasa:" .. t.realm .. ":Circle of Life")
          if sess then ha1 = H(hash, ha1 .. ":" .. t.nonce .. ":" .. t.cnonce) end
          local a2 = "GET:/dir/index.html"
          if qop == "auth-int" then a2 = a2 .. ":" .. H(hash, body) end
          local expect
          if qop then
            expect = H(hash, table.concat({ ha1, t.nonce, "00000001", t.cnonce, qop, H(hash, a2) }, ":"))
          else
            expect = H(hash, table.concat({ ha1, t.nonce, H(hash, a2) }, ":"))
            assert.is_nil(value:find("qop=", 1, true))
            assert.is_nil(value:find("cnonce=", 1, true))
            assert.is_nil(value:find("nc=", 1, true))
          end
          assert.equal(expect, response, alg .. " " .. tostring(qop))
        end
      end
    end)

    it("formats nc as 8 hex digits and draws a random cnonce", function()
      local t = with(rfc7616, { nc = 255, cnonce = false })
      local v1 = auth.digest_response(t)
      local v2 = auth.digest_response(t)
      assert.matches("nc=000000ff", v1)
      local c1, c2 = v1:match('cnonce="([^"]+)"'), v2:match('cnonce="([^"]+)"')
      assert.is_true(#c1 >= 16)
      assert.not_equal(c1, c2)
    end)

    it("escapes quotes in echoed values and sends a hashed username on userhash", function()
      local value = auth.digest_response(with(rfc7616, { realm = 'a"b\\c', user = 'x"y' }))
      local cr = assert(auth.parse_credentials(value))
      assert.equal('a"b\\c', cr.realm)
      assert.equal('x"y', cr.username)
      value = auth.digest_response(with(rfc7616, { userhash = true, algorithm = "SHA-256" }))
      cr = assert(auth.parse_credentials(value))
      assert.is_true(cr.userhash)
      assert.equal(H("SHA-256", "Mufasa:" .. rfc7616.realm), cr.username)
    end)

    it("raises on bad arguments, naming the argument", function()
      raises("bad argument #1 .*table expected", auth.digest_response, "x")
      raises("bad argument #1 .*'nonce' is required", auth.digest_response, with(rfc7616, { nonce = false }))
      raises("field 'password' or 'ha1'", auth.digest_response, with(rfc7616, { password = false }))
      raises("unknown algorithm 'SHA%-1'", auth.digest_response, with(rfc7616, { algorithm = "SHA-1" }))
      raises("field 'nc'", auth.digest_response, with(rfc7616, { nc = 0 }))
      raises("field 'nc'", auth.digest_response, with(rfc7616, { nc = "1" }))
      raises("field 'qop'", auth.digest_response, with(rfc7616, { qop = "auth-conf" }))
      raises("bad argument #1", auth.digest_response, with(rfc7616, { uri = "/a\r\nX: y" }))
      raises("bad argument #1", auth.digest_response, with(rfc7616, { ha1 = "abc", password = false }))
      raises("bad argument #1", auth.digest_response, with(rfc7616, { method = "GE T" }))
    end)
  end)

  describe("challenge parsing", function()
    it("reads quoted strings, tokens, any order, escapes, unknown parameters", function()
      local ch = assert(auth.parse_challenge(
        'Digest  qop="auth, auth-int,token" ,algorithm=sha-256-SESS, Nonce="n\\"1", ' ..
        'domain="sip:a sip:b", realm="ex\\\\ample",opaque=op, STALE=TRUE, userhash=false, x-y=z'))
      assert.same({ scheme = "Digest", realm = "ex\\ample", nonce = 'n"1', opaque = "op",
                    algorithm = "SHA-256-sess", qop = { "auth", "auth-int" }, stale = true,
                    userhash = false }, ch)
      ch = assert(auth.parse_challenge('digest realm="r", nonce="n"'))
      assert.equal("MD5", ch.algorithm)
      assert.is_nil(ch.qop)                          -- RFC 2069 server
      assert.is_false(ch.stale)
      ch = assert(auth.parse_challenge('Digest realm="r",\r\n nonce="n", algorithm="MD5", qop=auth'))
      assert.same({ "auth" }, ch.qop)
      ch = assert(auth.parse_challenge('Digest realm="", nonce="n", stale=maybe'))
      assert.equal("", ch.realm)
      assert.is_false(ch.stale)
    end)

    it("fails with a reason on malformed input", function()
      local bad = {
        "", "   ", "Digest", "Digest ", "Digest realm", 'Digest realm="r"', 'Digest nonce="n"',
        'Digest realm="r" nonce="n"', 'Digest realm="r", nonce="n', 'Digest realm="r", nonce=""',
        'Digest realm="r", nonce="n", nonce="m"', 'Digest realm="r", realm="r", nonce="n"',
        'Digest realm=, nonce="n"', 'Digest realm="a\r\nb", nonce="n"', 'Digest realm="r\0", nonce="n"',
        'Digest realm="r", nonce="n\\', 'Digest abc==', 'Digest =x', '"Digest" realm="r"',
        'Digest realm="r", nonce="' .. ("x"):rep(300) .. '"',
        'Digest realm="' .. ("x"):rep(300) .. '", nonce="n"',
        'Digest realm="r", nonce=n, qop=' .. ("a"):rep(300),
        'Digest realm="r"; nonce="n"', 'Digest realm="r", nonce="n" junk',
      }
      for _, text in ipairs(bad) do
        local ch, err = auth.parse_challenge(text)
        assert.is_nil(ch, text)
        assert.is_string(err, text)
      end
    end)

    it("refuses what it cannot answer, saying why", function()
      local _, err = auth.parse_challenge('Basic realm="r"')
      assert.equal("not a Digest challenge", err)
      _, err = auth.parse_challenge('Digest realm="r", nonce="n", algorithm=AKAv1-MD5')
      assert.equal("unsupported algorithm", err)
      _, err = auth.parse_challenge('Digest realm="r", nonce="n", algorithm=' .. ("X"):rep(100))
      assert.equal("unsupported algorithm", err)
      _, err = auth.parse_challenge('Digest realm="r", nonce="n", qop="auth-conf"')
      assert.equal("no supported qop", err)
    end)

    it("chooses the strongest algorithm among several challenges", function()
      local md5 = 'Digest realm="r", nonce="n1", algorithm=MD5, qop="auth"'
      local sha = 'Digest realm="r", nonce="n2", algorithm=SHA-256, qop="auth"'
      local s512 = 'Digest realm="r", nonce="n3", algorithm=SHA-512-256-sess, qop="auth"'
      assert.equal("n2", auth.choose_challenge{ md5, sha }.nonce)
      assert.equal("n2", auth.choose_challenge{ sha, md5 }.nonce)
      assert.equal("n3", auth.choose_challenge{ md5, s512, sha }.nonce)
      assert.equal("n1", auth.choose_challenge{ md5, 'Digest realm="r", nonce="n4"' }.nonce)
      -- unusable and malformed ones are skipped
      assert.equal("n1", auth.choose_challenge{ 'Basic realm="x"', "Digest garbage",
        'Digest realm="r", nonce="n9", algorithm=AKAv1-MD5', md5 }.nonce)
      -- several challenges in one value (HTTP style)
      assert.equal("n2", auth.choose_challenge('Basic realm="b", ' .. md5 .. ", " .. sha).nonce)
      assert.equal("n2", auth.choose_challenge('Newauth abc==, ' .. sha).nonce)
      local ch, err = auth.choose_challenge{ 'Basic realm="x"', "junk" }
      assert.is_nil(ch)
      assert.equal("no usable challenge", err)
    end)
  end)

  describe("server", function()
    local lookup = { alice = "secret", bob = { ha1 = auth.ha1("MD5", "bob", "example.com", "pw2") } }

    it("verifies a client's answer to its challenge, for every algorithm", function()
      local srv = auth.new("k3y")
      for _, alg in ipairs(ALGS) do
        local ch = srv:challenge("example.com", { algorithm = alg, now = NOW })
        assert.matches('^Digest realm="example.com", nonce="[%w_-]+", algorithm=' ..
                       alg:gsub("%-", "%%-") .. ', qop="auth"$', ch)
        local value = answer(ch)
        assert.equal("alice", srv:verify(value, "REGISTER", "example.com", lookup,
                                         { now = NOW + 1, uri = "sip:example.com" }))
        -- the same user with a stored HA1 of the right hash
        local ha1 = auth.ha1(alg, "alice", "example.com", "secret")
        local field = alg:find("^MD5") and "ha1" or alg:find("^SHA%-256") and "ha1_sha256"
                      or "ha1_sha512_256"
        value = answer(srv:challenge("example.com", { algorithm = alg, now = NOW }))
        assert.equal("alice", srv:verify(value, "REGISTER", "example.com",
          function(user, realm)
            assert.equal("alice", user)
            assert.equal("example.com", realm)
            return { [field] = ha1 }
          end, { now = NOW }))
      end
      local value = answer(srv:challenge("example.com", { now = NOW }),
                           { user = "bob", password = "pw2" })
      assert.equal("bob", srv:verify(value, "REGISTER", "example.com", lookup, { now = NOW }))
    end)

    it("offers several algorithms, the client takes the strongest", function()
      local srv = auth.new()
      local chs = { srv:challenge("example.com", { algorithms = { "MD5", "SHA-256" }, now = NOW }) }
      assert.equal(2, #chs)
      local value = answer(chs)
      assert.matches("algorithm=SHA%-256", value)
      assert.equal("alice", srv:verify(value, "REGISTER", "example.com", lookup, { now = NOW }))
      local _, why = srv:verify(value, "REGISTER", "example.com", lookup,
                                { now = NOW, algorithms = { "MD5" } })
      assert.equal("unsupported", why)
    end)

    it("accepts a growing nc on one nonce and rejects a replayed one", function()
      local srv = auth.new("k")
      local cl = auth.client()
      local _, fresh = cl:update(srv:challenge("example.com", { now = NOW }))
      assert.is_true(fresh)
      local creds = { method = "INVITE", uri = "sip:bob@example.com", user = "alice", password = "secret" }
      local v1 = cl:authorize(creds)
      local v2 = cl:authorize(creds)
      local v3 = cl:authorize(creds)
      assert.equal(3, cl:nc())
      assert.matches("nc=00000003", v3)
      assert.equal("alice", srv:verify(v2, "INVITE", "example.com", lookup, { now = NOW }))
      local user, why = srv:verify(v1, "INVITE", "example.com", lookup, { now = NOW })
      assert.is_nil(user)
      assert.equal("replay", why)
      _, why = srv:verify(v2, "INVITE", "example.com", lookup, { now = NOW })
      assert.equal("replay", why)
      assert.equal("alice", srv:verify(v3, "INVITE", "example.com", lookup, { now = NOW }))
    end)

    it("answers stale for an expired nonce with the right password, then takes a new one", function()
      local srv = auth.new("k", { expires = 300 })
      local value = answer(srv:challenge("example.com", { now = NOW }))
      local user, why = srv:verify(value, "REGISTER", "example.com", lookup, { now = NOW + 301 })
      assert.is_nil(user)
      assert.equal("stale", why)
      -- a wrong password with an expired nonce is not stale
      local bad = answer(srv:challenge("example.com", { now = NOW }), { password = "nope" })
      user, why = srv:verify(bad, "REGISTER", "example.com", lookup, { now = NOW + 301 })
      assert.is_nil(user)
      assert.equal("bad response", why)
      -- the new challenge says stale=true: the client retries without asking
      local ch = srv:challenge("example.com", { now = NOW + 301, stale = true })
      assert.matches(", stale=true$", ch)
      local cl = auth.client()
      cl:update(srv:challenge("example.com", { now = NOW }))
      local _, fresh = cl:update(ch)
      assert.is_true(fresh)
      assert.is_true(auth.parse_challenge(ch).stale)
      value = cl:authorize{ method = "REGISTER", uri = "sip:example.com", user = "alice", password = "secret" }
      assert.equal("alice", srv:verify(value, "REGISTER", "example.com", lookup, { now = NOW + 302 }))
    end)

    it("tells the client a repeated nonce without stale means wrong credentials", function()
      local srv = auth.new("k")
      local ch = srv:challenge("example.com", { now = NOW })
      local cl = auth.client()
      local _, fresh = cl:update(ch)
      assert.is_true(fresh)
      _, fresh = cl:update(ch)
      assert.is_false(fresh)
    end)

    it("fails a wrong password and an unknown user alike", function()
      local srv = auth.new("k")
      local value = answer(srv:challenge("example.com", { now = NOW }), { password = "wrong" })
      local user, why = srv:verify(value, "REGISTER", "example.com", lookup, { now = NOW })
      assert.is_nil(user)
      assert.equal("bad response", why)
      value = answer(srv:challenge("example.com", { now = NOW }), { user = "mallory" })
      local called
      user, why = srv:verify(value, "REGISTER", "example.com", function(u)
        called = u
        return nil
      end, { now = NOW })
      assert.equal("mallory", called)
      assert.is_nil(user)
      assert.equal("no such user", why)
      user, why = srv:verify(value, "REGISTER", "example.com", lookup, { now = NOW })
      assert.is_nil(user)
      assert.equal("no such user", why)
    end)

    it("lets the lookup function yield (a database query in a coroutine)", function()
      local srv = auth.new("k")
      local value = answer(srv:challenge("example.com", { now = NOW }))
      local co = coroutine.wrap(function()
        return srv:verify(value, "REGISTER", "example.com", function(user)
          return coroutine.yield(user)
        end, { now = NOW })
      end)
      assert.equal("alice", co())             -- the lookup asks for alice
      assert.equal("alice", co("secret"))     -- and is given her password
    end)

    it("binds nonces to the realm and to the secret", function()
      local srv = auth.new("k")
      -- credentials for another realm
      local value = answer(srv:challenge("other.org", { now = NOW }))
      local _, why = srv:verify(value, "REGISTER", "example.com", lookup, { now = NOW })
      assert.equal("realm mismatch", why)
      -- a nonce issued for other.org, used with realm example.com: never accepted
      local ch = srv:challenge("other.org", { now = NOW }):gsub('realm="other.org"', 'realm="example.com"')
      value = answer(ch)
      _, why = srv:verify(value, "REGISTER", "example.com", lookup, { now = NOW })
      assert.equal("stale", why)
      -- a nonce from a server with another secret, or made up
      value = answer(auth.new("other"):challenge("example.com", { now = NOW }))
      _, why = srv:verify(value, "REGISTER", "example.com", lookup, { now = NOW })
      assert.equal("stale", why)
      value = answer('Digest realm="example.com", nonce="' .. ("A"):rep(75) .. '", qop="auth"')
      _, why = srv:verify(value, "REGISTER", "example.com", lookup, { now = NOW })
      assert.equal("stale", why)
      -- the same secret verifies without shared state (a restart, another process)
      value = answer(auth.new("k"):challenge("example.com", { now = NOW }))
      assert.equal("alice", srv:verify(value, "REGISTER", "example.com", lookup, { now = NOW }))
    end)

    it("checks qop, method, body (auth-int), uri and opaque", function()
      local srv = auth.new("k")
      -- an RFC 2069 answer (no qop) to our qop="auth" challenge: no nc, no replay check
      local ch = srv:challenge("example.com", { now = NOW }):gsub(', qop="auth"', "")
      local _, why = srv:verify(answer(ch), "REGISTER", "example.com", lookup, { now = NOW })
      assert.equal("bad qop", why)
      -- the response covers the method
      local value = answer(srv:challenge("example.com", { now = NOW }))
      _, why = srv:verify(value, "INVITE", "example.com", lookup, { now = NOW })
      assert.equal("bad response", why)
      -- auth-int covers the body
      ch = srv:challenge("example.com", { now = NOW, qop = "auth,auth-int" })
      value = answer(ch, { qop = "auth-int", body = "hello" })
      assert.matches("qop=auth%-int", value)
      _, why = srv:verify(value, "REGISTER", "example.com", lookup, { now = NOW, body = "hellO" })
      assert.equal("bad response", why)
      value = answer(ch, { qop = "auth-int", body = "hello" })
      assert.equal("alice", srv:verify(value, "REGISTER", "example.com", lookup, { now = NOW, body = "hello" }))
      -- uri and opaque, when the caller asks
      value = answer(srv:challenge("example.com", { now = NOW, opaque = "op1" }))
      assert.matches('opaque="op1"', value)
      _, why = srv:verify(value, "REGISTER", "example.com", lookup, { now = NOW, uri = "sip:other" })
      assert.equal("uri mismatch", why)
      _, why = srv:verify(value, "REGISTER", "example.com", lookup, { now = NOW, opaque = "op2" })
      assert.equal("opaque mismatch", why)
      assert.equal("alice", srv:verify(value, "REGISTER", "example.com", lookup, { now = NOW, opaque = "op1" }))
      -- userhash is not offered by this server
      value = answer(srv:challenge("example.com", { now = NOW }) .. ", userhash=true")
      _, why = srv:verify(value, "REGISTER", "example.com", lookup, { now = NOW })
      assert.equal("unsupported", why)
    end)

    it("never lets an evicted nonce be replayed (bounded nc table)", function()
      local srv = auth.new("k", { slots = 4 })      -- one set of 4 entries
      local clients = {}
      for i = 1, 6 do
        local cl = auth.client()
        cl:update(srv:challenge("example.com", { now = NOW + i }))
        clients[i] = cl
      end
      local creds = { method = "REGISTER", uri = "sip:example.com", user = "alice", password = "secret" }
      for i = 1, 5 do        -- the 5th evicts the 1st
        assert.equal("alice", srv:verify(clients[i]:authorize(creds), "REGISTER", "example.com",
                                         lookup, { now = NOW + 10 }))
      end
      local _, why = srv:verify(clients[1]:authorize(creds), "REGISTER", "example.com", lookup,
                                { now = NOW + 10 })
      assert.equal("stale", why)
      -- nonces the table still holds, and newer ones, keep working
      assert.equal("alice", srv:verify(clients[5]:authorize(creds), "REGISTER", "example.com",
                                       lookup, { now = NOW + 10 }))
      assert.equal("alice", srv:verify(clients[6]:authorize(creds), "REGISTER", "example.com",
                                       lookup, { now = NOW + 10 }))
    end)

    it("reports malformed credentials and never crashes on garbage", function()
      local srv = auth.new("k")
      local good = answer(srv:challenge("example.com", { now = NOW }))
      local bad = {
        "", "Digest", "Basic dXNlcjpwdw==", good:gsub('response="%x+"', 'response="xyz"'),
        good:gsub('response="(%x+)"', 'response="%1aa"'), good:gsub(", nc=%x+", ""),
        good:gsub("nc=00000001", "nc=0000001"), good:gsub("nc=00000001", "nc=00000000"),
        good:gsub("qop=auth", "qop=auth-conf"), good:gsub('username="alice", ', ""),
        good:gsub('uri="[^"]*"', 'uri=""'), good .. ", nonce=\"x\"", good .. " junk",
        good:gsub('"', "", 1), good:gsub("algorithm=MD5", "algorithm=SHA-1"),
        (good:gsub('cnonce="', 'cnonce="\r\n')),
      }
      for _, text in ipairs(bad) do
        local user, why, detail = srv:verify(text, "REGISTER", "example.com", lookup, { now = NOW })
        assert.is_nil(user, text)
        assert.is_truthy(why == "malformed" or why == "unsupported", text .. ": " .. tostring(why))
        assert.is_string(detail, text)
        assert.is_nil(auth.parse_credentials(text), text)
      end
      -- random bytes and random mutations of valid headers: fail cleanly
      math.randomseed(42)
      local ch = srv:challenge("example.com", { now = NOW, opaque = "o" })
      for _ = 1, 3000 do
        local src = math.random(2) == 1 and good or ch
        local b = { src:byte(1, -1) }
        for _ = 1, math.random(4) do
          local pos = math.random(#b + 1)
          local op = math.random(3)
          if op == 1 then b[pos] = math.random(0, 255)
          elseif op == 2 then table.remove(b, math.min(pos, #b))
          else table.insert(b, pos, ("\",\\= \r\0"):byte(math.random(7))) end
        end
        local text = string.char(table.unpack(b))
        if math.random(10) == 1 then text = text:sub(1, math.random(#text)) end
        local ok, err = pcall(auth.parse_challenge, text)
        assert.is_true(ok, err)
        ok, err = pcall(auth.parse_credentials, text)
        assert.is_true(ok, err)
        ok, err = pcall(srv.verify, srv, text, "REGISTER", "example.com", lookup, { now = NOW })
        assert.is_true(ok, err)
      end
    end)

    it("raises on misuse", function()
      raises("bad argument #1 .*secret must not be empty", auth.new, "")
      raises("field 'expires'", auth.new, "k", { expires = 0 })
      local srv = auth.new("k")
      raises("bad argument #2 .*control characters", srv.challenge, srv, "a\r\nb")
      raises("unknown algorithm", srv.challenge, srv, "r", { algorithm = "SHA-1" })
      raises("field 'opaque'", srv.challenge, srv, "r", { opaque = "a\nb" })
      raises("lookup must be a table or a function", srv.verify, srv, "x", "REGISTER", "r", "pw")
      local value = answer(srv:challenge("example.com", { now = NOW }))
      raises("'ha1' must be 32 hexadecimal digits", srv.verify, srv, value, "REGISTER", "example.com",
             { alice = { ha1 = "abcd" } }, { now = NOW })
      raises("lookup must give", srv.verify, srv, value, "REGISTER", "example.com",
             { alice = 42 }, { now = NOW })
      srv:close()
      srv:close()
      raises("closed", srv.challenge, srv, "r")
      do
        local s2 <close> = auth.new("k")
        assert.is_string(s2:challenge("r"))
      end
      raises("no challenge yet", auth.client().authorize, auth.client(),
             { method = "A", uri = "u", user = "u", password = "p" })
    end)
  end)
end)
