--- Packet loss (issue 8): SIPp's uac (spec/scenarios/uac_loss.xml) calls a Lua UAS while nftables drops
-- 10% of every UDP datagram sent, in both directions. Retransmissions
-- (SIPp's and the UAS's Timer G / 2xx resends) must carry every call
-- through: 0 failed calls on either side, and once 64*T1 has passed after
-- the last call, no transaction, dialog or call left in ua:stats().
--
-- The loss must not touch the machine's own traffic, so this file runs
-- itself again inside a private network namespace (`unshare -rn`, loopback
-- only) with the nftables rule loaded there; LUASIP_LOSS_NETNS=1 selects
-- that inner run, which reports to the outer one as JSON. Without unshare
-- or nft (or where the kernel refuses nftables in a user namespace) the
-- test is pending with the reason.
--
-- Both sides keep T1 = 500 ms (SIPp's is fixed there): a smaller T1 on the
-- UAS would end its BYE transaction (Timer J = 64*T1) before SIPp's last
-- BYE retransmission, which would then get a 481.
local sip = require "sip"
local helper = require "helper"

local INNER = os.getenv("LUASIP_LOSS_NETNS") == "1"
local CALLS = tonumber(os.getenv("LUASIP_LOSS_CALLS")) or 1000
local RATE = tonumber(os.getenv("LUASIP_LOSS_RATE")) or 100
local LOSS = 10   -- percent
local T1 = 0.5

local TITLE = string.format("%d calls SIPp uac -> Lua UAS over UDP with %d%% loss", CALLS, LOSS)

local NFT = {
  "nft add table inet loss",
  "nft add chain inet loss in '{ type filter hook input priority 0; }'",
  "nft add rule inet loss in meta l4proto udp numgen random mod 100 '<' " .. LOSS ..
    " counter drop",
}

local function sh_ok(cmd)
  return os.execute(cmd .. " >/dev/null 2>&1") == true
end

---------------------------------------------------------------------------
-- The outer run: set up the namespace and relay the inner results.

if not INNER then
  describe("packet loss (private network namespace with nftables)", function()
    local results, problem

    lazy_setup(function()
      local unshare
      for _, u in ipairs{ "unshare -rn", "unshare -n" } do
        if not unshare and sh_ok(u .. " true") then unshare = u end
      end
      if not unshare then
        problem = "pending: unshare -n is not permitted here (no user namespaces, not root)"
        return
      end
      local nft = io.popen("command -v nft || ls /usr/sbin/nft /sbin/nft 2>/dev/null"):read("l")
      if not nft or nft == "" then
        problem = "pending: nft not found (install Debian's nftables)"
        return
      end
      local nftdir = nft:match("^(.*)/[^/]*$")
      if not sh_ok(unshare .. " sh -c " .. helper.shell_quote(
          "PATH=$PATH:" .. nftdir .. "; nft add table inet probe")) then
        problem = "pending: nftables is refused inside the network namespace (" .. unshare .. ")"
        return
      end
      local lua = os.getenv("LUA") or "lua5.4"
      local busted = os.getenv("BUSTED_BIN") or "/usr/bin/busted"
      local errf = helper.tmp .. "/loss-inner.err"
      local inner = "PATH=$PATH:" .. nftdir .. " && ip link set lo up && " ..
                    table.concat(NFT, " && ") .. " && exec " .. helper.shell_quote(lua) .. " " ..
                    helper.shell_quote(busted) .. " --ignore-lua -o json spec/interop/loss_spec.lua"
      local cmd = "cd " .. helper.shell_quote(helper.root) .. " && LUASIP_LOSS_NETNS=1 " ..
                  unshare .. " sh -c " .. helper.shell_quote(inner) .. " 2>" ..
                  helper.shell_quote(errf)
      local p = assert(io.popen(cmd))
      local out = p:read("a")
      p:close()
      local json = require "dkjson"
      local doc
      for line in out:gmatch("[^\n]+") do
        if line:sub(1, 1) == "{" then doc = json.decode(line) end
      end
      if not doc then
        local ef = io.open(errf)
        local err = ef and ef:read("a") or ""
        if ef then ef:close() end
        problem = "the inner run in the network namespace produced no result (crash?); " ..
                  "stderr:\n" .. err:sub(-4000) .. "\nstdout:\n" .. out:sub(-2000)
        return
      end
      results = {}
      for status, list in pairs{ success = doc.successes, failure = doc.failures,
                                 error = doc.errors, pending = doc.pendings } do
        for _, r in ipairs(list or {}) do
          local name = r.element and r.element.name or r.name
          results[name] = { status = status, message = r.message, trace = r.trace }
        end
      end
    end)

    it(TITLE, function()
      if problem then
        if problem:match("^pending: ") then
          pending(problem:sub(10))
          return
        end
        error(problem, 0)
      end
      local r = results[TITLE]
      assert(r, "the inner run has no result for '" .. TITLE .. "'")
      if r.status == "pending" then
        pending(tostring(r.message))
      elseif r.status ~= "success" then
        error(tostring(r.message) .. (r.trace and r.trace.traceback or ""), 0)
      end
    end)
  end)
  return
end

---------------------------------------------------------------------------
-- The inner run, inside the namespace with the loss rule loaded.

local function wait_until(pred, timeout)
  local deadline = sip.now() + timeout
  while not pred() and sip.now() < deadline do helper.spin(0.05) end
  return pred()
end

-- packets the rule dropped so far
local function nft_dropped()
  local p = io.popen("nft list chain inet loss in 2>/dev/null")
  local out = p:read("a")
  p:close()
  return tonumber(out:match("counter packets (%d+)")) or 0
end

describe("packet loss", function()
  it(TITLE, function()
    local port = helper.free_port()
    local ua = assert(sip.ua{ listen = "udp:127.0.0.1:" .. port, t1 = T1 })
    local st = { incoming = 0, answered = 0, bye = 0, bye_before_ack = 0, other = {}, failed = {} }
    -- where each call's handler is, by Call-ID (removed when it ends),
    -- and a compact trace of every message, to explain a stuck call
    local stage, trace = {}, {}
    local t0 = sip.now()
    local date = io.popen("date +%H:%M:%S.%N")
    local t0_wall = date:read("l")
    date:close()
    sip.trace(os.getenv("LUASIP_LOSS_TRACE") ~= "0" and function(dir, _, peer, text)
      local cid = text:match("\r\n[Cc]all%-[Ii][Dd]:%s*([^\r]+)") or text:match("\r\ni:%s*([^\r]+)")
      if cid then
        local t = trace[cid]
        if not t then t = {}; trace[cid] = t end
        -- start line shortened, the To tag and the peer: enough to tell
        -- two dialogs or a misdirected response apart
        local totag = text:match("\r\nTo:[^\r]*;tag=([^;\r]+)") or text:match("\r\nt:[^\r]*;tag=([^;\r]+)")
        t[#t + 1] = string.format("%.3f%s%s%s%s", sip.now() - t0, dir == "out" and ">" or "<",
                                  text:match("^(%S+ %S+)"), totag and ("/" .. totag) or "",
                                  dir == "out" and ("@" .. tostring(peer)) or "")
      end
    end or false)
    ua:on("INVITE", function(call)
      local cid = call.call_id
      st.incoming = st.incoming + 1
      stage[cid] = { call = call, at = "ring" }
      call:ring()
      local ans = sip.sdp.answer(call.invite.body, { addr = "127.0.0.1", port = 6000 })
      stage[cid].at = "answer"
      local ok, err = call:answer{ sdp = ans }
      if not ok and err == "bye" then
        -- every ACK lost, then SIPp's BYE: the caller had the 2xx, so the
        -- call was answered and ended by BYE (answer() reports the BYE)
        st.bye_before_ack = st.bye_before_ack + 1
        st.bye = st.bye + 1
        stage[cid] = nil
        return
      elseif not ok then
        st.failed[#st.failed + 1] = tostring(err)
        stage[cid].at = string.format("answer failed '%s' at %.3f", tostring(err), sip.now() - t0)
        return
      end
      st.answered = st.answered + 1
      stage[cid].at = string.format("wait (answered at %.3f)", sip.now() - t0)
      local why = call:wait(90)
      if why == "bye" then
        stage[cid] = nil
        st.bye = st.bye + 1
      else
        stage[cid].at = string.format("ended '%s' at %.3f", tostring(why), sip.now() - t0)
        st.other[#st.other + 1] = tostring(why)
      end
    end)
    -- SIPp's own record of a call: its message log, one entry per line
    local sipp_msgs = helper.tmp .. "/loss_sipp_msgs.log"
    local sipp_errs = helper.tmp .. "/loss_sipp_errs.log"
    os.remove(sipp_msgs)
    os.remove(sipp_errs)
    local function sipp_view(cid)
      local f = io.open(sipp_msgs)
      if not f then return "no SIPp message log" end
      local all = f:read("a")
      f:close()
      local out = {}
      local entry = "%-%-%-%-%- %S+ (%S+)\n%S+ message (%a+)[^\n]*\n\n(.-)\n%-%-%-%-%-"
      for stamp, kind, msg in (all .. "\n-----"):gmatch(entry) do
        if msg:find("\nCall-ID: " .. cid .. "\r", 1, true) then
          out[#out + 1] = (stamp:match("%d+:%d+%.%d%d%d") or stamp) .. (kind == "sent" and ">" or "<") ..
                          (msg:match("^(%S+ %S+)") or "?")
        end
      end
      local e = io.open(sipp_errs)
      local errs = e and e:read("a") or ""
      if e then e:close() end
      local n = 0
      local at, needle = 1, "Call-ID: " .. cid .. "\r"
      while true do
        at = errs:find(needle, at, true)
        if not at then break end
        n, at = n + 1, at + 1
      end
      return table.concat(out, " | ") .. string.format(" (%d messages in SIPp's error log are of this call)", n)
    end
    local function stuck()
      local out = {}
      for cid, x in pairs(stage) do
        out[#out + 1] = string.format("%s: in %s\n  UAS: %s\n  SIPp: %s", cid, x.at,
                                      table.concat(trace[cid] or {}, " "), sipp_view(cid))
      end
      return string.format("%d calls not ended by BYE (UAS times from %s; SIPp's are MM:SS.mmm):\n",
                           #out, t0_wall) .. table.concat(out, "\n")
    end
    finally(function() sip.trace(false); helper.stop_all(); ua:close() end)

    -- SIPp's uac with its INVITE and BYE as transactions: the built-in one
    -- would take a late 200 for the INVITE as the BYE's (uac_loss.xml)
    local sipp = helper.sipp{ sf = "uac_loss.xml", port = helper.free_port(), transport = "u1",
      remote = "127.0.0.1:" .. port,
      -- a 2 s pause before the BYE: a lost ACK is resent on the UAS's
      -- 2xx retransmissions (T1, 3*T1) before the BYE goes out
      args = { "-m", CALLS, "-r", RATE, "-l", 400, "-d", 2000, "-s", "bob",
               "-recv_timeout", 40000, "-timeout", 120, "-timeout_error",
               "-trace_msg", "-message_file", sipp_msgs, "-trace_err", "-error_file", sipp_errs,
             } }
    local rc = sipp:wait(150)
    local sipp_time = sip.now() - t0
    assert.are.equal(0, rc, sipp.log():sub(-6000))
    -- every handler ends with SIPp's BYE; a late one would end with the
    -- no-ACK timeout (64*T1), so wait that long to tell which it was
    local t_done = sip.now()
    wait_until(function() return st.bye + #st.other + #st.failed >= CALLS end, 64 * T1 + 5)
    local late = sip.now() - t_done
    assert.are.same({}, st.failed, stuck())
    assert.are.same({}, st.other, string.format("%.1f s after SIPp: ", late) .. stuck())
    assert.are.equal(CALLS, st.incoming)
    assert.are.equal(CALLS, st.answered + st.bye_before_ack)
    assert.are.equal(CALLS, st.bye, stuck())

    -- the loss was real, and retransmissions repaired it
    local dropped = nft_dropped()
    local s = ua:stats()
    assert.is_true(dropped > CALLS * 0.2, "only " .. dropped .. " datagrams dropped")
    assert.is_true(s.retransmissions > 0, "no retransmission by the UAS")

    -- 64*T1 after the last call everything is gone (Timers J, H, L ...)
    local ok = wait_until(function()
      local x = ua:stats()
      return x.transactions == 0 and x.dialogs == 0 and x.calls == 0
    end, 64 * T1 + 5)
    s = ua:stats()
    io.stderr:write(string.format("loss_spec: SIPp done in %.1f s, %d datagrams dropped, " ..
      "%d UAS retransmissions, %d BYEs before the ACK\n", sipp_time, dropped, s.retransmissions,
      st.bye_before_ack))
    assert(ok, string.format("after 64*T1: %d transactions, %d dialogs, %d calls",
                             s.transactions, s.dialogs, s.calls))
  end)
end)
