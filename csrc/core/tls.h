/*
 * tls.h - TLS for the stream transport (OpenSSL): contexts per UA,
 * non-blocking handshakes, peer verification per RFC 5922.
 */
#ifndef SIP_TLS_H
#define SIP_TLS_H

#include "sip_core.h"

struct sip_ua;
struct sip_conn;

struct sip_tls_cfg {
	const char *cert, *key;         /* PEM files, cert needed to listen; key
	                                 * NULL: the key is in cert's file */
	const char *cafile, *capath;    /* trust anchors; default the system store */
	int verify;                     /* check the server's chain and name (default 1) */
	int verify_client;              /* require and check client certificates */
	int tls13_only;
	int allow_wildcard;             /* accept *.example.com (RFC 5922 says no) */
	double handshake_timeout;
};

/* peer certificate facts, attached to messages received over TLS */
struct sip_tls_info {
	char subject[256];
	int verified;
};

int sip_tls_setup(struct sip_ua *ua, const struct sip_tls_cfg *cfg, char *err, size_t errlen);
void sip_tls_free(struct sip_ua *ua);
int sip_tls_can_listen(struct sip_ua *ua, char *err, size_t errlen);
/* start TLS on a connection (client: name is the SIP domain to verify) */
int sip_tls_conn_start(struct sip_conn *c, int server, const char *name);
/* drive the handshake: 1 done, 0 in progress, <0 failed (why filled) */
int sip_tls_handshake(struct sip_conn *c, char *why, size_t n);
void sip_tls_conn_free(struct sip_conn *c);
/* I/O: >0 bytes, 0 closed, -EAGAIN (wants read), -EWOULDBLOCK... */
#define SIP_TLS_WANT_READ  (-1000)
#define SIP_TLS_WANT_WRITE (-1001)
long sip_tls_read(struct sip_conn *c, char *buf, size_t n, char *why, size_t wn);
long sip_tls_write(struct sip_conn *c, const char *buf, size_t n, char *why, size_t wn);
int sip_tls_pending(struct sip_conn *c);
/* 1 when an open connection may carry a request for the SIP domain name
 * (its certificate names it too) */
int sip_tls_conn_serves(struct sip_conn *c, const char *name);
/* 1 when the peer proved who it is with a certificate (mutual TLS) */
int sip_tls_peer_verified(const struct sip_conn *c);
double sip_tls_handshake_timeout(struct sip_ua *ua);

#endif
