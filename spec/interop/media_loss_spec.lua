--- RTP loss (issue 14): a 3 s prompt recorded across a path that drops
-- 10% of the RTP datagrams (nftables, in a private network namespace
-- made with `unshare -rn`, loopback only, so the machine's own traffic is
-- untouched) still gives a recording of the right length: lost packets
-- become silence of their length, and the session counts them. Packet
-- reordering is covered in spec/media_spec.lua with crafted packets (the
-- kernel here has no netem to reorder with).
local helper = require "helper"

local sh = helper.sh

describe("RTP through 10% loss", function()
  it("records a 3 s prompt as 3 s, the losses counted and filled with silence", function()
    local unshare
    for _, u in ipairs{ "unshare -rn", "unshare -n" } do
      if not unshare and select(2, sh(u .. " true")) then unshare = u end
    end
    if not unshare then return pending("unshare -n is not permitted here") end
    local nft = sh("command -v nft || ls /usr/sbin/nft /sbin/nft"):match("%S+")
    if not nft then return pending("nft not found (Debian's nftables)") end
    local dir = helper.tmp .. "/media-loss-" .. math.random(1, 1e9)
    sh("mkdir -p '" .. dir .. "'")
    finally(function() sh("rm -rf '" .. dir .. "'") end)
    local wav, rec = dir .. "/tone.wav", dir .. "/rec.wav"
    sh("sox -n -r 8000 -c 1 -b 16 '" .. wav .. "' synth 3 sine 1000 vol 0.5")
    local inner = table.concat({
      "PATH=$PATH:" .. nft:match("^(.*)/[^/]*$"),
      "ip link set lo up",
      "nft add table inet loss",
      "nft add chain inet loss in '{ type filter hook input priority 0; }'",
      -- the RTP ports only: SIP goes through untouched
      "nft add rule inet loss in udp dport 40000-40999 numgen random mod 100 '<' 10 counter drop",
      "exec timeout 60 " .. helper.shell_quote(helper.root .. "/bin/luasip") .. " " ..
        helper.shell_quote(helper.root .. "/spec/interop/netns/media_loss.lua") .. " " ..
        helper.shell_quote(wav) .. " " .. helper.shell_quote(rec),
    }, " && ")
    local out, ok = sh(unshare .. " sh -c " .. helper.shell_quote(inner))
    if not ok and out:find("Operation not permitted") then
      return pending("nftables is refused in the namespace: " .. out)
    end
    assert.is_true(ok, out)
    local r = {}
    for k, v in out:gmatch("(%w+)=(%S+)") do r[k] = tonumber(v) or v end
    assert.are.equal("hangup", r.reason, out)
    -- about 15 of 150 packets lost; never all, never none
    assert.is_true(r.lost > 0 and r.lost < 50, out)
    assert.is_true(r.received + r.lost >= 145, out)
    -- the recording spans the prompt: lost packets are silence, not gaps
    local d = tonumber((sh("sox --i -D '" .. rec .. "'")))
    assert.is_true(math.abs(d - 3) < 0.1, "recorded " .. tostring(d) .. " s\n" .. out)
  end)
end)
