/*
 * auth.c - digest authentication (RFC 2617, RFC 7616, RFC 8760) for SIP.
 *
 * Parsing follows the auth-param grammar of RFC 7235 §2.1 (which SIP's
 * RFC 3261 §25 digest-cln is a case of): a scheme token, then a comma list
 * of name=value with a token or quoted-string value, optional whitespace
 * (CR/LF of folded lines count as whitespace) around '=' and ','. Quoted
 * strings are unescaped; control characters other than HTAB are refused in
 * them, so a value echoed into our own headers can never inject a line.
 *
 * Server nonces are stateless: base64url(ts_ms || random || HMAC), see
 * sip_auth_server_nonce. Replay protection is a fixed-size, 4-way set
 * associative table of nonce -> highest nc, filled only by requests whose
 * response was right (so only holders of a password can fill it).
 */
#include "auth.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

/* ---- small helpers ---- */

static int lc(int c)
{
	return (c >= 'A' && c <= 'Z') ? c + 32 : c;
}

/* ASCII case-insensitive equality of s[0..n) with the C string lit */
static int ieq(const char *s, size_t n, const char *lit)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!lit[i] || lc((unsigned char)s[i]) != lc((unsigned char)lit[i]))
			return 0;
	return lit[n] == '\0';
}

static int is_tchar(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int is_ws(int c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static int is_hex(int c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* text we put inside a quoted-string or a token: no control characters */
static int text_ok(const char *s, size_t max)
{
	size_t i;

	if (!s)
		return 0;
	for (i = 0; s[i]; i++) {
		unsigned char c = (unsigned char)s[i];
		if (i >= max || (c < 0x20 && c != '\t') || c == 0x7f)
			return 0;
	}
	return 1;
}

static int token_ok(const char *s, size_t max)
{
	size_t i;

	if (!s || !*s)
		return 0;
	for (i = 0; s[i]; i++)
		if (i >= max || !is_tchar((unsigned char)s[i]))
			return 0;
	return 1;
}

static void hexify(const unsigned char *d, size_t n, char *hex)
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < n; i++) {
		hex[2 * i] = digits[d[i] >> 4];
		hex[2 * i + 1] = digits[d[i] & 15];
	}
	hex[2 * n] = '\0';
}

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* unpadded base64url; out must hold 4 * ceil(n / 3) + 1 */
static size_t b64url_encode(const unsigned char *in, size_t n, char *out)
{
	size_t i, o = 0;

	for (i = 0; i + 2 < n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		out[o++] = b64url[v >> 18 & 63];
		out[o++] = b64url[v >> 12 & 63];
		out[o++] = b64url[v >> 6 & 63];
		out[o++] = b64url[v & 63];
	}
	if (n - i == 1) {
		uint32_t v = (uint32_t)in[i] << 16;
		out[o++] = b64url[v >> 18 & 63];
		out[o++] = b64url[v >> 12 & 63];
	} else if (n - i == 2) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
		out[o++] = b64url[v >> 18 & 63];
		out[o++] = b64url[v >> 12 & 63];
		out[o++] = b64url[v >> 6 & 63];
	}
	out[o] = '\0';
	return o;
}

static int b64url_val(int c)
{
	if (c >= 'A' && c <= 'Z') return c - 'A';
	if (c >= 'a' && c <= 'z') return c - 'a' + 26;
	if (c >= '0' && c <= '9') return c - '0' + 52;
	if (c == '-') return 62;
	if (c == '_') return 63;
	return -1;
}

/* decodes exactly outlen bytes from s (unpadded, canonical); 0 or -1 */
static int b64url_decode_exact(const char *s, unsigned char *out, size_t outlen)
{
	size_t n = strlen(s), i, o = 0;
	uint32_t acc = 0;
	int bits = 0;

	if (n != (outlen * 8 + 5) / 6)
		return -1;
	for (i = 0; i < n; i++) {
		int v = b64url_val((unsigned char)s[i]);
		if (v < 0)
			return -1;
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (unsigned char)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	return (o == outlen && acc == 0) ? 0 : -1;
}

/* ---- algorithms and hashing ---- */

static const char *const alg_names[SIP_AUTH_ALG_COUNT] = {
	"MD5", "MD5-sess", "SHA-256", "SHA-256-sess", "SHA-512-256", "SHA-512-256-sess"
};

const char *sip_auth_alg_name(int alg)
{
	return (alg >= 0 && alg < SIP_AUTH_ALG_COUNT) ? alg_names[alg] : NULL;
}

int sip_auth_alg_parse(const char *s, size_t n)
{
	int i;

	for (i = 0; i < SIP_AUTH_ALG_COUNT; i++)
		if (ieq(s, n, alg_names[i]))
			return i;
	return -ENOTSUP;
}

int sip_auth_alg_strength(int alg)
{
	return (alg >= 0 && alg < SIP_AUTH_ALG_COUNT) ? alg / 2 + 1 : 0;
}

static int alg_sess(int alg)
{
	return alg & 1;
}

size_t sip_auth_alg_hexlen(int alg)
{
	return alg / 2 == 0 ? 32 : 64;
}

static const EVP_MD *alg_md(int alg)
{
	switch (alg / 2) {
	case 0: return EVP_md5();
	case 1: return EVP_sha256();
	default: return EVP_sha512_256();
	}
}

struct span {
	const void *p;
	size_t n;
};

/* hex H(v[0] ":" v[1] ":" ...) */
static int hash_hex(EVP_MD_CTX *c, const EVP_MD *md, const struct span *v, size_t nv, char *hex)
{
	unsigned char d[EVP_MAX_MD_SIZE];
	unsigned int dl = 0;
	size_t i;

	if (EVP_DigestInit_ex(c, md, NULL) != 1)
		return -EIO;
	for (i = 0; i < nv; i++) {
		if (i && EVP_DigestUpdate(c, ":", 1) != 1)
			return -EIO;
		if (v[i].n && EVP_DigestUpdate(c, v[i].p, v[i].n) != 1)
			return -EIO;
	}
	if (EVP_DigestFinal_ex(c, d, &dl) != 1)
		return -EIO;
	hexify(d, dl, hex);
	return 0;
}

#define S(str) { (str), strlen(str) }

/* everything a response is computed from, as the texts that are hashed */
struct calc {
	int alg;
	const char *user, *realm, *password, *ha1;
	const char *nonce, *cnonce, *nc, *qop;  /* qop NULL: RFC 2069 form */
	const char *method, *uri;
	const void *body;
	size_t body_len;
};

static int calc_response(const struct calc *k, char hex[SIP_AUTH_HEX_MAX + 1])
{
	const EVP_MD *md = alg_md(k->alg);
	char ha1[SIP_AUTH_HEX_MAX + 1], ha2[SIP_AUTH_HEX_MAX + 1], hbody[SIP_AUTH_HEX_MAX + 1];
	size_t hl = sip_auth_alg_hexlen(k->alg), i;
	EVP_MD_CTX *c;
	int rc;

	if (!md)
		return -ENOTSUP;
	c = EVP_MD_CTX_new();
	if (!c)
		return -ENOMEM;
	if (k->ha1) {
		for (i = 0; i < hl && k->ha1[i]; i++)
			ha1[i] = (char)lc((unsigned char)k->ha1[i]);
		ha1[i] = '\0';
		rc = 0;
	} else {
		struct span a1[3] = { S(k->user), S(k->realm), S(k->password) };
		rc = hash_hex(c, md, a1, 3, ha1);
	}
	if (!rc && alg_sess(k->alg)) {
		struct span s1[3] = { S(ha1), S(k->nonce), S(k->cnonce) };
		rc = hash_hex(c, md, s1, 3, ha1);
	}
	if (!rc) {
		if (k->qop && ieq(k->qop, strlen(k->qop), "auth-int")) {
			struct span b = { k->body ? k->body : "", k->body ? k->body_len : 0 };
			rc = hash_hex(c, md, &b, 1, hbody);
			if (!rc) {
				struct span a2[3] = { S(k->method), S(k->uri), S(hbody) };
				rc = hash_hex(c, md, a2, 3, ha2);
			}
		} else {
			struct span a2[2] = { S(k->method), S(k->uri) };
			rc = hash_hex(c, md, a2, 2, ha2);
		}
	}
	if (!rc) {
		if (k->qop) {
			struct span r[6] = { S(ha1), S(k->nonce), S(k->nc), S(k->cnonce), S(k->qop), S(ha2) };
			rc = hash_hex(c, md, r, 6, hex);
		} else {
			struct span r[3] = { S(ha1), S(k->nonce), S(ha2) };
			rc = hash_hex(c, md, r, 3, hex);
		}
	}
	EVP_MD_CTX_free(c);
	OPENSSL_cleanse(ha1, sizeof ha1);
	return rc;
}

static int ha1_ok(int alg, const char *ha1)
{
	size_t i, hl = sip_auth_alg_hexlen(alg);

	for (i = 0; ha1[i]; i++)
		if (i >= hl || !is_hex((unsigned char)ha1[i]))
			return 0;
	return i == hl;
}

int sip_auth_ha1(int alg, const char *user, const char *realm, const char *password,
                 char hex[SIP_AUTH_HEX_MAX + 1])
{
	struct span a1[3];
	EVP_MD_CTX *c;
	int rc;

	if (!sip_auth_alg_name(alg) || !user || !realm || !password)
		return -EINVAL;
	a1[0] = (struct span)S(user);
	a1[1] = (struct span)S(realm);
	a1[2] = (struct span)S(password);
	c = EVP_MD_CTX_new();
	if (!c)
		return -ENOMEM;
	rc = hash_hex(c, alg_md(alg), a1, 3, hex);
	EVP_MD_CTX_free(c);
	return rc;
}

/* ---- the auth-param lexer ---- */

struct lex {
	const char *p, *end;
	const char *why;
};

static void skip_ws(struct lex *l)
{
	while (l->p < l->end && is_ws((unsigned char)*l->p))
		l->p++;
}

static void skip_ws_commas(struct lex *l)
{
	while (l->p < l->end && (is_ws((unsigned char)*l->p) || *l->p == ','))
		l->p++;
}

static size_t scan_token(struct lex *l)
{
	const char *s = l->p;

	while (l->p < l->end && is_tchar((unsigned char)*l->p))
		l->p++;
	return (size_t)(l->p - s);
}

static int fail(struct lex *l, const char *why)
{
	l->why = why;
	return -EINVAL;
}

/*
 * A parameter value: a quoted-string (unescaped) or a bare run of visible
 * characters other than ',' and '"'. With out NULL the value is skipped
 * (no bound). Otherwise it must fit cap - 1 bytes; *len gets its length.
 */
static int read_value(struct lex *l, char *out, size_t cap, size_t *len)
{
	size_t o = 0;

	if (l->p >= l->end)
		return fail(l, "missing parameter value");
	if (*l->p == '"') {
		l->p++;
		for (;;) {
			unsigned char c;
			if (l->p >= l->end)
				return fail(l, "unterminated quoted string");
			c = (unsigned char)*l->p++;
			if (c == '"')
				break;
			if (c == '\\') {
				if (l->p >= l->end)
					return fail(l, "unterminated quoted string");
				c = (unsigned char)*l->p++;
			}
			if ((c < 0x20 && c != '\t') || c == 0x7f)
				return fail(l, "control character in quoted string");
			if (out) {
				if (o + 1 >= cap)
					return fail(l, "parameter value too long");
				out[o] = (char)c;
			}
			o++;
		}
	} else {
		while (l->p < l->end) {
			unsigned char c = (unsigned char)*l->p;
			if (c <= 0x20 || c >= 0x7f || c == ',' || c == '"')
				break;
			if (out) {
				if (o + 1 >= cap)
					return fail(l, "parameter value too long");
				out[o] = (char)c;
			}
			o++;
			l->p++;
		}
		if (!o)
			return fail(l, "missing parameter value");
	}
	if (out)
		out[o] = '\0';
	if (len)
		*len = o;
	return 0;
}

/* reads one parameter's value; name is the parameter name */
typedef int (*param_fn)(void *arg, struct lex *l, const char *name, size_t nlen);

static int skip_param(void *arg, struct lex *l, const char *name, size_t nlen)
{
	(void)arg; (void)name; (void)nlen;
	return read_value(l, NULL, 0, NULL);
}

static int is_token68_char(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/';
}

/*
 * One challenge (or credentials): scheme [ token68 | #auth-param ]. Stops
 * at the end, or leaves l->p at the scheme of a following challenge.
 * *token68 is set when the scheme carried a token68 instead of parameters.
 */
static int parse_auth(struct lex *l, const char **scheme, size_t *slen, int *token68,
                      param_fn fn, void *arg)
{
	*token68 = 0;
	skip_ws_commas(l);
	*scheme = l->p;
	*slen = scan_token(l);
	if (!*slen)
		return fail(l, "expected an authentication scheme");
	if (l->p < l->end && !is_ws((unsigned char)*l->p) && *l->p != ',')
		return fail(l, "bad character after the authentication scheme");
	skip_ws(l);
	/* token68: a run of its characters, then '='s, then the end or ',' */
	{
		const char *save = l->p;
		while (l->p < l->end && is_token68_char((unsigned char)*l->p))
			l->p++;
		if (l->p > save) {
			while (l->p < l->end && *l->p == '=')
				l->p++;
			skip_ws(l);
			if (l->p >= l->end || *l->p == ',') {
				*token68 = 1;
				return 0;
			}
		}
		l->p = save;
	}
	for (;;) {
		const char *name;
		size_t nlen;
		int rc;

		skip_ws_commas(l);
		if (l->p >= l->end)
			return 0;
		name = l->p;
		nlen = scan_token(l);
		if (!nlen)
			return fail(l, "expected a parameter name");
		skip_ws(l);
		if (l->p >= l->end || *l->p != '=') {
			l->p = name;    /* the next challenge starts here */
			return 0;
		}
		l->p++;
		skip_ws(l);
		rc = fn(arg, l, name, nlen);
		if (rc)
			return rc;
		skip_ws(l);
		if (l->p < l->end && *l->p != ',')
			return fail(l, "expected ',' after a parameter value");
	}
}

/* ---- challenges ---- */

enum {
	P_REALM = 1 << 0, P_NONCE = 1 << 1, P_OPAQUE = 1 << 2, P_ALG = 1 << 3, P_QOP = 1 << 4,
	P_STALE = 1 << 5, P_USERHASH = 1 << 6, P_USERNAME = 1 << 7, P_URI = 1 << 8,
	P_RESPONSE = 1 << 9, P_CNONCE = 1 << 10, P_NC = 1 << 11
};

struct chal_state {
	struct sip_auth_challenge *ch;
	unsigned seen;
	int unsupported;        /* unknown algorithm, or no usable qop */
	int qop_unknown_only;
};

static int once(struct lex *l, unsigned *seen, unsigned bit)
{
	if (*seen & bit)
		return fail(l, "duplicate parameter");
	*seen |= bit;
	return 0;
}

/* value into a small buffer; longer values are read (skipped) and reported
 * by *fits = 0, so an unknown long token is not a syntax error */
static int read_small(struct lex *l, char *out, size_t cap, size_t *len, int *fits)
{
	const char *save = l->p;
	int rc;

	*fits = 1;
	rc = read_value(l, out, cap, len);
	if (rc && l->why && !strcmp(l->why, "parameter value too long")) {
		l->p = save;
		l->why = NULL;
		*fits = 0;
		*len = 0;
		out[0] = '\0';
		return read_value(l, NULL, 0, NULL);
	}
	return rc;
}

static int chal_param(void *arg, struct lex *l, const char *name, size_t nlen)
{
	struct chal_state *st = arg;
	struct sip_auth_challenge *ch = st->ch;
	char tmp[SIP_AUTH_MAXLEN + 1];
	size_t len = 0;
	int rc, fits;

	if (ieq(name, nlen, "realm")) {
		if ((rc = once(l, &st->seen, P_REALM)))
			return rc;
		return read_value(l, ch->realm, sizeof ch->realm, NULL);
	}
	if (ieq(name, nlen, "nonce")) {
		if ((rc = once(l, &st->seen, P_NONCE)))
			return rc;
		rc = read_value(l, ch->nonce, sizeof ch->nonce, &len);
		if (!rc && !len)
			return fail(l, "empty nonce");
		return rc;
	}
	if (ieq(name, nlen, "opaque")) {
		if ((rc = once(l, &st->seen, P_OPAQUE)))
			return rc;
		ch->has_opaque = 1;
		return read_value(l, ch->opaque, sizeof ch->opaque, NULL);
	}
	if (ieq(name, nlen, "algorithm")) {
		if ((rc = once(l, &st->seen, P_ALG)))
			return rc;
		if ((rc = read_small(l, tmp, 32, &len, &fits)))
			return rc;
		rc = fits ? sip_auth_alg_parse(tmp, len) : -ENOTSUP;
		if (rc < 0)
			st->unsupported = 1;
		else
			ch->alg = rc;
		return 0;
	}
	if (ieq(name, nlen, "qop")) {
		const char *p, *e;
		if ((rc = once(l, &st->seen, P_QOP)))
			return rc;
		if ((rc = read_small(l, tmp, sizeof tmp, &len, &fits)))
			return rc;
		/* a comma list of tokens; unknown ones are ignored */
		for (p = tmp, e = tmp + len; p < e;) {
			const char *t;
			while (p < e && (is_ws((unsigned char)*p) || *p == ','))
				p++;
			t = p;
			while (p < e && !is_ws((unsigned char)*p) && *p != ',')
				p++;
			if (ieq(t, (size_t)(p - t), "auth"))
				ch->qop |= SIP_AUTH_QOP_AUTH;
			else if (ieq(t, (size_t)(p - t), "auth-int"))
				ch->qop |= SIP_AUTH_QOP_AUTH_INT;
		}
		if (!ch->qop)
			st->qop_unknown_only = 1;
		return 0;
	}
	if (ieq(name, nlen, "stale") || ieq(name, nlen, "userhash")) {
		int is_stale = nlen == 5;
		if ((rc = once(l, &st->seen, is_stale ? P_STALE : P_USERHASH)))
			return rc;
		if ((rc = read_small(l, tmp, 8, &len, &fits)))
			return rc;
		if (fits && ieq(tmp, len, "true")) {
			if (is_stale)
				ch->stale = 1;
			else
				ch->userhash = 1;
		}
		return 0;
	}
	return read_value(l, NULL, 0, NULL);    /* domain, charset, unknown */
}

int sip_auth_challenge_parse(const char *s, size_t n, struct sip_auth_challenge *ch,
                             size_t *next, const char **why)
{
	struct lex l = { s, s + n, NULL };
	struct chal_state st = { ch, 0, 0, 0 };
	const char *scheme;
	size_t slen;
	int t68, rc, digest;

	memset(ch, 0, sizeof *ch);
	ch->alg = SIP_AUTH_MD5;
	if (next)
		*next = n;
	if (why)
		*why = NULL;
	if (!s) {
		if (why)
			*why = "no header value";
		return -EINVAL;
	}
	/* peek at the scheme to pick the parameter reader */
	{
		struct lex pk = l;
		skip_ws_commas(&pk);
		scheme = pk.p;
		slen = scan_token(&pk);
		digest = ieq(scheme, slen, "Digest");
	}
	rc = parse_auth(&l, &scheme, &slen, &t68, digest ? chal_param : skip_param, &st);
	if (next)
		*next = (size_t)(l.p - s);
	if (rc) {
		if (why)
			*why = l.why;
		memset(ch, 0, sizeof *ch);
		return rc;
	}
	if (!digest) {
		if (why)
			*why = "not a Digest challenge";
		return -ENOTSUP;
	}
	if (t68) {
		if (why)
			*why = "Digest challenge without parameters";
		return -EINVAL;
	}
	if (!(st.seen & P_REALM) || !(st.seen & P_NONCE)) {
		if (why)
			*why = !(st.seen & P_REALM) ? "challenge without realm" : "challenge without nonce";
		return -EINVAL;
	}
	if (st.unsupported || st.qop_unknown_only) {
		if (why)
			*why = st.unsupported ? "unsupported algorithm" : "no supported qop";
		return -ENOTSUP;
	}
	return 0;
}

int sip_auth_challenge_choose(const char *const *vals, const size_t *lens, size_t count,
                              struct sip_auth_challenge *ch)
{
	struct sip_auth_challenge c;
	size_t i;
	int found = 0;

	for (i = 0; i < count; i++) {
		size_t off = 0;
		if (!vals[i])
			continue;
		while (off < lens[i]) {
			size_t next = 0;
			int rc = sip_auth_challenge_parse(vals[i] + off, lens[i] - off, &c, &next, NULL);
			if (rc == 0 && (!found || sip_auth_alg_strength(c.alg) > sip_auth_alg_strength(ch->alg))) {
				*ch = c;
				found = 1;
			}
			if (rc == -EINVAL || next == 0)
				break;      /* the rest of this value cannot be trusted */
			off += next;
		}
	}
	return found ? 0 : -ENOENT;
}

/* ---- client ---- */

/* appends "name=\"value\"" with '"' and '\' escaped */
static void add_quoted(struct sip_buf *b, const char *name, const char *v)
{
	const char *p;

	sip_buf_adds(b, name);
	sip_buf_add(b, "=\"", 2);
	for (p = v; *p; p++) {
		if (*p == '"' || *p == '\\')
			sip_buf_add(b, "\\", 1);
		sip_buf_add(b, p, 1);
	}
	sip_buf_add(b, "\"", 1);
}

int sip_auth_digest(const struct sip_auth_challenge *ch, const struct sip_auth_input *in,
                    uint32_t nc, struct sip_buf *out, char *response_hex)
{
	char cnonce[SIP_AUTH_MAXLEN + 1], nctext[9], hex[SIP_AUTH_HEX_MAX + 1];
	char uhash[SIP_AUTH_HEX_MAX + 1];
	const char *qop = NULL;
	struct calc k;
	int rc;

	if (!ch || !in || !out || !sip_auth_alg_name(ch->alg))
		return -EINVAL;
	if (!token_ok(in->method, 64) || !text_ok(in->uri, SIP_AUTH_URI_MAXLEN) || !in->uri[0] ||
	    !text_ok(in->user, SIP_AUTH_MAXLEN) || !text_ok(ch->realm, SIP_AUTH_MAXLEN) ||
	    !text_ok(ch->nonce, SIP_AUTH_MAXLEN) || !ch->nonce[0] ||
	    (ch->has_opaque && !text_ok(ch->opaque, SIP_AUTH_MAXLEN)))
		return -EINVAL;
	if (in->ha1 ? !ha1_ok(ch->alg, in->ha1) : !in->password)
		return -EINVAL;
	if (ch->qop) {
		if ((in->qop_pref & SIP_AUTH_QOP_AUTH_INT) && (ch->qop & SIP_AUTH_QOP_AUTH_INT))
			qop = "auth-int";
		else if (ch->qop & SIP_AUTH_QOP_AUTH)
			qop = "auth";
		else
			qop = "auth-int";
	}
	if (in->cnonce) {
		if (!text_ok(in->cnonce, SIP_AUTH_MAXLEN) || !in->cnonce[0])
			return -EINVAL;
		memcpy(cnonce, in->cnonce, strlen(in->cnonce) + 1);
	} else if (sip_random_token(cnonce, 24)) {
		return -EIO;
	}
	snprintf(nctext, sizeof nctext, "%08x", (unsigned)nc);
	k = (struct calc){
		.alg = ch->alg, .user = in->user, .realm = ch->realm, .password = in->password,
		.ha1 = in->ha1, .nonce = ch->nonce, .cnonce = cnonce, .nc = nctext, .qop = qop,
		.method = in->method, .uri = in->uri, .body = in->body, .body_len = in->body_len,
	};
	if ((rc = calc_response(&k, hex)))
		return rc;
	if (ch->userhash) {
		struct span u[2] = { S(in->user), S(ch->realm) };
		EVP_MD_CTX *c = EVP_MD_CTX_new();
		if (!c)
			return -ENOMEM;
		rc = hash_hex(c, alg_md(ch->alg), u, 2, uhash);
		EVP_MD_CTX_free(c);
		if (rc)
			return rc;
	}
	sip_buf_adds(out, "Digest ");
	add_quoted(out, "username", ch->userhash ? uhash : in->user);
	sip_buf_adds(out, ", ");
	add_quoted(out, "realm", ch->realm);
	sip_buf_adds(out, ", ");
	add_quoted(out, "nonce", ch->nonce);
	sip_buf_adds(out, ", ");
	add_quoted(out, "uri", in->uri);
	sip_buf_printf(out, ", response=\"%s\", algorithm=%s", hex, alg_names[ch->alg]);
	if (qop) {
		sip_buf_adds(out, ", ");
		add_quoted(out, "cnonce", cnonce);
		sip_buf_printf(out, ", nc=%s, qop=%s", nctext, qop);
	}
	if (ch->has_opaque) {
		sip_buf_adds(out, ", ");
		add_quoted(out, "opaque", ch->opaque);
	}
	if (ch->userhash)
		sip_buf_adds(out, ", userhash=true");
	if (response_hex)
		memcpy(response_hex, hex, strlen(hex) + 1);
	return out->oom ? -ENOMEM : 0;
}

int sip_auth_client_update(struct sip_auth_client *c, const struct sip_auth_challenge *ch)
{
	int same = c->valid && !strcmp(c->ch.nonce, ch->nonce) && !strcmp(c->ch.realm, ch->realm);

	c->ch = *ch;
	c->valid = 1;
	if (same && !ch->stale)
		return 0;
	if (!same)
		c->nc = 0;
	return 1;
}

int sip_auth_client_authorize(struct sip_auth_client *c, const struct sip_auth_input *in,
                              struct sip_buf *out)
{
	int rc;

	if (!c->valid)
		return -EINVAL;
	if (c->nc == UINT32_MAX)
		return -EOVERFLOW;  /* 4 billion requests on one nonce: get a new one */
	rc = sip_auth_digest(&c->ch, in, c->nc + 1, out, NULL);
	if (!rc)
		c->nc++;
	return rc;
}

/* ---- credentials (Authorization) ---- */

struct cred_state {
	struct sip_auth_credentials *cr;
	unsigned seen;
	int unsupported;
	const char *bad;        /* a semantic error found while reading */
};

static int cred_param(void *arg, struct lex *l, const char *name, size_t nlen)
{
	struct cred_state *st = arg;
	struct sip_auth_credentials *cr = st->cr;
	char tmp[SIP_AUTH_MAXLEN + 1];
	size_t len = 0, i;
	int rc, fits;

	if (ieq(name, nlen, "username")) {
		if ((rc = once(l, &st->seen, P_USERNAME)))
			return rc;
		return read_value(l, cr->username, sizeof cr->username, NULL);
	}
	if (ieq(name, nlen, "realm")) {
		if ((rc = once(l, &st->seen, P_REALM)))
			return rc;
		return read_value(l, cr->realm, sizeof cr->realm, NULL);
	}
	if (ieq(name, nlen, "nonce")) {
		if ((rc = once(l, &st->seen, P_NONCE)))
			return rc;
		return read_value(l, cr->nonce, sizeof cr->nonce, NULL);
	}
	if (ieq(name, nlen, "uri")) {
		if ((rc = once(l, &st->seen, P_URI)))
			return rc;
		rc = read_value(l, cr->uri, sizeof cr->uri, &len);
		if (!rc && !len)
			return fail(l, "empty uri");
		return rc;
	}
	if (ieq(name, nlen, "response")) {
		if ((rc = once(l, &st->seen, P_RESPONSE)))
			return rc;
		if ((rc = read_value(l, cr->response, sizeof cr->response, &len)))
			return rc;
		for (i = 0; i < len; i++) {
			if (!is_hex((unsigned char)cr->response[i]))
				return fail(l, "response is not hexadecimal");
			cr->response[i] = (char)lc((unsigned char)cr->response[i]);
		}
		return 0;
	}
	if (ieq(name, nlen, "cnonce")) {
		if ((rc = once(l, &st->seen, P_CNONCE)))
			return rc;
		rc = read_value(l, cr->cnonce, sizeof cr->cnonce, &len);
		if (!rc && !len)
			return fail(l, "empty cnonce");
		return rc;
	}
	if (ieq(name, nlen, "opaque")) {
		if ((rc = once(l, &st->seen, P_OPAQUE)))
			return rc;
		cr->has_opaque = 1;
		return read_value(l, cr->opaque, sizeof cr->opaque, NULL);
	}
	if (ieq(name, nlen, "algorithm")) {
		if ((rc = once(l, &st->seen, P_ALG)))
			return rc;
		if ((rc = read_small(l, tmp, 32, &len, &fits)))
			return rc;
		rc = fits ? sip_auth_alg_parse(tmp, len) : -ENOTSUP;
		if (rc < 0)
			st->unsupported = 1;
		else
			cr->alg = rc;
		return 0;
	}
	if (ieq(name, nlen, "qop")) {
		if ((rc = once(l, &st->seen, P_QOP)))
			return rc;
		if ((rc = read_small(l, tmp, sizeof cr->qop_text, &len, &fits)))
			return rc;
		if (fits && ieq(tmp, len, "auth"))
			cr->qop = SIP_AUTH_QOP_AUTH;
		else if (fits && ieq(tmp, len, "auth-int"))
			cr->qop = SIP_AUTH_QOP_AUTH_INT;
		else
			return fail(l, "unknown qop");
		memcpy(cr->qop_text, tmp, len + 1);
		return 0;
	}
	if (ieq(name, nlen, "nc")) {
		uint32_t v = 0;
		if ((rc = once(l, &st->seen, P_NC)))
			return rc;
		if ((rc = read_small(l, tmp, sizeof cr->nc_text, &len, &fits)))
			return rc;
		if (!fits || len != 8)
			return fail(l, "nc must be 8 hexadecimal digits");
		for (i = 0; i < 8; i++) {
			int c = lc((unsigned char)tmp[i]);
			if (!is_hex(c))
				return fail(l, "nc must be 8 hexadecimal digits");
			v = v << 4 | (uint32_t)(c <= '9' ? c - '0' : c - 'a' + 10);
		}
		if (!v)
			return fail(l, "nc must not be 0");
		cr->nc = v;
		memcpy(cr->nc_text, tmp, 9);
		return 0;
	}
	if (ieq(name, nlen, "userhash")) {
		if ((rc = once(l, &st->seen, P_USERHASH)))
			return rc;
		if ((rc = read_small(l, tmp, 8, &len, &fits)))
			return rc;
		cr->userhash = fits && ieq(tmp, len, "true");
		return 0;
	}
	return read_value(l, NULL, 0, NULL);
}

int sip_auth_credentials_parse(const char *s, size_t n, struct sip_auth_credentials *cr,
                               const char **why)
{
	struct lex l = { s, s + n, NULL };
	struct cred_state st = { cr, 0, 0, NULL };
	const char *scheme, *w = NULL;
	size_t slen;
	int t68, rc, digest;

	memset(cr, 0, sizeof *cr);
	cr->alg = SIP_AUTH_MD5;
	if (why)
		*why = NULL;
	if (!s) {
		if (why)
			*why = "no header value";
		return -EINVAL;
	}
	{
		struct lex pk = l;
		skip_ws_commas(&pk);
		scheme = pk.p;
		slen = scan_token(&pk);
		digest = ieq(scheme, slen, "Digest");
	}
	rc = parse_auth(&l, &scheme, &slen, &t68, digest ? cred_param : skip_param, &st);
	if (rc)
		w = l.why;
	else if (!digest)
		rc = -ENOTSUP, w = "not Digest credentials";
	else if (t68)
		rc = -EINVAL, w = "Digest credentials without parameters";
	else if (l.p < l.end)
		rc = -EINVAL, w = "junk after the credentials";
	else if ((st.seen & (P_USERNAME | P_REALM | P_NONCE | P_URI | P_RESPONSE)) !=
	         (P_USERNAME | P_REALM | P_NONCE | P_URI | P_RESPONSE))
		rc = -EINVAL, w = !(st.seen & P_USERNAME) ? "credentials without username" :
		                  !(st.seen & P_REALM) ? "credentials without realm" :
		                  !(st.seen & P_NONCE) ? "credentials without nonce" :
		                  !(st.seen & P_URI) ? "credentials without uri" :
		                  "credentials without response";
	else if (st.unsupported)
		rc = -ENOTSUP, w = "unsupported algorithm";
	else if (cr->qop && (!(st.seen & P_CNONCE) || !(st.seen & P_NC)))
		rc = -EINVAL, w = "qop without cnonce or nc";
	else if (!cr->qop && (st.seen & (P_CNONCE | P_NC)))
		rc = -EINVAL, w = "cnonce or nc without qop";
	else if (strlen(cr->response) != sip_auth_alg_hexlen(cr->alg))
		rc = -EINVAL, w = "response length does not match the algorithm";
	if (rc) {
		memset(cr, 0, sizeof *cr);
		if (why)
			*why = w;
	}
	return rc;
}

/* ---- server ---- */

#define NC_WAYS 4
#define NONCE_RAND 16
#define NONCE_TS 8
#define NONCE_MAC 32
#define NONCE_BYTES (NONCE_TS + NONCE_RAND + NONCE_MAC)
#define CLOCK_SKEW_MS 60000

struct nc_slot {
	unsigned char key[NONCE_RAND];
	uint64_t ts;            /* issue time of the nonce, ms */
	uint32_t nc;            /* highest nc accepted */
	uint32_t used;
};

struct sip_auth_server {
	unsigned char key[64];  /* HMAC key (a longer secret is hashed, as HMAC does) */
	size_t keylen;
	unsigned expires;       /* seconds */
	char dummy[33];         /* password for unknown users */
	size_t nsets;           /* power of 2 */
	uint64_t *floor;        /* per set: nonces issued at or before it and not in
	                           the set were evicted while alive */
	struct nc_slot *slots;  /* nsets * NC_WAYS */
};

int sip_auth_server_new(const void *secret, size_t len, size_t slots,
                        struct sip_auth_server **out)
{
	struct sip_auth_server *s;
	size_t nsets = 1;
	int rc = 0;

	*out = NULL;
	if (secret && !len)
		return -EINVAL;
	if (!slots)
		slots = SIP_AUTH_DEFAULT_SLOTS;
	if (slots > ((size_t)1 << 24))
		return -EINVAL;
	while (nsets * NC_WAYS < slots)
		nsets <<= 1;
	s = calloc(1, sizeof *s);
	if (!s)
		return -ENOMEM;
	s->floor = calloc(nsets, sizeof *s->floor);
	s->slots = calloc(nsets * NC_WAYS, sizeof *s->slots);
	if (!s->floor || !s->slots) {
		rc = -ENOMEM;
		goto out;
	}
	s->nsets = nsets;
	s->expires = SIP_AUTH_DEFAULT_EXPIRES;
	if (!secret) {
		s->keylen = 32;
		if (RAND_bytes(s->key, 32) != 1)
			rc = -EIO;
	} else if (len > sizeof s->key) {
		unsigned int dl = 0;
		s->keylen = 32;
		if (EVP_Digest(secret, len, s->key, &dl, EVP_sha256(), NULL) != 1)
			rc = -EIO;
	} else {
		s->keylen = len;
		memcpy(s->key, secret, len);
	}
	if (!rc && sip_random_token(s->dummy, 32))
		rc = -EIO;
out:
	if (rc) {
		sip_auth_server_free(s);
		return rc;
	}
	*out = s;
	return 0;
}

void sip_auth_server_free(struct sip_auth_server *s)
{
	if (!s)
		return;
	free(s->floor);
	free(s->slots);
	OPENSSL_cleanse(s, sizeof *s);
	free(s);
}

void sip_auth_server_set_expires(struct sip_auth_server *s, unsigned seconds)
{
	s->expires = seconds;
}

static uint64_t to_ms(double now)
{
	if (!(now > 0))
		return 0;
	if (now > 1e15)
		return (uint64_t)1e18;
	return (uint64_t)(now * 1000.0);
}

static int nonce_mac(const struct sip_auth_server *s, const unsigned char *tsrand,
                     const char *realm, unsigned char mac[NONCE_MAC])
{
	unsigned char msg[NONCE_TS + NONCE_RAND + SIP_AUTH_MAXLEN];
	size_t rl = strlen(realm);
	unsigned int ml = 0;

	if (rl > SIP_AUTH_MAXLEN)
		return -EINVAL;
	memcpy(msg, tsrand, NONCE_TS + NONCE_RAND);
	memcpy(msg + NONCE_TS + NONCE_RAND, realm, rl);
	if (!HMAC(EVP_sha256(), s->key, (int)s->keylen, msg, NONCE_TS + NONCE_RAND + rl, mac, &ml) ||
	    ml != NONCE_MAC)
		return -EIO;
	return 0;
}

int sip_auth_server_nonce(struct sip_auth_server *s, const char *realm, double now,
                          char nonce[SIP_AUTH_MAXLEN + 1])
{
	unsigned char raw[NONCE_BYTES];
	uint64_t ts = to_ms(now);
	int i, rc;

	if (!s || !realm || !text_ok(realm, SIP_AUTH_MAXLEN))
		return -EINVAL;
	for (i = 0; i < NONCE_TS; i++)
		raw[i] = (unsigned char)(ts >> (8 * (NONCE_TS - 1 - i)));
	if (RAND_bytes(raw + NONCE_TS, NONCE_RAND) != 1)
		return -EIO;
	if ((rc = nonce_mac(s, raw, realm, raw + NONCE_TS + NONCE_RAND)))
		return rc;
	b64url_encode(raw, sizeof raw, nonce);
	return 0;
}

int sip_auth_server_challenge(struct sip_auth_server *s, const char *realm,
                              const struct sip_auth_challenge_opts *o, double now,
                              struct sip_buf *out)
{
	char nonce[SIP_AUTH_MAXLEN + 1];
	unsigned qop = o && o->qop ? o->qop : SIP_AUTH_QOP_AUTH;
	int alg = o ? o->alg : SIP_AUTH_MD5;
	int rc;

	if (!sip_auth_alg_name(alg) || (qop & ~(SIP_AUTH_QOP_AUTH | SIP_AUTH_QOP_AUTH_INT)) ||
	    (o && o->opaque && !text_ok(o->opaque, SIP_AUTH_MAXLEN)))
		return -EINVAL;
	if ((rc = sip_auth_server_nonce(s, realm, now, nonce)))
		return rc;
	sip_buf_adds(out, "Digest ");
	add_quoted(out, "realm", realm);
	sip_buf_adds(out, ", ");
	add_quoted(out, "nonce", nonce);
	sip_buf_printf(out, ", algorithm=%s, qop=\"%s\"", alg_names[alg],
	               qop == SIP_AUTH_QOP_AUTH ? "auth" :
	               qop == SIP_AUTH_QOP_AUTH_INT ? "auth-int" : "auth,auth-int");
	if (o && o->opaque) {
		sip_buf_adds(out, ", ");
		add_quoted(out, "opaque", o->opaque);
	}
	if (o && o->stale)
		sip_buf_adds(out, ", stale=true");
	return out->oom ? -ENOMEM : 0;
}

static const char *const result_names[SIP_AUTH_RESULT_COUNT] = {
	"ok", "malformed", "unsupported", "realm mismatch", "bad qop", "opaque mismatch",
	"stale", "bad response", "no such user", "replay"
};

const char *sip_auth_result_str(int r)
{
	return (r >= 0 && r < SIP_AUTH_RESULT_COUNT) ? result_names[r] : "error";
}

int sip_auth_server_check(const struct sip_auth_server *s, const struct sip_auth_credentials *cr,
                          const struct sip_auth_verify_in *in)
{
	unsigned algs;

	if (!s || !cr || !in || !in->realm)
		return -EINVAL;
	algs = in->algs ? in->algs : (1u << SIP_AUTH_ALG_COUNT) - 1;
	if (!sip_auth_alg_name(cr->alg) || !(algs & (1u << cr->alg)) || cr->userhash)
		return SIP_AUTH_UNSUPPORTED;
	if (strcmp(cr->realm, in->realm) != 0)
		return SIP_AUTH_REALM;
	if (!cr->qop)
		return SIP_AUTH_BAD_QOP;
	if (in->opaque && (!cr->has_opaque || strcmp(cr->opaque, in->opaque) != 0))
		return SIP_AUTH_OPAQUE;
	return SIP_AUTH_OK;
}

enum { NONCE_OK, NONCE_EXPIRED, NONCE_INVALID };

static int nonce_state(const struct sip_auth_server *s, const char *nonce, const char *realm,
                       uint64_t now, unsigned char key[NONCE_RAND], uint64_t *ts)
{
	unsigned char raw[NONCE_BYTES], mac[NONCE_MAC];
	int i;

	if (b64url_decode_exact(nonce, raw, sizeof raw))
		return NONCE_INVALID;
	if (nonce_mac(s, raw, realm, mac) ||
	    CRYPTO_memcmp(mac, raw + NONCE_TS + NONCE_RAND, NONCE_MAC) != 0)
		return NONCE_INVALID;
	*ts = 0;
	for (i = 0; i < NONCE_TS; i++)
		*ts = *ts << 8 | raw[i];
	memcpy(key, raw + NONCE_TS, NONCE_RAND);
	if (*ts > now + CLOCK_SKEW_MS || (*ts < now && now - *ts > (uint64_t)s->expires * 1000))
		return NONCE_EXPIRED;
	return NONCE_OK;
}

/* the nc check and update for a valid nonce; returns an sip_auth_result */
static int nc_check(struct sip_auth_server *s, const unsigned char key[NONCE_RAND], uint64_t ts,
                    uint32_t nc, uint64_t now)
{
	uint32_t h = (uint32_t)key[0] | (uint32_t)key[1] << 8 | (uint32_t)key[2] << 16 |
	             (uint32_t)key[3] << 24;
	size_t set = h & (s->nsets - 1), i, victim = 0;
	struct nc_slot *w = s->slots + set * NC_WAYS;
	uint64_t life = (uint64_t)s->expires * 1000;

	for (i = 0; i < NC_WAYS; i++) {
		if (w[i].used && !memcmp(w[i].key, key, NONCE_RAND)) {
			if (nc <= w[i].nc)
				return SIP_AUTH_REPLAY;
			w[i].nc = nc;
			return SIP_AUTH_OK;
		}
	}
	/* first use of this nonce, unless its entry was evicted while alive */
	if (ts <= s->floor[set])
		return SIP_AUTH_STALE;
	for (i = 0; i < NC_WAYS; i++) {
		if (!w[i].used) {
			victim = i;
			break;
		}
		if (w[i].ts < w[victim].ts)
			victim = i;
	}
	if (w[victim].used && now <= w[victim].ts + life + CLOCK_SKEW_MS &&
	    w[victim].ts > s->floor[set])
		s->floor[set] = w[victim].ts;
	memcpy(w[victim].key, key, NONCE_RAND);
	w[victim].ts = ts;
	w[victim].nc = nc;
	w[victim].used = 1;
	return SIP_AUTH_OK;
}

int sip_auth_server_verify(struct sip_auth_server *s, const struct sip_auth_credentials *cr,
                           const struct sip_auth_verify_in *in)
{
	char hex[SIP_AUTH_HEX_MAX + 1];
	unsigned char key[NONCE_RAND];
	uint64_t ts = 0, now;
	int rc, ns, no_user, match;
	size_t hl;
	struct calc k;

	rc = sip_auth_server_check(s, cr, in);
	if (rc != SIP_AUTH_OK)
		return rc;
	if (!token_ok(in->method, 64))
		return -EINVAL;
	if (in->ha1 && !in->password && !ha1_ok(cr->alg, in->ha1))
		return -EINVAL;
	now = to_ms(in->now);
	ns = nonce_state(s, cr->nonce, in->realm, now, key, &ts);
	no_user = !in->password && !in->ha1;
	k = (struct calc){
		.alg = cr->alg, .user = cr->username, .realm = cr->realm,
		.password = no_user ? s->dummy : in->password,
		.ha1 = in->password ? NULL : in->ha1,
		.nonce = cr->nonce, .cnonce = cr->cnonce, .nc = cr->nc_text, .qop = cr->qop_text,
		.method = in->method, .uri = cr->uri, .body = in->body, .body_len = in->body_len,
	};
	if ((rc = calc_response(&k, hex)))
		return rc;
	hl = sip_auth_alg_hexlen(cr->alg);
	match = strlen(cr->response) == hl && CRYPTO_memcmp(hex, cr->response, hl) == 0;
	OPENSSL_cleanse(hex, sizeof hex);
	if (no_user)
		return SIP_AUTH_NO_USER;
	if (!match)
		return SIP_AUTH_BAD_RESPONSE;
	if (ns != NONCE_OK)
		return SIP_AUTH_STALE;
	return nc_check(s, key, ts, cr->nc, now);
}
