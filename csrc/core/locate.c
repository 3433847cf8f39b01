/*
 * locate.c - a request to a host name (RFC 3263). Its client transaction
 * is made at once, waiting and silent, with a provisional text (so the
 * caller has its transaction and message as for an address); dns.c looks
 * the name up on the loop; the request then goes to the first target, in
 * the transaction, with a new branch. On a transport error, an ICMP
 * error, a 503 or Timer B/F (4.3) txn.c asks for the next target: the
 * same transaction object starts again there, with a new branch (a new
 * transaction as the peers see it), and the dead target is blacklisted.
 */
#define _GNU_SOURCE
#include "core.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sip_loc {
	struct sip_ua *ua;
	struct sip_txn *t;
	struct sip_dns_lookup *q;       /* while the name is looked up */
	struct sip_request rq;          /* the caller's request, kept (mem) */
	char *mem;
	struct sip_target hop;          /* where it goes: host, port, transport */
	int sips;                       /* the Request-URI is sips: */
	struct sip_dns_target *tg;
	size_t n, cur;                  /* targets; cur: the next to try */
	int starting;                   /* inside sip_loc_request */
	int tu;                         /* a TU waits (else the request goes anyway) */
	int failed;
	char err[300];
};

/* the caller's strings in one block, rq pointing into it */
static int keep_request(struct sip_loc *loc, const struct sip_request *rq, struct sip_msg *m)
{
	const char *src[11];
	const char **dst[11];
	size_t len[11], total = 0, i, n = 0;
	char *p, from[1024], cid[512], to[1024];
	const char *v;
	size_t vn;

	loc->rq = *rq;
	/* the From tag and Call-ID drawn for the provisional text stay:
	 * every target gets the same request (only the Via changes) */
	if ((v = sip_msg_hdr(m, SIP_H_FROM, 0, &vn)) && vn < sizeof from) {
		memcpy(from, v, vn);
		from[vn] = '\0';
		loc->rq.from = from;
	}
	if ((v = sip_msg_hdr(m, SIP_H_CALL_ID, 0, &vn)) && vn < sizeof cid) {
		memcpy(cid, v, vn);
		cid[vn] = '\0';
		loc->rq.call_id = cid;
	}
	if ((v = sip_msg_hdr(m, SIP_H_TO, 0, &vn)) && vn < sizeof to) {
		memcpy(to, v, vn);
		to[vn] = '\0';
		loc->rq.to = to;
	}
	loc->rq.cseq = (unsigned)m->cseq;
#define KEEP(f) do { src[n] = loc->rq.f; dst[n] = &loc->rq.f; n++; } while (0)
	KEEP(method); KEEP(uri); KEEP(proxy); KEEP(next_hop); KEEP(routes); KEEP(from);
	KEEP(to); KEEP(call_id); KEEP(contact); KEEP(headers); KEEP(content_type);
#undef KEEP
	for (i = 0; i < n; i++) {
		len[i] = src[i] ? strlen(src[i]) + 1 : 0;
		total += len[i];
	}
	total += rq->body_len;
	loc->mem = malloc(total ? total : 1);
	if (!loc->mem)
		return -ENOMEM;
	p = loc->mem;
	for (i = 0; i < n; i++) {
		if (!src[i])
			continue;
		memcpy(p, src[i], len[i]);
		*dst[i] = p;
		p += len[i];
	}
	if (rq->body_len) {
		memcpy(p, rq->body, rq->body_len);
		loc->rq.body = p;
	}
	return 0;
}

void sip_loc_free(struct sip_loc *loc)
{
	if (!loc)
		return;
	sip_dns_cancel(loc->q);
	free(loc->tg);
	free(loc->mem);
	free(loc);
}

int sip_loc_has_next(const struct sip_loc *loc)
{
	return loc->cur < loc->n;
}

int sip_loc_tu(const struct sip_loc *loc)
{
	return loc->tu;
}

const char *sip_loc_error(const struct sip_loc *loc)
{
	return loc->err[0] ? loc->err : "transport: no target";
}

void sip_loc_blacklist(struct sip_loc *loc, double seconds)
{
	const struct sip_dns_target *x;

	if (!loc->cur || !loc->ua->dns)
		return;
	x = &loc->tg[loc->cur - 1];
	sip_dns_blacklist(loc->ua->dns, x->proto, &x->addr, seconds);
}

/* one target: the request built for it, in the transaction */
static int attempt(struct sip_loc *loc, const struct sip_dns_target *x)
{
	struct sip_target t = loc->hop;
	struct sip_outreq o;
	char branch[20];
	int rc;

	t.proto = x->proto;
	t.addr = x->addr;
	sip_env_token(loc->ua->env, branch, 16);
	rc = sip_ua_build_for(loc->ua, &loc->rq, &t, loc->sips, branch, &o, loc->err, sizeof loc->err);
	if (rc)
		return rc;
	rc = sip_txn_start_client(loc->t, o.msg, o.text, o.len, o.proto, &o.dst, o.lst, loc->hop.host);
	if (rc)
		sip_send_error(loc->err, sizeof loc->err, rc, loc->hop.host);
	return rc;
}

int sip_loc_next(struct sip_loc *loc)
{
	while (loc->cur < loc->n) {
		const struct sip_dns_target *x = &loc->tg[loc->cur++];
		char a[64];
		if (!attempt(loc, x))
			return 0;
		sip_addr_str((const struct sockaddr *)&x->addr.ss, a, sizeof a);
		SIP_LOGD(loc->ua->env, "%s %s: %s", sip_proto_name(x->proto), a, loc->err);
		sip_loc_blacklist(loc, -1);
	}
	return -1;
}

static void fail(struct sip_loc *loc, const char *why)
{
	if (loc->starting) {
		/* sip_loc_request returns the error: no callback */
		loc->failed = 1;
		if (why != loc->err)
			snprintf(loc->err, sizeof loc->err, "%s", why);
		return;
	}
	sip_txn_fail(loc->t, why);      /* frees loc */
}

/* the targets a request can go to from here: a UDP socket of the
 * family, or for TCP and TLS any listener of it to name in the Via */
static int usable(struct sip_loc *loc, const struct sip_dns_target *x)
{
	return sip_ua_named_listener(loc->ua, x->proto, x->addr.ss.ss_family) != NULL;
}

static void located(void *arg, const char *err, const struct sip_dns_target *tg, size_t n)
{
	struct sip_loc *loc = arg;
	struct sip_txn *t = loc->t;
	size_t i, j, k = 0;

	loc->q = NULL;
	if (!loc->starting && ((loc->tu && !t->cb) || t->cancel_pending)) {
		/* nobody waits any more (a timeout, a CANCEL): nothing is sent */
		sip_txn_abandon(t);
		return;
	}
	if (err) {
		fail(loc, err);
		return;
	}
	loc->tg = calloc(n, sizeof *loc->tg);
	if (!loc->tg) {
		fail(loc, "out of memory");
		return;
	}
	for (i = 0; i < n; i++) {
		int dup = 0;
		for (j = 0; j < k; j++)
			if (loc->tg[j].proto == tg[i].proto && sip_addr_eq(&loc->tg[j].addr, &tg[i].addr))
				dup = 1;
		if (!dup && usable(loc, &tg[i]))
			loc->tg[k++] = tg[i];
	}
	loc->n = k;
	if (!k) {
		snprintf(loc->err, sizeof loc->err, "transport: no listener for the addresses of %s",
		         loc->hop.host);
		fail(loc, loc->err);
		return;
	}
	if (sip_loc_next(loc))
		fail(loc, loc->err);
}

int sip_loc_request(struct sip_ua *ua, const struct sip_request *rq, const struct sip_target *hop,
                    int sips, sip_response_cb cb, void *arg, struct sip_txn **out,
                    char *err, size_t errlen)
{
	struct sip_dns_query q = { .host = hop->host, .port = hop->port_given ? hop->port : 0,
	                           .proto = hop->proto_given ? hop->proto : -1, .sips = hop->sips };
	struct sip_target pt = *hop;
	struct sip_dns *d;
	struct sip_outreq o;
	struct sip_loc *loc;
	struct sip_txn *t;
	int rc;

	*out = NULL;
	if (!(d = sip_ua_dns(ua, err, errlen)))
		return -EINVAL;
	/* the provisional text: the family of a listener we have */
	memset(&pt.addr, 0, sizeof pt.addr);
	pt.addr.ss.ss_family = sip_ua_named_listener(ua, pt.proto, AF_INET) || !ua->listeners ||
	                       ua->listeners->addr.ss.ss_family == AF_INET ? AF_INET : AF_INET6;
	if (!sip_ua_named_listener(ua, pt.proto, pt.addr.ss.ss_family))
		pt.proto = SIP_TCP;     /* no UDP of ours: another transport may do */
	if ((rc = sip_ua_build_for(ua, rq, &pt, sips, NULL, &o, err, errlen)))
		return rc;
	loc = calloc(1, sizeof *loc);
	if (!loc || keep_request(loc, rq, o.msg)) {
		if (loc)
			free(loc->mem);
		free(loc);
		sip_msg_unref(o.msg);
		free(o.text);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	loc->ua = ua;
	loc->tu = cb != NULL;
	loc->hop = *hop;
	loc->sips = sips;
	if ((rc = sip_txn_new_waiting(ua, o.msg, o.text, o.len, cb, arg, &t))) {
		sip_loc_free(loc);
		snprintf(err, errlen, "out of memory");
		return rc;
	}
	t->loc = loc;
	loc->t = t;
	loc->starting = 1;
	rc = sip_dns_locate(d, &q, located, loc, &loc->q);
	loc->starting = 0;
	if (rc || loc->failed) {
		snprintf(err, errlen, "%s", rc ? "out of memory" : loc->err);
		sip_txn_abandon(t);
		return rc ? rc : -EHOSTUNREACH;
	}
	*out = t;
	return 0;
}
