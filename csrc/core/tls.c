/*
 * tls.c - TLS on stream connections with OpenSSL.
 *
 * Secure by default: TLS 1.2 at least, the server's cipher order, SNI, and
 * the peer verified against the trust store and, on the client side,
 * against the SIP domain of the request per RFC 5922 (subjectAltName URI
 * and DNS entries, the CN only when there is no SAN, no wildcards unless
 * allowed) — never against a resolved address alone. Client sessions are
 * kept per peer for resumption.
 */
#define _GNU_SOURCE
#include "core.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

struct tls_session {
	struct sip_hnode hn;
	char key[80];
	SSL_SESSION *sess;
};

struct sip_tls {
	SSL_CTX *srv, *cli;
	int verify, verify_client, allow_wildcard, warned;
	double handshake_timeout;
	struct sip_htab sessions;       /* conn key -> last client session */
	struct sip_ua *ua;
};

/* the OpenSSL error queue, drained into one message */
static void tls_error(char *buf, size_t n, const char *what)
{
	unsigned long e, first = 0;
	char tmp[200];

	while ((e = ERR_get_error()))
		if (!first)
			first = e;
	if (first) {
		ERR_error_string_n(first, tmp, sizeof tmp);
		snprintf(buf, n, "tls: %s: %s", what, ERR_reason_error_string(first) ?
		         ERR_reason_error_string(first) : tmp);
	} else {
		snprintf(buf, n, "tls: %s", what);
	}
}

static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
	struct sip_conn *c = SSL_get_app_data(ssl);
	struct sip_tls *t;
	struct tls_session *s;

	if (!c || !c->ua->tls)
		return 0;
	t = c->ua->tls;
	s = (struct tls_session *)sip_htab_find(&t->sessions, c->key);
	if (s) {
		SSL_SESSION_free(s->sess);
		s->sess = sess;
		return 1;
	}
	s = calloc(1, sizeof *s);
	if (!s)
		return 0;
	snprintf(s->key, sizeof s->key, "%s", c->key);
	s->hn.key = s->key;
	s->sess = sess;
	sip_htab_insert(&t->sessions, &s->hn);
	return 1;       /* we keep the reference */
}

/* 1 when the error queue says a PEM file held no private key at all
 * (not a mismatch, an unreadable file or a wrong passphrase) */
static int no_key_found(void)
{
	unsigned long e = ERR_peek_error();

#ifdef ERR_LIB_OSSL_DECODER
	if (ERR_GET_LIB(e) == ERR_LIB_OSSL_DECODER && ERR_GET_REASON(e) == ERR_R_UNSUPPORTED)
		return 1;
#endif
	return ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE;
}

static SSL_CTX *ctx_new(const struct sip_tls_cfg *cfg, int server, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());

	if (!ctx) {
		tls_error(err, errlen, "cannot create a context");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, cfg->tls13_only ? TLS1_3_VERSION : TLS1_2_VERSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (server)
		SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
	if (cfg->cafile || cfg->capath) {
		if (SSL_CTX_load_verify_locations(ctx, cfg->cafile, cfg->capath) != 1) {
			tls_error(err, errlen, "cannot load the CA file");
			SSL_CTX_free(ctx);
			return NULL;
		}
	} else {
		SSL_CTX_set_default_verify_paths(ctx);
	}
	if (cfg->cert) {
		if (SSL_CTX_use_certificate_chain_file(ctx, cfg->cert) != 1) {
			tls_error(err, errlen, "cannot load the certificate");
			SSL_CTX_free(ctx);
			return NULL;
		}
		/* without tls.key the key is read from the cert's own file
		 * (one PEM holding both, as many servers ship them) */
		if (SSL_CTX_use_PrivateKey_file(ctx, cfg->key ? cfg->key : cfg->cert, SSL_FILETYPE_PEM) != 1 ||
		    SSL_CTX_check_private_key(ctx) != 1) {
			if (no_key_found()) {
				/* OpenSSL's "unsupported" says neither what nor where */
				ERR_clear_error();
				if (cfg->key)
					snprintf(err, errlen, "tls: cannot load the private key: "
					         "no private key in tls.key's file");
				else
					snprintf(err, errlen, "tls: cannot load the private key: none in "
					         "tls.cert's file (add it to that PEM file, or give tls.key)");
			} else {
				tls_error(err, errlen, "cannot load the private key");
			}
			SSL_CTX_free(ctx);
			return NULL;
		}
	}
	if (server) {
		static const unsigned char sid[] = "luasip";
		SSL_CTX_set_session_id_context(ctx, sid, sizeof sid - 1);
		SSL_CTX_set_verify(ctx, cfg->verify_client ?
		                   SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT : SSL_VERIFY_NONE, NULL);
	} else {
		SSL_CTX_set_verify(ctx, cfg->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
		SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
	}
	return ctx;
}

int sip_tls_setup(struct sip_ua *ua, const struct sip_tls_cfg *cfg, char *err, size_t errlen)
{
	struct sip_tls *t = calloc(1, sizeof *t);

	if (!t || sip_htab_init(&t->sessions, 16)) {
		free(t);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	t->ua = ua;
	t->verify = cfg->verify;
	t->verify_client = cfg->verify_client;
	t->allow_wildcard = cfg->allow_wildcard;
	t->handshake_timeout = cfg->handshake_timeout > 0 ? cfg->handshake_timeout : 10.;
	t->cli = ctx_new(cfg, 0, err, errlen);
	if (t->cli && cfg->cert)
		t->srv = ctx_new(cfg, 1, err, errlen);
	if (!t->cli || (cfg->cert && !t->srv)) {
		if (t->cli)
			SSL_CTX_free(t->cli);
		sip_htab_free(&t->sessions);
		free(t);
		return -EINVAL;
	}
	sip_tls_free(ua);
	ua->tls = t;
	if (!cfg->verify)
		sip_log(ua->env, SIP_LOG_WARN, "tls: peer verification is off (tls.verify = false): "
		        "connections can be intercepted");
	return 0;
}

void sip_tls_free(struct sip_ua *ua)
{
	struct sip_tls *t = ua->tls;
	size_t i;

	if (!t)
		return;
	for (i = 0; i < t->sessions.nb; i++) {
		while (t->sessions.b[i]) {
			struct tls_session *s = (struct tls_session *)t->sessions.b[i];
			sip_htab_remove(&t->sessions, &s->hn);
			SSL_SESSION_free(s->sess);
			free(s);
		}
	}
	sip_htab_free(&t->sessions);
	if (t->srv)
		SSL_CTX_free(t->srv);
	if (t->cli)
		SSL_CTX_free(t->cli);
	free(t);
	ua->tls = NULL;
}

int sip_tls_can_listen(struct sip_ua *ua, char *err, size_t errlen)
{
	if (!ua->tls || !ua->tls->srv) {
		snprintf(err, errlen, "tls: a tls: listener needs tls.cert, a PEM file with the certificate "
		         "and, unless tls.key names another file, its private key");
		return -EINVAL;
	}
	return 0;
}

double sip_tls_handshake_timeout(struct sip_ua *ua)
{
	return ua->tls ? ua->tls->handshake_timeout : 10.;
}

/* a client UA that set no tls options still verifies, with the system store */
static int ensure_client(struct sip_ua *ua)
{
	struct sip_tls_cfg cfg = { .verify = 1 };
	char err[128];

	if (ua->tls)
		return 0;
	return sip_tls_setup(ua, &cfg, err, sizeof err);
}

int sip_tls_conn_start(struct sip_conn *c, int server, const char *name)
{
	struct sip_tls *t;
	struct sip_hnode *sn;

	if (!server && ensure_client(c->ua))
		return -ENOMEM;
	t = c->ua->tls;
	if (!t || (server && !t->srv))
		return -EINVAL;
	c->ssl = SSL_new(server ? t->srv : t->cli);
	if (!c->ssl)
		return -ENOMEM;
	SSL_set_app_data(c->ssl, c);
	SSL_set_fd(c->ssl, c->fd);
	c->handshaking = 1;
	if (server) {
		SSL_set_accept_state(c->ssl);
		return 0;
	}
	SSL_set_connect_state(c->ssl);
	if (name && *name) {
		struct in6_addr a6;
		c->tls_name = strdup(name);
		/* SNI carries names, never address literals (RFC 6066 3) */
		if (inet_pton(AF_INET, name, &a6) != 1 && inet_pton(AF_INET6, name, &a6) != 1 &&
		    name[0] != '[')
			SSL_set_tlsext_host_name(c->ssl, name);
	}
	sn = sip_htab_find(&t->sessions, c->key);
	if (sn)
		SSL_set_session(c->ssl, ((struct tls_session *)sn)->sess);
	return 0;
}

void sip_tls_conn_free(struct sip_conn *c)
{
	if (c->ssl) {
		/* close_notify: the peer sees a clean end, and the session
		 * stays resumable (OpenSSL drops sessions ended without it) */
		if (!c->handshaking) {
			ERR_clear_error();
			SSL_shutdown(c->ssl);
			ERR_clear_error();
		}
		SSL_set_app_data(c->ssl, NULL);
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	free(c->tls_name);
	c->tls_name = NULL;
	free(c->tls_info);
	c->tls_info = NULL;
}

/* RFC 5922 7.2: the SIP domain against the certificate's identities */
static int name_matches(struct sip_tls *t, X509 *cert, const char *name)
{
	GENERAL_NAMES *sans;
	char host[256];
	size_t n = strlen(name);
	int i, has_san = 0, ok = 0;
	unsigned flags = X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS;

	if (n >= 2 && name[0] == '[' && name[n - 1] == ']' && n - 2 < sizeof host) {
		memcpy(host, name + 1, n - 2);
		host[n - 2] = '\0';
	} else {
		snprintf(host, sizeof host, "%s", name);
	}
	{
		unsigned char a[16];
		if (inet_pton(AF_INET, host, a) == 1 || inet_pton(AF_INET6, host, a) == 1)
			return X509_check_ip_asc(cert, host, 0) == 1;
	}
	if (!t->allow_wildcard)
		flags |= X509_CHECK_FLAG_NO_WILDCARDS;
	sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	if (sans) {
		for (i = 0; i < sk_GENERAL_NAME_num(sans) && !ok; i++) {
			const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
			if (g->type == GEN_URI) {
				const char *u = (const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier);
				int ul = ASN1_STRING_length(g->d.uniformResourceIdentifier);
				has_san = 1;
				/* sip:example.com names the whole domain */
				if (ul == (int)strlen(host) + 4 && !strncasecmp(u, "sip:", 4) &&
				    !strncasecmp(u + 4, host, strlen(host)))
					ok = 1;
			} else if (g->type == GEN_DNS || g->type == GEN_IPADD) {
				has_san = 1;
			}
		}
		GENERAL_NAMES_free(sans);
	}
	if (ok)
		return 1;
	if (has_san)
		flags |= X509_CHECK_FLAG_NEVER_CHECK_SUBJECT;
	return X509_check_host(cert, host, 0, flags, NULL) == 1;
}

/* what a received request's req.tls tells: always there over TLS, with
 * an empty subject when the peer showed no certificate */
static void capture_peer(struct sip_conn *c)
{
	X509 *cert = SSL_get1_peer_certificate(c->ssl);

	c->tls_info = calloc(1, sizeof *c->tls_info);
	if (c->tls_info && cert) {
		X509_NAME_oneline(X509_get_subject_name(cert), c->tls_info->subject,
		                  sizeof c->tls_info->subject);
		c->tls_info->verified = SSL_get_verify_result(c->ssl) == X509_V_OK;
	}
	X509_free(cert);
}

int sip_tls_conn_serves(struct sip_conn *c, const char *name)
{
	struct sip_tls *t = c->ua->tls;
	X509 *cert;
	int ok;

	if (!name || (c->tls_name && !strcasecmp(c->tls_name, name)))
		return 1;
	/* a connection the peer opened, with a client certificate we
	 * verified: reusing it back (RFC 5923) needs no server name */
	if (SSL_is_server(c->ssl))
		return !c->handshaking && c->tls_info && c->tls_info->verified;
	if (c->handshaking)
		return 0;       /* verified for another name, still unknown */
	if (!t || !t->verify)
		return 1;
	cert = SSL_get1_peer_certificate(c->ssl);
	ok = cert && name_matches(t, cert, name);
	X509_free(cert);
	return ok;
}

int sip_tls_peer_verified(const struct sip_conn *c)
{
	return c->tls_info && c->tls_info->verified;
}

int sip_tls_handshake(struct sip_conn *c, char *why, size_t n)
{
	struct sip_tls *t = c->ua->tls;
	int rc, e;

	ERR_clear_error();
	rc = SSL_do_handshake(c->ssl);
	if (rc != 1) {
		e = SSL_get_error(c->ssl, rc);
		if (e == SSL_ERROR_WANT_READ)
			return SIP_TLS_WANT_READ;
		if (e == SSL_ERROR_WANT_WRITE)
			return SIP_TLS_WANT_WRITE;
		{
			long vr = SSL_get_verify_result(c->ssl);
			if (vr != X509_V_OK && SSL_is_server(c->ssl) == 0) {
				ERR_clear_error();
				snprintf(why, n, "tls: certificate verify failed: %s",
				         X509_verify_cert_error_string(vr));
				return -EPROTO;
			}
		}
		if (e == SSL_ERROR_SYSCALL && !ERR_peek_error())
			snprintf(why, n, "tls: handshake: connection closed by peer");
		else
			tls_error(why, n, "handshake failed");
		return -EPROTO;
	}
	c->handshaking = 0;
	capture_peer(c);
	if (!SSL_is_server(c->ssl) && t->verify) {
		X509 *cert = SSL_get1_peer_certificate(c->ssl);
		int ok = cert && c->tls_name && name_matches(t, cert, c->tls_name);
		X509_free(cert);
		if (!ok) {
			snprintf(why, n, "tls: name mismatch: %s", c->tls_name ? c->tls_name : "(no name)");
			return -EPROTO;
		}
	}
	return 1;
}

long sip_tls_read(struct sip_conn *c, char *buf, size_t n, char *why, size_t wn)
{
	int rc, e;

	ERR_clear_error();
	rc = SSL_read(c->ssl, buf, n > INT32_MAX ? INT32_MAX : (int)n);
	if (rc > 0)
		return rc;
	e = SSL_get_error(c->ssl, rc);
	if (e == SSL_ERROR_WANT_READ)
		return SIP_TLS_WANT_READ;
	if (e == SSL_ERROR_WANT_WRITE)
		return SIP_TLS_WANT_WRITE;
	if (e == SSL_ERROR_ZERO_RETURN)
		return 0;
	if (e == SSL_ERROR_SYSCALL && !ERR_peek_error()) {
		snprintf(why, wn, "closed by peer");
		return -EPIPE;
	}
	tls_error(why, wn, "read failed");
	return -EPROTO;
}

long sip_tls_write(struct sip_conn *c, const char *buf, size_t n, char *why, size_t wn)
{
	int rc, e;

	ERR_clear_error();
	rc = SSL_write(c->ssl, buf, n > INT32_MAX ? INT32_MAX : (int)n);
	if (rc > 0)
		return rc;
	e = SSL_get_error(c->ssl, rc);
	if (e == SSL_ERROR_WANT_READ)
		return SIP_TLS_WANT_READ;
	if (e == SSL_ERROR_WANT_WRITE)
		return SIP_TLS_WANT_WRITE;
	tls_error(why, wn, "write failed");
	return -EPROTO;
}

int sip_tls_pending(struct sip_conn *c)
{
	return SSL_pending(c->ssl);
}
