--- The scheduler (private): every coroutine luasip drives, its one wait
-- at a time, the wakes the C core queues, and the pool of coroutines that
-- run request handlers. sip (init.lua), sip.call, sip.register and the
-- other modules require it; scripts use the public functions in sip.
-- @module sip.sched
-- @local

local core = require "sip.core"

local coroutine, debug, error, type, tostring, pairs, ipairs, setmetatable, select =
      coroutine, debug, error, type, tostring, pairs, ipairs, setmetatable, select
local co_create, co_resume, co_running, co_status, co_yield =
      coroutine.create, coroutine.resume, coroutine.running, coroutine.status, coroutine.yield

local M = {}

-- The private sentinel every library wait yields: a user's own yield
-- inside a driven coroutine can never be mistaken for one of ours.
local WAIT = setmetatable({}, { __name = "sip.wait" })

local driven = setmetatable({}, { __mode = "k" })   -- coroutine -> on_exit or true
-- coroutine -> true while parked. Strong: a parked coroutine is kept
-- until its one wake, and while any is parked the loop is held alive
-- (core.hold), whatever timers run: an INVITE that got a 1xx has no
-- timer left, yet its 2xx must still be ACKed (RFC 3261 17.1.1.2).
-- The value is the wait's number: a wake queued by the C core carries
-- the number it was queued for, so a wake that arrives after its wait
-- ended another way (a cancel, a hangup) cannot end a later wait.
local waiting = {}
local n_waiting = 0
local wait_seq = 0
-- co -> how to end its current wait early (sip.first, a call's hangup);
-- CANCELLING once that was asked and the wait's own waker will wake it
local cancelers = {}
local CANCELLING = function() end
-- coroutine -> the call it belongs to (its handler, hooks, and what they
-- spawned): when the call ends, their pending waits return nil, "hangup"
local owners = setmetatable({}, { __mode = "k" })
local core_hold = core.hold
local task_ctx = setmetatable({}, { __mode = "k" }) -- pooled coroutine -> its task's context

-- Request handlers run in pooled coroutines: one that finished its task
-- yields DONE and waits in the pool for the next, so a call costs no new
-- thread, stack and call-info list. A task that fails kills its coroutine
-- (it is not pooled again).
local DONE = setmetatable({}, { __name = "sip.done" })
local pool, pool_n, POOL_MAX = {}, 0, 64

local log_levels = { error = 1, warn = 2, info = 3, debug = 4 }

local function log(level, msg)
  -- below the level set by sip.log: nothing (rare lines: one query each)
  if log_levels[level] > log_levels[core.log()] then return end
  -- core.log routes through the same sink as the C core's log lines
  local sink = M.log_sink
  if sink then
    sink(level, msg)
  else
    io.stderr:write("luasip ", level, ": ", msg, "\n")
  end
end

local resume

-- on_exit(ok, ...), or on_exit(ctx, ok, ...) for a pooled task
local function exit_with(co, on_exit, ok, ...)
  local ctx = task_ctx[co]
  if ctx ~= nil then
    task_ctx[co] = nil
    return on_exit(ctx, ok, ...)
  end
  return on_exit(ok, ...)
end

local function finish(co, ok, ...)
  local on_exit = driven[co]
  if not ok then
    local err = ...
    local tb = debug.traceback(co, tostring(err))
    driven[co] = nil
    if type(on_exit) == "function" then
      exit_with(co, on_exit, false, tb, err)
    else
      task_ctx[co] = nil
      log("error", "coroutine failed: " .. tb)
    end
    return
  end
  local first = ...
  if first == WAIT then
    if not waiting[co] then
      wait_seq = wait_seq + 1
      waiting[co] = wait_seq
      n_waiting = n_waiting + 1
      if n_waiting == 1 then core_hold(true) end
    end
    return
  end
  if first == DONE then
    -- a pooled task returned: its coroutine serves the next one
    driven[co] = nil
    owners[co] = nil
    if pool_n < POOL_MAX then
      pool_n = pool_n + 1
      pool[pool_n] = co
    end
    if type(on_exit) == "function" then return exit_with(co, on_exit, true, select(2, ...)) end
    task_ctx[co] = nil
    return
  end
  if co_status(co) == "dead" then
    driven[co] = nil
    if type(on_exit) == "function" then on_exit(true, ...) end
    return
  end
  do
    -- a bare coroutine.yield() in a driven coroutine: nothing will
    -- ever resume it, so say so instead of hanging silently
    log("warn", "a luasip coroutine yielded a value of its own; it will not be resumed")
  end
end

resume = function(co, ...)
  return finish(co, co_resume(co, ...))
end

-- The C core queues work here (wake, dispatch) and calls flush() once
-- its callbacks have returned, so Lua code never runs inside them.
-- Five slots per item (function and up to four arguments) in one flat
-- array: no table per queued item on this per-message path.
local runq, runq_n = {}, 0

local function queue(f, a, b, c, d, e)
  local n = runq_n
  runq[n + 1], runq[n + 2], runq[n + 3], runq[n + 4], runq[n + 5], runq[n + 6] = f, a, b, c, d, e
  runq_n = n + 6
end

local qhead = 1

local function run_queue()
  while qhead <= runq_n do
    local i = qhead
    local f, a, b, c, d, e = runq[i], runq[i + 1], runq[i + 2], runq[i + 3], runq[i + 4], runq[i + 5]
    runq[i], runq[i + 1], runq[i + 2], runq[i + 3], runq[i + 4], runq[i + 5] =
      nil, nil, nil, nil, nil, nil
    qhead = i + 6
    f(a, b, c, d, e)
  end
  qhead, runq_n = 1, 0
end

-- an error in one item is logged and the rest still run: the queue is
-- never left half-consumed
local function flush()
  while true do
    local ok, err = pcall(run_queue)
    if ok then return end
    log("error", "callback failed: " .. tostring(err))
  end
end

-- the outcome of a wait: exactly one resume per wait
local function wake_now(co, ...)
  if not waiting[co] then return end
  waiting[co] = nil
  cancelers[co] = nil
  n_waiting = n_waiting - 1
  if n_waiting == 0 then core_hold(false) end
  return resume(co, ...)
end

-- a wake for the wait numbered seq only
local function wake_seq(co, seq, a, b, c)
  if waiting[co] ~= seq then return end
  return wake_now(co, a, b, c)
end

-- the C core's wakes run from the queue, for the wait parked now
local function wake(co, a, b, c)
  queue(wake_seq, co, waiting[co], a, b, c)
end

-- End co's pending wait early with nil, reason: its canceler (a CANCEL,
-- a stopped player) ends it through its own waker, or it is woken now;
-- what its waker sends later is dropped (wake_seq).
local function cancel_wait(co, reason)
  if not waiting[co] then return false end
  local c = cancelers[co]
  if c == CANCELLING then return true end
  if c then
    cancelers[co] = CANCELLING
    c(co, reason)
  else
    wake_now(co, nil, reason)
  end
  return true
end

-- co belongs to call (one field for the usual single coroutine)
local function own(co, call)
  owners[co] = call
  local first = call._co
  if not first then
    call._co = co
  elseif first ~= co then
    local more = call._cos
    if not more then
      more = {}
      call._cos = more
    end
    more[#more + 1] = co
  end
end

-- the waits pending now in the call's coroutines: { co = seq }, or nil
local function owned_waits(call)
  local snap
  local co = call._co
  if co and owners[co] == call and waiting[co] then
    snap = { [co] = waiting[co] }
  end
  for _, c in ipairs(call._cos or {}) do
    if owners[c] == call and waiting[c] then
      snap = snap or {}
      snap[c] = waiting[c]
    end
  end
  return snap
end

-- end those of them that still wait on the same wait
local function cancel_owned(snap, reason)
  if not snap then return end
  for co, seq in pairs(snap) do
    if waiting[co] == seq then cancel_wait(co, reason) end
  end
end

local function current(name)
  local co, main = co_running()
  if main or not driven[co] then
    error(name .. ": must be called from a coroutine run by luasip " ..
          "(wrap the code in sip.run(function() ... end) or sip.spawn)", 3)
  end
  return co
end

-- park the running coroutine; `cancel(co, reason)`, when given, is how
-- to end this wait early (it must end it, through its waker or at once)
local function wait(cancel)
  if cancel then cancelers[co_running()] = cancel end
  return co_yield(WAIT)
end

local function spawn_with(on_exit, fn, ...)
  local co = co_create(fn)
  driven[co] = on_exit or true
  resume(co, ...)
  return co
end

-- spawn_with, the coroutine belonging to `owner` (a call) from its start
local function spawn_owned(on_exit, owner, fn, ...)
  local co = co_create(fn)
  driven[co] = on_exit or true
  if owner then own(co, owner) end
  resume(co, ...)
  return co
end

-- the next task for a pooled coroutine, taken as it starts
local next_fn, next_arg

-- a tail call: neither the task's function nor its argument stays on the
-- coroutine's stack once it returns, so a request or call nobody keeps
-- is collected while its coroutine waits in the pool
local function run_one()
  local fn, a = next_fn, next_arg
  next_fn, next_arg = nil, nil
  return fn(a)
end

local function pooled_main()
  while true do
    co_yield(DONE, run_one())
  end
end

-- fn(a) in a pooled coroutine, then on_exit(ctx, ok, ...) (ctx not nil);
-- nothing outside keeps the coroutine, which is reused after
local function spawn_task(on_exit, ctx, fn, a, owner)
  local co
  while pool_n > 0 do
    local c = pool[pool_n]
    pool[pool_n] = nil
    pool_n = pool_n - 1
    if co_status(c) == "suspended" then
      co = c
      break
    end
  end
  co = co or co_create(pooled_main)
  driven[co] = on_exit
  task_ctx[co] = ctx
  if owner then own(co, owner) end
  next_fn, next_arg = fn, a
  resume(co)
end


-- a new driven coroutine running fn(...), at once until its first wait;
-- one spawned by a call's coroutine belongs to that call too
local function spawn(fn, ...)
  local co = co_create(fn)
  driven[co] = true
  local owner = owners[co_running()]
  if owner then own(co, owner) end
  resume(co, ...)
  return co
end

-- the call the running coroutine belongs to, if any
local function owner_of(co)
  return owners[co]
end

local function is_driven(co)
  return driven[co] ~= nil
end

M.log, M.queue, M.flush, M.wake, M.wake_now = log, queue, flush, wake, wake_now
M.cancel_wait, M.own, M.owned_waits, M.cancel_owned = cancel_wait, own, owned_waits, cancel_owned
M.current, M.wait, M.spawn, M.spawn_with, M.spawn_owned, M.spawn_task =
  current, wait, spawn, spawn_with, spawn_owned, spawn_task
M.owner_of, M.is_driven = owner_of, is_driven

return M
