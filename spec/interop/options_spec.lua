local sip = require "sip"
local helper = require "helper"

describe("SIPp sending OPTIONS to a Lua UA", function()
  for _, tr in ipairs{ { "udp", "u1" }, { "tcp", "t1" } } do
    it("answers 1000 OPTIONS at 500/s over " .. tr[1] .. " with 0 failed", function()
      local port = helper.free_port()
      local ua = assert(sip.ua{ listen = tr[1] .. ":127.0.0.1:" .. port })
      local served = 0
      ua:on("OPTIONS", function() served = served + 1; return 200 end)
      finally(function() helper.stop_all(); ua:close() end)
      local sipp = helper.sipp{ sf = "options_uac.xml", port = helper.free_port(),
        transport = tr[2], remote = "127.0.0.1:" .. port,
        args = { "-m", 1000, "-r", 500, "-l", 200, "-timeout", "30", "-timeout_error" } }
      local rc = sipp:wait(40)
      assert.are.equal(0, rc, sipp.log())
      assert.are.equal(1000, served)
    end)
  end
end)
