/*
 * auth.h - HTTP digest authentication for SIP (RFC 2617, RFC 7616,
 * RFC 8760; RFC 3261 §22): parse challenges and credentials, compute
 * responses, issue and verify stateless nonces, reject replayed nc.
 *
 * No Lua here and no global state: client state lives in a struct sip_auth_client
 * owned by the caller, server state (secret, nonce lifetime, nc table) in a
 * struct sip_auth_server created with sip_auth_server_new(). Hashes are
 * OpenSSL EVP (EVP_md5, EVP_sha256, EVP_sha512_256); randomness is
 * RAND_bytes. Functions return 0 or a negative errno value.
 *
 * Every parser takes a pointer and a length (the text need not be
 * NUL-terminated, and a NUL inside it is an error), never reads past it,
 * bounds every value it keeps (SIP_AUTH_MAXLEN, SIP_AUTH_URI_MAXLEN) and
 * answers -EINVAL with a reason in *why for malformed input.
 *
 * The Lua binding is csrc/l_auth.c: lsip_open_auth() (declared in lsip.h).
 */
#ifndef SIP_AUTH_H
#define SIP_AUTH_H

#include "sip_core.h"

#include <stddef.h>
#include <stdint.h>

#define SIP_AUTH_MAXLEN      256    /* realm, nonce, opaque, username, cnonce */
#define SIP_AUTH_URI_MAXLEN  2048   /* digest-uri */
#define SIP_AUTH_HEX_MAX     64     /* hex digest of SHA-256 / SHA-512-256 */

enum sip_auth_alg {
	SIP_AUTH_MD5 = 0,
	SIP_AUTH_MD5_SESS,
	SIP_AUTH_SHA256,
	SIP_AUTH_SHA256_SESS,
	SIP_AUTH_SHA512_256,
	SIP_AUTH_SHA512_256_SESS,
	SIP_AUTH_ALG_COUNT
};

/* qop bits (a challenge offers a set, a response uses one; 0 = no qop,
 * the RFC 2069 form) */
#define SIP_AUTH_QOP_AUTH     1u
#define SIP_AUTH_QOP_AUTH_INT 2u

/* "MD5", "SHA-256-sess" ... ; NULL for an out of range value */
const char *sip_auth_alg_name(int alg);
/* case-insensitive name -> enum sip_auth_alg, or -ENOTSUP */
int sip_auth_alg_parse(const char *s, size_t n);
/* 1 MD5, 2 SHA-256, 3 SHA-512-256 (the -sess variants rank with their hash) */
int sip_auth_alg_strength(int alg);
/* hex digits of the algorithm's hash: 32 or 64 */
size_t sip_auth_alg_hexlen(int alg);

/* One Digest challenge (WWW-Authenticate / Proxy-Authenticate value). */
struct sip_auth_challenge {
	int alg;                /* enum sip_auth_alg; MD5 when absent */
	unsigned qop;           /* SIP_AUTH_QOP_* offered; 0: no qop (RFC 2069) */
	unsigned stale : 1;
	unsigned userhash : 1;
	unsigned has_opaque : 1;
	char realm[SIP_AUTH_MAXLEN + 1];
	char nonce[SIP_AUTH_MAXLEN + 1];
	char opaque[SIP_AUTH_MAXLEN + 1];
};

/*
 * Parses the first challenge of a header value. *next (optional) gets the
 * offset where a further challenge starts (HTTP-style lists), or n.
 * 0: a usable Digest challenge. -ENOTSUP: well formed but not usable (another
 * scheme, an unknown algorithm, a qop list with neither auth nor auth-int).
 * -EINVAL: malformed, *why (optional) names the reason.
 */
int sip_auth_challenge_parse(const char *s, size_t n, struct sip_auth_challenge *ch,
                             size_t *next, const char **why);

/*
 * The strongest usable Digest challenge among count header values (each may
 * hold several challenges): SHA-512-256 > SHA-256 > MD5, the first one on a
 * tie. Malformed and unusable challenges are skipped. 0, or -ENOENT when
 * none is usable.
 */
int sip_auth_challenge_choose(const char *const *vals, const size_t *lens, size_t count,
                              struct sip_auth_challenge *ch);

/*
 * What one response is computed from. user is the real user name (HA1 is
 * always computed over it; with userhash the header carries
 * H(user:realm)). Give password, or ha1: the hex H(user:realm:password)
 * made with the challenge's hash (the -sess step is applied here).
 */
struct sip_auth_input {
	const char *method;
	const char *uri;            /* digest-uri: the Request-URI */
	const char *user;
	const char *password;       /* or NULL, with ha1 */
	const char *ha1;
	const void *body;           /* for qop=auth-int; NULL = empty */
	size_t body_len;
	const char *cnonce;         /* NULL: 24 chars from the CSPRNG */
	unsigned qop_pref;          /* SIP_AUTH_QOP_AUTH_INT to prefer auth-int when
	                               offered; auth is chosen otherwise */
};

/*
 * The Authorization / Proxy-Authorization value answering ch with nonce
 * count nc, appended to out (no "Name:" and no CRLF). response_hex
 * (optional, SIP_AUTH_HEX_MAX + 1 bytes) receives the bare response.
 * -EINVAL: a missing input, a value with CR/LF/control characters or over
 * its bound, an ha1 of the wrong length; -ENOMEM; -EIO (OpenSSL).
 */
int sip_auth_digest(const struct sip_auth_challenge *ch, const struct sip_auth_input *in,
                    uint32_t nc, struct sip_buf *out, char *response_hex);

/* hex HA1 = H(user:realm:password) for alg's hash, for credential stores */
int sip_auth_ha1(int alg, const char *user, const char *realm, const char *password,
                 char hex[SIP_AUTH_HEX_MAX + 1]);

/* Client state for one challenge: the caller keeps one per realm (or per
 * registration) and answers every request from it. */
struct sip_auth_client {
	struct sip_auth_challenge ch;
	uint32_t nc;            /* the last nonce count sent with ch.nonce */
	unsigned valid : 1;
};

/* adopts ch: nc restarts when the nonce changes. Returns 1 when the nonce
 * is new (or when stale=true), 0 when the server repeated the nonce we
 * already answered: with stale unset that means the credentials are wrong,
 * do not retry. */
int sip_auth_client_update(struct sip_auth_client *c, const struct sip_auth_challenge *ch);
/* increments nc and appends the header value for in (see sip_auth_digest) */
int sip_auth_client_authorize(struct sip_auth_client *c, const struct sip_auth_input *in,
                              struct sip_buf *out);

/* Parsed Authorization / Proxy-Authorization value. */
struct sip_auth_credentials {
	int alg;
	unsigned qop;           /* the one used, 0 = none */
	uint32_t nc;
	unsigned userhash : 1;
	unsigned has_opaque : 1;
	char username[SIP_AUTH_MAXLEN + 1];
	char realm[SIP_AUTH_MAXLEN + 1];
	char nonce[SIP_AUTH_MAXLEN + 1];
	char uri[SIP_AUTH_URI_MAXLEN + 1];
	char response[SIP_AUTH_HEX_MAX + 1];   /* lowercased hex */
	char cnonce[SIP_AUTH_MAXLEN + 1];
	char opaque[SIP_AUTH_MAXLEN + 1];
	char nc_text[9];        /* as sent: the response hashes this text */
	char qop_text[9];
};

/* 0, -EINVAL (malformed, *why says why), -ENOTSUP (another scheme or an
 * unknown algorithm) */
int sip_auth_credentials_parse(const char *s, size_t n, struct sip_auth_credentials *cr,
                               const char **why);

/* ---- server ---- */

#define SIP_AUTH_DEFAULT_EXPIRES 300
#define SIP_AUTH_DEFAULT_SLOTS   4096

struct sip_auth_server;

/*
 * secret (len bytes) keys the nonce HMAC; NULL draws 32 random bytes (nonces
 * then die with the server: clients just get stale=true). slots bounds the
 * nc replay table (0: SIP_AUTH_DEFAULT_SLOTS; rounded up to a power of 2).
 */
int sip_auth_server_new(const void *secret, size_t len, size_t slots,
                        struct sip_auth_server **out);
void sip_auth_server_free(struct sip_auth_server *s);
/* nonce lifetime in seconds (default 300) */
void sip_auth_server_set_expires(struct sip_auth_server *s, unsigned seconds);

/*
 * A fresh nonce for realm at time now (seconds since the epoch, e.g.
 * ev_now()): base64url(ts_ms[8] || random[16] || HMAC-SHA256(secret,
 * ts_ms || random || realm)), 75 characters.
 */
int sip_auth_server_nonce(struct sip_auth_server *s, const char *realm, double now,
                          char nonce[SIP_AUTH_MAXLEN + 1]);

struct sip_auth_challenge_opts {
	int alg;                /* enum sip_auth_alg */
	unsigned qop;           /* 0 means SIP_AUTH_QOP_AUTH */
	int stale;              /* add stale=true */
	const char *opaque;     /* optional */
};
/* appends the WWW-Authenticate / Proxy-Authenticate value, with a fresh
 * nonce: Digest realm="..", nonce="..", algorithm=.., qop="auth"[, opaque][, stale=true] */
int sip_auth_server_challenge(struct sip_auth_server *s, const char *realm,
                              const struct sip_auth_challenge_opts *o, double now,
                              struct sip_buf *out);

enum sip_auth_result {
	SIP_AUTH_OK = 0,
	SIP_AUTH_MALFORMED,     /* unparsable credentials, or a required field missing */
	SIP_AUTH_UNSUPPORTED,   /* another scheme, an algorithm not accepted, userhash */
	SIP_AUTH_REALM,         /* credentials for another realm */
	SIP_AUTH_BAD_QOP,       /* no qop (RFC 2069 form): we always ask for one */
	SIP_AUTH_OPAQUE,        /* opaque differs from the one we sent */
	SIP_AUTH_STALE,         /* right password, nonce expired or not ours: re-challenge with stale=true */
	SIP_AUTH_BAD_RESPONSE,  /* wrong password (or hash) */
	SIP_AUTH_NO_USER,       /* unknown user: costs the same as BAD_RESPONSE */
	SIP_AUTH_REPLAY,        /* nc not above the last one seen for the nonce */
	SIP_AUTH_RESULT_COUNT
};
/* "ok", "malformed", "unsupported", "realm mismatch", "bad qop",
 * "opaque mismatch", "stale", "bad response", "no such user", "replay" */
const char *sip_auth_result_str(int r);

/* What the server verifies credentials against. */
struct sip_auth_verify_in {
	const char *realm;      /* the realm we challenge for */
	unsigned algs;          /* accepted: bits 1 << enum sip_auth_alg; 0 = all */
	const char *opaque;     /* checked when not NULL */
	const char *method;     /* the request's method */
	const char *password;   /* the user's password, or NULL */
	const char *ha1;        /* or the base hex H(user:realm:password) for
	                           cr->alg's hash; both NULL: no such user */
	const void *body;       /* for qop=auth-int; NULL = empty */
	size_t body_len;
	double now;             /* seconds since the epoch */
};

/*
 * Server verification in two steps, so that the user is looked up in
 * between and an unknown user costs the same as a known one:
 *
 *   sip_auth_credentials_parse(hdr, n, &cr, &why)  -> malformed: challenge
 *   r = sip_auth_server_check(s, &cr, &vin);       -> early outcome, or OK
 *   look cr.username up, set vin.password or vin.ha1 (or neither)
 *   r = sip_auth_server_verify(s, &cr, &vin);
 *
 * check (no user involved): realm, algorithm, qop, userhash, opaque.
 * verify repeats check, then with neither password nor ha1 (no such user)
 * computes over a per-server dummy password and returns NO_USER. Otherwise
 * the response decides BAD_RESPONSE; a right response with a nonce that is
 * expired, bound to another realm or not ours gives STALE; then the nc must
 * exceed the last one seen for that nonce, or REPLAY (an nc table slot
 * evicted while its nonce was alive makes the older nonces of its set
 * STALE, never replayable). Returns an enum sip_auth_result, or -EINVAL
 * for an ha1 of the wrong length or a missing method / realm, -EIO when
 * OpenSSL fails.
 */
int sip_auth_server_check(const struct sip_auth_server *s, const struct sip_auth_credentials *cr,
                          const struct sip_auth_verify_in *in);
int sip_auth_server_verify(struct sip_auth_server *s, const struct sip_auth_credentials *cr,
                           const struct sip_auth_verify_in *in);

#endif
