--- The REPL (bin/luasip with no script): through a pipe, and in a real
-- terminal driven with tmux.
local helper = require "helper"
local sip = require "sip"
local core = require "sip.core"

local q = helper.shell_quote
local luasip = helper.root .. "/bin/luasip"

local function readall(path)
  local f = io.open(path)
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

local function writefile(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

local function have(cmd)
  return os.execute("command -v " .. cmd .. " >/dev/null 2>&1") == true
end

local function tmpname(tag)
  return helper.tmp .. "/repl-" .. tag .. "-" .. tostring(math.random(1, 1e9))
end

-- run luasip with `input` on stdin; returns stdout, stderr, exit status
local function pipe(input, args)
  local base = tmpname("pipe")
  writefile(base .. ".in", input)
  local cmd = "cd " .. q(helper.root) .. " && HOME=" .. q(helper.tmp) .. " " .. q(luasip) ..
              " " .. (args or "") .. " <" .. q(base .. ".in") .. " >" .. q(base .. ".out") ..
              " 2>" .. q(base .. ".err")
  local _, _, rc = os.execute(cmd)
  local out, err = readall(base .. ".out"), readall(base .. ".err")
  os.remove(base .. ".in"); os.remove(base .. ".out"); os.remove(base .. ".err")
  return out, err, rc
end

describe("repl through a pipe", function()
  it("runs each line and prints what it prints", function()
    local out, err, rc = pipe("print(1+1)\n")
    assert.equals("2\n", out)
    assert.equals("", err)
    assert.equals(0, rc)
  end)

  it("shows the values of expressions, `= expr` too, tables one level deep", function()
    local out = pipe('1+1, "x"\n= 3*3\nx = 5\nx\n{ 1, 2, a = "b", t = { 1 } }\nnil\n')
    assert.equals('2\tx\n9\n5\n{ 1, 2, a = "b", t = {...} }\nnil\n', out)
  end)

  it("continues an incomplete chunk over several lines", function()
    local out = pipe("for i = 1, 3 do\n  print(i * 10)\nend\nprint('after')\n")
    assert.equals("10\n20\n30\nafter\n", out)
  end)

  it("runs a blocking request and shows the response's summary", function()
    local out, err = pipe('ua = sip.ua()\nua:request("OPTIONS", ua:uri())\nsip.sleep(0.1)\n')
    assert.equals("", err)
    assert.matches("^sip%.Message: 200 OK %(OPTIONS, call%-id [^)]+%)\ntrue\n$", out)
  end)

  it("reports a syntax error and an error, and goes on", function()
    local out, err, rc = pipe("x = = 1\nerror('boom')\nprint('still here')\n")
    assert.equals("still here\n", out)
    assert.matches("stdin:1: unexpected symbol near '='", err, 1, true)
    assert.matches("stdin:1: boom", err, 1, true)
    assert.matches("stack traceback", err, 1, true)
    assert.equals(1, rc)   -- input that was not typed: errors show in the status
  end)

  it("reports a chunk left incomplete at the end of the input", function()
    local _, err, rc = pipe("for i = 1, 2 do\n")
    assert.matches("'end' expected near <eof>", err, 1, true)
    assert.equals(1, rc)
  end)

  it("sip.stop() leaves the REPL", function()
    local out, _, rc = pipe("print(1)\nsip.stop()\nprint(2)\n")
    assert.equals("1\n", out)
    assert.equals(0, rc)
  end)

  it("leaves cleanly: registrations are removed and calls get BYE", function()
    local port = helper.free_port()
    local srv = assert(sip.ua{ listen = "udp:127.0.0.1:" .. port })
    local expires, ended = {}, nil
    srv:on("REGISTER", function(req)
      expires[#expires + 1] = req:header("Expires")
      return 200
    end)
    srv:on("INVITE", function(call)
      call:answer()
      ended = call:wait(10)
    end)
    local input = tmpname("leave") .. ".in"
    writefile(input, table.concat({
      'ua = sip.ua()',
      'reg = ua:register{ registrar = "sip:127.0.0.1:' .. port .. '", aor = "sip:repl@127.0.0.1", ' ..
        'expires = 600 }',
      'print(reg.state)',
      'call = ua:invite("sip:srv@127.0.0.1:' .. port .. '")',
      'print(call.state)',
      'sip.stop()',
    }, "\n") .. "\n")
    finally(function()
      helper.stop_all()
      srv:close()
      os.remove(input)
    end)
    local proc = helper.spawn({ "sh", "-c", "exec " .. q(luasip) .. " <" .. q(input) }, "repl")
    assert.equals(0, proc:wait(15), proc:log())
    assert.equals("registered\nconfirmed\n", proc:log())
    local deadline = core.now() + 5
    while not (ended and #expires >= 2) and core.now() < deadline do core.step(0.05) end
    assert.equals("bye", ended)
    assert.same({ "600", "0" }, expires)
  end)

  it("runs the script of -i first, with its globals", function()
    local script = tmpname("script") .. ".lua"
    writefile(script, "greeting = 'hello from the script'\nprint('script ran')\n")
    finally(function() os.remove(script) end)
    local out = pipe("print(greeting)\n", "-i " .. q(script))
    assert.equals("script ran\nhello from the script\n", out)
  end)

  it("SIGINT cancels the running line (and an INVITE in progress gets CANCEL)", function()
    local base = tmpname("sigint")
    writefile(base .. ".in", table.concat({
      'b = sip.ua()',
      'b:on("INVITE", function(call) call:ring() ended = call:wait() end)',
      'a = sip.ua()',
      'a:invite(b:uri("bob"))',
      'sip.sleep(0.3)',
      'print("callee saw", ended)',
      'sip.sleep(60)',
      'print("after the sleep")',
    }, "\n") .. "\n")
    finally(function()
      os.execute("kill -9 $(cat " .. q(base .. ".pid") .. ") 2>/dev/null")
      for _, ext in ipairs{ ".in", ".out", ".err", ".pid" } do os.remove(base .. ext) end
    end)
    os.execute("cd " .. q(helper.root) .. " && (" .. q(luasip) .. " <" .. q(base .. ".in") ..
               " >" .. q(base .. ".out") .. " 2>" .. q(base .. ".err") .. " & echo $! >" ..
               q(base .. ".pid") .. ")")
    local pid = readall(base .. ".pid"):match("%d+")
    local function wait_for(file, text, timeout)
      local deadline = core.now() + timeout
      repeat
        if readall(file):find(text, 1, true) then return true end
        helper.spin(0.02)
      until core.now() > deadline
      return false, readall(file)
    end
    -- the INVITE is ringing: interrupt it
    helper.spin(0.5)
    os.execute("kill -INT " .. pid)
    assert.truthy(wait_for(base .. ".out", "callee saw\tcancel", 3))
    -- now the 60 s sleep: back within a second
    helper.spin(0.3)
    local t0 = core.now()
    os.execute("kill -INT " .. pid)
    assert.truthy(wait_for(base .. ".out", "after the sleep", 1))
    assert.is_true(core.now() - t0 < 1)
    assert.matches("cancelled", readall(base .. ".err"), 1, true)
  end)
end)

---------------------------------------------------------------------------
-- In a terminal

local tmux_ok = have("tmux")

local function terminal(home)
  local t = {}
  -- a server of our own, on a socket of our own, never the user's
  t.socket = tmpname("tmux")
  local tm = "tmux -f /dev/null -S " .. q(t.socket) .. " "
  t.exitfile = home .. "/exit-status"
  local cmd = "cd " .. q(helper.root) .. " && HOME=" .. q(home) .. " " .. q(luasip) ..
              "; echo $? > " .. q(t.exitfile) .. "; sleep 600"
  assert(os.execute(tm .. "new-session -d -s repl -x 200 -y 50 " .. q(cmd)))

  function t.screen()
    local p = io.popen(tm .. "capture-pane -p -t repl 2>/dev/null")
    local s = p:read("a")
    p:close()
    return s
  end
  -- literal text, then Enter
  function t.type(text)
    os.execute(tm .. "send-keys -t repl -l " .. q(text))
    os.execute(tm .. "send-keys -t repl Enter")
  end
  function t.keys(...)
    for _, k in ipairs{ ... } do os.execute(tm .. "send-keys -t repl " .. k) end
  end
  function t.text(text)
    os.execute(tm .. "send-keys -t repl -l " .. q(text))
  end
  -- the last lines of the screen that are not blank
  function t.tail(n)
    local lines = {}
    for l in t.screen():gmatch("[^\n]*") do lines[#lines + 1] = l end
    while #lines > 0 and lines[#lines]:match("^%s*$") do lines[#lines] = nil end
    return table.concat(lines, "\n", math.max(1, #lines - (n or 1) + 1))
  end
  -- wait until fn(screen) is true; drives this process's loop meanwhile
  function t.wait(fn, timeout)
    local deadline = core.now() + (timeout or 5)
    repeat
      if fn(t.screen()) then return true end
      helper.spin(0.02)
    until core.now() > deadline
    return false
  end
  function t.wait_text(text, timeout)
    assert(t.wait(function(s) return s:find(text, 1, true) ~= nil end, timeout),
           "no " .. text .. " on the screen:\n" .. t.screen())
  end
  -- the prompt alone on the last line
  function t.at_prompt()
    return t.tail(1) == ">"
  end
  function t.wait_prompt(timeout)
    assert(t.wait(function() return t.at_prompt() end, timeout),
           "no prompt on the screen:\n" .. t.screen())
  end
  function t.close()
    os.execute(tm .. "kill-server >/dev/null 2>&1")
    os.remove(t.socket)
  end
  return t
end

local function home_dir()
  local dir = tmpname("home")
  os.execute("mkdir -p " .. q(dir))
  return dir
end

local describe_tty = tmux_ok and describe or pending

describe_tty("repl in a terminal (tmux)", function()
  local home, term

  before_each(function()
    home = home_dir()
    term = terminal(home)
    term.wait_prompt(5)
  end)

  after_each(function()
    if term then term.close() end
    helper.stop_all()
    if home then os.execute("rm -rf " .. q(home)) end
    term, home = nil, nil
  end)

  it("shows the status of a request typed at the prompt", function()
    term.type("ua = sip.ua()")
    term.type('ua:request("OPTIONS", ua:uri())')
    term.wait_text("sip.Message: 200 OK (OPTIONS, call-id")
    term.wait_prompt()
    -- the traffic, one line a message; the whole message with sip.show
    term.type("sip.trace(true)")
    term.type('res = ua:request("OPTIONS", ua:uri())')
    term.wait_text("--> UDP 127.0.0.1:")
    term.wait_text("<-- UDP 127.0.0.1:")
    term.type("sip.trace(false)")
    term.type("sip.show(res)")
    term.wait_text("SIP/2.0 200 OK")
    term.wait_text("CSeq: 1 OPTIONS")
    term.wait_prompt()
  end)

  it("answers requests from SIPp and from another process while the prompt idles", function()
    local port = helper.free_port()
    term.type('ua = sip.ua{ listen = "udp:127.0.0.1:' .. port .. '" }')
    term.type('ua:on("INVITE", function(call) print("call from " .. call.invite.from_uri) ' ..
              'call:answer() print("the call ended: " .. call:wait()) end)')
    term.type('ua:on("MESSAGE", function(req) print("message: " .. req.body) return 202 end)')
    term.wait_prompt()
    term.text("half typed")      -- the prompt is busy being typed at
    -- a request from this process
    local res = helper.run(function()
      local me = sip.ua()
      local r, e = me:request("MESSAGE", "sip:repl@127.0.0.1:" .. port,
                              { body = "hello repl", content_type = "text/plain", timeout = 5 })
      me:close()
      return r and r.status or e
    end, 10)
    assert.equals(202, res)
    term.wait_text("message: hello repl")
    -- a call from SIPp: INVITE, 200, ACK, BYE
    local sipp = helper.sipp{ sn = "uac", port = helper.free_port(),
                              remote = "127.0.0.1:" .. port, args = { "-m", "1", "-d", "200" } }
    assert.equals(0, sipp:wait(20), sipp:log())
    term.wait_text("the call ended: bye")
    -- what was typed is still there, below the output
    assert.equals("> half typed", term.tail(1))
  end)

  it("Ctrl-C during sip.sleep(60) returns to the prompt within a second", function()
    term.type("sip.sleep(60)")
    helper.spin(0.3)
    assert.is_false(term.at_prompt())
    local t0 = core.now()
    term.keys("C-c")
    term.wait_prompt(1)
    assert.is_true(core.now() - t0 < 1)
    assert.matches("cancelled", term.screen(), 1, true)
    term.type('print("after " .. "cancel")')
    term.wait_text("after cancel")
  end)

  it("Ctrl-C stops a line busy in Lua code, and clears a line being typed", function()
    term.type("while true do end")
    helper.spin(0.3)
    term.keys("C-c")
    term.wait_text("interrupted!")
    term.wait_prompt(1)
    term.text("never run")
    term.keys("C-c")
    term.wait_prompt(1)
    term.type('print("ok " .. "then")')
    term.wait_text("ok then")
    assert.is_nil(term.screen():find("never run\n[^>]", 1, false))
  end)

  it("prints a syntax error and the REPL continues", function()
    term.type("x = = 1")
    term.wait_text("stdin:1: unexpected symbol near '='")
    term.type("for i = 1, 2 do")
    term.type("print(i * 100)")
    term.type("end")
    term.wait_text("100\n200")
    term.wait_prompt()
  end)

  it("completes globals, fields and methods with Tab", function()
    term.type("ua = sip.ua()")
    term.text("ua:reque")
    term.keys("Tab")
    term.wait_text("> ua:request")
    term.text('("OPTIONS", ua:uri())')
    term.keys("Enter")
    term.wait_text("200 OK (OPTIONS")
    term.text("pri")
    term.keys("Tab")
    term.text("(sip.sl")
    term.keys("Tab")
    term.text(" == nil)")
    term.wait_text("> print(sip.sleep == nil)")
    term.keys("Enter")
    term.wait_text("\nfalse\n")
  end)

  it("saves the history in $HOME/.luasip_history and Ctrl-D leaves", function()
    term.type("x_history_marker = 42")
    term.wait_prompt()
    term.keys("C-d")
    assert.truthy(term.wait(function() return readall(term.exitfile) ~= "" end, 5))
    assert.equals("0", readall(term.exitfile):match("%d+"))
    assert.matches("x_history_marker = 42", readall(home .. "/.luasip_history"), 1, true)
    -- a new REPL has it: Up brings it back
    term.close()
    term = terminal(home)
    term.wait_prompt(5)
    term.keys("Up")
    term.wait_text("> x_history_marker = 42")
  end)
end)
