/*
 * core.h - private to csrc/core: the structures the UA, the transports and
 * the transaction layer share.
 */
#ifndef SIP_CORE_INT_H
#define SIP_CORE_INT_H

#include <ev.h>
#include "ua.h"
#include "dialog.h"
#include "dialog_invite.h"
#include "tls.h"
#include "dns.h"

typedef struct ssl_st SSL;

struct sip_listener {
	struct sip_ua *ua;
	struct sip_listener *next;
	int proto;
	int fd;
	struct sip_addr addr;           /* bound address, real port */
	char host[INET6_ADDRSTRLEN + 2];/* Via/Contact host, IPv6 in brackets */
	char contact[2][96];            /* our Contact (sip:, sips:) once built,
	                                 * for a listener on a specific address */
	ev_io io;
	char *rx;                       /* UDP: receive slots (transport_udp.c) */
};

struct sip_conn {
	struct sip_hnode hn;            /* in ua->conns, keyed by peer */
	char key[80];
	struct sip_ua *ua;
	struct sip_conn *next, *prev;   /* ua->conn_list */
	int proto;
	int fd;
	int connecting;
	int closing;                    /* 1 closed; 2 inside conn_frame: deferred */
	int partial;                    /* a message is partly in: header timeout runs */
	char close_why[160];
	struct sip_addr peer;
	struct sip_listener *lst;       /* listener of the same protocol, if any */
	ev_io rio, wio;
	ev_timer idle;
	char *in;
	size_t inlen, incap;
	struct sip_buf out;
	size_t outoff;
	struct sip_txn *txns;           /* transactions bound to this connection */
	SSL *ssl;                       /* TLS connections */
	int handshaking;
	char *tls_name;                 /* client: the SIP domain verified */
	struct sip_tls_info *tls_info;  /* the peer certificate, once known */
	double keepalive;               /* seconds of silence before a ping; 0: idle close */
	int pong_due;                   /* a ping went out, no pong yet */
	int pong_seen;                  /* the peer answers pings: a missing pong kills the flow */
};

enum sip_txn_kind { TXN_ICT, TXN_NICT, TXN_IST, TXN_NIST };
enum sip_txn_state {
	TS_CALLING, TS_TRYING, TS_PROCEEDING, TS_COMPLETED, TS_CONFIRMED,
	TS_ACCEPTED, TS_TERMINATED
};

struct sip_txn {
	struct sip_hnode hn;            /* in ua->txns */
	struct sip_ua *ua;
	int kind, state;
	struct sip_msg *req;
	char *out;                      /* client: request; server: last response */
	size_t outlen;
	char *ack;                      /* ICT: ACK for a non-2xx final */
	size_t acklen;
	int proto;
	struct sip_addr dst;
	struct sip_listener *lst;
	struct sip_conn *conn;
	struct sip_txn *cnext, *cprev;  /* conn->txns */
	ev_timer tretx, tlife;
	unsigned retx_weak : 1, life_weak : 1;
	double interval;
	int last_status;
	unsigned cseq;                  /* the request's CSeq number */
	char to_tag[24];                /* server: our To tag */
	char *tls_name;                 /* client over TLS: the domain to verify */
	struct sip_loc *loc;            /* client to a host name: its targets (locate.c) */
	sip_response_cb cb;             /* client TU */
	void *cb_arg;
	sip_txn_gone_cb gone;           /* server TU */
	void *gone_arg;
	struct sip_dialog *dlg;         /* INVITE txns a dialog watches */
	unsigned cancel_pending : 1;    /* ICT: CANCEL once a 1xx arrives */
	unsigned cancelled : 1;
	struct sip_txn *tnext, *tprev;  /* IST: ua->trying, a 100 still owed */
	unsigned trying : 1;
	unsigned retiring : 1;          /* in ua->retiring (tnext/tprev) */
	unsigned in_linger : 1;         /* life timer in ua's linger list */
	struct sip_txn *lnext, *lprev;
	double ldue;
	char key[];                     /* the hash key, in the same allocation */
};

/* What the layers above register with the ones below at set-up (the
 * lower layers call up only through these): the transports hand their
 * messages and failures to the receive path; the transaction layer tells
 * the dialog layer of the transactions a dialog watches, and the receive
 * path hands it ACKs for 2xx and requests within dialogs. */
struct sip_transport_user {
	/* a message arrived: a datagram, or one framed from a stream */
	void (*recv)(struct sip_ua *ua, int proto, struct sip_listener *l, struct sip_conn *c,
	             const struct sip_addr *src, const char *buf, size_t len);
	/* an ICMP error came back with this datagram of ours */
	void (*icmp_error)(struct sip_ua *ua, const char *buf, size_t len, const char *why);
	/* a connection closed: what went over it learns why */
	void (*conn_closed)(struct sip_conn *c, const char *why);
};
struct sip_dialog_layer {
	/* the dialog of a request with a To tag, or NULL (a hash lookup) */
	struct sip_dialog *(*match)(struct sip_ua *ua, struct sip_msg *req);
	/* the ACK for a 2xx of the dialog's (RFC 6026: never a transaction's) */
	void (*ack)(struct sip_dialog *d, struct sip_msg *ack);
	/* a request within the dialog, in its server transaction */
	void (*request)(struct sip_dialog *d, struct sip_txn *st, struct sip_msg *req);
	/* a transaction the dialog watches (t->dlg) ends */
	void (*txn_gone)(struct sip_dialog *d, struct sip_txn *t);
};

struct sip_ua {
	struct sip_env *env;
	const struct sip_transport_user *tpu;   /* receive.c's, set by sip_ua_new */
	const struct sip_dialog_layer *dl;      /* dialog.c's, set by sip_ua_new */
	const struct sip_invite_usage *inv;     /* dialog_invite.c's, set by sip_ua_new */
	struct sip_ua_cfg cfg;
	struct sip_listener *listeners;
	struct sip_htab txns;
	struct sip_htab conns;
	struct sip_conn *conn_list;
	size_t nconns, nclient, nserver;
	struct sip_htab dialogs;
	/* INVITE transactions owed a 100 Trying: sent when the loop is
	 * about to wait, unless the TU answered first (17.2.1) */
	struct sip_txn *trying;
	ev_prepare trying_w;
	/* Weak life timers of 64*T1 (Timers B/F aside: J, H, L, D...) all
	 * have the same length, so arming in order keeps them in order: a
	 * list with one libev timer for its head, instead of a heap entry
	 * per transaction (hundreds of thousands linger at high rates) */
	struct sip_txn *lhead, *ltail;
	ev_timer linger_w;
	/* Server transactions that only absorb retransmissions now are
	 * retired at the end of the loop iteration into tombs: the key, the
	 * final response to resend, where to (txn.c) */
	struct sip_txn *retiring;
	struct sip_htab tombs;
	struct sip_tomb *thead, *ttail;
	struct sip_tomb_chunk *tchunk, *tspare; /* tombs are carved from these (txn.c) */
	size_t ntombs;
	ev_timer tomb_w;
	/* the handler chain (sip_ua_handler): per method, and the fallback */
	struct sip_handler {
		char method[32];
		sip_request_cb fn;
		void *arg;
	} handlers[SIP_UA_MAX_HANDLERS], fallback, orphans;
	size_t nhandlers;
	char **served;
	size_t nserved;
	uint64_t rx, tx, dropped, retransmits;
	struct sip_tls *tls;            /* TLS contexts, once configured */
	struct sip_dns *dns;            /* the resolver, once a name is looked up */
};

/* ua.c: the methods handlers serve ("*": all but ACK and CANCEL) */
int sip_ua_served(const struct sip_ua *ua, const char *method);

/* reply.c: a response's text for req (our To tag: to_tag) */
int sip_response_build(struct sip_ua *ua, struct sip_msg *req, const char *to_tag,
                       const struct sip_reply *r, char **text, size_t *len);
/* a response outside any transaction, back the way req came */
void sip_ua_reply_stateless(struct sip_ua *ua, struct sip_msg *req, int proto,
                            struct sip_listener *l, struct sip_conn *c, const struct sip_reply *r);
/* "OPTIONS, INVITE, ..." what we allow, in buf */
const char *sip_ua_allow_list(struct sip_ua *ua, char *buf, size_t n);

/* ua.c: the handler for a request of this method, or NULL; "CANCEL"
 * has no fallback */
const struct sip_handler *sip_ua_handler_for(const struct sip_ua *ua, const char *method);

/* receive.c: what the transports call up to (ua->tpu) */
extern const struct sip_transport_user sip_receive_user;
/* dialog.c: what the transaction layer and the receive path call up to (ua->dl) */
extern const struct sip_dialog_layer sip_dialog_layer;
/* receive.c: the receive path, shared by every transport */
void sip_ua_receive(struct sip_ua *ua, int proto, struct sip_listener *l, struct sip_conn *c,
                    const struct sip_addr *src, const char *buf, size_t len);
void sip_ua_drop(struct sip_ua *ua, const struct sip_addr *src, const char *why);
/* fd: the socket the message went through (its address is the local end) */
void sip_ua_trace(struct sip_ua *ua, int out, int proto, int fd, const struct sip_addr *peer,
                  const char *buf, size_t len);
struct sip_listener *sip_ua_listener_for(struct sip_ua *ua, int proto, int family);
/* the text for a failed first send ("tls: name mismatch: x", "transport: ...") */
void sip_send_error(char *err, size_t errlen, int rc, const char *tls_name);
/* an ICMP error came back with this datagram of ours */
void sip_ua_icmp_error(struct sip_ua *ua, const char *buf, size_t len, const char *why);

/* transport_udp.c */
int sip_udp_open(struct sip_listener *l, char *err, size_t errlen);
void sip_udp_close(struct sip_listener *l);
int sip_udp_send(struct sip_listener *l, const struct sip_addr *dst, const char *buf, size_t len);

/* transport_stream.c */
int sip_stream_listen(struct sip_listener *l, char *err, size_t errlen);
void sip_stream_listener_close(struct sip_listener *l);
/* a connection to dst: an open one (reuse) or a new one being opened */
int sip_conn_get(struct sip_ua *ua, int proto, const struct sip_addr *dst, const char *tls_name,
                 struct sip_conn **out);
int sip_conn_send(struct sip_conn *c, const char *buf, size_t len);
void sip_conn_close(struct sip_conn *c, const char *why);
void sip_conn_close_all(struct sip_ua *ua);

/* build.c: a request's text for target t (t->addr.len 0: not known yet,
 * the text is provisional); branch NULL: a new one */
int sip_ua_build_for(struct sip_ua *ua, const struct sip_request *rq, const struct sip_target *t,
                     int sips, const char *branch, struct sip_outreq *o, char *err, size_t errlen);
struct sip_listener *sip_ua_named_listener(struct sip_ua *ua, int proto, int family);

/* locate.c: requests to host names (RFC 3263) */
struct sip_loc;
int sip_loc_request(struct sip_ua *ua, const struct sip_request *rq, const struct sip_target *hop,
                    int sips, sip_response_cb cb, void *arg, struct sip_txn **out,
                    char *err, size_t errlen);
/* another target is left to try */
int sip_loc_has_next(const struct sip_loc *loc);
/* 1 when a TU asked for the outcome (0: the request goes out anyway) */
int sip_loc_tu(const struct sip_loc *loc);
/* the target tried now goes last for a while (seconds < 0: the UA's time) */
void sip_loc_blacklist(struct sip_loc *loc, double seconds);
/* t (reset) goes to the next target that takes it: 0; -1 when none did,
 * sip_loc_error says why */
int sip_loc_next(struct sip_loc *loc);
const char *sip_loc_error(const struct sip_loc *loc);
void sip_loc_free(struct sip_loc *loc);

/* txn.c */
/* a client transaction that waits for its target: nothing is sent */
int sip_txn_new_waiting(struct sip_ua *ua, struct sip_msg *req, char *text, size_t len,
                        sip_response_cb cb, void *arg, struct sip_txn **out);
/* the target is known: req (same length of branch) goes out. On a send
 * error t keeps waiting and the error is returned */
int sip_txn_start_client(struct sip_txn *t, struct sip_msg *req, char *text, size_t len, int proto,
                         const struct sip_addr *dst, struct sip_listener *l, const char *tls_name);
/* a waiting transaction ends: without a word to the TU, or telling it why */
void sip_txn_abandon(struct sip_txn *t);
void sip_txn_fail(struct sip_txn *t, const char *why);
/* the server transaction for req; with `retired`, a retired one (a tomb)
 * also counts: *retired is set and its response sent again */
struct sip_txn *sip_txn_match_server(struct sip_ua *ua, struct sip_msg *req, const char *method,
                                     int *retired);
struct sip_txn *sip_txn_match_client(struct sip_ua *ua, struct sip_msg *res);
int sip_txn_new_server(struct sip_ua *ua, struct sip_msg *req, int proto, struct sip_listener *l,
                       struct sip_conn *c, struct sip_txn **out);
int sip_txn_new_client(struct sip_ua *ua, struct sip_msg *req, char *text, size_t len,
                       int proto, const struct sip_addr *dst, struct sip_listener *l,
                       const char *tls_name, sip_response_cb cb, void *arg, struct sip_txn **out);
void sip_txn_server_retransmit(struct sip_txn *st, struct sip_msg *req);
void sip_txn_client_response(struct sip_txn *ct, struct sip_msg *res);
void sip_txn_transport_error(struct sip_txn *t, const char *why);
void sip_txn_conn_closed(struct sip_conn *c, const char *why);
void sip_txn_free_all(struct sip_ua *ua);
/* send bytes the way a transaction sends (its connection or datagram) */
int sip_txn_send(struct sip_txn *t, const char *buf, size_t len);

#endif

/* dialog.c, called by ua.c and txn.c */
struct sip_dialog *sip_dialog_match(struct sip_ua *ua, struct sip_msg *req);
void sip_dialog_receive(struct sip_dialog *d, struct sip_txn *st, struct sip_msg *req);
void sip_dialog_bye_all(struct sip_ua *ua);
void sip_dialog_free_all(struct sip_ua *ua);

/* transport_stream.c */
struct sip_conn *sip_conn_find(struct sip_ua *ua, int proto, const struct sip_addr *dst);
/* keep the connection to dst alive: a CRLF ping after `seconds` of
 * silence (negative: unchanged); -ENOTCONN when there is none */
int sip_conn_keepalive(struct sip_ua *ua, int proto, const struct sip_addr *dst, double seconds);

/* txn.c, called by ua.c */
int sip_txn_respond(struct sip_txn *st, int status, char *text, size_t len);
/* a 100 Trying owed for an INVITE: sent before the loop next waits
 * unless a response goes first (ua.c) */
void sip_txn_trying_owed(struct sip_txn *st);
void sip_txn_trying_done(struct sip_txn *st);
void sip_txn_linger_init(struct sip_ua *ua);
/* the prepare watcher that sends the 100s owed and retires transactions */
void sip_txn_trying_init(struct sip_ua *ua);
void sip_txn_trying_stop(struct sip_ua *ua);
void sip_txn_linger_stop(struct sip_ua *ua);
/* IST in Accepted: the dialog saw the ACK, stop retransmitting the 2xx */
void sip_txn_ack_seen(struct sip_txn *st);
/* retire st into a tomb once the loop iteration ends, if by then it only
 * absorbs retransmissions (nothing else points at it) */
void sip_txn_retire(struct sip_txn *st);
void sip_txn_retire_done(struct sip_txn *st);   /* out of that list */
/* the prepare watcher's part: retire what was marked */
void sip_txn_retire_pending(struct sip_ua *ua);

struct sip_txn *sip_txn_find_key(struct sip_ua *ua, const char *key);
int sip_txn_server_key(struct sip_msg *req, const char *method, char *buf, size_t n);
