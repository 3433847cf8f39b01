/*
 * ua.h - the user agent: transports, the transaction table and the hooks
 * a transaction user (the Lua binding) plugs into. No lua.h here.
 */
#ifndef SIP_UA_H
#define SIP_UA_H

#include "sip_core.h"
#include "msg.h"

struct sip_ua;
struct sip_txn;
struct sip_dns;

struct sip_ua_cfg {
	double t1, t2, t4;              /* RFC 3261 timers, seconds */
	size_t max_udp;                 /* largest datagram accepted */
	size_t max_stream_msg;          /* largest message on a stream */
	size_t max_headers;             /* header lines per message */
	size_t max_header_line;         /* bytes in one header line */
	double idle_timeout;            /* stream connection idle close */
	double keepalive;               /* CRLF ping after this much silence on a
	                                 * stream we opened (RFC 5626 4.4.1); 0 off */
	double header_timeout;          /* a started message must complete in this */
	int max_conns;                  /* stream connections in total */
	int max_conns_per_ip;           /* ... and from one address */
	int max_server_txns;            /* 503 beyond this many */
	char user_agent[128];
	char contact[256];              /* the script's own Contact, or "" for ours */
	/* RFC 3263 lookups of request targets (dns.c) */
	char dns_servers[512];          /* "ip:port,..."; "" for the system's */
	double dns_timeout;             /* seconds one query waits */
	double dns_blacklist;           /* seconds a dead target goes last */
};

/* a request that starts a server transaction st; for CANCEL, st is the
 * INVITE's transaction (not answered yet) and req the CANCEL */
typedef void (*sip_request_cb)(void *arg, struct sip_ua *ua, struct sip_txn *st, struct sip_msg *req);
/* a response (1xx or final) or an error for a client transaction: res is
 * NULL and err says what failed ("timeout", "transport: ...") */
typedef void (*sip_response_cb)(void *arg, struct sip_txn *ct, struct sip_msg *res, const char *err);
/* a server transaction ended: its owner drops its pointer */
typedef void (*sip_txn_gone_cb)(void *arg, struct sip_txn *st);

int sip_ua_new(struct sip_env *env, struct sip_ua **out);
void sip_ua_free(struct sip_ua *ua);
struct sip_ua_cfg *sip_ua_config(struct sip_ua *ua);
/* The chain of request handlers (libre's sip_listen): a usage or a
 * transaction user registers, at set-up, the handler of each method it
 * serves; method NULL sets the fallback, which gets the served methods
 * no handler of their own takes. A request of a method that is served
 * (sip_ua_serve) goes to its handler; one that is not gets the core's
 * answer (OPTIONS 200, else 405 or 501). CANCEL goes to a "CANCEL"
 * handler only (never the fallback), with the INVITE's transaction;
 * without one the INVITE gets 487. A second registration of a method
 * replaces the first. -ENOSPC beyond SIP_UA_MAX_HANDLERS methods. */
#define SIP_UA_MAX_HANDLERS 16
int sip_ua_handler(struct sip_ua *ua, const char *method, sip_request_cb fn, void *arg);
/* the fallback handler: sip_ua_handler(ua, NULL, ...) */
void sip_ua_set_tu(struct sip_ua *ua, sip_request_cb on_request, void *arg);
/* who takes a NOTIFY with a To tag that no dialog matches: it may come
 * before the 2xx of its SUBSCRIBE, or from a fork, and then creates the
 * dialog (RFC 6665 4.1.2.4); without a taker it gets 481 */
void sip_ua_orphans(struct sip_ua *ua, sip_request_cb fn, void *arg);
/* the script serves these methods ("*": all but ACK and CANCEL); others
 * get 405/501 from the core */
int sip_ua_serve(struct sip_ua *ua, const char *method);
/* "udp:127.0.0.1:5060"; errbuf gets the reason on failure */
int sip_ua_listen(struct sip_ua *ua, const char *spec, char *errbuf, size_t errlen);
/* first listener's actual address as "udp:127.0.0.1:5060" */
int sip_ua_listener_spec(struct sip_ua *ua, int idx, char *buf, size_t n);

/* server side */
struct sip_reply {
	int status;
	const char *reason;             /* NULL: the standard phrase */
	const char *headers;            /* "Name: value\r\n" lines, checked */
	const char *body;
	size_t body_len;
	const char *content_type;
};
int sip_txn_reply(struct sip_txn *st, const struct sip_reply *r);
int sip_txn_final_sent(const struct sip_txn *st);
struct sip_msg *sip_txn_request(const struct sip_txn *st);
void sip_txn_set_owner(struct sip_txn *st, sip_txn_gone_cb gone, void *arg);

/* client side */
struct sip_request {
	const char *method;
	const char *uri;                /* Request-URI */
	const char *proxy;              /* outbound proxy: Route <proxy;lr>, sent there */
	const char *next_hop;           /* send to this URI (a route set's first hop) */
	const char *routes;             /* "Route: ...\r\n" lines (a dialog's route set) */
	const char *from;               /* name-addr; default sip:luasip@host */
	const char *to;                 /* name-addr; default <uri> */
	const char *call_id;
	unsigned cseq;
	const char *contact;            /* Contact value; default ours for INVITE etc. */
	const char *headers;            /* extra "Name: value\r\n" lines */
	const char *body;
	size_t body_len;
	const char *content_type;
};

/* a request built and addressed, before any transaction */
struct sip_outreq {
	char *text;
	size_t len;
	struct sip_msg *msg;
	int proto;
	struct sip_addr dst;
	struct sip_listener *lst;
	char tls_name[256];             /* host of the next hop: the TLS peer's name */
};
/* -EWOULDBLOCK for a host name the resolver has not in its cache (its
 * lookup starts; sip_ua_request waits for it on the loop) */
int sip_ua_build_request(struct sip_ua *ua, const struct sip_request *rq, struct sip_outreq *o,
                         char *errbuf, size_t errlen);
/* a flow to dst kept alive (RFC 5626 4.4.1): over UDP one CRLF ping now;
 * over TCP/TLS the connection pings after `seconds` of silence (< 0: as
 * it is) and -ENOTCONN tells that it is gone */
int sip_ua_keepalive(struct sip_ua *ua, int proto, const struct sip_addr *dst, double seconds);
/* send a built request outside any transaction (ACK for a 2xx) */
int sip_ua_send_stateless(struct sip_ua *ua, int proto, const struct sip_addr *dst,
                          struct sip_listener *l, const char *tls_name, const char *text, size_t len);
/* "<sip:luasip@host:port;transport=tcp>" as a peer at `peer` reaches us;
 * a sips: URI for a sips: request over TLS (RFC 3261 12.1.1) */
void sip_ua_contact(struct sip_ua *ua, int proto, const struct sip_addr *peer, int sips,
                    char *buf, size_t n);
/* 1 when a message's Request-URI is a sips: URI */
int sip_msg_sips(const struct sip_msg *m);
/* 1 when "Name: value\r\n" lines hold a header of that name (or its
 * compact form; 0 for none), any case */
int sip_headers_have(const char *lines, const char *name, char compact);
/* A request in its client transaction. To a host name (RFC 3263) the
 * transaction waits while the name is looked up on the loop, then starts;
 * on a transport error, an ICMP error, a 503 or Timer B/F it moves on to
 * the next target with a new branch (4.3). cb then gets the outcome of
 * the last target tried, or "dns: <name>: <reason>". *out is the same
 * transaction throughout. */
int sip_ua_request(struct sip_ua *ua, const struct sip_request *rq,
                   sip_response_cb cb, void *arg, struct sip_txn **out,
                   char *errbuf, size_t errlen);

/* where a URI says to send: scheme, host, port, transport parameter */
struct sip_target {
	int proto;
	int proto_given;                /* a transport parameter, or sips: */
	int port;                       /* the URI's, else 5060 / 5061 */
	int port_given;
	int sips;
	struct sip_addr addr;           /* once known (len 0 before) */
	char host[256];                 /* the URI's host: the name TLS verifies */
};
/* parse only, no lookup; errbuf names what is wrong */
int sip_uri_target(const char *uri, struct sip_target *t, char *errbuf, size_t errlen);
/* the UA's resolver (dns.c), made on first use; NULL with errbuf set */
struct sip_dns *sip_ua_dns(struct sip_ua *ua, char *errbuf, size_t errlen);
/* the TU stops listening: no callback will come for ct after this */
void sip_txn_detach(struct sip_txn *ct);

struct sip_ua_stats {
	size_t txns, client_txns, server_txns, conns, dialogs;
	uint64_t rx, tx, dropped, retransmits;
};
void sip_ua_stats(struct sip_ua *ua, struct sip_ua_stats *s);
/* client transactions still waiting for a final response (a walk: for
 * the drain at exit, not for hot paths) */
int sip_ua_unfinished(struct sip_ua *ua);

const char *sip_reason_phrase(int status);

#endif
