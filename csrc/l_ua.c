/***
 * sip.UA - a user agent: listeners, handlers and client requests. The
 * blocking methods (request, invite ...) are written in lua/sip/init.lua
 * over the non-blocking ones here, which start an operation and arrange
 * for the waiting coroutine to be woken once.
 * @module sip
 */

/*** @type UA */
#include "lsip.h"
#include "core/core.h"
#include "core/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct lua_ua *check_ua(lua_State *L, int idx)
{
	struct lua_ua *lu = luaL_checkudata(L, idx, "sip.UA");

	if (!lu->ua)
		luaL_argerror(L, idx, "user agent is closed");
	return lu;
}

static void pending_unlink(struct pending *p)
{
	struct pending **head = &p->lu->pendings;

	if (p->prev)
		p->prev->next = p->next;
	else
		*head = p->next;
	if (p->next)
		p->next->prev = p->prev;
	p->next = p->prev = NULL;
}

static void pending_free(lua_State *L, struct pending *p)
{
	struct ev_loop *loop = p->lu->e->env.loop;

	ev_timer_stop(loop, &p->tmo);         /* active or pending */
	sip_dns_cancel(p->q);
	p->q = NULL;
	pending_unlink(p);
	if (p->prov_ref != LUA_NOREF)
		luaL_unref(L, LUA_REGISTRYINDEX, p->prov_ref);
	if (p->co_ref != LUA_NOREF)
		luaL_unref(L, LUA_REGISTRYINDEX, p->co_ref);
	free(p);
}

/* wake the coroutine with (res|nil, err) and forget the request */
static void pending_finish(struct pending *p, struct sip_msg *res, const char *err)
{
	struct lsip_env *e = p->lu->e;
	lua_State *L = lsip_wake_begin(e, p->co_ref);

	p->co_ref = LUA_NOREF;
	if (p->ct)
		sip_txn_detach(p->ct);
	p->ct = NULL;
	pending_free(L, p);
	if (res) {
		lsip_push_msg(L, res, NULL);
		lua_pushnil(L);
	} else {
		lua_pushnil(L);
		lua_pushstring(L, err ? err : "failed");
	}
	lsip_call(e, L, 3);
}

void lsip_pending_cb(void *arg, struct sip_txn *ct, struct sip_msg *res, const char *err)
{
	struct pending *p = arg;

	(void)ct;
	if (res && sip_msg_status(res) < 200) {
		if (p->prov_ref != LUA_NOREF) {
			/* run later from the queue, like every Lua callback */
			struct lsip_env *e = p->lu->e;
			lua_State *L = e->L;
			lsip_queued(e);
			lua_rawgeti(L, LUA_REGISTRYINDEX, e->dispatch_ref);
			lua_rawgeti(L, LUA_REGISTRYINDEX, p->prov_ref);
			lsip_push_msg(L, res, NULL);
			lsip_call(e, L, 2);
		}
		return;
	}
	pending_finish(p, res, err);
}

void lsip_pending_drop(lua_State *L, struct pending *p)
{
	pending_free(L, p);
}

static void pending_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct pending *p = w->data;

	(void)loop; (void)revents;
	pending_finish(p, NULL, "timeout");
}

struct pending *lsip_pending_new(lua_State *L, struct lua_ua *lu, int co_idx, int opts_idx)
{
	/* everything that may raise comes before the allocation */
	double timeout = lsip_opt_number(L, opts_idx, "timeout", 0, "opts");
	struct pending *p;

	if (!lua_isnoneornil(L, opts_idx)) {
		lua_getfield(L, opts_idx, "on_provisional");
		if (!lua_isnil(L, -1) && !lua_isfunction(L, -1))
			luaL_error(L, "opts.on_provisional must be a function");
		lua_pop(L, 1);
	}
	p = calloc(1, sizeof *p);
	if (!p)
		luaL_error(L, "out of memory");
	p->lu = lu;
	p->co_ref = p->prov_ref = LUA_NOREF;
	lua_pushvalue(L, co_idx);
	p->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	if (!lua_isnoneornil(L, opts_idx)) {
		lua_getfield(L, opts_idx, "on_provisional");
		if (lua_isfunction(L, -1))
			p->prov_ref = luaL_ref(L, LUA_REGISTRYINDEX);
		else
			lua_pop(L, 1);
	}
	p->next = lu->pendings;
	if (p->next)
		p->next->prev = p;
	lu->pendings = p;
	ev_init(&p->tmo, pending_timeout);
	p->tmo.data = p;
	if (timeout > 0)
		lsip_timer_in(lu->e->env.loop, &p->tmo, timeout);
	return p;
}

/* the fallback of the handler chain: every served method without a
 * handler of its own goes to the script's ua:on handlers */
static void on_request(void *arg, struct sip_ua *ua, struct sip_txn *st, struct sip_msg *req)
{
	struct lua_ua *lu = arg;
	struct lsip_env *e = lu->e;
	lua_State *L = e->L;

	(void)ua;
	if (!L)
		return;
	lsip_queued(e);
	lua_rawgeti(L, LUA_REGISTRYINDEX, e->dispatch_ref);
	lua_rawgeti(L, LUA_REGISTRYINDEX, lu->self_ref);
	lsip_push_msg(L, req, st);
	lsip_call(e, L, 2);
}

static void ua_config(lua_State *L, int t, struct sip_ua_cfg *c)
{
	const char *s;

	c->t1 = lsip_opt_number(L, t, "t1", c->t1, "opts");
	c->t2 = lsip_opt_number(L, t, "t2", c->t2, "opts");
	c->t4 = lsip_opt_number(L, t, "t4", c->t4, "opts");
	if (c->t1 <= 0 || c->t2 < c->t1 || c->t4 < 0)
		luaL_error(L, "opts: timers need 0 < t1 <= t2 and t4 >= 0");
	c->max_udp = (size_t)lsip_opt_number(L, t, "max_udp", (double)c->max_udp, "opts");
	c->max_stream_msg = (size_t)lsip_opt_number(L, t, "max_message", (double)c->max_stream_msg, "opts");
	c->idle_timeout = lsip_opt_number(L, t, "idle_timeout", c->idle_timeout, "opts");
	c->keepalive = lsip_opt_number(L, t, "keepalive", c->keepalive, "opts");
	if (c->keepalive < 0)
		luaL_error(L, "opts.keepalive must not be negative");
	c->header_timeout = lsip_opt_number(L, t, "header_timeout", c->header_timeout, "opts");
	c->max_conns = (int)lsip_opt_number(L, t, "max_connections", c->max_conns, "opts");
	c->max_conns_per_ip = (int)lsip_opt_number(L, t, "max_connections_per_ip", c->max_conns_per_ip, "opts");
	c->max_headers = (size_t)lsip_opt_number(L, t, "max_headers", (double)c->max_headers, "opts");
	c->max_header_line = (size_t)lsip_opt_number(L, t, "max_header_line", (double)c->max_header_line, "opts");
	c->max_server_txns = (int)lsip_opt_number(L, t, "max_server_transactions",
	                                          c->max_server_txns, "opts");
	if (c->idle_timeout <= 0 || c->header_timeout <= 0 || c->max_conns < 1 || c->max_conns_per_ip < 1 ||
	    c->max_server_txns < 1 ||
	    c->max_headers < 5 || c->max_header_line < 32 || c->max_udp < 64 || c->max_stream_msg < 64)
		luaL_error(L, "opts: limits must be positive (max_headers >= 5, max_header_line >= 32)");
	s = lsip_opt_string(L, t, "contact", "opts");
	if (s) {
		if (sip_header_value_bad(s, strlen(s)) || strlen(s) >= sizeof c->contact)
			luaL_error(L, "opts.contact must be one line of at most %d bytes",
			           (int)sizeof c->contact - 1);
		snprintf(c->contact, sizeof c->contact, "%s", s);
	}
	s = lsip_opt_string(L, t, "user_agent", "opts");
	if (s) {
		if (sip_header_value_bad(s, strlen(s)))
			luaL_error(L, "opts.user_agent contains CR or LF");
		snprintf(c->user_agent, sizeof c->user_agent, "%s", s);
	}
}

/* opts.dns = { servers = { "127.0.0.1:5353", ... }, timeout, blacklist }
 * (the names and types are checked in lua/sip/resolve.lua) */
static void ua_dns(lua_State *L, int t, struct sip_ua_cfg *c)
{
	size_t off = 0;
	int i, n;

	if (lua_isnoneornil(L, t))
		return;
	lua_getfield(L, t, "dns");
	if (lua_isnil(L, -1)) {
		lua_pop(L, 1);
		return;
	}
	luaL_checktype(L, -1, LUA_TTABLE);
	t = lua_gettop(L);
	c->dns_timeout = lsip_opt_number(L, t, "timeout", c->dns_timeout, "opts.dns");
	c->dns_blacklist = lsip_opt_number(L, t, "blacklist", c->dns_blacklist, "opts.dns");
	if (c->dns_timeout <= 0 || c->dns_blacklist < 0)
		luaL_error(L, "opts.dns: timeout must be positive, blacklist not negative");
	lua_getfield(L, t, "servers");
	if (!lua_isnil(L, -1)) {
		luaL_checktype(L, -1, LUA_TTABLE);
		n = (int)luaL_len(L, -1);
		for (i = 1; i <= n; i++) {
			size_t l;
			const char *sv;
			lua_geti(L, -1, i);
			sv = lua_tolstring(L, -1, &l);
			if (!sv || !l || strchr(sv, ',') || off + l + 2 > sizeof c->dns_servers)
				luaL_error(L, "opts.dns.servers[%d] must be an address", i);
			if (off)
				c->dns_servers[off++] = ',';
			memcpy(c->dns_servers + off, sv, l + 1);
			off += l;
			lua_pop(L, 1);
		}
	}
	lua_pop(L, 2);
}

/* opts.tls = { cert, key, cafile, capath, verify, verify_client, tls13,
 * allow_wildcard, handshake_timeout } */
static int ua_tls(lua_State *L, int t, struct sip_ua *ua, char *err, size_t errlen)
{
	struct sip_tls_cfg cfg = { .verify = 1 };
	int rc;

	if (lua_isnoneornil(L, t))
		return 0;
	lua_getfield(L, t, "tls");
	if (lua_isnil(L, -1)) {
		lua_pop(L, 1);
		return 0;
	}
	if (!lua_istable(L, -1))
		return luaL_error(L, "opts.tls must be a table");
	t = lua_gettop(L);
	cfg.cert = lsip_opt_string(L, t, "cert", "opts.tls");
	cfg.key = lsip_opt_string(L, t, "key", "opts.tls");
	cfg.cafile = lsip_opt_string(L, t, "cafile", "opts.tls");
	cfg.capath = lsip_opt_string(L, t, "capath", "opts.tls");
	cfg.handshake_timeout = lsip_opt_number(L, t, "handshake_timeout", 10, "opts.tls");
	lua_getfield(L, t, "verify");
	if (!lua_isnil(L, -1))
		cfg.verify = lua_toboolean(L, -1);
	lua_getfield(L, t, "verify_client");
	cfg.verify_client = lua_toboolean(L, -1);
	lua_getfield(L, t, "allow_wildcard");
	cfg.allow_wildcard = lua_toboolean(L, -1);
	lua_getfield(L, t, "tls13");
	cfg.tls13_only = lua_toboolean(L, -1);
	lua_pop(L, 4);
	if (cfg.key && !cfg.cert)
		return luaL_error(L, "opts.tls.key given without opts.tls.cert");
	rc = sip_tls_setup(ua, &cfg, err, errlen);
	lua_pop(L, 1);
	return rc;
}

/***
 * Create a user agent (sip.ua in the public module).
 * @function new
 * @tab opts listen, user_agent, t1, t2, t4, max_udp, max_message,
 * idle_timeout, max_connections, max_server_transactions
 * @local
 */
static int l_ua_new(lua_State *L)
{
	struct lsip_env *e = lsip_env(L);
	struct lua_ua *lu;
	char err[160];
	int i, n;

	if (!lua_isnoneornil(L, 1))
		luaL_checktype(L, 1, LUA_TTABLE);
	lu = lua_newuserdatauv(L, sizeof *lu, 1);
	memset(lu, 0, sizeof *lu);
	lu->self_ref = LUA_NOREF;
	luaL_setmetatable(L, "sip.UA");
	lu->e = e;
	if (sip_ua_new(&e->env, &lu->ua))
		return luaL_error(L, "sip.ua: out of memory");
	ua_config(L, 1, sip_ua_config(lu->ua));
	ua_dns(L, 1, sip_ua_config(lu->ua));
	sip_ua_handler(lu->ua, NULL, on_request, lu);
	lsip_calls_listen(lu);
	lsip_dialogs_listen(lu);
	if (sip_ua_config(lu->ua)->dns_servers[0] && !sip_ua_dns(lu->ua, err, sizeof err)) {
		/* servers that do not parse (the Lua side checked their form) */
		sip_ua_free(lu->ua);
		lu->ua = NULL;
		lua_pushnil(L);
		lua_pushstring(L, err);
		return 2;
	}
	if (ua_tls(L, 1, lu->ua, err, sizeof err)) {
		/* an unreadable certificate is the environment's fault: fail */
		sip_ua_free(lu->ua);
		lu->ua = NULL;
		lua_pushnil(L);
		lua_pushstring(L, err);
		return 2;
	}
	if (!lua_isnoneornil(L, 1))
		lua_getfield(L, 1, "listen");
	else
		lua_pushnil(L);
	if (lua_isnil(L, -1)) {
		lua_pop(L, 1);
		lua_newtable(L);
		lua_pushliteral(L, "udp:127.0.0.1:0");
		lua_rawseti(L, -2, 1);
	} else if (lua_type(L, -1) == LUA_TSTRING) {
		lua_newtable(L);
		lua_insert(L, -2);
		lua_rawseti(L, -2, 1);
	} else if (!lua_istable(L, -1)) {
		return luaL_error(L, "opts.listen must be a string or a list of strings");
	}
	n = (int)luaL_len(L, -1);
	for (i = 1; i <= n; i++) {
		const char *spec;
		lua_geti(L, -1, i);
		spec = lua_tostring(L, -1);
		if (!spec)
			return luaL_error(L, "opts.listen[%d] must be a string", i);
		if (sip_ua_listen(lu->ua, spec, err, sizeof err)) {
			/* a busy port is the environment's fault: fail, not raise */
			sip_ua_free(lu->ua);
			lu->ua = NULL;
			lua_pushnil(L);
			lua_pushfstring(L, "listen %s: %s", spec, err);
			return 2;
		}
		lua_pop(L, 1);
	}
	lua_pop(L, 1);
	lua_pushvalue(L, -1);
	lu->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	lu->next = e->uas;
	if (lu->next)
		lu->next->prev = lu;
	e->uas = lu;
	return 1;
}

static int l_ua_close(lua_State *L)
{
	struct lua_ua *lu = luaL_checkudata(L, 1, "sip.UA");
	int from_gc = lua_toboolean(L, lua_upvalueindex(1));
	struct pending *p;

	if (!lu->ua)
		return 0;
	/* waiting coroutines learn that the UA is gone, except from __gc
	 * where no coroutine may be resumed */
	while ((p = lu->pendings)) {
		if (!from_gc && lu->e->L) {
			pending_finish(p, NULL, "closed");
		} else {
			if (p->ct)
				sip_txn_detach(p->ct);
			pending_free(L, p);
		}
	}
	lsip_calls_close(L, lu, from_gc || !lu->e->L);
	lsip_dialogs_close(L, lu, from_gc || !lu->e->L);
	if (lu->prev)
		lu->prev->next = lu->next;
	else if (lu->e->uas == lu)
		lu->e->uas = lu->next;
	if (lu->next)
		lu->next->prev = lu->prev;
	lu->next = lu->prev = NULL;
	if (lu->serving && !lu->e->closed)
		ev_unref(lu->e->env.loop);
	lu->serving = 0;
	if (!lu->e->closed)
		sip_ua_free(lu->ua);
	lu->ua = NULL;
	if (lu->self_ref != LUA_NOREF) {
		luaL_unref(L, LUA_REGISTRYINDEX, lu->self_ref);
		lu->self_ref = LUA_NOREF;
	}
	return 0;
}

static int l_ua_serve(lua_State *L)
{
	struct lua_ua *lu = check_ua(L, 1);
	const char *method = luaL_checkstring(L, 2);

	if (sip_ua_serve(lu->ua, method))
		return luaL_error(L, "out of memory");
	if (!lu->serving) {
		/* a serving UA keeps sip.run alive until closed */
		ev_ref(lu->e->env.loop);
		lu->serving = 1;
	}
	return 0;
}

/* ua:_request(method, uri, opts, co, proxy) -> true | nil, err */
static int l_ua_request(lua_State *L)
{
	struct lua_ua *lu = check_ua(L, 1);
	struct sip_request rq = { 0 };
	struct pending *p;
	char err[200];
	size_t blen = 0;
	int rc;

	rq.method = luaL_checkstring(L, 2);
	rq.uri = luaL_checkstring(L, 3);
	if (!lua_isnoneornil(L, 4))
		luaL_checktype(L, 4, LUA_TTABLE);
	luaL_checktype(L, 5, LUA_TTHREAD);
	rq.proxy = luaL_optstring(L, 6, NULL);
	lua_settop(L, 6);
	if (!lua_isnil(L, 4)) {
		lua_getfield(L, 4, "headers");                  /* 7 */
		lsip_headers_text(L, 7, "opts.headers");        /* 8 */
		rq.headers = lua_tostring(L, 8);
		lua_getfield(L, 4, "body");                     /* 9 */
		if (!lua_isnil(L, 9)) {
			if (lua_type(L, 9) != LUA_TSTRING)
				return luaL_error(L, "opts.body must be a string");
			rq.body = lua_tolstring(L, 9, &blen);
			rq.body_len = blen;
		}
		rq.content_type = lsip_opt_string(L, 4, "content_type", "opts");
		if (rq.body_len && !rq.content_type)
			rq.content_type = "text/plain";
		rq.from = lsip_opt_string(L, 4, "from", "opts");
		rq.to = lsip_opt_string(L, 4, "to", "opts");
		rq.call_id = lsip_opt_string(L, 4, "call_id", "opts");
		rq.cseq = (unsigned)lsip_opt_number(L, 4, "cseq", 0, "opts");
		rq.contact = lsip_opt_string(L, 4, "contact", "opts");
		if (rq.contact && sip_header_value_bad(rq.contact, strlen(rq.contact)))
			return luaL_error(L, "opts.contact contains CR or LF");
		if (rq.content_type && sip_header_value_bad(rq.content_type, strlen(rq.content_type)))
			return luaL_error(L, "opts.content_type contains CR or LF");
		if (rq.from && sip_header_value_bad(rq.from, strlen(rq.from)))
			return luaL_error(L, "opts.from contains CR or LF");
		if (rq.to && sip_header_value_bad(rq.to, strlen(rq.to)))
			return luaL_error(L, "opts.to contains CR or LF");
		if (rq.call_id && sip_header_value_bad(rq.call_id, strlen(rq.call_id)))
			return luaL_error(L, "opts.call_id contains CR or LF");
	}
	if (sip_header_value_bad(rq.uri, strlen(rq.uri)) || strchr(rq.uri, ' '))
		return luaL_argerror(L, 3, "URI contains spaces or line breaks");
	p = lsip_pending_new(L, lu, 5, 4);
	rc = sip_ua_request(lu->ua, &rq, lsip_pending_cb, p, &p->ct, err, sizeof err);
	if (rc) {
		lsip_pending_drop(L, p);
		lua_pushnil(L);
		lua_pushstring(L, err);
		return 2;
	}
	lua_pushboolean(L, 1);
	return 1;
}

/* the outcome of a lookup as a list of { transport, addr, port,
 * priority, weight }, or nil, err */
static int push_targets(lua_State *L, const char *err, const struct sip_dns_target *t, size_t n)
{
	size_t i;

	if (err) {
		lua_pushnil(L);
		lua_pushstring(L, err);
		return 2;
	}
	lua_createtable(L, (int)n, 0);
	for (i = 0; i < n; i++) {
		char host[INET6_ADDRSTRLEN];
		lua_createtable(L, 0, 5);
		lua_pushstring(L, t[i].proto == SIP_TLS ? "tls" : t[i].proto == SIP_TCP ? "tcp" : "udp");
		lua_setfield(L, -2, "transport");
		sip_addr_host(&t[i].addr, host, sizeof host);
		lua_pushstring(L, host);
		lua_setfield(L, -2, "addr");
		lua_pushinteger(L, sip_addr_port(&t[i].addr));
		lua_setfield(L, -2, "port");
		lua_pushinteger(L, t[i].priority);
		lua_setfield(L, -2, "priority");
		lua_pushinteger(L, t[i].weight);
		lua_setfield(L, -2, "weight");
		lua_rawseti(L, -2, (lua_Integer)i + 1);
	}
	return 1;
}

/* a lookup answered before sip_dns_locate returned: pushed on L */
struct lresolve_sync {
	lua_State *L;
	int nret;
};

static void resolve_cb(void *arg, const char *err, const struct sip_dns_target *t, size_t n)
{
	struct pending *p = arg;
	struct lsip_env *e = p->lu->e;
	lua_State *L;

	p->q = NULL;
	if (p->sync) {
		p->sync->nret = push_targets(p->sync->L, err, t, n);
		return;
	}
	L = lsip_wake_begin(e, p->co_ref);
	p->co_ref = LUA_NOREF;
	pending_free(L, p);
	if (push_targets(L, err, t, n) == 1)
		lua_pushnil(L);
	lsip_call(e, L, 3);
}

/* ua:_resolve(uri, co) -> list | nil, err (at once) | true (co waits) */
static int l_ua_resolve(lua_State *L)
{
	struct lua_ua *lu = check_ua(L, 1);
	const char *uri = luaL_checkstring(L, 2);
	struct lresolve_sync sync = { L, 0 };
	struct sip_target t;
	struct sip_dns_query q;
	struct sip_dns_lookup *lk;
	struct sip_dns *d;
	struct pending *p;
	char err[300];

	luaL_checktype(L, 3, LUA_TTHREAD);
	lua_settop(L, 3);
	if (sip_uri_target(uri, &t, err, sizeof err)) {
		/* the public function raises, naming itself */
		lua_pushnil(L);
		lua_pushstring(L, err);
		lua_pushboolean(L, 1);
		return 3;
	}
	if (!sip_addr_numeric(t.host, t.port, &t.addr)) {
		struct sip_dns_target one = { .proto = t.proto, .addr = t.addr };
		return push_targets(L, NULL, &one, 1);
	}
	if (!(d = sip_ua_dns(lu->ua, err, sizeof err))) {
		lua_pushnil(L);
		lua_pushstring(L, err);
		return 2;
	}
	q.host = t.host;
	q.port = t.port_given ? t.port : 0;
	q.proto = t.proto_given ? t.proto : -1;
	q.sips = t.sips;
	p = lsip_pending_new(L, lu, 3, 4);     /* 4: none, no options */
	p->sync = &sync;
	if (sip_dns_locate(d, &q, resolve_cb, p, &lk)) {
		lsip_pending_drop(L, p);
		return luaL_error(L, "out of memory");
	}
	p->sync = NULL;
	if (!lk) {
		/* answered from the cache: the results are on the stack */
		lsip_pending_drop(L, p);
		return sync.nret;
	}
	p->q = lk;
	lua_pushboolean(L, 1);
	return 1;
}

/***
 * The first (or `idx`-th) listener, as `"udp:127.0.0.1:5060"`, with the
 * real port when 0 was asked.
 * @function address
 * @int[opt=1] idx which listener
 * @treturn ?string the listen address; nil without such a listener
 */
static int l_ua_address(lua_State *L)
{
	struct lua_ua *lu = check_ua(L, 1);
	int idx = (int)luaL_optinteger(L, 2, 1);
	char buf[96];

	if (sip_ua_listener_spec(lu->ua, idx - 1, buf, sizeof buf))
		return 0;
	lua_pushstring(L, buf);
	return 1;
}

/***
 * Counters: `transactions`, `client_transactions`, `server_transactions`,
 * `connections`, `received`, `sent`, `dropped`, `retransmissions`,
 * `pending_requests`, `dialogs`, `calls`.
 * @function stats
 * @treturn table the counters
 */
static int l_ua_stats(lua_State *L)
{
	struct lua_ua *lu = check_ua(L, 1);
	struct sip_ua_stats s;
	struct pending *p;
	lua_Integer np = 0;

	sip_ua_stats(lu->ua, &s);
	for (p = lu->pendings; p; p = p->next)
		np++;
	lua_createtable(L, 0, 10);
#define F(name, v) (lua_pushinteger(L, (lua_Integer)(v)), lua_setfield(L, -2, name))
	F("transactions", s.txns);
	F("client_transactions", s.client_txns);
	F("server_transactions", s.server_txns);
	F("connections", s.conns);
	F("received", s.rx);
	F("sent", s.tx);
	F("dropped", s.dropped);
	F("retransmissions", s.retransmits);
	F("pending_requests", np);
	F("dialogs", s.dialogs);
	F("calls", lsip_calls_count(lu));
#undef F
	return 1;
}

/* ua:_keepalive(transport, host, port, seconds) -> true | nil, err: keep
 * the flow to host:port alive (the binding's registrations call it) */
static int l_ua_keepalive(lua_State *L)
{
	static const char *const names[] = { "udp", "tcp", "tls", NULL };
	static const int protos[] = { SIP_UDP, SIP_TCP, SIP_TLS };
	struct lua_ua *lu = check_ua(L, 1);
	int proto = protos[luaL_checkoption(L, 2, NULL, names)];
	const char *host = luaL_checkstring(L, 3);
	int port = (int)luaL_checkinteger(L, 4);
	double seconds = luaL_optnumber(L, 5, -1);
	struct sip_addr a;
	int rc;

	if (port < 1 || port > 65535 || sip_addr_numeric(host, port, &a))
		return luaL_error(L, "bad flow address %s:%d", host, port);
	rc = sip_ua_keepalive(lu->ua, proto, &a, seconds);
	if (rc) {
		char why[96];
		lua_pushnil(L);
		sip_transport_error(why, sizeof why, rc);
		lua_pushstring(L, why);
		return 2;
	}
	lua_pushboolean(L, 1);
	return 1;
}

/* ua:_set_contact(value | nil): our Contact from now on (a registration
 * that learnt its public address, RFC 3581) */
static int l_ua_set_contact(lua_State *L)
{
	struct lua_ua *lu = check_ua(L, 1);
	struct sip_ua_cfg *c = sip_ua_config(lu->ua);
	size_t n = 0;
	const char *s = luaL_optlstring(L, 2, "", &n);

	if (sip_header_value_bad(s, n) || n >= sizeof c->contact)
		return luaL_error(L, "contact must be one line of at most %d bytes", (int)sizeof c->contact - 1);
	memcpy(c->contact, s, n + 1);
	return 0;
}

static int l_ua_tostring(lua_State *L)
{
	struct lua_ua *lu = luaL_checkudata(L, 1, "sip.UA");
	char buf[96];

	if (!lu->ua || sip_ua_listener_spec(lu->ua, 0, buf, sizeof buf))
		lua_pushstring(L, "sip.UA (closed)");
	else
		lua_pushfstring(L, "sip.UA (%s)", buf);
	return 1;
}

static const luaL_Reg ua_methods[] = {
	{ "_serve", l_ua_serve },
	{ "_request", l_ua_request },
	{ "_invite", lsip_ua_invite },
	{ "_resolve", l_ua_resolve },
	{ "_keepalive", l_ua_keepalive },
	{ "_set_contact", l_ua_set_contact },
	{ "_subscribing", lsip_ua_subscribing },
	{ "_find_call", lsip_ua_find_call },
	{ "address", l_ua_address },
	{ "stats", l_ua_stats },
	{ NULL, NULL }
};

int lsip_open_ua(lua_State *L)
{
	luaL_newmetatable(L, "sip.UA");
	luaL_newlib(L, ua_methods);
	lua_pushboolean(L, 0);
	lua_pushcclosure(L, l_ua_close, 1);
	lua_setfield(L, -2, "close");
	lua_setfield(L, -2, "__index");
	lua_pushboolean(L, 1);
	lua_pushcclosure(L, l_ua_close, 1);
	lua_setfield(L, -2, "__gc");
	/* __close is the public close (lua/sip/init.lua): it also removes
	 * registrations and ends ua:events() loops */
	lua_pushcfunction(L, l_ua_tostring);
	lua_setfield(L, -2, "__tostring");
	lua_pushcfunction(L, l_ua_new);
	lua_setfield(L, -2, "new");
	return 1;
}
