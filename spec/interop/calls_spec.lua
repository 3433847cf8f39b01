--- Calls with SIPp's built-in scenarios, under load: SIPp's uac calling a
-- Lua UAS (ring, answer, wait for BYE), and a Lua UAC (50 coroutines)
-- calling SIPp's uas. UDP and TCP; 0 failed calls on both sides.
-- The scenarios of our own are in calls_scenarios_spec.lua, Kamailio in
-- calls_kamailio_spec.lua.
local sip = require "sip"
local helper = require "helper"

-- SIPp's statistics line "Failed call" ... from its -trace_stat file is
-- not needed: its exit code is 0 only when every call succeeded.

-- a Lua UAS counting what happens to its calls
local function uas(listen)
  local ua = assert(sip.ua{ listen = listen })
  local st = { incoming = 0, answered = 0, bye = 0, other = {}, failed = {} }
  ua:on("INVITE", function(call)
    st.incoming = st.incoming + 1
    call:ring()
    local ans = sip.sdp.answer(call.invite.body, { addr = "127.0.0.1", port = 6000 })
    local ok, err = call:answer{ sdp = ans }
    if not ok then
      st.failed[#st.failed + 1] = err
      return
    end
    st.answered = st.answered + 1
    local why = call:wait(60)
    if why == "bye" then
      st.bye = st.bye + 1
    else
      st.other[#st.other + 1] = tostring(why)
    end
  end)
  return ua, st
end

local function wait_until(pred, timeout)
  local deadline = sip.now() + timeout
  while not pred() and sip.now() < deadline do helper.spin(0.05) end
  return pred()
end

describe("SIPp's uac calling a Lua UAS", function()
  local cases = {
    { "udp", "u1", 2000, 200 },
    { "tcp", "t1", 500, 100 },
  }
  for _, c in ipairs(cases) do
    local tr, mode, n, rate = c[1], c[2], c[3], c[4]
    it(string.format("answers %d calls at %d cps over %s with 0 failed", n, rate, tr), function()
      local port = helper.free_port()
      local ua, st = uas(tr .. ":127.0.0.1:" .. port)
      finally(function() helper.stop_all(); ua:close() end)
      local sipp = helper.sipp{ sn = "uac", port = helper.free_port(), transport = mode,
        remote = "127.0.0.1:" .. port,
        args = { "-m", n, "-r", rate, "-l", 400, "-d", 50, "-s", "bob",
                 "-timeout", "60", "-timeout_error", "-max_socket", 100 } }
      local rc = sipp:wait(90)
      assert.are.equal(0, rc, sipp.log())
      -- the last BYEs are answered; let their coroutines finish
      wait_until(function() return st.bye + #st.other >= n end, 5)
      assert.are.same({}, st.failed)
      assert.are.same({}, st.other)
      assert.are.equal(n, st.incoming)
      assert.are.equal(n, st.answered)
      assert.are.equal(n, st.bye)
      local s = ua:stats()
      assert.are.equal(0, s.calls)
      assert.are.equal(0, s.dialogs)
    end)
  end
end)

describe("a Lua UAC calling SIPp's uas", function()
  for _, c in ipairs{ { "udp", "u1" }, { "tcp", "t1" } } do
    local tr, mode = c[1], c[2]
    it("places 500 calls, 50 at a time, over " .. tr .. " with 0 failed", function()
      local ua = assert(sip.ua{ listen = tr .. ":127.0.0.1:0" })
      finally(function() helper.stop_all(); ua:close() end)
      local port = helper.free_port()
      local sipp = helper.sipp{ sf = "uas_calls.xml", port = port, transport = mode,
        args = { "-m", 500, "-timeout", "60", "-timeout_error", "-default_behaviors", "all,-abortunexp" } }
      local uri = "sip:service@127.0.0.1:" .. port .. (tr == "tcp" and ";transport=tcp" or "")
      local offer = sip.sdp.offer{ addr = "127.0.0.1", port = 4000 }
      local ok, failures = 0, {}
      helper.run(function()
        local done = 0
        for _ = 1, 50 do
          sip.spawn(function()
            for _ = 1, 10 do
              local call, err = ua:invite(uri, { sdp = offer, timeout = 10 })
              if not call then
                failures[#failures + 1] = "invite: " .. tostring(err)
              else
                local hung, herr = call:hangup()
                if hung then
                  ok = ok + 1
                else
                  failures[#failures + 1] = "hangup: " .. tostring(herr)
                end
              end
            end
            done = done + 1
          end)
        end
        while done < 50 do sip.sleep(0.05) end
      end, 80)
      assert.are.same({}, failures)
      assert.are.equal(500, ok)
      local rc = sipp:wait(20)
      assert.are.equal(0, rc, sipp.log())
      local s = ua:stats()
      assert.are.equal(0, s.calls)
      assert.are.equal(0, s.dialogs)
    end)
  end
end)
