--- baresip (a real softphone, Debian's package, with its presence module)
-- against examples/presence.lua: baresip PUBLISHes its own state, which a
-- luasip watcher then receives; and baresip SUBSCRIBEs to a buddy whose
-- state a luasip publisher sets.
local helper = require "helper"
local sip = require "sip"
local core = require "sip.core"

local ua = helper.uas(after_each)

-- baresip's configuration in cfg: no audio device, a SIP listener on
-- phone_port, the account line and the contacts (address book) given
local function write_config(cfg, phone_port, account, contacts)
  local f = assert(io.open(cfg .. "/config", "w"))
  f:write(table.concat({
    "poll_method epoll",
    "sip_listen 127.0.0.1:" .. phone_port,
    "sip_transports udp",
    "audio_player aubridge,nowhere",
    "audio_source aubridge,nowhere",
    "module_path /usr/lib/baresip/modules",
    "module g711.so", "module aubridge.so",
    -- presence.so finds the accounts and the contacts when it loads: after them
    "module_app account.so", "module_app contact.so", "module_app presence.so",
  }, "\n") .. "\n")
  f:close()
  f = assert(io.open(cfg .. "/accounts", "w"))
  f:write(account, "\n")
  f:close()
  f = assert(io.open(cfg .. "/contacts", "w"))
  f:write(contacts or "", "\n")
  f:close()
end

local function config_dir()
  local dir = helper.tmp .. "/baresip-presence-" .. math.random(1, 1e9)
  assert(os.execute("mkdir -p '" .. dir .. "'"))
  return dir
end

-- a process's log without colours (baresip paints presence states)
local function plain(proc)
  return (proc.log():gsub("\27%[[%d;]*m", ""))
end

-- until proc's log has `text` (plain, not a pattern), or `timeout` seconds;
-- drives the loop, or sleeps when called from a luasip coroutine
local function logged(proc, text, timeout)
  local deadline = core.now() + (timeout or 30)
  while not plain(proc):find(text, 1, true) do
    if core.now() > deadline then return false end
    if coroutine.isyieldable() then sip.sleep(0.1) else helper.spin(0.1) end
  end
  return true
end

-- the presence server on a free port, once it listens
local function start_server()
  local port = helper.free_port()
  local server = helper.spawn({ helper.root .. "/bin/luasip", helper.root .. "/examples/presence.lua",
                                "udp:127.0.0.1:" .. port }, "presence")
  assert(logged(server, "listening on", 30), server.log())
  return server, port
end

-- baresip shuts down on SIGTERM as on /quit: it withdraws its publication
-- (PUBLISH Expires 0), ends its subscriptions and unregisters
local function quit(phone)
  local pid = helper.sh("pgrep -s " .. phone.pid .. " -x baresip"):match("%d+")
  if pid then os.execute("kill -TERM " .. pid) end
  return phone:wait(30)
end

local function pidf(uri, basic)
  return '<?xml version="1.0" encoding="UTF-8"?>\r\n' ..
    '<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="' .. uri .. '">\r\n' ..
    '  <tuple id="spec"><status><basic>' .. basic .. '</basic></status></tuple>\r\n' ..
    '</presence>\r\n'
end

describe("examples/presence.lua with baresip", function()
  after_each(helper.stop_all)

  it("takes baresip's PUBLISH: a watcher's first NOTIFY has its PIDF, open", function()
    local dir = config_dir()
    finally(function() os.execute("rm -rf '" .. dir .. "'") end)
    local server, port = start_server()
    local alice = "sip:alice@127.0.0.1:" .. port
    -- baresip registers to the example (regint), and once registered
    -- publishes its state, open, every pubint seconds
    write_config(dir, helper.free_port(), "<" .. alice .. ">;regint=600;pubint=60")
    local phone = helper.spawn({ "baresip", "-f", dir, "-t", "120" }, "baresip-publish")
    assert(logged(server, "presence: " .. alice .. " is open", 30), server.log() .. "\n" .. phone.log())
    assert.matches("200 OK (luasip-presence) [1 binding]", plain(phone), nil, true)

    helper.run(function()
      local watcher = ua()
      local sub, err = watcher:subscribe(alice, { event = "presence", accept = "application/pidf+xml",
                                                  expires = 300 })
      assert(sub, err)
      local n = sub:notifies(10)()
      assert.are.equal("active", n.state)
      assert.are.equal("application/pidf+xml", n.content_type)
      assert.matches("<basic>open</basic>", n.body, nil, true)
      -- baresip's document, not one the example made up: it names its contact
      assert.matches("<contact>" .. alice .. "</contact>", n.body, nil, true)
      assert.matches('entity="' .. alice .. '"', n.body, nil, true)

      -- baresip quits: its publication is withdrawn, the watcher hears it
      -- is no longer open (closed; on a slow machine baresip may first
      -- publish its state as unknown while it unregisters)
      assert.are.equal(0, quit(phone), phone.log())
      local closed
      for m in sub:notifies(20) do
        if not m.body:find("<basic>open</basic>", 1, true) then closed = m break end
      end
      assert.truthy(closed, server.log())
      assert.are.equal("active", closed.state)
      assert(sub:unsubscribe())
    end, 90)
    local log = server.log()
    assert.matches("presence: notify " .. alice .. " open to " .. "[^\n]+: ok\n", log)
    local after_open = log:gsub(".-open to [^\n]+\n", "", 1)
    assert.matches("presence: notify " .. alice .. " %a+ to " .. "[^\n]+: ok\n", after_open)
  end)

  -- baresip's subscriber makes its dialog from the Contact of the 200 to
  -- its SUBSCRIBE (libre's sip_dialog_create): without one it gives up
  -- and answers the first NOTIFY 481
  it("SUBSCRIBEs from baresip: it hears its buddy go online, then offline", function()
    local dir = config_dir()
    finally(function() os.execute("rm -rf '" .. dir .. "'") end)
    local server, port = start_server()
    local bob = "sip:bob@127.0.0.1:" .. port
    -- the address book: bob, watched (presence=p2p: SUBSCRIBE to bob's URI)
    write_config(dir, helper.free_port(), "<sip:phone@127.0.0.1:" .. port .. ">;regint=0",
                 "\"Bob\" <" .. bob .. ">;presence=p2p")
    local phone = helper.spawn({ "baresip", "-f", dir, "-t", "120" }, "baresip-subscribe")
    -- nothing published for bob yet: baresip's first NOTIFY says closed
    local first = "presence: notify " .. bob .. " closed to sip:phone@127.0.0.1:" .. port .. ": ok"
    assert(logged(server, first, 30), server.log() .. "\n" .. phone.log())

    helper.run(function()
      local publisher = ua()
      local pub, err = publisher:publish{ uri = bob, event = "presence", body = pidf(bob, "open"),
                                          content_type = "application/pidf+xml", expires = 120 }
      assert(pub, err)
      assert(logged(phone, "<" .. bob .. "> changed status from Offline to Online", 20),
             phone.log() .. "\n" .. server.log())
      assert(pub:modify{ body = pidf(bob, "closed") })
      assert(logged(phone, "<" .. bob .. "> changed status from Online to Offline", 20),
             phone.log() .. "\n" .. server.log())
      assert(pub:remove())
    end, 90)
    local log = server.log()
    assert.matches("presence: notify " .. bob .. " open to sip:phone@127.0.0.1:" .. port .. ": ok",
                   log, nil, true)
    -- baresip quits: it ends its subscription (un-SUBSCRIBE), the example
    -- drops the watcher
    assert.are.equal(0, quit(phone), phone.log())
    assert(logged(server, "presence: sip:phone@127.0.0.1:" .. port .. " stopped watching " .. bob, 10),
           server.log())
  end)
end)
