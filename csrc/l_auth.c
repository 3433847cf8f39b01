/***
 * sip.core.auth - digest authentication (RFC 2617, RFC 7616, RFC 8760):
 * client responses, challenge parsing, and a server that issues stateless
 * nonces and verifies credentials. The engine is csrc/core/auth.c; this
 * file only checks arguments and converts values.
 *
 * `local auth = require("sip.core").auth`. The requests and the server
 * side of luasip use it (`sip.auth`, `msg:authenticate`); use it directly
 * for what those do not cover: a credential store of HA1 values, nonces
 * shared by several processes. docs/digest.md describes it with examples.
 * @module sip.core.auth
 */
#include "lsip.h"
#include "core/auth.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SERVER_MT "sip.AuthServer"
#define CLIENT_MT "sip.AuthClient"

int lsip_open_auth(lua_State *L);

static double wall_now(void)
{
	struct timespec ts;

	if (timespec_get(&ts, TIME_UTC) != TIME_UTC)
		return (double)time(NULL);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* field `name` of the table at t (argument arg): a string without NUL of
 * at most max bytes (0: any length, NUL allowed), or NULL when absent */
static const char *field_str(lua_State *L, int arg, int t, const char *name, size_t max,
                             size_t *len)
{
	const char *s;
	size_t n;

	lua_getfield(L, t, name);
	if (lua_isnil(L, -1)) {
		lua_pop(L, 1);
		return NULL;
	}
	if (lua_type(L, -1) != LUA_TSTRING)
		luaL_argerror(L, arg, lua_pushfstring(L, "field '%s' must be a string", name));
	s = lua_tolstring(L, -1, &n);
	if (max && (n > max || strlen(s) != n))
		luaL_argerror(L, arg, lua_pushfstring(L, "field '%s' is too long or contains NUL", name));
	lua_pop(L, 1);          /* the table keeps the string alive */
	if (len)
		*len = n;
	return s;
}

static const char *need_str(lua_State *L, int arg, int t, const char *name, size_t max)
{
	const char *s = field_str(L, arg, t, name, max, NULL);

	if (!s)
		luaL_argerror(L, arg, lua_pushfstring(L, "field '%s' is required", name));
	return s;
}

static int has_ctl(const char *s)
{
	for (; *s; s++)
		if (((unsigned char)*s < 0x20 && *s != '\t') || *s == 0x7f)
			return 1;
	return 0;
}

/* a plain string argument without control characters, at most max bytes */
static const char *check_text(lua_State *L, int arg, size_t max)
{
	size_t n;
	const char *s = luaL_checklstring(L, arg, &n);

	luaL_argcheck(L, n <= max && strlen(s) == n && !has_ctl(s), arg,
	              "too long or contains control characters");
	return s;
}

static int check_alg(lua_State *L, int arg, const char *name)
{
	int alg = sip_auth_alg_parse(name, strlen(name));

	if (alg < 0)
		luaL_argerror(L, arg, lua_pushfstring(L, "unknown algorithm '%s'", name));
	return alg;
}

static unsigned qop_bit(const char *s)
{
	if (!strcmp(s, "auth"))
		return SIP_AUTH_QOP_AUTH;
	if (!strcmp(s, "auth-int"))
		return SIP_AUTH_QOP_AUTH_INT;
	return 0;
}

static void push_challenge(lua_State *L, const struct sip_auth_challenge *ch)
{
	int i = 0;

	lua_createtable(L, 0, 8);
	lua_pushliteral(L, "Digest");
	lua_setfield(L, -2, "scheme");
	lua_pushstring(L, ch->realm);
	lua_setfield(L, -2, "realm");
	lua_pushstring(L, ch->nonce);
	lua_setfield(L, -2, "nonce");
	if (ch->has_opaque) {
		lua_pushstring(L, ch->opaque);
		lua_setfield(L, -2, "opaque");
	}
	lua_pushstring(L, sip_auth_alg_name(ch->alg));
	lua_setfield(L, -2, "algorithm");
	if (ch->qop) {
		lua_createtable(L, 2, 0);
		if (ch->qop & SIP_AUTH_QOP_AUTH) {
			lua_pushliteral(L, "auth");
			lua_rawseti(L, -2, ++i);
		}
		if (ch->qop & SIP_AUTH_QOP_AUTH_INT) {
			lua_pushliteral(L, "auth-int");
			lua_rawseti(L, -2, ++i);
		}
		lua_setfield(L, -2, "qop");
	}
	lua_pushboolean(L, ch->stale);
	lua_setfield(L, -2, "stale");
	lua_pushboolean(L, ch->userhash);
	lua_setfield(L, -2, "userhash");
}

/* fills in from the table at t: method, uri, user, password | ha1, body, cnonce */
static void check_input(lua_State *L, int arg, int t, struct sip_auth_input *in)
{
	memset(in, 0, sizeof *in);
	in->method = need_str(L, arg, t, "method", 64);
	in->uri = need_str(L, arg, t, "uri", SIP_AUTH_URI_MAXLEN);
	in->user = need_str(L, arg, t, "user", SIP_AUTH_MAXLEN);
	in->password = field_str(L, arg, t, "password", 4096, NULL);
	in->ha1 = field_str(L, arg, t, "ha1", SIP_AUTH_HEX_MAX, NULL);
	luaL_argcheck(L, in->password || in->ha1, arg, "field 'password' or 'ha1' is required");
	if (in->password)
		in->ha1 = NULL;
	in->body = field_str(L, arg, t, "body", 0, &in->body_len);
	in->cnonce = field_str(L, arg, t, "cnonce", SIP_AUTH_MAXLEN, NULL);
}

static void digest_error(lua_State *L, int arg, int rc)
{
	if (rc == -EINVAL)
		luaL_argerror(L, arg, "invalid value (control characters, empty, too long, "
		              "or an ha1 of the wrong length)");
	luaL_error(L, "digest: %s", rc == -ENOMEM ? "out of memory" : "crypto failure");
}

/***
 * Compute an Authorization / Proxy-Authorization value (client side).
 * @function digest_response
 * @tab t realm, nonce, method, uri, user, password or ha1 (hex
 * H(user:realm:password)); optional algorithm ("MD5", "SHA-256",
 * "SHA-512-256", each also "-sess"; default "MD5"), qop ("auth",
 * "auth-int", or a list as parse_challenge gives, auth preferred; absent:
 * the RFC 2069 form), opaque, userhash, body (auth-int), nc (integer or 8
 * hex digits, default 1), cnonce (default: random)
 * @treturn string the header value
 * @treturn string the bare response hash
 */
static int l_digest_response(lua_State *L)
{
	struct sip_auth_challenge ch;
	struct sip_auth_input in;
	struct sip_buf b;
	char hex[SIP_AUTH_HEX_MAX + 1];
	const char *s;
	lua_Integer nc = 1;
	int rc;

	luaL_checktype(L, 1, LUA_TTABLE);
	memset(&ch, 0, sizeof ch);
	s = field_str(L, 1, 1, "algorithm", 32, NULL);
	ch.alg = s ? check_alg(L, 1, s) : SIP_AUTH_MD5;
	strcpy(ch.realm, need_str(L, 1, 1, "realm", SIP_AUTH_MAXLEN));
	strcpy(ch.nonce, need_str(L, 1, 1, "nonce", SIP_AUTH_MAXLEN));
	s = field_str(L, 1, 1, "opaque", SIP_AUTH_MAXLEN, NULL);
	if (s) {
		strcpy(ch.opaque, s);
		ch.has_opaque = 1;
	}
	lua_getfield(L, 1, "userhash");
	ch.userhash = lua_toboolean(L, -1);
	lua_pop(L, 1);
	lua_getfield(L, 1, "qop");
	if (lua_type(L, -1) == LUA_TSTRING) {
		ch.qop = qop_bit(lua_tostring(L, -1));
		luaL_argcheck(L, ch.qop, 1, "field 'qop' must be \"auth\" or \"auth-int\"");
	} else if (lua_istable(L, -1)) {
		lua_Integer i, n = luaL_len(L, -1);
		for (i = 1; i <= n; i++) {
			lua_geti(L, -1, i);
			if (lua_type(L, -1) == LUA_TSTRING)
				ch.qop |= qop_bit(lua_tostring(L, -1));
			lua_pop(L, 1);
		}
		luaL_argcheck(L, ch.qop, 1, "field 'qop' lists neither \"auth\" nor \"auth-int\"");
	} else if (!lua_isnil(L, -1)) {
		luaL_argerror(L, 1, "field 'qop' must be a string or a list");
	}
	lua_pop(L, 1);
	lua_getfield(L, 1, "nc");
	if (lua_type(L, -1) == LUA_TSTRING) {
		char *end;
		size_t n;
		const char *t = lua_tolstring(L, -1, &n);
		unsigned long v = strtoul(t, &end, 16);
		luaL_argcheck(L, n == 8 && end == t + 8 && t[0] != '-' && t[0] != '+' && t[0] != ' ',
		              1, "field 'nc' must be 8 hexadecimal digits");
		nc = (lua_Integer)v;
	} else if (!lua_isnil(L, -1)) {
		int isnum;
		nc = lua_tointegerx(L, -1, &isnum);
		luaL_argcheck(L, isnum, 1, "field 'nc' must be an integer or 8 hexadecimal digits");
	}
	lua_pop(L, 1);
	luaL_argcheck(L, nc >= 1 && nc <= 0xffffffffLL, 1, "field 'nc' must be 1..0xffffffff");
	check_input(L, 1, 1, &in);
	sip_buf_init(&b, 512);
	rc = sip_auth_digest(&ch, &in, (uint32_t)nc, &b, hex);
	if (rc) {
		sip_buf_free(&b);
		digest_error(L, 1, rc);
	}
	lua_pushlstring(L, b.p, b.len);
	sip_buf_free(&b);
	lua_pushstring(L, hex);
	return 2;
}

/***
 * Parse one WWW-Authenticate / Proxy-Authenticate value.
 * @function parse_challenge
 * @string text the header value
 * @treturn table scheme, realm, nonce, opaque, algorithm, qop (list),
 * stale, userhash
 * @return[2] fail
 * @treturn[2] string why: malformed, not Digest, or unsupported
 */
static int l_parse_challenge(lua_State *L)
{
	size_t n;
	const char *s = luaL_checklstring(L, 1, &n);
	struct sip_auth_challenge ch;
	const char *why = NULL;
	int rc = sip_auth_challenge_parse(s, n, &ch, NULL, &why);

	if (rc) {
		lua_pushnil(L);
		lua_pushstring(L, why ? why : "malformed challenge");
		return 2;
	}
	push_challenge(L, &ch);
	return 1;
}

/* header values at arg (a string or a list of strings) -> the best challenge */
static int choose(lua_State *L, int arg, struct sip_auth_challenge *ch)
{
	const char *vals[32];
	size_t lens[32];
	size_t count = 0;

	if (lua_type(L, arg) == LUA_TSTRING) {
		vals[0] = lua_tolstring(L, arg, &lens[0]);
		count = 1;
	} else {
		lua_Integer i, n;
		luaL_checktype(L, arg, LUA_TTABLE);
		n = luaL_len(L, arg);
		luaL_argcheck(L, n <= 32, arg, "more than 32 challenge headers");
		for (i = 1; i <= n; i++) {
			lua_geti(L, arg, i);
			if (lua_type(L, -1) != LUA_TSTRING)
				luaL_argerror(L, arg, "challenges must be strings");
			vals[count] = lua_tolstring(L, -1, &lens[count]);
			count++;
			lua_pop(L, 1);  /* the list keeps it */
		}
	}
	return sip_auth_challenge_choose(vals, lens, count, ch);
}

/***
 * The strongest usable Digest challenge among header values.
 * @function choose_challenge
 * @param values a header value or a list of them
 * @treturn table as parse_challenge
 * @return[2] fail
 * @treturn[2] string "no usable challenge"
 */
static int l_choose_challenge(lua_State *L)
{
	struct sip_auth_challenge ch;

	if (choose(L, 1, &ch)) {
		lua_pushnil(L);
		lua_pushliteral(L, "no usable challenge");
		return 2;
	}
	push_challenge(L, &ch);
	return 1;
}

/***
 * Parse an Authorization / Proxy-Authorization value.
 * @function parse_credentials
 * @string text
 * @treturn table username, realm, nonce, uri, response, algorithm, cnonce,
 * nc (integer), qop, opaque, userhash
 * @return[2] fail
 * @treturn[2] string why
 */
static int l_parse_credentials(lua_State *L)
{
	size_t n;
	const char *s = luaL_checklstring(L, 1, &n);
	struct sip_auth_credentials cr;
	const char *why = NULL;

	if (sip_auth_credentials_parse(s, n, &cr, &why)) {
		lua_pushnil(L);
		lua_pushstring(L, why ? why : "malformed credentials");
		return 2;
	}
	lua_createtable(L, 0, 11);
	lua_pushstring(L, cr.username);
	lua_setfield(L, -2, "username");
	lua_pushstring(L, cr.realm);
	lua_setfield(L, -2, "realm");
	lua_pushstring(L, cr.nonce);
	lua_setfield(L, -2, "nonce");
	lua_pushstring(L, cr.uri);
	lua_setfield(L, -2, "uri");
	lua_pushstring(L, cr.response);
	lua_setfield(L, -2, "response");
	lua_pushstring(L, sip_auth_alg_name(cr.alg));
	lua_setfield(L, -2, "algorithm");
	if (cr.qop) {
		lua_pushstring(L, cr.qop == SIP_AUTH_QOP_AUTH ? "auth" : "auth-int");
		lua_setfield(L, -2, "qop");
		lua_pushstring(L, cr.cnonce);
		lua_setfield(L, -2, "cnonce");
		lua_pushinteger(L, (lua_Integer)cr.nc);
		lua_setfield(L, -2, "nc");
	}
	if (cr.has_opaque) {
		lua_pushstring(L, cr.opaque);
		lua_setfield(L, -2, "opaque");
	}
	lua_pushboolean(L, cr.userhash);
	lua_setfield(L, -2, "userhash");
	return 1;
}

/***
 * Hex H(user:realm:password) for a credential store.
 * @function ha1
 * @string algorithm "MD5", "SHA-256" or "SHA-512-256" (a -sess name gives
 * the same base HA1)
 * @string user
 * @string realm
 * @string password
 * @treturn string
 */
static int l_ha1(lua_State *L)
{
	int alg = check_alg(L, 1, luaL_checkstring(L, 1));
	const char *user = check_text(L, 2, SIP_AUTH_MAXLEN);
	const char *realm = check_text(L, 3, SIP_AUTH_MAXLEN);
	const char *pw = check_text(L, 4, 4096);
	char hex[SIP_AUTH_HEX_MAX + 1];

	if (sip_auth_ha1(alg, user, realm, pw, hex))
		return luaL_error(L, "ha1: crypto failure");
	lua_pushstring(L, hex);
	return 1;
}

/* ---- client state ---- */

/***
 * Client state for one challenge: answers requests with an nc that grows
 * per nonce.
 * @function client
 * @treturn sip.AuthClient
 */
static int l_client(lua_State *L)
{
	struct sip_auth_client *c = lua_newuserdatauv(L, sizeof *c, 0);

	memset(c, 0, sizeof *c);
	luaL_setmetatable(L, CLIENT_MT);
	return 1;
}

/***
 * Adopt the strongest challenge of a 401/407.
 * @function AuthClient:update
 * @param values a header value or a list of them
 * @treturn boolean true
 * @treturn boolean whether to answer it: false when the server repeated the
 * nonce already answered without stale=true (wrong credentials)
 * @treturn table the challenge, as parse_challenge
 * @return[2] fail
 * @treturn[2] string "no usable challenge"
 */
static int client_update(lua_State *L)
{
	struct sip_auth_client *c = luaL_checkudata(L, 1, CLIENT_MT);
	struct sip_auth_challenge ch;

	if (choose(L, 2, &ch)) {
		lua_pushnil(L);
		lua_pushliteral(L, "no usable challenge");
		return 2;
	}
	lua_pushboolean(L, 1);
	lua_pushboolean(L, sip_auth_client_update(c, &ch));
	push_challenge(L, &ch);
	return 3;
}

/***
 * The header value for the next request (nc incremented).
 * @function AuthClient:authorize
 * @tab t method, uri, user, password or ha1; optional body, cnonce, qop
 * ("auth-int" to prefer it when offered)
 * @treturn string
 */
static int client_authorize(lua_State *L)
{
	struct sip_auth_client *c = luaL_checkudata(L, 1, CLIENT_MT);
	struct sip_auth_input in;
	struct sip_buf b;
	const char *q;
	int rc;

	luaL_checktype(L, 2, LUA_TTABLE);
	if (!c->valid)
		return luaL_error(L, "authorize: no challenge yet (call update first)");
	check_input(L, 2, 2, &in);
	q = field_str(L, 2, 2, "qop", 16, NULL);
	if (q) {
		in.qop_pref = qop_bit(q);
		luaL_argcheck(L, in.qop_pref, 2, "field 'qop' must be \"auth\" or \"auth-int\"");
	}
	sip_buf_init(&b, 512);
	rc = sip_auth_client_authorize(c, &in, &b);
	if (rc) {
		sip_buf_free(&b);
		if (rc == -EOVERFLOW)
			return luaL_error(L, "authorize: nonce count exhausted");
		digest_error(L, 2, rc);
	}
	lua_pushlstring(L, b.p, b.len);
	sip_buf_free(&b);
	return 1;
}

/***
 * The last nonce count sent.
 * @function AuthClient:nc
 * @treturn integer
 */
static int client_nc(lua_State *L)
{
	struct sip_auth_client *c = luaL_checkudata(L, 1, CLIENT_MT);

	lua_pushinteger(L, (lua_Integer)c->nc);
	return 1;
}

/* ---- server ---- */

struct lserver {
	struct sip_auth_server *s;
};

static struct sip_auth_server *check_server(lua_State *L, int idx)
{
	struct lserver *ls = luaL_checkudata(L, idx, SERVER_MT);

	if (!ls->s)
		luaL_argerror(L, idx, "authentication server is closed");
	return ls->s;
}

static int server_close(lua_State *L)
{
	struct lserver *ls = luaL_checkudata(L, 1, SERVER_MT);

	sip_auth_server_free(ls->s);
	ls->s = NULL;
	return 0;
}

/***
 * A digest server: stateless nonces keyed by a secret, and an nc table.
 * @function new
 * @string[opt] secret HMAC key (default: random, so nonces die with the object)
 * @tab[opt] opts expires (nonce lifetime, seconds, default 300), slots
 * (nc table size, default 4096)
 * @treturn sip.AuthServer
 */
static int l_new(lua_State *L)
{
	size_t len = 0;
	const char *secret = luaL_optlstring(L, 1, NULL, &len);
	lua_Integer expires = SIP_AUTH_DEFAULT_EXPIRES, slots = 0;
	struct lserver *ls;
	int rc;

	luaL_argcheck(L, !secret || len > 0, 1, "secret must not be empty");
	if (!lua_isnoneornil(L, 2)) {
		int isnum;
		luaL_checktype(L, 2, LUA_TTABLE);
		lua_getfield(L, 2, "expires");
		if (!lua_isnil(L, -1)) {
			expires = lua_tointegerx(L, -1, &isnum);
			luaL_argcheck(L, isnum && expires > 0 && expires <= 86400, 2,
			              "field 'expires' must be 1..86400 seconds");
		}
		lua_getfield(L, 2, "slots");
		if (!lua_isnil(L, -1)) {
			slots = lua_tointegerx(L, -1, &isnum);
			luaL_argcheck(L, isnum && slots > 0 && slots <= (1 << 24), 2,
			              "field 'slots' must be 1..16777216");
		}
		lua_pop(L, 2);
	}
	ls = lua_newuserdatauv(L, sizeof *ls, 0);
	ls->s = NULL;
	luaL_setmetatable(L, SERVER_MT);
	rc = sip_auth_server_new(secret, len, (size_t)slots, &ls->s);
	if (rc)
		return luaL_error(L, "auth.new: %s", rc == -ENOMEM ? "out of memory" : "crypto failure");
	sip_auth_server_set_expires(ls->s, (unsigned)expires);
	return 1;
}

static double opt_now(lua_State *L, int arg, int t)
{
	double now;
	int isnum;

	if (lua_isnoneornil(L, t))
		return wall_now();
	lua_getfield(L, t, "now");
	if (lua_isnil(L, -1)) {
		lua_pop(L, 1);
		return wall_now();
	}
	now = lua_tonumberx(L, -1, &isnum);
	luaL_argcheck(L, isnum, arg, "field 'now' must be a number");
	lua_pop(L, 1);
	return now;
}

/***
 * A WWW-Authenticate / Proxy-Authenticate value with a fresh nonce.
 * @function AuthServer:challenge
 * @string realm
 * @tab[opt] opts algorithm (default "MD5") or algorithms (a list: one value
 * per entry, in order), qop ("auth" default, "auth-int", "auth,auth-int"),
 * opaque, stale (boolean), now (seconds since the epoch)
 * @treturn string ... one header value per algorithm
 */
static int server_challenge(lua_State *L)
{
	struct sip_auth_server *s = check_server(L, 1);
	const char *realm = check_text(L, 2, SIP_AUTH_MAXLEN);
	struct sip_auth_challenge_opts o = { SIP_AUTH_MD5, SIP_AUTH_QOP_AUTH, 0, NULL };
	int algs[SIP_AUTH_ALG_COUNT * 2], nalg = 0, i, rc;
	double now;

	if (!lua_isnoneornil(L, 3)) {
		const char *a, *q;
		luaL_checktype(L, 3, LUA_TTABLE);
		a = field_str(L, 3, 3, "algorithm", 32, NULL);
		if (a)
			algs[nalg++] = check_alg(L, 3, a);
		lua_getfield(L, 3, "algorithms");
		if (lua_istable(L, -1)) {
			lua_Integer j, n = luaL_len(L, -1);
			luaL_argcheck(L, !a, 3, "give 'algorithm' or 'algorithms', not both");
			luaL_argcheck(L, n >= 1 && n <= SIP_AUTH_ALG_COUNT * 2, 3,
			              "field 'algorithms' must list 1 to 12 names");
			for (j = 1; j <= n; j++) {
				lua_geti(L, -1, j);
				if (lua_type(L, -1) != LUA_TSTRING)
					luaL_argerror(L, 3, "field 'algorithms' must list strings");
				algs[nalg++] = check_alg(L, 3, lua_tostring(L, -1));
				lua_pop(L, 1);
			}
		} else if (!lua_isnil(L, -1)) {
			luaL_argerror(L, 3, "field 'algorithms' must be a list");
		}
		lua_pop(L, 1);
		q = field_str(L, 3, 3, "qop", 16, NULL);
		if (q) {
			o.qop = !strcmp(q, "auth,auth-int") ? SIP_AUTH_QOP_AUTH | SIP_AUTH_QOP_AUTH_INT
			                                    : qop_bit(q);
			luaL_argcheck(L, o.qop, 3,
			              "field 'qop' must be \"auth\", \"auth-int\" or \"auth,auth-int\"");
		}
		o.opaque = field_str(L, 3, 3, "opaque", SIP_AUTH_MAXLEN, NULL);
		luaL_argcheck(L, !o.opaque || !has_ctl(o.opaque), 3,
		              "field 'opaque' contains control characters");
		lua_getfield(L, 3, "stale");
		o.stale = lua_toboolean(L, -1);
		lua_pop(L, 1);
	}
	if (!nalg)
		algs[nalg++] = SIP_AUTH_MD5;
	now = opt_now(L, 3, 3);
	luaL_checkstack(L, nalg, "too many challenges");
	for (i = 0; i < nalg; i++) {
		struct sip_buf b;
		o.alg = algs[i];
		sip_buf_init(&b, 256);
		rc = sip_auth_server_challenge(s, realm, &o, now, &b);
		if (rc) {
			sip_buf_free(&b);
			return luaL_error(L, "challenge: %s", rc == -ENOMEM ? "out of memory" : "crypto failure");
		}
		lua_pushlstring(L, b.p, b.len);
		sip_buf_free(&b);
	}
	return nalg;
}

/* the credential the lookup returned (at the top) -> password / ha1;
 * -1 when the table has no ha1 for this algorithm */
static int take_secret(lua_State *L, int alg, struct sip_auth_verify_in *vin)
{
	static const char *const ha1_fields[3] = { "ha1", "ha1_sha256", "ha1_sha512_256" };
	const char *field = ha1_fields[alg / 2];
	int t = lua_gettop(L);
	size_t n;

	vin->password = vin->ha1 = NULL;
	if (lua_isnil(L, t) || (lua_isboolean(L, t) && !lua_toboolean(L, t)))
		return 0;
	if (lua_type(L, t) == LUA_TSTRING) {
		vin->password = lua_tolstring(L, t, &n);
		if (strlen(vin->password) != n)
			return luaL_error(L, "verify: the password contains NUL");
		return 0;
	}
	if (!lua_istable(L, t))
		return luaL_error(L, "verify: lookup must give a password string, a table "
		                  "{password=} / {ha1=}, or nil");
	lua_getfield(L, t, "password");
	if (lua_type(L, -1) == LUA_TSTRING) {
		vin->password = lua_tolstring(L, -1, &n);
		if (strlen(vin->password) != n)
			return luaL_error(L, "verify: the password contains NUL");
		return 0;       /* stays on the stack */
	}
	if (!lua_isnil(L, -1))
		return luaL_error(L, "verify: credential field 'password' must be a string");
	lua_getfield(L, t, field);
	if (lua_isnil(L, -1))
		return -1;
	if (lua_type(L, -1) != LUA_TSTRING)
		return luaL_error(L, "verify: credential field '%s' must be a string", field);
	vin->ha1 = lua_tolstring(L, -1, &n);
	if (n != sip_auth_alg_hexlen(alg) || strspn(vin->ha1, "0123456789abcdefABCDEF") != n)
		return luaL_error(L, "verify: credential field '%s' must be %d hexadecimal digits",
		                  field, (int)sip_auth_alg_hexlen(alg));
	return 0;
}

static int verify_fail(lua_State *L, const char *reason, const char *detail)
{
	lua_pushnil(L);
	lua_pushstring(L, reason);
	if (!detail)
		return 2;
	lua_pushstring(L, detail);
	return 3;
}

/* reads verify's arguments 1..6 into vin (no side effects, so it runs again
 * in the continuation after a lookup that yielded) */
static struct sip_auth_server *verify_args(lua_State *L, struct sip_auth_verify_in *vin,
                                           const char **uri)
{
	struct sip_auth_server *s = check_server(L, 1);

	luaL_checkstring(L, 2);
	memset(vin, 0, sizeof *vin);
	*uri = NULL;
	vin->method = check_text(L, 3, 64);
	vin->realm = check_text(L, 4, SIP_AUTH_MAXLEN);
	luaL_argcheck(L, lua_istable(L, 5) || lua_isfunction(L, 5), 5,
	              "lookup must be a table or a function");
	if (!lua_isnoneornil(L, 6)) {
		luaL_checktype(L, 6, LUA_TTABLE);
		vin->body = field_str(L, 6, 6, "body", 0, &vin->body_len);
		*uri = field_str(L, 6, 6, "uri", SIP_AUTH_URI_MAXLEN, NULL);
		vin->opaque = field_str(L, 6, 6, "opaque", SIP_AUTH_MAXLEN, NULL);
		lua_getfield(L, 6, "algorithms");
		if (lua_istable(L, -1)) {
			lua_Integer j, cnt = luaL_len(L, -1);
			for (j = 1; j <= cnt; j++) {
				lua_geti(L, -1, j);
				if (lua_type(L, -1) != LUA_TSTRING)
					luaL_argerror(L, 6, "field 'algorithms' must list strings");
				vin->algs |= 1u << check_alg(L, 6, lua_tostring(L, -1));
				lua_pop(L, 1);
			}
			luaL_argcheck(L, vin->algs, 6, "field 'algorithms' is empty");
		} else if (!lua_isnil(L, -1)) {
			luaL_argerror(L, 6, "field 'algorithms' must be a list");
		}
		lua_pop(L, 1);
	}
	vin->now = opt_now(L, 6, 6);
	return s;
}

/* after the lookup: its result is at the top, the credentials at 7 */
static int verify_finish(lua_State *L, int status, lua_KContext ctx)
{
	struct sip_auth_verify_in vin;
	struct sip_auth_server *s;
	struct sip_auth_credentials *cr;
	const char *uri;
	int rc;

	(void)status; (void)ctx;
	s = verify_args(L, &vin, &uri);
	cr = lua_touserdata(L, 7);
	if (take_secret(L, cr->alg, &vin))
		return verify_fail(L, "unsupported", "no ha1 for this algorithm");
	rc = sip_auth_server_verify(s, cr, &vin);
	if (rc < 0)
		return luaL_error(L, "verify: %s", rc == -EINVAL ? "invalid credential" : "crypto failure");
	if (rc != SIP_AUTH_OK)
		return verify_fail(L, sip_auth_result_str(rc), NULL);
	lua_pushstring(L, cr->username);
	return 1;
}

/***
 * Verify an Authorization / Proxy-Authorization value. Whatever the
 * reason of a failure, answer it with a fresh challenge (stale=true when
 * the reason is "stale"): the reasons are for logs, and an unknown user
 * costs the same as a wrong password.
 * @function AuthServer:verify
 * @string text the header value
 * @string method the request's method
 * @string realm the realm challenged for
 * @param lookup a table user -> credential or a function(user, realm) ->
 * credential; a credential is a password string, or a table {password=} or
 * {ha1=} (MD5, hex H(user:realm:password)), `{ha1_sha256=}`, `{ha1_sha512_256=}`;
 * nil or false for an unknown user. The function may yield (a database
 * query in a coroutine).
 * @tab[opt] opts body (for auth-int), uri (the Request-URI to match
 * exactly), opaque (to match), algorithms (accepted names, default all),
 * now (seconds since the epoch)
 * @treturn string the user name
 * @return[2] fail
 * @treturn[2] string reason: "malformed", "unsupported", "realm mismatch",
 * "bad qop", "opaque mismatch", "uri mismatch", "stale", "bad response",
 * "no such user", "replay"
 * @treturn[2] string detail, for "malformed" and "unsupported"
 */
static int server_verify(lua_State *L)
{
	struct sip_auth_verify_in vin;
	struct sip_auth_server *s;
	struct sip_auth_credentials *cr;
	const char *why = NULL, *uri, *text;
	size_t n;
	int rc;

	s = verify_args(L, &vin, &uri);
	text = lua_tolstring(L, 2, &n);
	lua_settop(L, 6);
	/* the credentials (4 KB) live in a userdata at 7: they survive a
	 * lookup that yields */
	cr = lua_newuserdatauv(L, sizeof *cr, 0);
	rc = sip_auth_credentials_parse(text, n, cr, &why);
	if (rc)
		return verify_fail(L, rc == -ENOTSUP ? "unsupported" : "malformed", why);
	rc = sip_auth_server_check(s, cr, &vin);
	if (rc == SIP_AUTH_UNSUPPORTED)
		return verify_fail(L, "unsupported", cr->userhash ? "userhash" : "algorithm not accepted");
	if (rc != SIP_AUTH_OK)
		return verify_fail(L, sip_auth_result_str(rc), NULL);
	if (uri && strcmp(uri, cr->uri) != 0)
		return verify_fail(L, "uri mismatch", NULL);
	if (lua_istable(L, 5)) {
		lua_getfield(L, 5, cr->username);
	} else {
		lua_pushvalue(L, 5);
		lua_pushstring(L, cr->username);
		lua_pushstring(L, cr->realm);
		lua_callk(L, 2, 1, 0, verify_finish);
	}
	return verify_finish(L, LUA_OK, 0);
}

static const luaL_Reg server_methods[] = {
	{ "challenge", server_challenge },
	{ "verify", server_verify },
	{ "close", server_close },
	{ NULL, NULL }
};

static const luaL_Reg client_methods[] = {
	{ "update", client_update },
	{ "authorize", client_authorize },
	{ "nc", client_nc },
	{ NULL, NULL }
};

static const luaL_Reg auth_funcs[] = {
	{ "digest_response", l_digest_response },
	{ "parse_challenge", l_parse_challenge },
	{ "choose_challenge", l_choose_challenge },
	{ "parse_credentials", l_parse_credentials },
	{ "ha1", l_ha1 },
	{ "client", l_client },
	{ "new", l_new },
	{ NULL, NULL }
};

int lsip_open_auth(lua_State *L)
{
	if (luaL_newmetatable(L, SERVER_MT)) {
		lua_pushcfunction(L, server_close);
		lua_setfield(L, -2, "__gc");
		lua_pushcfunction(L, server_close);
		lua_setfield(L, -2, "__close");
		luaL_newlib(L, server_methods);
		lua_setfield(L, -2, "__index");
	}
	lua_pop(L, 1);
	if (luaL_newmetatable(L, CLIENT_MT)) {
		luaL_newlib(L, client_methods);
		lua_setfield(L, -2, "__index");
	}
	lua_pop(L, 1);
	luaL_newlib(L, auth_funcs);
	return 1;
}
