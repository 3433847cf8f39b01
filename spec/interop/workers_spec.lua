--- `luasip -w N script.lua` (issue 18): N worker processes share the
-- listen ports (SO_REUSEPORT); a worker that dies is started again; a
-- SIGTERM to the supervisor stops them all. Each worker answers OPTIONS
-- with its sip.worker id and pid, so a test sees who answered.
local sip = require "sip"
local helper = require "helper"

local luasip = helper.root .. "/bin/luasip"

local SCRIPT = [[
local sip = require "sip"
local port = ...
local ua = assert(sip.ua{ listen = { "udp:127.0.0.1:" .. port, "tcp:127.0.0.1:" .. port } })
ua:on("OPTIONS", function(req)
  req:reply(200, nil, { headers = { ["X-Worker"] = sip.worker.id .. "/" .. sip.worker.count .. "/" ..
                                    require("sip.core").proc.getpid() } })
end)
]]

-- who answers an OPTIONS from each of `n` fresh UAs: { ["id/count/pid"] = count }
local function ask(port, n, transport)
  local seen = {}
  helper.run(function()
    for _ = 1, n do
      local ua = assert(sip.ua{ listen = (transport or "udp") .. ":127.0.0.1:0" })
      local uri = "sip:127.0.0.1:" .. port .. (transport == "tcp" and ";transport=tcp" or "")
      local res = ua:request("OPTIONS", uri, { timeout = 3 })
      local w = res and res:header("X-Worker") or "none"
      seen[w] = (seen[w] or 0) + 1
      ua:close()
    end
  end, 60)
  return seen
end

-- ask until both workers answered (they start at their own pace: under
-- valgrind, seconds), or 60 s: what was seen
local function ask_both(port, transport)
  local seen = {}
  local deadline = sip.now() + 60
  repeat
    for w, n in pairs(ask(port, 20, transport)) do seen[w] = (seen[w] or 0) + n end
    local both = 0
    for w in pairs(seen) do if w:match("^[12]/") then both = both + 1 end end
  until both >= 2 or sip.now() > deadline
  return seen
end

-- the workers that answered ("none" for a request before any listened)
local function ids(seen)
  local out = {}
  for w in pairs(seen) do out[#out + 1] = w:match("^(%d+)/") end
  table.sort(out)
  return table.concat(out, ",")
end

-- the parent of a process (its supervisor), from /proc
local function parent_of(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return nil end
  local stat = f:read("a")
  f:close()
  -- pid (comm) state ppid ...: comm may hold spaces, not ")"
  return tonumber(stat:match("%) %S+ (%d+)"))
end

local function alive(pid)
  return io.open("/proc/" .. pid .. "/stat") ~= nil
end

describe("luasip -w", function()
  after_each(helper.stop_all)

  it("two workers share the UDP and TCP port, one is restarted when it dies, TERM stops all", function()
    local port = helper.free_port()
    local path = helper.tmp .. "/workers-" .. math.random(1, 1e9) .. ".lua"
    local f = assert(io.open(path, "w"))
    f:write(SCRIPT)
    f:close()
    finally(function() os.remove(path) end)
    local sup = helper.spawn({ luasip, "-w", "2", path, tostring(port) }, "workers")
    -- many source ports: the kernel's hash sends them to both workers
    local seen = ask_both(port)
    assert.are.equal("1,2", ids(seen), sup.log())
    assert.are.equal("1,2", ids(ask_both(port, "tcp")), sup.log())
    -- worker 1 dies: the supervisor starts it again, with a new pid
    local old
    for w in pairs(seen) do if w:match("^1/") then old = tonumber(w:match("(%d+)$")) end end
    assert(os.execute("kill -KILL " .. old))
    local deadline = sip.now() + 30
    while not sup.log():find("starting it again", 1, true) and sip.now() < deadline do
      helper.spin(0.1)
    end
    assert.matches("worker 1 %(pid " .. old .. "%) killed by signal 9; starting it again", sup.log())
    -- the new worker 1 answers, the dead one cannot
    local again = ask_both(port)
    assert.are.equal("1,2", ids(again))
    for w in pairs(again) do assert.are_not.equal(old, tonumber(w:match("(%d+)$"))) end
    -- TERM to the supervisor: every worker ends, and so does it, with 0
    local workers = {}
    for w in pairs(again) do workers[#workers + 1] = tonumber(w:match("(%d+)$")) end
    local supervisor = parent_of(workers[1])
    assert.is_truthy(supervisor, sup.log())
    assert.are.equal(supervisor, parent_of(workers[2]))
    assert(os.execute("kill -TERM " .. supervisor))
    assert.are.equal(0, sup:wait(30), sup.log())
    for _, pid in ipairs(workers) do assert.is_false(alive(pid), "worker " .. pid .. " still runs") end
  end)

  it("sip.worker is nil in a process of its own", function()
    local out = helper.sh(helper.shell_quote(luasip) .. " -e 'print(require(\"sip\").worker)'")
    assert.are.equal("nil\n", out)
  end)

  it("refuses -w without a script or with a bad count", function()
    local out, ok = helper.sh(helper.shell_quote(luasip) .. " -w 2")
    assert.is_false(ok)
    assert.matches("%-w needs a script", out)
    out, ok = helper.sh(helper.shell_quote(luasip) .. " -w zero x.lua")
    assert.is_false(ok)
    assert.matches("%-w needs a number of workers", out)
  end)
end)
