--- Where traced SIP messages go: lines of text, a pcap file, a ladder.
-- Private module behind sip.trace and the runner's --pcap and --ladder.
--
-- Two layers of sinks share the core's one trace hook: the script's
-- (sip.trace) and the runner's (luasip --pcap/--ladder), so a script that
-- calls sip.trace(false) does not stop the runner's capture. Each layer is
-- replaced as a whole when it is set again.
-- @module sip.trace

local core = require "sip.core"
local check = require "sip.check"

local M = {}

local sip                      -- the sip module (set by bind): _short, _echo
local layers = { script = nil, runner = nil }   -- layer -> { sinks = {...}, close = fn }

local function is_tty()
  -- one look, on first use
  local ok = os.execute("test -t 1")
  return ok == true or ok == 0
end

-- The addresses of this process's sockets, learnt from the messages
-- traced: a message between two user agents of one process is traced twice
-- (sent by one, received by the other) but crossed the wire once. A
-- wildcard listener (0.0.0.0:5060) counts for loopback peers of its port.
local function our_addresses()
  local ours, wild = {}, {}
  local function note(here)
    if here and not ours[here] then
      ours[here] = true
      local p = here:match("^0%.0%.0%.0:(%d+)$") or here:match("^%[::%]:(%d+)$")
      if p then wild[p] = true end
    end
  end
  local function is_ours(peer)
    if ours[peer] then return true end
    local h, p = peer:match("^(.*):(%d+)$")
    return p ~= nil and wild[p] ~= nil and (h:match("^127%.") ~= nil or h == "[::1]")
  end
  return note, is_ours
end

local function stamp(t)
  return os.date("%H:%M:%S", math.floor(t)) .. string.format(".%03d", math.floor(t % 1 * 1000))
end

-- sip.trace(true) / ("full") / ("file"): a line (or the text) per message
local function lines_sink(how)
  local out, full = io.stdout, false
  local close
  if how == "full" then
    full = true
  elseif type(how) == "string" then
    local f, err = io.open(how, "a")
    if not f then return nil, err end
    out = f
    close = function() f:close() end
  end
  local short = sip._short
  return function(dir, proto, peer, text)
    local arrow = dir == "out" and "-->" or "<--"
    local line = stamp(core.now()) .. " " .. arrow .. " " .. proto .. " " .. peer ..
      (full and ("\n" .. text .. "\n") or ("  " .. short(text) .. "\n"))
    -- at the REPL's prompt the line goes above the prompt (sip.repl sets sip._echo)
    local echo = out == io.stdout and sip._echo
    if echo then
      echo(function() out:write(line); out:flush() end)
    else
      out:write(line)
      out:flush()
    end
  end, close
end

---------------------------------------------------------------------------
-- The ladder: one column per address, one row per message, printed once
-- (when sent; a message received from an address of this process was
-- printed when it went out).

local COLW = 28
local colors = { req = "\27[1;36m", ["1"] = "\27[33m", ["2"] = "\27[32m", err = "\27[31m",
                 dim = "\27[2m", off = "\27[0m" }

local function ladder_sink(out)
  out = out or io.stdout
  local color = is_tty()
  local cols, ncols = {}, 0     -- address -> column (1-based)
  local note, is_ours = our_addresses()
  local t0
  local function paint(c, s) return color and (colors[c] .. s .. colors.off) or s end
  local function header()
    local parts = { string.rep(" ", 12) }
    local names = {}
    for a, i in pairs(cols) do names[i] = a end
    for i = 1, ncols do
      local a = names[i]
      if #a > COLW - 2 then a = a:sub(1, COLW - 2) end
      local pad = COLW - #a
      parts[#parts + 1] = string.rep(" ", pad // 2) .. a .. string.rep(" ", pad - pad // 2)
    end
    out:write(paint("dim", (table.concat(parts):gsub("%s+$", ""))), "\n")
  end
  local function col(a)
    local c = cols[a]
    if not c then
      ncols = ncols + 1
      cols[a] = ncols
      c = ncols
    end
    return c
  end
  return function(dir, proto, peer, text, here)
    here = here or "?"
    note(here)
    if dir == "in" and is_ours(peer) then return end
    local now = core.now()
    t0 = t0 or now
    local src, dst = here, peer
    if dir == "in" then src, dst = peer, here end
    local before = ncols
    local a, b = col(src), col(dst)
    if ncols > before then header() end
    local first = text:match("^[^\r\n]*") or ""
    local label, kind
    local code = first:match("^SIP/2%.0%s+(%d%d%d)")
    if code then
      local cseq = text:match("\n[Cc][Ss][Ee][Qq]%s*:%s*%d+%s+(%S+)") or "?"
      label = first:sub(9) .. " (" .. cseq .. ")"
      kind = code:sub(1, 1) == "1" and "1" or code:sub(1, 1) == "2" and "2" or "err"
    else
      label = first:match("^(%S+)") or "?"
      kind = "req"
    end
    local lo, hi = math.min(a, b), math.max(a, b)
    -- the row: a bar per column, the arrow between the two columns' bars
    local function bar(k) return (k - 1) * COLW + COLW // 2 + 1 end
    local width = ncols * COLW
    local plain = {}
    for p = 1, width do plain[p] = " " end
    for k = 1, ncols do plain[bar(k)] = "|" end
    local pre = table.concat(plain, "", 1, bar(lo))
    local post = table.concat(plain, "", bar(hi) + 1, width)
    local body
    if lo == hi then
      -- to itself
      body = pre .. " <-> " .. paint(kind, label) .. post:sub(#label + 6)
    else
      local span = bar(hi) - bar(lo) - 1
      local shown = label
      if #shown > span - 4 then shown = shown:sub(1, math.max(0, span - 4)) end
      local fill = span - #shown - 2
      local left = fill // 2
      local arrow
      if a < b then
        arrow = ("-"):rep(left) .. " " .. paint(kind, shown) .. " " .. ("-"):rep(fill - left - 1) .. ">"
      else
        arrow = "<" .. ("-"):rep(left - 1) .. " " .. paint(kind, shown) .. " " .. ("-"):rep(fill - left)
      end
      body = pre .. arrow .. "|" .. post
    end
    out:write(string.format("%9.1f ms", (now - t0) * 1000), (body:gsub("%s+$", "")),
              "  ", paint("dim", proto), "\n")
    out:flush()
  end
end

---------------------------------------------------------------------------

local function install()
  local sinks = {}
  for _, name in ipairs{ "runner", "script" } do
    local l = layers[name]
    if l then for _, s in ipairs(l.sinks) do sinks[#sinks + 1] = s end end
  end
  if #sinks == 0 then
    core.trace(nil)
  elseif #sinks == 1 then
    core.trace(sinks[1])
  else
    core.trace(function(...)
      for i = 1, #sinks do sinks[i](...) end
    end)
  end
end

local function clear(name)
  local l = layers[name]
  layers[name] = nil
  if l then
    for _, c in ipairs(l.closes) do c() end
  end
end

local trace_options = { pcap = "string", ladder = "boolean", print = "boolean|string|function" }

-- `level` as in sip.check: 1 + how deep the function runs below the
-- public one, so errors point at the user's line

-- the sinks of `how` (any form sip.trace takes): checked first, then the
-- files opened; a file that cannot be opened closes those opened before
local function build(how, fname, level)
  local pcap, lines, fn, ladder
  if type(how) == "function" then
    fn = how
  elseif how == true or type(how) == "string" then
    lines = how
  elseif type(how) == "table" then
    check.opts(how, fname, 1, trace_options, level + 1)
    pcap, ladder = how.pcap, how.ladder
    if type(how.print) == "function" then fn = how.print else lines = how.print end
    if lines ~= nil and lines ~= false and lines ~= true and type(lines) ~= "string" then
      check.arg(1, fname, "option 'print' must be true, \"full\", a file name or a function", level + 1)
    end
  else
    check.arg(1, fname, "true, false, \"full\", a file name, a function or a table", level + 1)
  end
  local l = { sinks = {}, closes = {} }
  local function add(sink, close)
    l.sinks[#l.sinks + 1] = sink
    if close then l.closes[#l.closes + 1] = close end
  end
  if pcap then
    local pc, err = core.pcap.open(pcap)
    if not pc then check.arg(1, fname, "option 'pcap': " .. tostring(err), level + 1) end
    local note, is_ours = our_addresses()
    add(function(dir, proto, peer, text, here)
      note(here)
      if dir == "in" and is_ours(peer) then return end
      pc:write(dir, proto, peer, here, text)
    end, function() pc:close() end)
  end
  if lines then
    local sink, close_or_err = lines_sink(lines)
    if not sink then
      for _, c in ipairs(l.closes) do c() end
      check.arg(1, fname, close_or_err, level + 1)
    end
    add(sink, close_or_err)
  end
  if fn then add(fn) end
  if ladder then add(ladder_sink()) end
  return l
end

--- Set a layer's sinks ("script" or "runner"); nil or false clears it.
-- @param how as sip.trace takes
-- @string fname the public function named in errors
-- @int[opt=2] level as in sip.check (2: called by the public function)
function M.set(layer, how, fname, level)
  if how == nil or how == false then
    clear(layer)
  else
    local l = build(how, fname, (level or 2) + 1)
    clear(layer)
    layers[layer] = l
  end
  install()
end

--- Close every sink (the runner's exit).
function M.close()
  clear("script")
  clear("runner")
  install()
end

--- The ladder printer as a trace function (the runner's --ladder).
M.ladder = ladder_sink

function M.bind(s)
  sip = s
  return M
end

return M
