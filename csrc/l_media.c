/***
 * sip.MediaSession - an RTP session (csrc/media/) given to Lua: its
 * socket pair, what it plays, tones, records, and its statistics. The
 * waits (play, tone, record) park a coroutine that the engine wakes once
 * with the outcome; lua/sip/media.lua turns them into blocking verbs.
 * Created by `sip.core.media.session{ addr =, ports = }`.
 * @classmod sip.MediaSession
 */
#include "lsip.h"
#include "media/session.h"
#include "media/tone.h"
#include "media/recorder.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int lsip_open_media(lua_State *L);

#define ENGINE_KEY "sip.media.engine"
#define SESSIONS_KEY "sip.media.sessions"   /* lightuserdata lm -> its userdata, weak values */
#define MT "sip.MediaSession"
#define MAX_FILES 256
#define NOPS 3                  /* MEDIA_OUTPUT, MEDIA_RECORD, MEDIA_DTMF */
#define DIGIT_QUEUE 64          /* digits queued for on_digit's function, not yet run */

/* the session userdata's user values */
enum { UV_DIGIT_FN = 1, UV_DELIVER = 2, NUV = 2 };

static const char *const source_names[] = { "rfc4733", "inband" };

/* the loop's media engine, made with the first session and kept in the
 * registry until the state closes (after every session: it is older) */
struct lengine {
	struct media_engine *m;
	struct lsip_env *e;
};

struct lmedia {
	struct media_session *s;
	struct lsip_env *e;
	struct lengine *eng;
	int self_ref;           /* pins the session while a coroutine waits on it */
	int co_ref[NOPS];       /* the coroutine waiting on the output, the recording, a DTMF send */
	int held[NOPS];         /* ... and the loop reference its wait holds */
	/* digits heard, each with a deliver() queued through the scheduler's
	 * dispatch: a flood stops at max_queued (the rest are counted in
	 * dtmf_dropped), whatever the Lua side does with them */
	int has_digit_fn;
	int dq_head, dq_n, dq_max;
	char dq_digit[DIGIT_QUEUE];
	unsigned char dq_src[DIGIT_QUEUE];
	/* the statistics at close, for a script that reads them after the
	 * call ended */
	int have_last;
	struct media_stats last;
	char last_local[64];
	int last_dir;
};

static int engine_gc(lua_State *L)
{
	struct lengine *g = lua_touserdata(L, 1);

	if (g->m) {
		if (g->e->closed)
			media_engine_detach(g->m);
		media_engine_free(g->m);
		g->m = NULL;
	}
	return 0;
}

static struct lengine *get_engine(lua_State *L, struct lsip_env *e)
{
	struct lengine *g;

	lua_getfield(L, LUA_REGISTRYINDEX, ENGINE_KEY);
	g = lua_touserdata(L, -1);
	lua_pop(L, 1);
	if (g && g->m)
		return g;
	g = lua_newuserdatauv(L, sizeof *g, 0);
	memset(g, 0, sizeof *g);
	lua_createtable(L, 0, 2);
	lua_pushcfunction(L, engine_gc);
	lua_setfield(L, -2, "__gc");
	lua_pushliteral(L, "sip.MediaEngine");
	lua_setfield(L, -2, "__name");
	lua_setmetatable(L, -2);
	g->e = e;
	if (media_engine_new(&g->m, e->env.loop))
		luaL_error(L, "media: out of memory");
	lua_setfield(L, LUA_REGISTRYINDEX, ENGINE_KEY);
	return g;
}

static int loop_alive(const struct lmedia *lm)
{
	return lm->e && !lm->e->closed && lm->e->env.loop;
}

/* a wait starts: the session is pinned and the loop held until it ends */
static void wait_begin(lua_State *L, struct lmedia *lm, int op, int co_idx)
{
	lua_pushvalue(L, co_idx);
	lm->co_ref[op] = luaL_ref(L, LUA_REGISTRYINDEX);
	if (!lm->held[op] && loop_alive(lm)) {
		ev_ref(lm->e->env.loop);
		lm->held[op] = 1;
	}
	if (lm->self_ref == LUA_NOREF) {
		lua_pushvalue(L, 1);
		lm->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	}
}

static void wait_end(lua_State *L, struct lmedia *lm, int op)
{
	if (lm->held[op]) {
		if (loop_alive(lm))
			ev_unref(lm->e->env.loop);
		lm->held[op] = 0;
	}
	if (lm->co_ref[op] != LUA_NOREF) {
		luaL_unref(L, LUA_REGISTRYINDEX, lm->co_ref[op]);
		lm->co_ref[op] = LUA_NOREF;
	}
	for (int i = 0; i < NOPS; i++)
		if (lm->co_ref[i] != LUA_NOREF)
			return;
	if (lm->self_ref != LUA_NOREF) {
		luaL_unref(L, LUA_REGISTRYINDEX, lm->self_ref);
		lm->self_ref = LUA_NOREF;
	}
}

/* the engine ended an operation: its coroutine is woken once, with
 * true | nil, reason[, digit] for the output and a DTMF send,
 * { duration =, reason = } for a recording */
static void on_done(void *arg, const struct media_result *r)
{
	struct lmedia *lm = arg;
	struct lsip_env *e = lm->e;
	int op = r->op, ref = lm->co_ref[op], n = 1;
	lua_State *L;

	if (ref == LUA_NOREF || !e->L || e->closed)
		return;
	lm->co_ref[op] = LUA_NOREF;
	L = lsip_wake_begin(e, ref);    /* releases ref */
	if (op == MEDIA_RECORD) {
		lua_createtable(L, 0, 2);
		lua_pushnumber(L, r->duration);
		lua_setfield(L, -2, "duration");
		lua_pushstring(L, r->end ? r->end : "stopped");
		lua_setfield(L, -2, "reason");
	} else if (r->ok) {
		lua_pushboolean(L, 1);
	} else {
		lua_pushnil(L);
		lua_pushstring(L, r->reason ? r->reason : "stopped");
		n = 2;
		if (r->digit) {
			lua_pushlstring(L, &r->digit, 1);
			n = 3;
		}
	}
	lsip_call(e, L, 1 + n);
	/* the session stays pinned through the call above: only now may
	 * it become garbage */
	wait_end(L, lm, op);
}

/* deliver(): one is queued per digit heard; it gives the oldest digit
 * waiting to the on_digit function as fn(digit, source). Its upvalue is
 * the session: a queued digit keeps it alive. */
static int l_deliver(lua_State *L)
{
	struct lmedia *lm = lua_touserdata(L, lua_upvalueindex(1));
	char d;
	int src;

	if (!lm || lm->dq_n == 0)
		return 0;
	d = lm->dq_digit[lm->dq_head];
	src = lm->dq_src[lm->dq_head];
	lm->dq_head = (lm->dq_head + 1) % DIGIT_QUEUE;
	lm->dq_n--;
	if (lua_getiuservalue(L, lua_upvalueindex(1), UV_DIGIT_FN) != LUA_TFUNCTION)
		return 0;
	lua_pushlstring(L, &d, 1);
	lua_pushstring(L, source_names[src]);
	lua_call(L, 2, 0);
	return 0;
}

/* the engine heard a digit (inside the socket's callback): queue
 * dispatch(deliver, digit, source), which runs deliver(digit, source)
 * from the scheduler's queue once the engine's callbacks returned */
static int on_digit(void *arg, char digit, int source)
{
	struct lmedia *lm = arg;
	struct lsip_env *e = lm->e;
	lua_State *L = e->L;

	if (!lm->has_digit_fn || !L || e->closed || e->dispatch_ref == LUA_NOREF)
		return 0;       /* nobody listens: not a drop */
	if (lm->dq_n >= lm->dq_max)
		return -1;
	if (!lua_checkstack(L, 8))
		return -1;
	if (lua_getfield(L, LUA_REGISTRYINDEX, SESSIONS_KEY) != LUA_TTABLE) {
		lua_pop(L, 1);
		return 0;
	}
	if (lua_rawgetp(L, -1, lm) != LUA_TUSERDATA) {
		lua_pop(L, 2);
		return 0;
	}
	if (lua_getiuservalue(L, -1, UV_DELIVER) != LUA_TFUNCTION) {
		lua_pop(L, 3);
		return 0;
	}
	lm->dq_digit[(lm->dq_head + lm->dq_n) % DIGIT_QUEUE] = digit;
	lm->dq_src[(lm->dq_head + lm->dq_n) % DIGIT_QUEUE] = (unsigned char)source;
	lm->dq_n++;
	lsip_queued(e);
	lua_rawgeti(L, LUA_REGISTRYINDEX, e->dispatch_ref);
	lua_insert(L, -2);
	lua_pushlstring(L, &digit, 1);
	lua_pushstring(L, source_names[source]);
	lsip_call(e, L, 3);
	lua_pop(L, 2);
	return 0;
}

static struct lmedia *check_media(lua_State *L, int idx)
{
	return luaL_checkudata(L, idx, MT);
}

static struct lmedia *check_open(lua_State *L, const char *fname)
{
	struct lmedia *lm = check_media(L, 1);

	if (!lm->s)
		luaL_error(L, "%s: the media session is closed", fname);
	return lm;
}

/* every key of the table at idx must be one of `known` */
static void check_keys(lua_State *L, int idx, const char *const *known, const char *fname)
{
	if (lua_isnoneornil(L, idx))
		return;
	luaL_checktype(L, idx, LUA_TTABLE);
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		int ok = 0;
		lua_pop(L, 1);
		if (lua_type(L, -1) == LUA_TSTRING) {
			const char *k = lua_tostring(L, -1);
			for (int i = 0; known[i] && !ok; i++)
				ok = !strcmp(k, known[i]);
		}
		if (!ok) {
			lua_pushfstring(L, "%s: unknown option '%s'", fname, luaL_tolstring(L, -1, NULL));
			lua_error(L);
		}
	}
}

static int opt_bool(lua_State *L, int t, const char *field, const char *fname)
{
	int v = 0;

	if (lua_isnoneornil(L, t))
		return 0;
	lua_getfield(L, t, field);
	if (!lua_isnil(L, -1)) {
		if (!lua_isboolean(L, -1))
			luaL_error(L, "%s: opts.%s must be a boolean", fname, field);
		v = lua_toboolean(L, -1);
	}
	lua_pop(L, 1);
	return v;
}

static double opt_num(lua_State *L, int t, const char *field, double dflt, const char *fname)
{
	double v = dflt;

	if (lua_isnoneornil(L, t))
		return dflt;
	lua_getfield(L, t, field);
	if (!lua_isnil(L, -1)) {
		if (lua_type(L, -1) != LUA_TNUMBER)
			luaL_error(L, "%s: opts.%s must be a number", fname, field);
		v = lua_tonumber(L, -1);
	}
	lua_pop(L, 1);
	return v;
}

static const char *opt_str(lua_State *L, int t, const char *field, const char *dflt,
                           const char *fname)
{
	const char *v = dflt;

	if (lua_isnoneornil(L, t))
		return dflt;
	lua_getfield(L, t, field);
	if (!lua_isnil(L, -1)) {
		if (lua_type(L, -1) != LUA_TSTRING)
			luaL_error(L, "%s: opts.%s must be a string", fname, field);
		v = lua_tostring(L, -1);   /* anchored in the options table */
	}
	lua_pop(L, 1);
	return v;
}

static int push_fail(lua_State *L, const char *err)
{
	lua_pushnil(L);
	lua_pushstring(L, err);
	return 2;
}

static const char *const session_keys[] = { "addr", "ports", NULL };

/***
 * A new RTP session on a random even port of `ports` (RTCP on the next).
 * @function media.session
 * @tab[opt] opts addr (numeric, default "127.0.0.1"), ports ("lo-hi",
 * default "16384-32767")
 * @return the session, or fail and a message
 */
static int l_session(lua_State *L)
{
	struct lsip_env *e = lsip_env(L);
	struct media_session_cfg cfg;
	struct lengine *g;
	struct lmedia *lm;
	const char *ports;
	char err[160];
	int lo, hi, end = 0;

	check_keys(L, 1, session_keys, "media.session");
	memset(&cfg, 0, sizeof cfg);
	cfg.addr = opt_str(L, 1, "addr", "127.0.0.1", "media.session");
	ports = opt_str(L, 1, "ports", "16384-32767", "media.session");
	if (sscanf(ports, "%d-%d%n", &lo, &hi, &end) != 2 || ports[end] != '\0' || lo < 1 ||
	    hi > 65535 || lo >= hi)
		return luaL_error(L, "media.session: opts.ports must be \"low-high\" (got '%s')", ports);
	cfg.port_lo = lo;
	cfg.port_hi = hi;
	g = get_engine(L, e);
	/* closed and zeroed, with its metatable, before any resource */
	lm = lua_newuserdatauv(L, sizeof *lm, NUV);
	memset(lm, 0, sizeof *lm);
	lm->self_ref = LUA_NOREF;
	for (int i = 0; i < NOPS; i++)
		lm->co_ref[i] = LUA_NOREF;
	lm->dq_max = DIGIT_QUEUE;
	luaL_setmetatable(L, MT);
	lm->e = e;
	lm->eng = g;
	/* how the digit callback finds the userdata without pinning it */
	lua_getfield(L, LUA_REGISTRYINDEX, SESSIONS_KEY);
	lua_pushvalue(L, -2);
	lua_rawsetp(L, -2, lm);
	lua_pop(L, 1);
	cfg.done = on_done;
	cfg.digit = on_digit;
	cfg.arg = lm;
	if (media_session_new(&lm->s, g->m, &cfg, err, sizeof err))
		return push_fail(L, err);
	return 1;
}

/* frees the session without waking anyone: __gc, __close, and the end
 * of close() once its waiters were woken */
static void local_str(struct media_session *ms, char *buf, size_t n)
{
	char a[64];

	media_session_addr(ms, a, sizeof a);
	snprintf(buf, n, strchr(a, ':') ? "[%s]:%d" : "%s:%d", a, media_session_port(ms));
}

static void release(lua_State *L, struct lmedia *lm)
{
	if (lm->s) {
		media_session_stats(lm->s, &lm->last);
		local_str(lm->s, lm->last_local, sizeof lm->last_local);
		lm->last_dir = media_session_get_direction(lm->s);
		lm->have_last = 1;
		if (!loop_alive(lm))
			media_engine_detach(lm->eng->m);
		media_session_free(lm->s);
		lm->s = NULL;
	}
	for (int i = 0; i < NOPS; i++)
		wait_end(L, lm, i);
}

static int m_gc(lua_State *L)
{
	release(L, check_media(L, 1));
	return 0;
}

/***
 * Close the session: what plays or records ends with `reason` (default
 * "closed"), an RTCP BYE goes to the peer, the sockets close.
 * @function close
 * @string[opt] reason
 */
static int m_close(lua_State *L)
{
	struct lmedia *lm = check_media(L, 1);
	const char *reason = luaL_optstring(L, 2, "closed");

	if (lm->s)
		media_session_stop(lm->s, -1, reason);
	release(L, lm);
	return 0;
}

/***
 * Bridge this session with another (a B2BUA anchoring media): what
 * either receives goes out of the other to its peer, re-encoded only
 * between PCMU and PCMA. What either plays or records ends ("bridged").
 * `nil` unbridges.
 * @function relay
 * @param[opt] other a sip.MediaSession, or nil
 * @local
 */
static int m_relay(lua_State *L)
{
	struct lmedia *lm = check_open(L, "session:relay");

	if (lua_isnoneornil(L, 2)) {
		media_session_relay(lm->s, NULL);
	} else {
		struct lmedia *o = check_media(L, 2);
		if (!o->s)
			return luaL_argerror(L, 2, "the other media session is closed");
		if (o->s == lm->s)
			return luaL_argerror(L, 2, "a session cannot relay to itself");
		media_session_relay(lm->s, o->s);
	}
	return 0;
}

static int m_tostring(lua_State *L)
{
	struct lmedia *lm = check_media(L, 1);
	char a[64];

	if (!lm->s) {
		lua_pushliteral(L, "sip.MediaSession (closed)");
		return 1;
	}
	media_session_addr(lm->s, a, sizeof a);
	lua_pushfstring(L, strchr(a, ':') ? "sip.MediaSession [%s]:%d" : "sip.MediaSession %s:%d",
	                a, media_session_port(lm->s));
	return 1;
}

/*** The local RTP port. @function local_port */
static int m_local_port(lua_State *L)
{
	lua_pushinteger(L, media_session_port(check_open(L, "local_port")->s));
	return 1;
}

/*** The local address, IPv6 without brackets. @function local_addr */
static int m_local_addr(lua_State *L)
{
	char a[64];

	media_session_addr(check_open(L, "local_addr")->s, a, sizeof a);
	lua_pushstring(L, a);
	return 1;
}

static const char *const remote_keys[] = {
	"addr", "port", "rtcp_port", "pt", "codec", "ptime", "telephone_event_pt", NULL
};

/***
 * Where to send and how: the peer's SDP address and port, the codec and
 * its payload type, the packet time. Until the peer's RTP arrives RTP
 * goes there; then to where it comes from (symmetric RTP).
 * @function set_remote
 * @tab r addr, port, codec ("PCMU" or "PCMA"), pt (default the codec's
 * static one), ptime (ms, default 20), telephone_event_pt, rtcp_port
 * @return true, or fail and a message
 */
static int m_set_remote(lua_State *L)
{
	struct lmedia *lm = check_open(L, "set_remote");
	struct media_remote r;
	const char *codec;
	char err[160];
	double pt, te;

	luaL_checktype(L, 2, LUA_TTABLE);
	check_keys(L, 2, remote_keys, "set_remote");
	memset(&r, 0, sizeof r);
	r.addr = opt_str(L, 2, "addr", NULL, "set_remote");
	if (!r.addr)
		return luaL_error(L, "set_remote: addr is required");
	r.port = (int)opt_num(L, 2, "port", -1, "set_remote");
	r.rtcp_port = (int)opt_num(L, 2, "rtcp_port", 0, "set_remote");
	codec = opt_str(L, 2, "codec", NULL, "set_remote");
	pt = opt_num(L, 2, "pt", -1, "set_remote");
	if (codec && !strcmp(codec, "PCMU"))
		r.codec = MEDIA_PCMU;
	else if (codec && !strcmp(codec, "PCMA"))
		r.codec = MEDIA_PCMA;
	else if (codec)
		return luaL_error(L, "set_remote: codec must be \"PCMU\" or \"PCMA\" (got '%s')", codec);
	else if (pt == 0 || pt == 8)
		r.codec = (int)pt;
	else
		return luaL_error(L, "set_remote: codec is required with a dynamic payload type");
	r.pt = pt < 0 ? r.codec : (int)pt;
	r.ptime = (int)opt_num(L, 2, "ptime", 20, "set_remote");
	te = opt_num(L, 2, "telephone_event_pt", -1, "set_remote");
	r.te_pt = (int)te;
	if (r.port < 0)
		return luaL_error(L, "set_remote: port is required");
	if (media_session_set_remote(lm->s, &r, err, sizeof err))
		return push_fail(L, err);
	lua_pushboolean(L, 1);
	return 1;
}

static const char *const dir_names[] = { "sendrecv", "sendonly", "recvonly", "inactive", NULL };

/***
 * Set (and get) the direction: "sendrecv", "sendonly", "recvonly",
 * "inactive". Not sending (hold) keeps the clock running: a prompt goes
 * on silently and the next packet starts a talkspurt.
 * @function direction
 * @string[opt] d
 * @treturn string the direction
 */
static int m_direction(lua_State *L)
{
	struct lmedia *lm = check_open(L, "direction");

	if (!lua_isnoneornil(L, 2))
		media_session_direction(lm->s, luaL_checkoption(L, 2, NULL, dir_names));
	lua_pushstring(L, dir_names[media_session_get_direction(lm->s)]);
	return 1;
}

static void check_co(lua_State *L, int idx, const char *fname)
{
	if (lua_type(L, idx) != LUA_TTHREAD)
		luaL_error(L, "%s: a coroutine to wake is required", fname);
}

/* _play(files, opts, co): true once started, or fail, "file: ..." */
static int m_play(lua_State *L)
{
	struct lmedia *lm = check_open(L, "play");
	struct media_play_opts o;
	const char *one, **files;
	char err[512];
	int n;

	check_co(L, 4, "play");
	if (lua_type(L, 2) == LUA_TSTRING) {
		one = lua_tostring(L, 2);
		files = &one;
		n = 1;
	} else {
		luaL_checktype(L, 2, LUA_TTABLE);
		n = (int)luaL_len(L, 2);
		if (n < 1 || n > MAX_FILES)
			return luaL_error(L, "play: 1 to %d files", MAX_FILES);
		files = lua_newuserdatauv(L, (size_t)n * sizeof *files, 0);
		for (int i = 0; i < n; i++) {
			lua_rawgeti(L, 2, i + 1);
			if (lua_type(L, -1) != LUA_TSTRING)
				return luaL_error(L, "play: file %d is not a string", i + 1);
			files[i] = lua_tostring(L, -1);   /* anchored in the table */
			lua_pop(L, 1);
		}
	}
	memset(&o, 0, sizeof o);
	o.loop = opt_bool(L, 3, "loop", "play");
	o.barge = opt_bool(L, 3, "barge", "play");
	if (media_session_play(lm->s, files, n, &o, err, sizeof err))
		return push_fail(L, err);
	wait_begin(L, lm, MEDIA_OUTPUT, 4);
	lua_pushboolean(L, 1);
	return 1;
}

/* _tone(spec, opts, co): spec a name or { freqs = { f1[, f2] }, on =, off = } */
static int m_tone(lua_State *L)
{
	struct lmedia *lm = check_open(L, "tone");
	struct tone_spec t;
	char err[160];

	check_co(L, 4, "tone");
	memset(&t, 0, sizeof t);
	if (lua_type(L, 2) == LUA_TSTRING) {
		if (tone_named(lua_tostring(L, 2), &t))
			return luaL_error(L, "tone: unknown tone '%s' (ring, busy, dial, beep or a table)",
			                  lua_tostring(L, 2));
	} else {
		luaL_checktype(L, 2, LUA_TTABLE);
		if (lua_getfield(L, 2, "freqs") != LUA_TTABLE)
			return luaL_error(L, "tone: freqs must be a list of one or two frequencies");
		for (int i = 1; i <= 2; i++) {
			int isnum;
			lua_Integer f;
			lua_rawgeti(L, -1, i);
			f = lua_tointegerx(L, -1, &isnum);
			if (!isnum && !(i == 2 && lua_isnil(L, -1)))
				return luaL_error(L, "tone: freqs[%d] must be a whole number of Hz", i);
			if (i == 1)
				t.f1 = (int)f;
			else
				t.f2 = isnum ? (int)f : 0;
			lua_pop(L, 1);
		}
		lua_pop(L, 1);
		t.on_ms = (int)opt_num(L, 2, "on", 0, "tone");
		t.off_ms = (int)opt_num(L, 2, "off", 0, "tone");
		t.level = -13;
	}
	if (!lua_isnoneornil(L, 3)) {
		double d = opt_num(L, 3, "duration", t.duration, "tone");
		t.duration = d;
		t.level = (int)opt_num(L, 3, "level", t.level, "tone");
	}
	if (media_session_tone(lm->s, &t, err, sizeof err))
		return push_fail(L, err);
	wait_begin(L, lm, MEDIA_OUTPUT, 4);
	lua_pushboolean(L, 1);
	return 1;
}

static const char *const format_names[] = { "pcm16", "ulaw", "alaw", NULL };

/* _record(path, opts, co): true once started, or fail, "file: ..." */
static int m_record(lua_State *L)
{
	struct lmedia *lm = check_open(L, "record");
	const char *path = luaL_checkstring(L, 2);
	struct media_record_opts o;
	const char *fmt;
	char err[512];
	int i;

	check_co(L, 4, "record");
	memset(&o, 0, sizeof o);
	fmt = opt_str(L, 3, "format", "pcm16", "record");
	for (i = 0; format_names[i] && strcmp(format_names[i], fmt); i++)
		;
	if (!format_names[i])
		return luaL_error(L, "record: opts.format must be pcm16, ulaw or alaw (got '%s')", fmt);
	o.format = i == 1 ? REC_ULAW : i == 2 ? REC_ALAW : REC_PCM16;
	o.max = opt_num(L, 3, "max", 0, "record");
	o.silence = opt_num(L, 3, "silence", 0, "record");
	o.threshold = (int)opt_num(L, 3, "threshold", 256, "record");
	o.beep = opt_bool(L, 3, "beep", "record");
	if (media_session_record(lm->s, path, &o, err, sizeof err))
		return push_fail(L, err);
	wait_begin(L, lm, MEDIA_RECORD, 4);
	lua_pushboolean(L, 1);
	return 1;
}

/***
 * Stop what plays, records or sends digits now: its wait returns nil,
 * `reason` (a recording returns { duration =, reason = reason }).
 * @function stop
 * @string[opt] reason default "stopped"
 * @string[opt] which "output" (a play or tone, and a DTMF send: all that
 * goes out), "play" (a play or tone only), "dtmf" (a DTMF send only),
 * "record", or all when absent
 * @treturn integer how many operations ended
 */
static int m_stop(lua_State *L)
{
	struct lmedia *lm = check_media(L, 1);
	const char *reason = luaL_optstring(L, 2, "stopped");
	static const char *const which[] = { "output", "record", "all", "dtmf", "play", NULL };
	int w = luaL_checkoption(L, 3, "all", which), n = 0;

	if (lm->s) {
		switch (w) {
		case 0:
			n = media_session_stop(lm->s, MEDIA_OUTPUT, reason);
			n += media_session_stop(lm->s, MEDIA_DTMF, reason);
			break;
		case 1:
			n = media_session_stop(lm->s, MEDIA_RECORD, reason);
			break;
		case 3:
			n = media_session_stop(lm->s, MEDIA_DTMF, reason);
			break;
		case 4:
			n = media_session_stop(lm->s, MEDIA_OUTPUT, reason);
			break;
		default:
			n = media_session_stop(lm->s, -1, reason);
			break;
		}
	}
	lua_pushinteger(L, n);
	return 1;
}

/***
 * A digit came by a way the engine does not hear (SIP INFO): a play
 * started with `barge` ends with nil, "digit", digit. The digits the
 * session detects itself (RFC 4733, inband) barge without this.
 * @function barge
 * @string digit
 * @treturn boolean whether a play ended
 */
static int m_barge(lua_State *L)
{
	struct lmedia *lm = check_media(L, 1);
	size_t n;
	const char *d = luaL_checklstring(L, 2, &n);

	luaL_argcheck(L, n == 1, 2, "one digit expected");
	lua_pushboolean(L, lm->s && media_session_barge(lm->s, d[0]));
	return 1;
}

/***
 * What runs.
 * @function busy
 * @treturn boolean a play or tone
 * @treturn boolean a recording
 * @treturn boolean a DTMF send
 */
static int m_busy(lua_State *L)
{
	struct lmedia *lm = check_media(L, 1);
	int b = lm->s ? media_session_busy(lm->s) : 0;

	lua_pushboolean(L, b & 1);
	lua_pushboolean(L, b & 2);
	lua_pushboolean(L, b & 4);
	return 3;
}

/***
 * The function that gets each digit the session hears, as
 * fn(digit, source): digit "0".."9", "*", "#", "A".."D", source "rfc4733"
 * or "inband". It runs from the scheduler's queue (the scheduler's
 * dispatch(deliver, digit, source)), once per key press, in the order
 * heard; at most `max_queued` (dtmf_config) wait to run, the rest are
 * dropped and counted in stats().dtmf_dropped. nil removes it.
 * @function on_digit
 * @func[opt] fn
 */
static int m_on_digit(lua_State *L)
{
	struct lmedia *lm = check_media(L, 1);
	int has = !lua_isnoneornil(L, 2);

	if (has)
		luaL_checktype(L, 2, LUA_TFUNCTION);
	lua_settop(L, 2);
	lua_setiuservalue(L, 1, UV_DIGIT_FN);
	lm->has_digit_fn = has;
	if (has) {
		if (lua_getiuservalue(L, 1, UV_DELIVER) != LUA_TFUNCTION) {
			lua_pushvalue(L, 1);
			lua_pushcclosure(L, l_deliver, 1);
			lua_setiuservalue(L, 1, UV_DELIVER);
		}
		lua_pop(L, 1);
	}
	return 0;
}

static const char *const dtmf_config_keys[] = { "rfc4733", "inband", "max_queued", NULL };

/* a boolean field of the table at t: 1, 0, or -1 when absent */
static int opt_tristate(lua_State *L, int t, const char *field, const char *fname)
{
	int v = -1;

	lua_getfield(L, t, field);
	if (!lua_isnil(L, -1)) {
		if (!lua_isboolean(L, -1))
			luaL_error(L, "%s: opts.%s must be a boolean", fname, field);
		v = lua_toboolean(L, -1);
	}
	lua_pop(L, 1);
	return v;
}

/***
 * How digits are heard. RFC 4733 events are read unless `rfc4733 =
 * false`; the inband detector (spandsp's, on the decoded audio) runs iff
 * the peer negotiated no telephone-event (set_remote's
 * telephone_event_pt), unless `inband` says otherwise. A digit heard both
 * ways at once is one digit. `max_queued` (1..64, default 64): digits
 * that may wait for on_digit's function.
 * @function dtmf_config
 * @tab[opt] opts rfc4733, inband (booleans), max_queued
 * @treturn boolean events are read
 * @treturn boolean the inband detector runs
 */
static int m_dtmf_config(lua_State *L)
{
	struct lmedia *lm = check_open(L, "dtmf_config");
	int rfc, inband;

	media_session_dtmf_state(lm->s, &rfc, &inband);
	if (!lua_isnoneornil(L, 2)) {
		int r, i;
		double q;

		check_keys(L, 2, dtmf_config_keys, "dtmf_config");
		r = opt_tristate(L, 2, "rfc4733", "dtmf_config");
		i = opt_tristate(L, 2, "inband", "dtmf_config");
		q = opt_num(L, 2, "max_queued", lm->dq_max, "dtmf_config");
		if (q < 1 || q > DIGIT_QUEUE || q != (int)q)
			return luaL_error(L, "dtmf_config: opts.max_queued must be a whole number 1..%d",
			                  DIGIT_QUEUE);
		lm->dq_max = (int)q;
		/* absent: as it was (inband's default follows the SDP) */
		media_session_dtmf_config(lm->s, r, i);
		media_session_dtmf_state(lm->s, &rfc, &inband);
	}
	lua_pushboolean(L, rfc);
	lua_pushboolean(L, inband);
	return 2;
}

/***
 * The telephone-event payload type of our own offer: a peer may send
 * its events with it rather than with the one in its answer, and both
 * are read. nil forgets it.
 * @function set_local_te_pt
 * @int[opt] pt 0..127, not an audio one
 */
static int m_set_local_te_pt(lua_State *L)
{
	struct lmedia *lm = check_open(L, "set_local_te_pt");
	lua_Integer pt = lua_isnoneornil(L, 2) ? -1 : luaL_checkinteger(L, 2);
	char err[160];

	if (pt < -1 || pt > 127 ||
	    media_session_set_local_te_pt(lm->s, (int)pt, err, sizeof err))
		return luaL_error(L, "set_local_te_pt: %d is not a telephone-event payload type "
		                  "(0..127, not the audio's)", (int)pt);
	return 0;
}

/***
 * The peer's telephone-event payload type (set_remote's
 * telephone_event_pt), or nil when none was negotiated or the session is
 * closed.
 * @function dtmf_pt
 * @treturn ?int
 */
static int m_dtmf_pt(lua_State *L)
{
	struct lmedia *lm = check_media(L, 1);
	int pt = lm->s ? media_session_dtmf_pt(lm->s) : -1;

	if (pt < 0)
		lua_pushnil(L);
	else
		lua_pushinteger(L, pt);
	return 1;
}

static const char *const send_dtmf_keys[] = { "mode", "duration", "gap", "volume", NULL };

/* _send_dtmf(digits, opts, co): true once started, or fail, "dtmf: ...".
 * Raises (naming call:send_dtmf) for a wrong digit or option. */
static int m_send_dtmf(lua_State *L)
{
	static const char fname[] = "call:send_dtmf";
	struct lmedia *lm = check_open(L, fname);
	struct media_dtmf_opts o;
	const char *digits, *mode;
	size_t n;
	char err[160];
	double v;

	if (lua_type(L, 2) != LUA_TSTRING)
		return luaL_error(L, "%s: digits must be a string (got %s)", fname, luaL_typename(L, 2));
	digits = lua_tolstring(L, 2, &n);
	if (n == 0)
		return luaL_error(L, "%s: no digits", fname);
	if (n > MEDIA_DTMF_MAX)
		return luaL_error(L, "%s: at most %d digits at once", fname, MEDIA_DTMF_MAX);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)digits[i];
		if (!strchr("0123456789*#ABCD", c) || !c) {
			if (c > 32 && c < 127)
				return luaL_error(L, "%s: '%c' is not a DTMF digit (0-9, *, #, A-D)",
				                  fname, (int)c);
			return luaL_error(L, "%s: byte %d is not a DTMF digit (0-9, *, #, A-D)", fname,
			                  (int)c);
		}
	}
	check_keys(L, 3, send_dtmf_keys, fname);
	check_co(L, 4, fname);
	memset(&o, 0, sizeof o);
	mode = opt_str(L, 3, "mode", "rfc4733", fname);
	if (!strcmp(mode, "inband"))
		o.inband = 1;
	else if (strcmp(mode, "rfc4733"))
		return luaL_error(L, "%s: opts.mode must be \"rfc4733\" or \"inband\" (got '%s')",
		                  fname, mode);
	v = opt_num(L, 3, "duration", 100, fname);
	if (!(v >= 20 && v <= 8000))
		return luaL_error(L, "%s: opts.duration must be 20..8000 ms", fname);
	o.duration = (int)v;
	v = opt_num(L, 3, "gap", 50, fname);
	if (!(v >= 0 && v <= 10000))
		return luaL_error(L, "%s: opts.gap must be 0..10000 ms", fname);
	o.gap = (int)v;
	v = opt_num(L, 3, "volume", 10, fname);
	if (!(v >= 0 && v <= 63))
		return luaL_error(L, "%s: opts.volume must be 0..63 (-dBm0)", fname);
	o.volume = (int)v;
	if (media_session_send_dtmf(lm->s, digits, n, &o, err, sizeof err))
		return push_fail(L, err);
	wait_begin(L, lm, MEDIA_DTMF, 4);
	lua_pushboolean(L, 1);
	return 1;
}

#define SET_INT(name, v) (lua_pushinteger(L, (lua_Integer)(v)), lua_setfield(L, -2, name))
#define SET_NUM(name, v) (lua_pushnumber(L, (v)), lua_setfield(L, -2, name))

/***
 * Counters and state: packets_sent, octets_sent, packets_received,
 * octets_received, lost, jitter (seconds), codec, pt, ptime, remote
 * ("addr:port" RTP goes to), local, direction, learned (the peer's
 * source is known), invalid, unexpected_source, unknown_pt, rtcp_sent,
 * rtcp_received, rtcp_invalid, send_errors, remote_bye, late and
 * reordered (of the recording), and from the peer's reports remote_lost,
 * remote_fraction_lost, remote_jitter, rtt (seconds). After close() the
 * figures at the time of the close, with closed = true.
 * @function stats
 * @treturn table
 */
static int m_stats(lua_State *L)
{
	struct lmedia *lm = check_media(L, 1);
	struct media_stats now;
	const struct media_stats *st = &now;
	char local[64];
	int dir;

	if (lm->s) {
		media_session_stats(lm->s, &now);
		local_str(lm->s, local, sizeof local);
		dir = media_session_get_direction(lm->s);
	} else if (lm->have_last) {
		st = &lm->last;
		memcpy(local, lm->last_local, sizeof local);
		dir = lm->last_dir;
	} else {
		return luaL_error(L, "stats: the media session is closed");
	}
	lua_createtable(L, 0, 32);
	SET_INT("packets_sent", st->packets_sent);
	SET_INT("octets_sent", st->octets_sent);
	SET_INT("packets_received", st->packets_received);
	SET_INT("octets_received", st->octets_received);
	SET_INT("lost", st->lost);
	SET_NUM("jitter", st->jitter);
	SET_INT("invalid", st->invalid);
	SET_INT("unexpected_source", st->unexpected_source);
	SET_INT("unknown_pt", st->unknown_pt);
	SET_INT("rtcp_sent", st->rtcp_sent);
	SET_INT("rtcp_received", st->rtcp_received);
	SET_INT("rtcp_invalid", st->rtcp_invalid);
	SET_INT("send_errors", st->send_errors);
	SET_INT("late", st->late);
	SET_INT("reordered", st->reordered);
	SET_INT("dtmf_received", st->dtmf_received);
	SET_INT("dtmf_invalid", st->dtmf_invalid);
	SET_INT("dtmf_dropped", st->dtmf_dropped);
	SET_INT("dtmf_sent", st->dtmf_sent);
	SET_INT("relayed", st->relayed);
	SET_INT("relay_dropped", st->relay_dropped);
	SET_INT("pt", st->pt);
	SET_INT("ptime", st->ptime);
	lua_pushstring(L, st->codec == MEDIA_PCMA ? "PCMA" : "PCMU");
	lua_setfield(L, -2, "codec");
	lua_pushboolean(L, st->learned);
	lua_setfield(L, -2, "learned");
	lua_pushboolean(L, st->remote_bye);
	lua_setfield(L, -2, "remote_bye");
	if (st->remote[0]) {
		lua_pushstring(L, st->remote);
		lua_setfield(L, -2, "remote");
	}
	lua_pushstring(L, local);
	lua_setfield(L, -2, "local");
	lua_pushstring(L, dir_names[dir]);
	lua_setfield(L, -2, "direction");
	if (st->have_remote_report) {
		SET_INT("remote_lost", st->remote_lost);
		SET_NUM("remote_fraction_lost", st->remote_fraction_lost);
		SET_NUM("remote_jitter", st->remote_jitter);
	}
	if (st->rtt >= 0)
		SET_NUM("rtt", st->rtt);
	if (!lm->s) {
		lua_pushboolean(L, 1);
		lua_setfield(L, -2, "closed");
	}
	return 1;
}

/* sessions open in this state (a check for specs: none left behind) */
static int l_count(lua_State *L)
{
	struct lengine *g;

	lua_getfield(L, LUA_REGISTRYINDEX, ENGINE_KEY);
	g = lua_touserdata(L, -1);
	lua_pushinteger(L, g && g->m ? media_engine_sessions(g->m) : 0);
	return 1;
}

static const luaL_Reg methods[] = {
	{ "local_port", m_local_port },
	{ "local_addr", m_local_addr },
	{ "set_remote", m_set_remote },
	{ "direction", m_direction },
	{ "_play", m_play },
	{ "_tone", m_tone },
	{ "_record", m_record },
	{ "stop", m_stop },
	{ "barge", m_barge },
	{ "busy", m_busy },
	{ "on_digit", m_on_digit },
	{ "dtmf_config", m_dtmf_config },
	{ "set_local_te_pt", m_set_local_te_pt },
	{ "dtmf_pt", m_dtmf_pt },
	{ "_send_dtmf", m_send_dtmf },
	{ "stats", m_stats },
	{ "close", m_close },
	{ "relay", m_relay },
	{ NULL, NULL }
};

int lsip_open_media(lua_State *L)
{
	luaL_newmetatable(L, MT);
	lua_pushcfunction(L, m_gc);
	lua_setfield(L, -2, "__gc");
	lua_pushcfunction(L, m_gc);
	lua_setfield(L, -2, "__close");
	lua_pushcfunction(L, m_tostring);
	lua_setfield(L, -2, "__tostring");
	luaL_newlib(L, methods);
	lua_setfield(L, -2, "__index");
	lua_pop(L, 1);
	/* the sessions by address, for the digit callback; weak values: it
	 * keeps none alive */
	lua_getfield(L, LUA_REGISTRYINDEX, SESSIONS_KEY);
	if (!lua_istable(L, -1)) {
		lua_newtable(L);
		lua_createtable(L, 0, 1);
		lua_pushliteral(L, "v");
		lua_setfield(L, -2, "__mode");
		lua_setmetatable(L, -2);
		lua_setfield(L, LUA_REGISTRYINDEX, SESSIONS_KEY);
	}
	lua_pop(L, 1);
	lua_createtable(L, 0, 2);
	lua_pushcfunction(L, l_session);
	lua_setfield(L, -2, "session");
	lua_pushcfunction(L, l_count);
	lua_setfield(L, -2, "count");
	return 1;
}
