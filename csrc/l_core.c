/***
 * sip.core - the loop, timers, logging and the hooks of the scheduler.
 * The public module is lua/sip/init.lua; this file is its C half.
 * @module sip.core
 */
#define _POSIX_C_SOURCE 200809L
#include "lsip.h"

#include <ev.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <osipparser2/osip_parser.h>
#include <osipparser2/osip_port.h>

static const char *const level_names[] = { "error", "warn", "info", "debug", NULL };

struct lsip_env *lsip_env(lua_State *L)
{
	struct lsip_env *e;

	lua_getfield(L, LUA_REGISTRYINDEX, LSIP_ENV_KEY);
	e = lua_touserdata(L, -1);
	lua_pop(L, 1);
	if (!e || e->closed)
		luaL_error(L, "sip.core: environment closed");
	return e;
}

lua_State *lsip_wake_begin(struct lsip_env *e, int co_ref)
{
	lua_State *L = e->L;

	lsip_queued(e);
	lua_rawgeti(L, LUA_REGISTRYINDEX, e->wake_ref);
	lua_rawgeti(L, LUA_REGISTRYINDEX, co_ref);
	luaL_unref(L, LUA_REGISTRYINDEX, co_ref);
	return L;
}

/* Calls into Lua from a libev callback: errors never escape into libev */
void lsip_call(struct lsip_env *e, lua_State *L, int nargs)
{
	if (lua_pcall(L, nargs, 0, 0) != LUA_OK) {
		sip_log(&e->env, SIP_LOG_ERROR, "%s", lua_tostring(L, -1));
		lua_pop(L, 1);
	}
}

/*
 * The scheduler's wake() and dispatch() only queue; a prepare watcher runs
 * the queue at the start of the next loop iteration, once the engine's
 * callbacks have returned and before the loop blocks. So Lua code (which
 * may close a UA or answer a request) never runs inside a transaction or
 * transport callback that still uses the objects it would free. While work
 * is queued the loop holds a reference, so it neither exits nor blocks
 * with work pending; everything queued in one iteration runs in one flush.
 */
static void flush_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
	struct lsip_env *e = w->data;
	lua_State *L = e->L;

	(void)revents;
	/* what the flush itself queues (a close waking other waiters) runs
	 * now too: nothing may be left queued while the loop blocks */
	while (e->queued && L) {
		e->queued = 0;
		ev_unref(loop);
		lua_rawgeti(L, LUA_REGISTRYINDEX, e->flush_ref);
		lsip_call(e, L, 0);
	}
}

void lsip_queued(struct lsip_env *e)
{
	if (!e->queued) {
		e->queued = 1;
		ev_ref(e->env.loop);
	}
}

static void log_to_lua(void *arg, int level, const char *msg)
{
	struct lsip_env *e = arg;
	lua_State *L = e->L;

	if (L && e->log_ref != LUA_NOREF) {
		lua_rawgeti(L, LUA_REGISTRYINDEX, e->log_ref);
		lua_pushstring(L, level_names[level]);
		lua_pushstring(L, msg);
		if (lua_pcall(L, 2, 0, 0) == LUA_OK)
			return;
		lua_pop(L, 1);
	}
	fprintf(stderr, "luasip %s: %s\n", level_names[level], msg);
}

/* trace(dir, proto, peer, text, local): local is "ip:port", or nil */
static void trace_to_lua(void *arg, int out, int proto, const struct sockaddr *peer,
                         const struct sockaddr *local, const char *buf, size_t len)
{
	struct lsip_env *e = arg;
	lua_State *L = e->L;
	char a[64];

	if (!L || e->trace_ref == LUA_NOREF)
		return;
	sip_addr_str(peer, a, sizeof a);
	lua_rawgeti(L, LUA_REGISTRYINDEX, e->trace_ref);
	lua_pushstring(L, out ? "out" : "in");
	lua_pushstring(L, sip_proto_name(proto));
	lua_pushstring(L, a);
	lua_pushlstring(L, buf, len);
	if (local) {
		sip_addr_str(local, a, sizeof a);
		lua_pushstring(L, a);
	} else {
		lua_pushnil(L);
	}
	lsip_call(e, L, 5);
}

static int env_gc(lua_State *L)
{
	struct lsip_env *e = lua_touserdata(L, 1);

	if (e->closed)
		return 0;
	e->closed = 1;
	if (e->env.loop) {
		ev_ref(e->env.loop);
		ev_prepare_stop(e->env.loop, &e->flush_w);
		ev_loop_destroy(e->env.loop);
	}
	e->env.loop = NULL;
	return 0;
}

/***
 * Run the loop until sip.stop() or until nothing keeps it alive.
 * @function run
 */
static int l_run(lua_State *L)
{
	struct lsip_env *e = lsip_env(L);
	lua_State *prev = e->L;

	e->L = L;
	ev_run(e->env.loop, 0);
	e->L = prev;
	return 0;
}

/***
 * Hold the loop alive (true) or let it end when nothing else holds it
 * (false): the scheduler holds it while any coroutine waits, whatever
 * timers run (a 1xx stops Timers A and B, yet the INVITE still waits).
 * @function hold
 */
static int l_hold(lua_State *L)
{
	struct lsip_env *e = lsip_env(L);
	int on = lua_toboolean(L, 1);

	if (e->closed || on == e->held)
		return 0;
	e->held = on;
	if (on)
		ev_ref(e->env.loop);
	else
		ev_unref(e->env.loop);
	return 0;
}

static void step_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop; (void)w; (void)revents;
}

/* one loop iteration that waits at most `timeout` seconds (the timer
 * that bounds it keeps no one alive); returns ev_run's "alive" */
static int run_once(struct lsip_env *e, lua_State *L, double timeout)
{
	lua_State *prev = e->L;
	ev_timer t;
	int alive;

	ev_init(&t, step_timeout);
	lsip_timer_in(e->env.loop, &t, timeout);
	ev_unref(e->env.loop);
	e->L = L;
	alive = ev_run(e->env.loop, EVRUN_ONCE);
	e->L = prev;
	ev_ref(e->env.loop);
	ev_timer_stop(e->env.loop, &t);
	return alive;
}

/***
 * Run one loop iteration, waiting at most `timeout` seconds.
 * @function step
 * @treturn boolean true while something keeps the loop alive
 */
static int l_step(lua_State *L)
{
	lua_pushboolean(L, run_once(lsip_env(L), L, luaL_optnumber(L, 1, 0.)));
	return 1;
}

static int unfinished(const struct lsip_env *e)
{
	const struct lua_ua *lu;
	int n = 0;

	for (lu = e->uas; lu; lu = lu->next)
		if (lu->ua)
			n += sip_ua_unfinished(lu->ua);
	return n;
}

/***
 * Run the loop for at most `seconds` while a request we sent still waits
 * for its final response (an INVITE we CANCELled owes an ACK to its 487,
 * a BYE its retransmissions): the runner's exit lets them finish.
 * @function linger
 * @treturn integer the requests still unfinished
 */
static int l_linger(lua_State *L)
{
	struct lsip_env *e = lsip_env(L);
	double deadline;
	int n;

	ev_now_update(e->env.loop);
	deadline = ev_now(e->env.loop) + luaL_optnumber(L, 1, 2.);
	while ((n = unfinished(e)) > 0 && ev_now(e->env.loop) < deadline)
		run_once(e, L, 0.05);
	lua_pushinteger(L, n);
	return 1;
}

static int l_stop(lua_State *L)
{
	ev_break(lsip_env(L)->env.loop, EVBREAK_ALL);
	return 0;
}

static int l_now(lua_State *L)
{
	struct lsip_env *e = lsip_env(L);

	ev_now_update(e->env.loop);
	lua_pushnumber(L, ev_now(e->env.loop));
	return 1;
}

/* a sleep: one timer that wakes one coroutine */
struct lsip_timer {
	ev_timer w;
	struct lsip_env *e;
	int co_ref;
};

static void sleep_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct lsip_timer *t = (struct lsip_timer *)w;
	lua_State *L;

	(void)loop; (void)revents;
	L = lsip_wake_begin(t->e, t->co_ref);
	t->co_ref = LUA_NOREF;
	lua_pushboolean(L, 1);
	lsip_call(t->e, L, 2);
}

static int timer_gc(lua_State *L)
{
	struct lsip_timer *t = luaL_checkudata(L, 1, "sip.Timer");

	if (t->e && !t->e->closed)
		ev_timer_stop(t->e->env.loop, &t->w);  /* active or pending */
	if (t->co_ref != LUA_NOREF) {
		luaL_unref(L, LUA_REGISTRYINDEX, t->co_ref);
		t->co_ref = LUA_NOREF;
	}
	return 0;
}

/***
 * Wake coroutine `co` after `seconds` (the scheduler calls wake(co, true)).
 * @function timer
 * @treturn userdata the timer; collect or cancel it to stop it
 */
static int l_timer(lua_State *L)
{
	struct lsip_env *e = lsip_env(L);
	double secs = luaL_checknumber(L, 1);
	struct lsip_timer *t;

	luaL_checktype(L, 2, LUA_TTHREAD);
	luaL_argcheck(L, secs >= 0, 1, "seconds must not be negative");
	t = lua_newuserdatauv(L, sizeof *t, 0);
	memset(t, 0, sizeof *t);
	t->co_ref = LUA_NOREF;
	luaL_setmetatable(L, "sip.Timer");
	t->e = e;
	lua_pushvalue(L, 2);
	t->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	ev_init(&t->w, sleep_cb);
	lsip_timer_in(e->env.loop, &t->w, secs);
	/* the timer must live while armed: the scheduler keeps the object */
	return 1;
}

static int l_set_hooks(lua_State *L)
{
	struct lsip_env *e = lsip_env(L);

	luaL_checktype(L, 1, LUA_TFUNCTION);
	luaL_checktype(L, 2, LUA_TFUNCTION);
	luaL_checktype(L, 3, LUA_TFUNCTION);
	lua_pushvalue(L, 1);
	e->wake_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_pushvalue(L, 2);
	e->dispatch_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_pushvalue(L, 3);
	e->flush_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	return 0;
}

/***
 * Set the log level ("error", "warn", "info", "debug") and optionally a
 * function(level, message) that receives every log line.
 * @function log
 */
static int l_log(lua_State *L)
{
	struct lsip_env *e = lsip_env(L);

	if (!lua_isnoneornil(L, 1))
		e->env.log_level = luaL_checkoption(L, 1, NULL, level_names);
	if (lua_isfunction(L, 2)) {
		luaL_unref(L, LUA_REGISTRYINDEX, e->log_ref);
		lua_pushvalue(L, 2);
		e->log_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	} else if (lua_toboolean(L, 2) == 0 && !lua_isnone(L, 2)) {
		luaL_unref(L, LUA_REGISTRYINDEX, e->log_ref);
		e->log_ref = LUA_NOREF;
	}
	lua_pushstring(L, level_names[e->env.log_level]);
	return 1;
}

static int l_trace(lua_State *L)
{
	struct lsip_env *e = lsip_env(L);

	luaL_unref(L, LUA_REGISTRYINDEX, e->trace_ref);
	e->trace_ref = LUA_NOREF;
	e->env.trace_fn = NULL;
	if (lua_isfunction(L, 1)) {
		lua_pushvalue(L, 1);
		e->trace_ref = luaL_ref(L, LUA_REGISTRYINDEX);
		e->env.trace_fn = trace_to_lua;
		e->env.trace_arg = e;
	}
	return 0;
}

/* token(n) -> n characters from the CSPRNG (Call-IDs, tags) */
static int l_token(lua_State *L)
{
	char buf[65];
	lua_Integer n = luaL_optinteger(L, 1, 16);

	luaL_argcheck(L, n > 0 && n < 65, 1, "length must be 1..64");
	if (sip_random_token(buf, (size_t)n))
		return luaL_error(L, "the CSPRNG failed");
	lua_pushstring(L, buf);
	return 1;
}

/* headers_text(tbl, what) -> "Name: value\r\n" lines, checked */
static int l_headers_text(lua_State *L)
{
	lsip_headers_text(L, 1, luaL_optstring(L, 2, "opts.headers"));
	return 1;
}

static const luaL_Reg core_funcs[] = {
	{ "headers_text", l_headers_text },
	{ "token", l_token },
	{ "parse", lsip_parse },
	{ "name_addrs", lsip_name_addrs },
	{ "run", l_run },
	{ "step", l_step },
	{ "stop", l_stop },
	{ "hold", l_hold },
	{ "linger", l_linger },
	{ "now", l_now },
	{ "timer", l_timer },
	{ "set_hooks", l_set_hooks },
	{ "log", l_log },
	{ "trace", l_trace },
	{ NULL, NULL }
};

static void osip_trace_sink(const char *fi, int li, osip_trace_level_t level, const char *chfr,
                            va_list ap)
{
	(void)fi; (void)li; (void)level; (void)chfr; (void)ap;
}

/* constant: the functions sip/edit.so calls into the core with */
static const struct lsip_api core_api = { lsip_env, lsip_call, sip_log };

__attribute__((visibility("default"))) int luaopen_sip_core(lua_State *L);

int luaopen_sip_core(lua_State *L)
{
	struct lsip_env *e;

	/* parser_init builds libosip2's read-only lookup tables: safe to
	 * call again from a second Lua state */
	parser_init();
	/* OpenSSL writes to sockets with write(2): a peer that went away
	 * would kill the process with SIGPIPE. Like LuaSocket, ignore it
	 * unless the host program chose a handler of its own. */
	{
		struct sigaction sa;
		if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
			signal(SIGPIPE, SIG_IGN);
	}
	/* libosip2 prints parse errors to stderr itself; every drop is
	 * logged once, with its reason, by our own log function instead */
	osip_trace_initialize_func(TRACE_LEVEL0, osip_trace_sink);
	for (int lvl = 0; lvl < END_TRACE_LEVEL; lvl++)
		osip_trace_disable_level((osip_trace_level_t)lvl);
	lua_getfield(L, LUA_REGISTRYINDEX, LSIP_ENV_KEY);
	if (lua_isnil(L, -1)) {
		lua_pop(L, 1);
		e = lua_newuserdatauv(L, sizeof *e, 0);
		memset(e, 0, sizeof *e);
		e->closed = 1;
		e->wake_ref = e->dispatch_ref = e->log_ref = e->trace_ref = LUA_NOREF;
		e->flush_ref = LUA_NOREF;
		lua_newtable(L);
		lua_pushcfunction(L, env_gc);
		lua_setfield(L, -2, "__gc");
		lua_setmetatable(L, -2);
		e->env.loop = ev_loop_new(EVFLAG_AUTO);
		if (!e->env.loop)
			return luaL_error(L, "sip.core: cannot create the event loop");
		ev_prepare_init(&e->flush_w, flush_cb);
		e->flush_w.data = e;
		ev_prepare_start(e->env.loop, &e->flush_w);
		ev_unref(e->env.loop);
		/* callbacks outside run/step (a send from main's first slice,
		 * a close before the loop) use the main thread, which lives
		 * as long as the state */
		lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
		e->L = lua_tothread(L, -1);
		lua_pop(L, 1);
		e->closed = 0;
		e->env.log_level = SIP_LOG_WARN;
		e->env.log_fn = log_to_lua;
		e->env.log_arg = e;
		lua_setfield(L, LUA_REGISTRYINDEX, LSIP_ENV_KEY);
	} else {
		lua_pop(L, 1);
	}
	luaL_newmetatable(L, "sip.Timer");
	lua_pushcfunction(L, timer_gc);
	lua_setfield(L, -2, "__gc");
	lua_pushcfunction(L, timer_gc);
	lua_setfield(L, -2, "__close");
	lua_pushcfunction(L, timer_gc);
	lua_setfield(L, -2, "cancel");
	lua_pushvalue(L, -1);
	lua_setfield(L, -2, "__index");
	lua_pop(L, 1);

	luaL_newlib(L, core_funcs);
	lsip_open_msg(L);
	lua_setfield(L, -2, "Message");
	lsip_open_ua(L);
	lua_setfield(L, -2, "UA");
	lsip_open_call(L);
	lua_setfield(L, -2, "Call");
	lsip_open_dialog(L);
	lsip_open_sdp(L);
	lua_setfield(L, -2, "sdp_parse");
	lsip_open_auth(L);
	lua_setfield(L, -2, "auth");
	/* what sip/edit.so (and any module built beside us) borrows */
	lua_pushlightuserdata(L, (void *)&core_api);
	lua_setfield(L, LUA_REGISTRYINDEX, LSIP_API);
	lsip_open_media(L); lua_setfield(L, -2, "media");
	lsip_open_pcap(L);
	lua_setfield(L, -2, "pcap");
	lsip_open_socket(L);
	lua_setfield(L, -2, "socket");
	lsip_open_proc(L);
	lua_setfield(L, -2, "proc");
	return 1;
}
