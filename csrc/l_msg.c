/***
 * sip.Message - a SIP request or response. Fields are read as properties
 * (msg.method, msg.status, msg.body ...); a received request can be
 * answered with msg:reply().
 * @module sip
 */
#include "lsip.h"
#include "core/core.h"
#include "core/tls.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct lmsg {
	struct sip_msg *m;
	struct sip_txn *st;     /* server transaction of a received request */
	int answered;           /* it went after its final response */
};

static void st_gone(void *arg, struct sip_txn *st)
{
	struct lmsg *lm = arg;

	/* a transaction retired after its final response, or one whose
	 * timers ran out, was answered; one that went before was not */
	lm->answered = sip_txn_final_sent(st);
	lm->st = NULL;
}

void lsip_push_msg(lua_State *L, struct sip_msg *m, struct sip_txn *st)
{
	struct lmsg *lm = lua_newuserdatauv(L, sizeof *lm, 0);

	lm->m = NULL;
	lm->st = NULL;
	lm->answered = 0;
	luaL_setmetatable(L, "sip.Message");
	lm->m = sip_msg_ref(m);
	if (st) {
		lm->st = st;
		sip_txn_set_owner(st, st_gone, lm);
	}
}

static struct lmsg *check_lmsg(lua_State *L, int idx)
{
	struct lmsg *lm = luaL_checkudata(L, idx, "sip.Message");

	if (!lm->m)
		luaL_argerror(L, idx, "message is closed");
	return lm;
}

struct sip_msg *lsip_check_msg(lua_State *L, int idx)
{
	return check_lmsg(L, idx)->m;
}

struct sip_txn *lsip_msg_txn(lua_State *L, int idx)
{
	return check_lmsg(L, idx)->st;
}

static int msg_gc(lua_State *L)
{
	struct lmsg *lm = luaL_checkudata(L, 1, "sip.Message");

	if (lm->st) {
		/* a request dropped unanswered would leave the peer
		 * retransmitting until its timeout: answer it */
		if (!sip_txn_final_sent(lm->st)) {
			struct sip_reply r = { .status = 500, .reason = "Request Not Answered" };
			sip_txn_reply(lm->st, &r);
		}
		sip_txn_set_owner(lm->st, NULL, NULL);
		lm->st = NULL;
	}
	if (lm->m) {
		sip_msg_unref(lm->m);
		lm->m = NULL;
	}
	return 0;
}

static int is_token_char(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       strchr("-.!%*_+`'~", c) != NULL;
}

static void check_header_name(lua_State *L, const char *name, const char *what)
{
	const char *p = name;

	if (!*p)
		luaL_error(L, "%s: empty header name", what);
	for (; *p; p++)
		if (!is_token_char((unsigned char)*p))
			luaL_error(L, "%s: bad header name '%s'", what, name);
}

/* appends "name: value\r\n" to the string at acc */
static void add_header(lua_State *L, int acc, const char *name, int vidx, const char *what)
{
	size_t n;
	const char *v;

	if (lua_type(L, vidx) != LUA_TSTRING && lua_type(L, vidx) != LUA_TNUMBER)
		luaL_error(L, "%s: value of '%s' must be a string", what, name);
	v = lua_tolstring(L, vidx, &n);
	if (sip_header_value_bad(v, n))
		luaL_error(L, "%s: value of '%s' contains CR, LF or NUL", what, name);
	lua_pushvalue(L, acc);
	lua_pushfstring(L, "%s: %s\r\n", name, v);
	lua_concat(L, 2);
	lua_replace(L, acc);
}

/* headers = { ["X-A"] = "1", ["Route"] = { "<a>", "<b>" } }: pushes the
 * "Name: value\r\n" lines as one string, raising on a bad name or value */
void lsip_headers_text(lua_State *L, int idx, const char *what)
{
	int acc;

	idx = lua_absindex(L, idx);
	lua_pushliteral(L, "");
	acc = lua_gettop(L);
	if (lua_isnoneornil(L, idx))
		return;
	if (!lua_istable(L, idx))
		luaL_error(L, "%s must be a table", what);
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		const char *name;
		if (lua_type(L, -2) != LUA_TSTRING)
			luaL_error(L, "%s: header names must be strings", what);
		name = lua_tostring(L, -2);
		check_header_name(L, name, what);
		if (lua_istable(L, -1)) {
			lua_Integer i, n = luaL_len(L, -1);
			for (i = 1; i <= n; i++) {
				lua_geti(L, -1, i);
				add_header(L, acc, name, lua_gettop(L), what);
				lua_pop(L, 1);
			}
		} else {
			add_header(L, acc, name, lua_gettop(L), what);
		}
		lua_pop(L, 1);
	}
}

void lsip_check_opts(lua_State *L, int t, const char *fname, int argn, const char *const names[])
{
	if (lua_isnoneornil(L, t))
		return;
	if (!lua_istable(L, t))
		luaL_error(L, "bad argument #%d to '%s' (table expected, got %s)", argn, fname,
		           luaL_typename(L, t));
	lua_pushnil(L);
	while (lua_next(L, t)) {
		int i, ok = 0;
		lua_pop(L, 1);
		if (lua_type(L, -1) == LUA_TSTRING)
			for (i = 0; names[i] && !ok; i++)
				ok = !strcmp(lua_tostring(L, -1), names[i]);
		if (!ok)
			luaL_error(L, "bad argument #%d to '%s' (unknown option '%s')", argn, fname,
			           luaL_tolstring(L, -1, NULL));
	}
}

const char *lsip_opt_string(lua_State *L, int t, const char *field, const char *what)
{
	const char *s = NULL;

	if (lua_isnoneornil(L, t))
		return NULL;
	lua_getfield(L, t, field);
	if (!lua_isnil(L, -1)) {
		if (lua_type(L, -1) != LUA_TSTRING)
			luaL_error(L, "%s.%s must be a string", what, field);
		s = lua_tostring(L, -1);   /* anchored in the options table */
	}
	lua_pop(L, 1);
	return s;
}

double lsip_opt_number(lua_State *L, int t, const char *field, double dflt, const char *what)
{
	double v = dflt;

	if (lua_isnoneornil(L, t))
		return dflt;
	lua_getfield(L, t, field);
	if (!lua_isnil(L, -1)) {
		if (!lua_isnumber(L, -1))
			luaL_error(L, "%s.%s must be a number", what, field);
		v = lua_tonumber(L, -1);
	}
	lua_pop(L, 1);
	return v;
}

/*** @type Message */

/***
 * Answer a received request.
 * A 1xx may be followed by a final reply; the transaction layer answers
 * retransmissions of the request with the same response.
 * @function reply
 * @int status 100..699
 * @string[opt] reason
 * @tab[opt] opts headers, body, content_type
 * (as in `ua:request`)
 * @treturn boolean true
 * @return[2] nil
 * @treturn[2] string `"already answered"` after a final reply,
 * `"transaction ended"`, `"transport: send failed"`
 */
static int msg_reply(lua_State *L)
{
	struct lmsg *lm = check_lmsg(L, 1);
	struct sip_reply r = { 0 };
	size_t blen = 0;
	int rc;

	r.status = (int)luaL_checkinteger(L, 2);
	luaL_argcheck(L, r.status >= 100 && r.status <= 699, 2, "status must be 100..699");
	r.reason = luaL_optstring(L, 3, NULL);
	if (r.reason) {
		size_t n = strlen(r.reason);
		luaL_argcheck(L, !sip_header_value_bad(r.reason, n), 3, "reason contains CR or LF");
	}
	{
		static const char *const names[] = { "headers", "body", "content_type", NULL };
		lsip_check_opts(L, 4, "req:reply", 3, names);
	}
	if (!lm->st) {
		if (!lm->m->received || !sip_msg_is_request(lm->m))
			return luaL_error(L, "reply: this message is not a received request");
		/* its transaction ended (answered, the UA closed, or it timed out) */
		lua_pushnil(L);
		lua_pushstring(L, lm->answered ? "already answered" : "transaction ended");
		return 2;
	}
	if (sip_txn_final_sent(lm->st)) {
		lua_pushnil(L);
		lua_pushstring(L, "already answered");
		return 2;
	}
	lua_settop(L, 4);
	if (!lua_isnil(L, 4))
		lua_getfield(L, 4, "headers");
	else
		lua_pushnil(L);
	lsip_headers_text(L, 5, "opts.headers");
	r.headers = lua_tostring(L, -1);
	if (!lua_isnoneornil(L, 4)) {
		lua_getfield(L, 4, "body");
		if (!lua_isnil(L, -1)) {
			if (lua_type(L, -1) != LUA_TSTRING)
				return luaL_error(L, "bad argument #3 to 'req:reply' (option 'body' must be a string)");
			r.body = lua_tolstring(L, -1, &blen);
			r.body_len = blen;
		}
		r.content_type = lsip_opt_string(L, 4, "content_type", "req:reply: opts");
		if (r.body_len && !r.content_type)
			r.content_type = "text/plain";
	}
	rc = sip_txn_reply(lm->st, &r);
	if (rc) {
		lua_pushnil(L);
		lua_pushstring(L, rc == -EALREADY ? "already answered" : "transport: send failed");
		return 2;
	}
	lua_pushboolean(L, 1);
	return 1;
}

/***
 * The first value of a header. Names are case-insensitive and compact
 * forms match (`"v"` is Via, `"i"` Call-ID).
 * @function header
 * @string name
 * @treturn ?string the value; nil when there is none
 */
static int msg_header(lua_State *L)
{
	struct sip_msg *m = lsip_check_msg(L, 1);
	const char *name = luaL_checkstring(L, 2);
	size_t n;
	const char *v = sip_msg_header(m, name, 0, &n);

	if (v)
		lua_pushlstring(L, v, n);
	else
		lua_pushnil(L);
	return 1;
}

/***
 * Every value of a header.
 * @function headers
 * @string name
 * @treturn table a list of values (empty when there is none)
 */
static int msg_headers(lua_State *L)
{
	struct sip_msg *m = lsip_check_msg(L, 1);
	const char *name = luaL_checkstring(L, 2);
	const char *v;
	size_t n;
	int i;

	lua_newtable(L);
	for (i = 0; (v = sip_msg_header(m, name, i, &n)); i++) {
		lua_pushlstring(L, v, n);
		lua_rawseti(L, -2, i + 1);
	}
	return 1;
}

/***
 * Replace every header of that name (with nil, remove them). A value with
 * CR or LF raises, and so does a change that would make the message invalid.
 * @function set_header
 * @string name
 * @string[opt] value
 */
/* replace (or with nil remove) every header of that name, then reparse */
static int msg_set_header(lua_State *L)
{
	struct lmsg *lm = check_lmsg(L, 1);
	struct sip_msg *m = lm->m, *nm = NULL;
	const char *name = luaL_checkstring(L, 2);
	const char *val = luaL_optstring(L, 3, NULL);
	const char *p, *end, *why, *want;
	struct sip_buf b;
	int rc;

	check_header_name(L, name, "set_header");
	if (val && sip_header_value_bad(val, strlen(val)))
		return luaL_argerror(L, 3, lua_pushfstring(L, "value of '%s' contains CR, LF or NUL", name));
	want = sip_header_long_name(name, strlen(name));
	if (!want)
		want = name;
	sip_buf_init(&b, m->len + 128);
	end = m->raw + m->body_off;
	p = (const char *)memchr(m->raw, '\n', (size_t)(end - m->raw)) + 1;
	sip_buf_add(&b, m->raw, (size_t)(p - m->raw));
	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		const char *colon, *ne, *ln;
		eol = eol ? eol + 1 : end;
		while (eol < end && (*eol == ' ' || *eol == '\t')) {
			const char *n2 = memchr(eol, '\n', (size_t)(end - eol));
			eol = n2 ? n2 + 1 : end;
		}
		if (eol >= end || *p == '\r' || *p == '\n')
			break;          /* the blank line ending the headers */
		colon = memchr(p, ':', (size_t)(eol - p));
		ne = colon ? colon : p;
		while (ne > p && (ne[-1] == ' ' || ne[-1] == '\t'))
			ne--;
		ln = sip_header_long_name(p, (size_t)(ne - p));
		if (!(colon && ((ln && !strcasecmp(ln, want)) ||
		                ((size_t)(ne - p) == strlen(want) && !strncasecmp(p, want, (size_t)(ne - p))))))
			sip_buf_add(&b, p, (size_t)(eol - p));
		p = eol;
	}
	if (val)
		sip_buf_printf(&b, "%s: %s\r\n", name, val);
	sip_buf_adds(&b, "\r\n");
	sip_buf_add(&b, m->raw + m->body_off, m->len - m->body_off);
	if (b.oom) {
		sip_buf_free(&b);
		return luaL_error(L, "set_header: out of memory");
	}
	rc = sip_msg_parse(b.p, b.len, &nm, &why);
	sip_buf_free(&b);
	if (rc) {
		sip_msg_unref(nm);
		return luaL_error(L, "set_header: the message would be invalid (%s)", why);
	}
	nm->proto = m->proto;
	nm->src = m->src;
	nm->received = m->received;
	sip_msg_unref(m);
	lm->m = nm;
	return 0;
}

/***
 * The whole message text.
 * @function raw
 * @treturn string
 */
static int msg_raw(lua_State *L)
{
	struct sip_msg *m = lsip_check_msg(L, 1);

	lua_pushlstring(L, m->raw, m->len);
	return 1;
}

static int push_hdr(lua_State *L, struct sip_msg *m, const char *name)
{
	size_t n;
	const char *v = sip_msg_header(m, name, 0, &n);

	if (v)
		lua_pushlstring(L, v, n);
	else
		lua_pushnil(L);
	return 1;
}

/* The URI of a From/To value as it was written (uri.c's reading of it,
 * never unescaped: %00 would cut it) */
static int push_hdr_uri(lua_State *L, struct sip_msg *m, const char *name)
{
	size_t n;
	const char *v = sip_msg_header(m, name, 0, &n);
	struct sip_name_addr na;

	if (v && sip_name_addr_parse(v, v + n, 0, &na))
		lua_pushlstring(L, na.uri.p, na.uri.n);
	else
		lua_pushnil(L);
	return 1;
}

static int push_str(lua_State *L, const char *s)
{
	if (s)
		lua_pushstring(L, s);
	else
		lua_pushnil(L);
	return 1;
}

static int msg_index(lua_State *L)
{
	struct lmsg *lm = check_lmsg(L, 1);
	struct sip_msg *m = lm->m;
	const char *k = luaL_checkstring(L, 2);

	/* methods first */
	lua_pushvalue(L, 2);
	lua_rawget(L, lua_upvalueindex(1));
	if (!lua_isnil(L, -1))
		return 1;
	lua_pop(L, 1);
	if (!m->parsed) {
		lua_pushnil(L);
		return 1;
	}
	switch (k[0]) {
	case 'b':
		if (!strcmp(k, "body")) {
			lua_pushlstring(L, m->raw + m->body_off, m->body_len);
			return 1;
		}
		break;
	case 'c':
		if (!strcmp(k, "call_id"))
			return push_str(L, m->call_id);
		if (!strcmp(k, "cseq")) {
			lua_pushinteger(L, (lua_Integer)m->cseq);
			return 1;
		}
		if (!strcmp(k, "cseq_method"))
			return push_str(L, m->cseq_method);
		if (!strcmp(k, "content_type"))
			return push_hdr(L, m, "Content-Type");
		if (!strcmp(k, "contact"))
			return push_hdr(L, m, "Contact");
		break;
	case 'f':
		if (!strcmp(k, "from"))
			return push_hdr(L, m, "From");
		if (!strcmp(k, "from_tag"))
			return push_str(L, m->from_tag);
		if (!strcmp(k, "from_uri"))
			return push_hdr_uri(L, m, "From");
		break;
	case 'i':
		if (!strcmp(k, "is_request")) {
			lua_pushboolean(L, m->request);
			return 1;
		}
		break;
	case 'm':
		if (!strcmp(k, "method"))
			return push_str(L, sip_msg_method(m));
		break;
	case 'r':
		if (!strcmp(k, "reason"))
			return push_str(L, m->request ? NULL : m->reason);
		break;
	case 's':
		if (!strcmp(k, "status")) {
			if (!m->request)
				lua_pushinteger(L, m->status);
			else
				lua_pushnil(L);
			return 1;
		}
		if (!strcmp(k, "source")) {
			char a[64];
			if (!m->received)
				return push_str(L, NULL);
			sip_addr_str((const struct sockaddr *)&m->src.ss, a, sizeof a);
			lua_pushstring(L, a);
			return 1;
		}
		break;
	case 't':
		if (!strcmp(k, "to"))
			return push_hdr(L, m, "To");
		if (!strcmp(k, "to_tag"))
			return push_str(L, m->to_tag);
		if (!strcmp(k, "to_uri"))
			return push_hdr_uri(L, m, "To");
		if (!strcmp(k, "transport"))
			return push_str(L, m->received ? sip_proto_name(m->proto) : NULL);
		if (!strcmp(k, "tls")) {
			/* facts about the TLS peer of a received message */
			if (!m->tls)
				return push_str(L, NULL);
			lua_createtable(L, 0, 2);
			if (m->tls->subject[0]) {     /* no certificate: no subject */
				lua_pushstring(L, m->tls->subject);
				lua_setfield(L, -2, "peer_subject");
			}
			lua_pushboolean(L, m->tls->verified);
			lua_setfield(L, -2, "verified");
			return 1;
		}
		break;
	case 'u':
		if (!strcmp(k, "uri")) {
			return push_str(L, m->request ? m->uri : NULL);
		}
		break;
	case 'v':
		if (!strcmp(k, "via"))
			return push_hdr(L, m, "Via");
		break;
	}
	lua_pushnil(L);
	return 1;
}

static int msg_newindex(lua_State *L)
{
	return luaL_error(L, "sip.Message fields are read-only (use set_header)");
}

static int msg_tostring(lua_State *L)
{
	struct sip_msg *m = lsip_check_msg(L, 1);

	if (!m->parsed) {
		lua_pushliteral(L, "sip.Message (unparsable)");
		return 1;
	}
	if (m->request)
		lua_pushfstring(L, "sip.Message: %s %s (call-id %s)", m->method, m->uri,
		                m->call_id ? m->call_id : "?");
	else
		lua_pushfstring(L, "sip.Message: %d %s (%s, call-id %s)", m->status, m->reason ? m->reason : "",
		                m->cseq_method ? m->cseq_method : "?", m->call_id ? m->call_id : "?");
	return 1;
}

static const luaL_Reg msg_methods[] = {
	{ "reply", msg_reply },
	{ "header", msg_header },
	{ "headers", msg_headers },
	{ "set_header", msg_set_header },
	{ "raw", msg_raw },
	{ "close", msg_gc },
	{ NULL, NULL }
};

/***
 * Release the message (also its `__close` and `__gc`); a received request
 * not answered yet gets a 500 then.
 * @function close
 */

/*** @section end */

/***
 * Parse SIP text without sending it anywhere (tests, the REPL).
 * @function sip.core.parse
 * @string text
 * @treturn Message the message
 * @return[2] nil
 * @treturn[2] string the reason
 * @treturn[2] string "invalid" (parsed but broken: a 400 is
 * possible) or "unparsable"
 */
int lsip_parse(lua_State *L)
{
	size_t n;
	const char *text = luaL_checklstring(L, 1, &n), *why = NULL;
	struct sip_msg *m = NULL;
	int rc = sip_msg_parse(text, n, &m, &why);

	if (rc) {
		/* "invalid": broken, but a response (400, 501) can be built */
		int answerable = rc == -EPROTO || (m && sip_msg_answerable(m));
		sip_msg_unref(m);
		lua_pushnil(L);
		lua_pushstring(L, why ? why : "unparsable");
		lua_pushstring(L, answerable ? "invalid" : "unparsable");
		return 3;
	}
	lsip_push_msg(L, m, NULL);
	sip_msg_unref(m);
	return 1;
}

/* a quoted string's content with its escapes resolved, or the text */
static void push_unquoted(lua_State *L, const char *p, size_t n)
{
	luaL_Buffer b;
	size_t i;

	if (n < 2 || p[0] != '"' || p[n - 1] != '"') {
		lua_pushlstring(L, p, n);
		return;
	}
	luaL_buffinit(L, &b);
	for (i = 1; i + 1 < n; i++) {
		if (p[i] == '\\' && i + 2 < n)
			i++;
		luaL_addchar(&b, p[i]);
	}
	luaL_pushresult(&b);
}

/* { display =, uri =, params = { name = value | true } } for one value */
static void push_name_addr(lua_State *L, const struct sip_name_addr *na)
{
	const char *p = na->params.p, *e = p + na->params.n;
	struct sip_span name, value;

	lua_createtable(L, 0, 3);
	if (na->display.p) {
		push_unquoted(L, na->display.p, na->display.n);
		lua_setfield(L, -2, "display");
	}
	lua_pushlstring(L, na->uri.p, na->uri.n);
	lua_setfield(L, -2, "uri");
	lua_newtable(L);
	while (p && (p = sip_param_next(p, e, &name, &value)) && name.n) {
		luaL_Buffer b;
		size_t i;
		char *lc = luaL_buffinitsize(L, &b, name.n);
		for (i = 0; i < name.n; i++)
			lc[i] = (char)((name.p[i] >= 'A' && name.p[i] <= 'Z') ? name.p[i] + 32 : name.p[i]);
		luaL_pushresultsize(&b, name.n);
		if (value.p)
			push_unquoted(L, value.p, value.n);
		else
			lua_pushboolean(L, 1);
		lua_rawset(L, -3);
	}
	lua_setfield(L, -2, "params");
}

/***
 * Split a header value holding name-addrs (Contact, Route, Record-Route
 * ...) the way the core reads them: commas inside quotes and `<...>` do
 * not split. A lone `*` (Contact: *) gives one entry whose uri is `"*"`.
 * @function sip.core.name_addrs
 * @string value a header value
 * @treturn table a list of `{ display = ?string, uri = string, params =
 * { name = string|true } }`: display without its quotes, parameter names
 * in lower case, a quoted value without its quotes, `true` for a
 * parameter without a value
 * @return[2] nil
 * @treturn[2] string why the value does not read
 */
int lsip_name_addrs(lua_State *L)
{
	size_t n;
	const char *v = luaL_checklstring(L, 1, &n), *p = v, *e = v + n;
	int k = 0;

	lua_newtable(L);
	p = sip_skip_ws(p, e);
	if (p < e && *p == '*' && sip_skip_ws(p + 1, e) == e) {
		lua_createtable(L, 0, 2);
		lua_pushliteral(L, "*");
		lua_setfield(L, -2, "uri");
		lua_newtable(L);
		lua_setfield(L, -2, "params");
		lua_rawseti(L, -2, 1);
		return 1;
	}
	while (p < e) {
		struct sip_name_addr na;
		const char *end = sip_name_addr_parse(p, e, 1, &na);
		if (!end || memchr(v, '\0', n)) {
			lua_pushnil(L);
			lua_pushfstring(L, "bad name-addr at byte %d", (int)(p - v) + 1);
			return 2;
		}
		push_name_addr(L, &na);
		lua_rawseti(L, -2, ++k);
		if (end == e)
			break;
		p = sip_skip_ws(end + 1, e);
		if (p == e) {
			lua_pushnil(L);
			lua_pushfstring(L, "bad name-addr at byte %d", (int)(p - v) + 1);
			return 2;
		}
	}
	return 1;
}

int lsip_open_msg(lua_State *L)
{
	luaL_newmetatable(L, "sip.Message");
	luaL_newlib(L, msg_methods);
	lua_pushvalue(L, -1);
	lua_setfield(L, -3, "methods");
	lua_pushcclosure(L, msg_index, 1);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, msg_newindex);
	lua_setfield(L, -2, "__newindex");
	lua_pushcfunction(L, msg_gc);
	lua_setfield(L, -2, "__gc");
	lua_pushcfunction(L, msg_gc);
	lua_setfield(L, -2, "__close");
	lua_pushcfunction(L, msg_tostring);
	lua_setfield(L, -2, "__tostring");
	return 1;
}
