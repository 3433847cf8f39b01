--- The luasip REPL: `luasip` with no script, or `luasip -i script.lua`.
--
-- Lines are read on the loop that runs SIP (sip.edit: libedit on a
-- terminal, plain lines from a pipe), so handlers answer requests and
-- timers run while the prompt waits. Each line, or each chunk continued
-- over several lines like in the standard lua REPL, runs as a luasip
-- coroutine: a blocking call (ua:request, ua:invite, sip.sleep) simply
-- shows its result. Ctrl-C cancels the running line (an INVITE still in
-- progress gets CANCEL) or clears the line being typed; Ctrl-D or
-- sip.stop() leaves, closing the user agents.
-- Loaded by bin/luasip; not part of the public module.
-- @module sip.repl

local core = require "sip.core"

local edit = require "sip.edit"

local repl = {}

local HISTORY_MAX = 1000

local keywords = {
  "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if",
  "in", "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while",
}

-- fields read through a C __index, for completion after "msg."
local known_fields = {
  ["sip.Message"] = {
    "body", "call_id", "contact", "content_type", "cseq", "cseq_method", "from", "from_tag",
    "from_uri", "is_request", "method", "reason", "source", "status", "tls", "to", "to_tag",
    "to_uri", "transport", "uri", "via",
  },
  ["sip.Call"] = {
    "call_id", "from", "invite", "local", "local_tag", "remote", "remote_sdp", "remote_sdp_text",
    "remote_tag", "remote_target", "routes", "to", "uas",
  },
}

---------------------------------------------------------------------------
-- Showing values

local function quote(s)
  if #s > 80 then s = s:sub(1, 77) .. "..." end
  return (string.format("%q", s):gsub("\\\n", "\\n"))
end

local function safe_tostring(v)
  local ok, s = pcall(tostring, v)
  if ok and type(s) == "string" then return s end
  return type(v) .. " (tostring failed)"
end

local function has_tostring(v)
  local mt = getmetatable(v)
  return type(mt) == "table" and mt.__tostring ~= nil
end

-- one value inside a table: short, never recursive
local function brief(v)
  local t = type(v)
  if t == "string" then return quote(v) end
  if t == "table" and not has_tostring(v) then
    return next(v) == nil and "{}" or "{...}"
  end
  return safe_tostring(v)
end

local function key_text(k)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") then return k end
  return "[" .. brief(k) .. "]"
end

local function key_order(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return ta < tb end
  if ta == "number" or ta == "string" then return a < b end
  return safe_tostring(a) < safe_tostring(b)
end

local TABLE_ITEMS = 40

--- A table shown one level deep: { 1, 2, name = "x", sub = {...} }.
local function table_text(t)
  local parts = {}
  local n = rawlen(t)
  for i = 1, math.min(n, TABLE_ITEMS) do parts[#parts + 1] = brief(rawget(t, i)) end
  local keys = {}
  for k in next, t do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
  end
  table.sort(keys, key_order)
  for _, k in ipairs(keys) do
    if #parts >= TABLE_ITEMS then break end
    parts[#parts + 1] = key_text(k) .. " = " .. brief(rawget(t, k))
  end
  if n + #keys > #parts then parts[#parts + 1] = "..." end
  if #parts == 0 then return "{}" end
  return "{ " .. table.concat(parts, ", ") .. " }"
end

--- How the REPL shows a result: strings as they are (like lua), tables
-- one level deep, everything else through tostring (messages, calls and
-- user agents have a one-line summary).
function repl.format(v)
  if type(v) == "table" and not has_tostring(v) then return table_text(v) end
  return safe_tostring(v)
end

---------------------------------------------------------------------------
-- Completion

local function safe_index(obj, k)
  local t = type(obj)
  if t ~= "table" and t ~= "userdata" and t ~= "string" then return nil end
  if t == "table" then
    local v = rawget(obj, k)
    if v ~= nil then return v end
  end
  local ok, v = pcall(function() return obj[k] end)
  if ok then return v end
  return nil
end

local function callable(v)
  if type(v) == "function" then return true end
  local mt = getmetatable(v)
  return type(mt) == "table" and rawget(mt, "__call") ~= nil
end

local function add_keys(into, t, want_fn)
  if type(t) ~= "table" then return end
  for k, v in next, t do
    if type(k) == "string" and k:match("^[%a_][%w_]*$") and (not want_fn or callable(v)) then
      into[k] = true
    end
  end
end

-- the names reachable from obj after "." (all) or ":" (functions only)
local function names_of(obj, colon)
  local names = {}
  local t = type(obj)
  if t == "table" then
    add_keys(names, obj, colon)
  end
  local objmt = getmetatable(obj)
  local mt = objmt
  local depth = 0
  while type(mt) == "table" and depth < 5 do
    depth = depth + 1
    if type(mt.methods) == "table" then add_keys(names, mt.methods, colon) end
    local idx = rawget(mt, "__index")
    if type(idx) ~= "table" then break end
    add_keys(names, idx, colon)
    mt = getmetatable(idx)
  end
  if (t == "userdata" or t == "table") and not colon then
    -- fields computed by the C side (call.remote_tag, msg.method ...)
    local fields = type(objmt) == "table" and known_fields[rawget(objmt, "__name")]
    for _, f in ipairs(fields or {}) do names[f] = true end
  end
  return names
end

--- Candidates for the word before the cursor: a global, or a path of
-- fields ending in "." or ":" (ua:req -> ua:request).
function repl.complete(word, line, start, env)
  env = env or _G
  local before = line and start and line:sub(start, start) or ""
  if before == '"' or before == "'" then return {} end
  local names
  local prefix, partial = "", word
  local path, sep, last = word:match("^(.-)([%.:])([%a_]?[%w_]*)$")
  if path then
    if not path:match("^[%a_][%w_]*$") and not path:match("^[%a_][%w_]*[%.%w_]*[%w_]$") then
      return {}
    end
    if path:find("..", 1, true) then return {} end
    local obj = env
    for part in path:gmatch("[^%.]+") do
      obj = safe_index(obj, part)
      if obj == nil then return {} end
    end
    names = names_of(obj, sep == ":")
    prefix, partial = path .. sep, last
  else
    if word ~= "" and not word:match("^[%a_][%w_]*$") then return {} end
    names = names_of(env, false)
    for _, k in ipairs(keywords) do names[k] = true end
  end
  local out = {}
  local hidden = partial:sub(1, 1) ~= "_"
  for name in pairs(names) do
    if name:sub(1, #partial) == partial and not (hidden and name:sub(1, 1) == "_") then
      out[#out + 1] = prefix .. name
    end
  end
  table.sort(out)
  return out
end

---------------------------------------------------------------------------
-- Compiling a line

local function incomplete(err)
  return err and err:sub(-5) == "<eof>"
end

--- Compile a chunk typed at the prompt: first as an expression whose
-- values are shown ("= expr" too, as in lua 5.1), then as statements.
-- @return function, or nil and "incomplete", or nil and the error
function repl.compile(src, first)
  if first then
    local expr = src:match("^%s*=(.*)$")
    if expr then return load("return " .. expr, "=stdin", "t") end
    local fn = load("return " .. src, "=stdin", "t")
    if fn then return fn end
  end
  local fn, err = load(src, "=stdin", "t")
  if fn then return fn end
  if incomplete(err) then return nil, "incomplete" end
  return nil, err
end

---------------------------------------------------------------------------
-- Cancelling a line

-- an INVITE the line is still waiting for gets CANCEL: ua:invite keeps
-- its call in a local of the suspended coroutine
local function cancel_calls(co, CallMT)
  for level = 0, 200 do
    if not debug.getinfo(co, level, "l") then break end
    for i = 1, 250 do
      local name, v = debug.getlocal(co, level, i)
      if not name then break end
      if type(v) == "table" and getmetatable(v) == CallMT then
        local ok, state, uas = pcall(function() return v.state, v.uas end)
        if ok and state == "calling" and not uas then pcall(v.hangup, v) end
      end
    end
  end
end

-- Close every user agent from a luasip coroutine, so that each removes
-- its registrations (REGISTER, Expires: 0) and ends its calls with BYE,
-- and drive the loop until that is done or `timeout` seconds pass.
local function close_uas(sip, timeout)
  local uas = {}
  for ua in pairs(sip._handlers or {}) do uas[#uas + 1] = ua end
  if #uas == 0 then return end
  local done = false
  sip._spawn_with(function(ok, tb)
    done = true
    if not ok then io.stderr:write("luasip: closing: ", tostring(tb), "\n") end
  end, function()
    for _, ua in ipairs(uas) do ua:close() end
  end)
  local deadline = core.now() + (timeout or 5)
  while not done and core.now() < deadline do core.step(0.05) end
end

---------------------------------------------------------------------------
-- The REPL

--- Run `chunks` (functions, as for `luasip -i script.lua`) then read and
-- run lines until Ctrl-D, the end of the input or sip.stop().
-- @tparam table sip the sip module
-- @tparam[opt] {function,...} chunks
-- @treturn integer exit status: 0, or 1 when input that was not typed
-- at a terminal raised an error
function repl.start(sip, chunks, opts)
  opts = opts or {}
  chunks = chunks or {}
  local out, err_out = io.stdout, io.stderr
  local raw_print = print
  local reader
  local tty = false
  local prompting = false   -- a prompt is up, waiting for a line
  local pending_src = nil   -- an incomplete chunk being continued
  local running = nil       -- the line's job: { co, cancelled }
  local finished = false
  local failures = 0
  local home = os.getenv("HOME")
  local history = opts.history or (home and home ~= "" and (home .. "/.luasip_history"))
  local last_history
  local prompt

  -- output while a prompt is up goes above it, and the prompt is redrawn
  local function echo(fn, ...)
    if prompting and tty then
      reader:hide()
      local ok, e = pcall(fn, ...)
      reader:show()
      if not ok then error(e, 0) end
    else
      fn(...)
    end
  end

  local function report(msg)
    echo(function()
      err_out:write(tostring(msg), "\n")
      err_out:flush()
    end)
  end

  local function show_results(n, ...)
    if n == 0 then return end
    local parts = {}
    for i = 1, n do parts[i] = repl.format((select(i, ...))) end
    out:write(table.concat(parts, "\t"), "\n")
    out:flush()
  end

  local function remember(src)
    if not tty or not history or src:match("^%s*$") or src == last_history then return end
    last_history = src
    reader:history_add(src)
    reader:history_save(history, HISTORY_MAX)
  end

  -- a line that raised: its traceback (a SIGINT while the line ran Lua
  -- code raised "interrupted!" in it, as in lua's own REPL)
  local function job_failed(tb)
    failures = failures + 1
    if tty and tostring(tb):find("^interrupted!") then out:write("\n") end
    -- the REPL's own frames say nothing to the user
    tb = tostring(tb):gsub("\n[^\n]*sip/repl%.lua:[^\n]*", ""):gsub("in %a+ 'line_chunk'", "in main chunk")
    out:flush()
    err_out:write(tb, "\n")
    err_out:flush()
  end

  local function run(line_chunk, after)
    local job = {}
    running = job
    job.co = sip._spawn_with(function(ok, ...)
      if job.cancelled then return end
      running = nil
      reader:guard(nil)
      if ok then
        show_results(select("#", ...), ...)
      else
        job_failed((...))
      end
      after()
    end, function(...)
      reader:guard(coroutine.running())
      local r = table.pack(line_chunk(...))   -- not a tail call: keeps the traceback
      return table.unpack(r, 1, r.n)
    end)
  end

  local function cancel(job)
    job.cancelled = true
    running = nil
    reader:guard(nil)
    local co = job.co
    if co and coroutine.status(co) == "suspended" then
      cancel_calls(co, core.Call)
      -- closing runs the line's pending <close> variables: a sleep's
      -- timer stops; a late answer finds the coroutine dead and is dropped
      pcall(coroutine.close, co)
    end
  end

  prompt = function()
    if finished then return end
    prompting = true
    local p
    if tty then
      if pending_src then
        p = rawget(_G, "_PROMPT2") or ">> "
      else
        p = rawget(_G, "_PROMPT") or "> "
      end
    end
    reader:read(tostring(p or ""))
  end

  local function on_line(text)
    prompting = false
    local first = pending_src == nil
    local src = first and text or (pending_src .. "\n" .. text)
    if first and src:match("^%s*$") then
      prompt()
      return
    end
    local fn, err = repl.compile(src, first)
    if not fn and err == "incomplete" then
      pending_src = src
      prompt()
      return
    end
    pending_src = nil
    remember(src)
    if not fn then
      failures = failures + 1
      err_out:write(err, "\n")
      err_out:flush()
      prompt()
      return
    end
    run(fn, prompt)
  end

  local function on_eof()
    prompting = false
    finished = true
    if pending_src then
      -- the input ended inside a chunk: say what lua would say
      local _, err = load(pending_src, "=stdin", "t")
      pending_src = nil
      if err then
        failures = failures + 1
        err_out:write(err, "\n")
        err_out:flush()
      end
    end
    core.stop()
  end

  local function on_interrupt()
    if running then
      local job = running
      -- a line inside a loop of its own (core.step ...) is stopped by
      -- the hook sip.edit set on it: "interrupted!"
      if job.co and coroutine.status(job.co) ~= "suspended" then return end
      cancel(job)
      if tty then out:write("\n") end    -- after the terminal's ^C
      report("cancelled")
      prompt()
    elseif prompting then
      -- Ctrl-C at the prompt: drop what was typed
      reader:pause()
      prompting = false
      pending_src = nil
      if tty then out:write("\n") end
      prompt()
    end
  end

  local function on_complete(word, line, start)
    return repl.complete(word, line, start)
  end

  if rawget(_G, "sip") == nil then _G.sip = sip end
  -- a mistake of the REPL itself must not leave it without a prompt
  local function guarded(fn)
    return function(...)
      local ok, e = pcall(fn, ...)
      if not ok then
        err_out:write("luasip repl: ", tostring(e), "\n")
        if not finished and not running and not prompting then prompt() end
      end
    end
  end

  reader = edit.open({ line = guarded(on_line), eof = guarded(on_eof),
                       interrupt = guarded(on_interrupt), complete = on_complete },
                     { tty = opts.tty })
  tty = reader:tty()

  -- what handlers print while the prompt waits goes above the prompt
  local own_log
  if tty then
    _G.print = function(...) return echo(raw_print, ...) end
    sip._echo = echo
    if not sip._log_fn then
      own_log = function(level, msg)
        echo(function()
          err_out:write("luasip ", level, ": ", msg, "\n")
          err_out:flush()
        end)
      end
      sip.log(nil, own_log)
    end
    if history then reader:history_load(history) end
    out:write(sip._VERSION, " on ", _VERSION,
              "  (Ctrl-D leaves, Ctrl-C cancels a line, Tab completes)\n")
    out:flush()
  end

  -- the script's chunks, one after the other, then the prompt
  local i = 0
  local function next_chunk()
    i = i + 1
    if chunks[i] then
      run(chunks[i], next_chunk)
    else
      prompt()
    end
  end
  next_chunk()

  if not finished then core.run() end
  finished = true

  -- leaving: abandon a line still running, give the terminal back, close
  -- the user agents (their dialogs end with BYE)
  if running then cancel(running) end
  if prompting then reader:hide() end
  prompting = false
  reader:close()
  if tty then
    _G.print = raw_print
    sip._echo = nil
    if own_log and sip._log_fn == own_log then sip.log(nil, false) end
  end
  close_uas(sip)
  out:flush()
  if not tty and failures > 0 then return 1 end
  return 0
end

return repl
