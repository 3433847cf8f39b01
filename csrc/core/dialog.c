/*
 * dialog.c - dialogs (RFC 3261 section 12): identity, route set, remote
 * target, CSeq spaces, found by Call-ID and both tags through the UA's
 * hash table. Made by a 2xx to an INVITE (as UAS when we send it, as UAC
 * when it arrives), early by a reliable provisional (RFC 3262) which the
 * 2xx then confirms, by a SUBSCRIBE we accept or the NOTIFY that answers
 * ours. What is particular to INVITE (2xx/ACK, re-INVITE glare, RFC 6026)
 * is the INVITE usage's, in dialog_invite.c, reached through ua->inv.
 */
#define _GNU_SOURCE
#include "core.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sip_dialog {
	struct sip_hnode hn;
	const char *key;
	int in_table;
	struct sip_ua *ua;
	int uas;
	int state;
	/* key, Call-ID, tags and the From/To values never change: one
	 * allocation (strs) holds them all */
	char *strs;
	const char *call_id, *local_tag, *remote_tag;
	const char *local_uri;          /* From (UAC) / To (UAS) value, with our tag */
	const char *remote_uri;         /* the peer's, with its tag */
	char *remote_target;
	char *routes;                   /* "Route: <..>\r\n" lines in send order */
	char *first_route;              /* URI of the first route, next hop */
	int strict;                     /* first route lacks ;lr (12.2.1.1) */
	char *contact;                  /* ours, exact size */
	unsigned local_cseq, remote_cseq;
	int remote_cseq_set;
	int proto;
	struct sip_addr peer;           /* where the dialog's INVITE came from / went */
	struct sip_invite *inv;         /* the INVITE usage's state (dialog_invite.c), once used */
	sip_dialog_cb cb;
	void *cb_arg;
};

static char *dup_n(const char *s, size_t n)
{
	char *p = malloc(n + 1);

	if (p) {
		memcpy(p, s, n);
		p[n] = '\0';
	}
	return p;
}

/* a longer route set is refused rather than cut short */
#define SIP_MAX_ROUTES 64

/* Route set from Record-Route values: request order for the UAS,
 * reversed for the UAC (12.1.1, 12.1.2) */
static int set_routes(struct sip_dialog *d, struct sip_msg *m, int reverse)
{
	struct sip_nameaddr rr[SIP_MAX_ROUTES + 1];
	int i, n = sip_msg_nameaddrs(m, "Record-Route", rr, SIP_MAX_ROUTES + 1);
	struct sip_buf b;

	if (n < 0 || n > SIP_MAX_ROUTES)
		return -EINVAL;
	if (n == 0)
		return 0;       /* no route set: nothing allocated */
	sip_buf_init(&b, 128);
	for (i = 0; i < n; i++) {
		const struct sip_nameaddr *r = &rr[reverse ? n - 1 - i : i];
		if (i == 0) {
			d->first_route = dup_n(r->uri, r->un);
			d->strict = !sip_uri_has_lr(r->uri, r->un);
		}
		/* with a strict first hop it becomes the Request-URI instead */
		if (!(i == 0 && d->strict))
			sip_buf_header(&b, "Route", r->v, r->n);
	}
	if (b.oom) {
		sip_buf_free(&b);
		return -ENOMEM;
	}
	d->routes = b.p;
	return 0;
}

/* the remote target: the URI of the first Contact */
static int contact_target(struct sip_dialog *d, struct sip_msg *m)
{
	struct sip_nameaddr c;
	char *t;

	if (sip_msg_nameaddrs(m, "Contact", &c, 1) != 1)
		return -ENOENT;
	t = dup_n(c.uri, c.un);
	if (!t)
		return -ENOMEM;
	free(d->remote_target);
	d->remote_target = t;
	return 0;
}

/* "d<call-id>;<local tag>;<remote tag>", the dialogs table's key, at p
 * (room for cl + ll + rl + 4 bytes); returns the byte after its NUL */
static char *put_key(char *p, const char *cid, size_t cl, const char *lt, size_t ll, const char *rt, size_t rl)
{
	*p++ = 'd';
	memcpy(p, cid, cl);
	p += cl;
	*p++ = ';';
	memcpy(p, lt, ll);
	p += ll;
	*p++ = ';';
	memcpy(p, rt, rl + 1);
	return p + rl + 1;
}

/* the dialog's fixed strings in one allocation; luri_tag, when set, is
 * appended to the local URI as ";tag=" (the UAS's To) */
static int dialog_strings(struct sip_dialog *d, const char *call_id, const char *ltag, const char *rtag,
                          const char *luri, size_t lun, const char *luri_tag, const char *ruri, size_t run)
{
	size_t cl = strlen(call_id), ll = strlen(ltag), rl = strlen(rtag);
	size_t tl = luri_tag ? 5 + strlen(luri_tag) : 0;
	/* the key (cl + ll + rl + 4), call-id, tags and From/To values each
	 * with its NUL (cl + ll + rl + run + 4), our URI (lun + tl + 1) */
	char *p = malloc(2 * (cl + ll + rl) + lun + tl + run + 9);

	if (!p)
		return -ENOMEM;
	d->strs = p;
	d->key = p;
	p = put_key(p, call_id, cl, ltag, ll, rtag, rl);
#define DLG_STR(field, src, n) do { (field) = p; memcpy(p, (src), (n)); p += (n); *p++ = '\0'; } while (0)
	DLG_STR(d->call_id, call_id, cl);
	DLG_STR(d->local_tag, ltag, ll);
	DLG_STR(d->remote_tag, rtag, rl);
	DLG_STR(d->remote_uri, ruri, run);
	d->local_uri = p;
	memcpy(p, luri, lun);
	p += lun;
	if (luri_tag) {
		memcpy(p, ";tag=", 5);
		memcpy(p + 5, luri_tag, tl - 5);
		p += tl;
	}
	*p = '\0';
#undef DLG_STR
	return 0;
}

static int dialog_insert(struct sip_dialog *d)
{
	d->hn.key = d->key;
	sip_htab_insert(&d->ua->dialogs, &d->hn);
	d->in_table = 1;
	return 0;
}

static const char *nz(const char *s)
{
	return s ? s : "";
}

int sip_dialog_new_uas(struct sip_txn *ist, struct sip_dialog **out)
{
	struct sip_dialog *d = calloc(1, sizeof *d);
	struct sip_msg *m = ist->req;
	const char *from, *to;
	size_t fn = 0, tn = 0;

	*out = NULL;
	if (!d)
		return -ENOMEM;
	/* a request that has our tag already (a NOTIFY making the dialog
	 * of our SUBSCRIBE) keeps it; a new one gets the tag we answer with */
	if (m->to_tag) {
		if (strlen(m->to_tag) >= sizeof ist->to_tag) {
			free(d);
			return -EINVAL;
		}
		snprintf(ist->to_tag, sizeof ist->to_tag, "%s", m->to_tag);
	} else if (!ist->to_tag[0])
		sip_env_token(ist->ua->env, ist->to_tag, 12);
	d->ua = ist->ua;
	d->uas = 1;
	/* an INVITE not answered yet makes an early dialog (a reliable 18x's,
	 * which its PRACK must find); its 2xx confirms it */
	d->state = ist->kind == TXN_IST && !sip_txn_final_sent(ist) ? SIP_DLG_EARLY : SIP_DLG_CONFIRMED;
	d->proto = ist->proto;
	d->peer = ist->req->src;
	from = sip_msg_hdr(m, SIP_H_FROM, 0, &fn);
	to = sip_msg_hdr(m, SIP_H_TO, 0, &tn);
	/* our side is the INVITE's To plus the tag we gave it */
	if (dialog_strings(d, m->call_id, ist->to_tag, nz(m->from_tag), to ? to : "", tn,
	                   m->to_tag ? NULL : ist->to_tag, from ? from : "", fn)) {
		free(d);
		return -ENOMEM;
	}
	d->remote_cseq = (unsigned)ist->req->cseq;
	d->remote_cseq_set = 1;
	d->local_cseq = 1;
	{
		char c[160];
		sip_ua_contact(d->ua, d->proto, &d->peer, sip_msg_sips(ist->req), c, sizeof c);
		d->contact = dup_n(c, strlen(c));
	}
	if (!d->contact || set_routes(d, m, 0) || contact_target(d, m) || dialog_insert(d)) {
		sip_dialog_free(d);
		return -EINVAL;
	}
	*out = d;
	return 0;
}

int sip_dialog_new_uac(struct sip_txn *ict, struct sip_msg *res, struct sip_dialog **out)
{
	struct sip_dialog *d;
	struct sip_msg *rq = ict->req;
	const char *from, *to;
	size_t fn = 0, tn = 0;

	*out = NULL;
	if (!rq)
		return -EINVAL;
	d = calloc(1, sizeof *d);
	if (!d)
		return -ENOMEM;
	d->ua = ict->ua;
	d->uas = 0;
	/* a reliable 1xx makes the early dialog its PRACK goes in */
	d->state = sip_msg_status(res) < 200 ? SIP_DLG_EARLY : SIP_DLG_CONFIRMED;
	d->proto = ict->proto;
	d->peer = ict->dst;
	from = sip_msg_hdr(rq, SIP_H_FROM, 0, &fn);
	to = sip_msg_hdr(res, SIP_H_TO, 0, &tn);
	if (dialog_strings(d, rq->call_id, nz(rq->from_tag), nz(res->to_tag), from ? from : "", fn, NULL,
	                   to ? to : "", tn)) {
		free(d);
		return -ENOMEM;
	}
	d->local_cseq = (unsigned)rq->cseq;
	{
		size_t n;
		const char *c = sip_msg_hdr(ict->req, SIP_H_CONTACT, 0, &n);
		char own[160];
		if (!c) {
			sip_ua_contact(d->ua, d->proto, &d->peer, sip_msg_sips(ict->req), own, sizeof own);
			c = own;
			n = strlen(own);
		}
		d->contact = dup_n(c, n);
	}
	if (!d->contact || set_routes(d, res, 1) || dialog_insert(d)) {
		sip_dialog_free(d);
		return -EINVAL;
	}
	if (contact_target(d, res)) {
		/* no Contact in the 2xx: fall back to the Request-URI */
		d->remote_target = strdup(rq->uri);
		if (!d->remote_target) {
			sip_dialog_free(d);
			return -EINVAL;
		}
	}
	*out = d;
	return 0;
}

int sip_dialog_confirm(struct sip_dialog *d, struct sip_msg *res)
{
	if (d->state != SIP_DLG_EARLY)
		return 0;
	if (res && !d->uas) {
		/* 13.2.2.4: the route set is recomputed from the 2xx, and its
		 * Contact is the target (12.2.1.2); a 2xx that does not read
		 * leaves what the 1xx gave */
		char *routes = d->routes, *first = d->first_route;
		int strict = d->strict;
		d->routes = d->first_route = NULL;
		d->strict = 0;
		if (set_routes(d, res, 1)) {
			free(d->routes);
			free(d->first_route);
			d->routes = routes;
			d->first_route = first;
			d->strict = strict;
		} else {
			free(routes);
			free(first);
		}
		contact_target(d, res);
	}
	d->state = SIP_DLG_CONFIRMED;
	return 0;
}

void sip_dialog_set_tu(struct sip_dialog *d, sip_dialog_cb cb, void *arg)
{
	d->cb = cb;
	d->cb_arg = arg;
}

void sip_dialog_terminate(struct sip_dialog *d)
{
	d->state = SIP_DLG_TERMINATED;
	if (d->in_table) {
		sip_htab_remove(&d->ua->dialogs, &d->hn);
		d->in_table = 0;
	}
}

void sip_dialog_free(struct sip_dialog *d)
{
	if (!d)
		return;
	sip_dialog_terminate(d);
	if (d->inv)
		d->ua->inv->free(d);
	free(d->strs);
	free(d->contact);
	free(d->remote_target);
	free(d->routes);
	free(d->first_route);
	free(d);
}

void sip_dialog_set_local_cseq(struct sip_dialog *d, unsigned cseq)
{
	if (cseq > d->local_cseq)
		d->local_cseq = cseq;
}

int sip_dialog_state(const struct sip_dialog *d) { return d->state; }
const char *sip_dialog_call_id(const struct sip_dialog *d) { return d->call_id; }
const char *sip_dialog_local_tag(const struct sip_dialog *d) { return d->local_tag; }
const char *sip_dialog_remote_tag(const struct sip_dialog *d) { return d->remote_tag; }
const char *sip_dialog_remote_target(const struct sip_dialog *d) { return d->remote_target; }
const char *sip_dialog_local_uri(const struct sip_dialog *d) { return d->local_uri; }
const char *sip_dialog_remote_uri(const struct sip_dialog *d) { return d->remote_uri; }
const char *sip_dialog_contact(const struct sip_dialog *d) { return d->contact; }
const char *sip_dialog_routes(const struct sip_dialog *d) { return d->routes ? d->routes : ""; }

struct sip_dialog *sip_dialog_find(struct sip_ua *ua, const char *call_id, const char *ltag,
                                   const char *rtag)
{
	char key[512];
	size_t cl = strlen(call_id), ll = strlen(ltag), rl = strlen(rtag);

	if (cl + ll + rl + 4 > sizeof key)
		return NULL;
	put_key(key, call_id, cl, ltag, ll, rtag, rl);
	return (struct sip_dialog *)sip_htab_find(&ua->dialogs, key);
}

struct sip_dialog *sip_dialog_match(struct sip_ua *ua, struct sip_msg *req)
{
	if (!req->to_tag)
		return NULL;
	return sip_dialog_find(ua, req->call_id, req->to_tag, nz(req->from_tag));
}

void *sip_dialog_tu(const struct sip_dialog *d, sip_dialog_cb cb)
{
	return d->cb == cb ? d->cb_arg : NULL;
}

/* where a request to a host name that is not in the DNS cache goes: its
 * transaction is made by sip_ua_request, waiting for the lookup */
struct dialog_async {
	sip_response_cb cb;
	void *arg;
	struct sip_txn **out;
};

/* Build an in-dialog request (12.2.1.1): Request-URI and Route headers
 * from the remote target and route set, From/To/Call-ID from the dialog.
 * With `as`, a target to look up first makes its transaction at once
 * (sip_ua_request, RFC 3263 on the loop): 1 then, *as->out set; without,
 * -EWOULDBLOCK (the lookup runs and fills the cache). */
static int dialog_build(struct sip_dialog *d, const char *method, unsigned cseq,
                        const struct sip_dialog_req *r, struct sip_outreq *o,
                        const struct dialog_async *as, char *err, size_t errlen)
{
	struct sip_request rq = { 0 };
	struct sip_buf routes;
	int rc;

	rq.method = method;
	rq.from = d->local_uri;
	rq.to = d->remote_uri;
	rq.call_id = d->call_id;
	rq.cseq = cseq;
	if (r && r->contact) {
		/* our new Contact: later requests and answers name it too */
		char *c = strdup(r->contact);
		if (c) {
			free(d->contact);
			d->contact = c;
		}
		rq.contact = r->contact;
	} else if (!strcmp(method, "INVITE") || !strcmp(method, "UPDATE") || !strcmp(method, "SUBSCRIBE") ||
	           !strcmp(method, "NOTIFY") || !strcmp(method, "REFER")) {
		/* target refresh requests carry our Contact (RFC 6665 4.1.2.1, 4.2.2) */
		rq.contact = d->contact;
	}
	if (r) {
		rq.headers = r->headers;
		rq.body = r->body;
		rq.body_len = r->body_len;
		rq.content_type = r->content_type;
	}
	sip_buf_init(&routes, 128);
	if (d->first_route && d->strict) {
		/* strict router: it is the Request-URI, the target goes last */
		rq.uri = d->first_route;
		sip_buf_adds(&routes, d->routes ? d->routes : "");
		sip_buf_printf(&routes, "Route: <%s>\r\n", d->remote_target);
	} else {
		rq.uri = d->remote_target;
		sip_buf_adds(&routes, d->routes ? d->routes : "");
	}
	rq.routes = routes.p;
	rq.next_hop = d->first_route;
	rc = sip_ua_build_request(d->ua, &rq, o, err, errlen);
	if (rc == -EWOULDBLOCK && as) {
		rc = sip_ua_request(d->ua, &rq, as->cb, as->arg, as->out, err, errlen);
		sip_buf_free(&routes);
		return rc ? rc : 1;
	}
	sip_buf_free(&routes);
	if (rc)
		return rc;
	/* over a stream, keep using the connection the dialog started on
	 * when there is none to the target itself (RFC 5923 style reuse);
	 * over TLS only when that peer proved its identity (mutual TLS),
	 * else the request goes to a connection we verify ourselves */
	if (o->proto != SIP_UDP && o->proto == d->proto && !sip_conn_find(d->ua, o->proto, &o->dst)) {
		struct sip_conn *c = sip_conn_find(d->ua, d->proto, &d->peer);
		if (c && (o->proto != SIP_TLS || sip_tls_peer_verified(c)))
			o->dst = d->peer;
	}
	return 0;
}

/* the next request of the dialog (CSeq + 1): 0 with o built, 1 when its
 * transaction exists already (its target is being looked up: *out set,
 * with cb/arg), or an error */
int sip_dialog_next(struct sip_dialog *d, const struct sip_dialog_req *r, sip_response_cb cb,
                    void *arg, struct sip_txn **out, struct sip_outreq *o, char *err, size_t errlen)
{
	const struct dialog_async as = { cb, arg, out };
	int rc;

	if (d->state == SIP_DLG_TERMINATED) {
		snprintf(err, errlen, "dialog terminated");
		return -ENOTCONN;
	}
	rc = dialog_build(d, r->method, d->local_cseq + 1, r, o, &as, err, errlen);
	if (rc >= 0)
		d->local_cseq++;
	return rc;
}

/* an ACK (its own CSeq) built for the INVITE usage; -EWOULDBLOCK while
 * its target is looked up */
int sip_dialog_build_ack(struct sip_dialog *d, unsigned cseq, const struct sip_dialog_req *r,
                         struct sip_outreq *o, char *err, size_t errlen)
{
	return dialog_build(d, "ACK", cseq, r, o, NULL, err, errlen);
}

int sip_dialog_request(struct sip_dialog *d, const struct sip_dialog_req *r,
                       sip_response_cb cb, void *arg, struct sip_txn **out,
                       char *err, size_t errlen)
{
	struct sip_outreq o;
	int rc;

	*out = NULL;
	if (!strcmp(r->method, "INVITE"))
		return d->ua->inv->request(d, r, cb, arg, out, err, errlen);
	rc = sip_dialog_next(d, r, cb, arg, out, &o, err, errlen);
	if (rc < 0)
		return rc;
	if (rc == 1)
		return 0;
	rc = sip_txn_new_client(d->ua, o.msg, o.text, o.len, o.proto, &o.dst, o.lst, o.tls_name,
	                        cb, arg, out);
	if (rc)
		sip_send_error(err, errlen, rc, o.tls_name);
	return rc;
}

struct sip_invite **sip_dialog_invite(struct sip_dialog *d) { return &d->inv; }
struct sip_ua *sip_dialog_ua(const struct sip_dialog *d) { return d->ua; }

int sip_dialog_target_refresh(struct sip_dialog *d, struct sip_msg *m)
{
	return contact_target(d, m);
}

void sip_dialog_tell(struct sip_dialog *d, int ev, struct sip_txn *st, struct sip_msg *m)
{
	if (d->cb)
		d->cb(d->cb_arg, d, ev, st, m);
}

static void dialog_ack(struct sip_dialog *d, struct sip_msg *ack)
{
	if (d->inv)
		d->ua->inv->ack(d, ack);
	/* else an ACK for a 2xx we never sent: absorbed */
}

static void dialog_txn_gone(struct sip_dialog *d, struct sip_txn *t)
{
	if (d->inv)
		d->ua->inv->txn_gone(d, t);
}

void sip_dialog_receive(struct sip_dialog *d, struct sip_txn *st, struct sip_msg *req)
{
	const char *method = req->method;
	unsigned cseq = (unsigned)req->cseq;

	/* 12.2.2: a lower CSeq is out of order */
	if (d->remote_cseq_set && cseq <= d->remote_cseq) {
		struct sip_reply r = { .status = 500, .reason = "CSeq Out of Order" };
		sip_txn_reply(st, &r);
		return;
	}
	d->remote_cseq = cseq;
	d->remote_cseq_set = 1;
	if (!strcmp(method, "BYE")) {
		struct sip_reply r = { .status = 200 };
		sip_txn_reply(st, &r);
		sip_dialog_terminate(d);
	} else if (!strcmp(method, "PRACK")) {
		/* RFC 3262: the INVITE usage answers it and tells the TU */
		d->ua->inv->prack(d, st, req);
		return;
	} else if (!strcmp(method, "INVITE")) {
		/* glare, or one re-INVITE at a time: answered by the usage */
		if (d->ua->inv->receive(d, st, req))
			return;
		contact_target(d, req);
	} else if (!strcmp(method, "UPDATE") || !strcmp(method, "SUBSCRIBE") || !strcmp(method, "NOTIFY")) {
		contact_target(d, req);         /* target refresh requests */
	}
	if (d->cb)
		d->cb(d->cb_arg, d, SIP_DLG_REQUEST, st, req);
	else if (!sip_txn_final_sent(st)) {
		struct sip_reply r = { .status = 200 };
		sip_txn_reply(st, &r);
	}
}

/* the UA closes: every confirmed dialog gets a BYE (sent once, now) */
void sip_dialog_bye_all(struct sip_ua *ua)
{
	size_t i;

	for (i = 0; i < ua->dialogs.nb; i++) {
		struct sip_hnode *n;
		for (n = ua->dialogs.b[i]; n; n = n->next) {
			struct sip_dialog *d = (struct sip_dialog *)n;
			struct sip_dialog_req r = { .method = "BYE" };
			struct sip_txn *ct;
			char err[128];
			if (d->state == SIP_DLG_CONFIRMED)
				sip_dialog_request(d, &r, NULL, NULL, &ct, err, sizeof err);
		}
	}
}

/* dialogs still in the table belong to nobody once the UA is gone */
void sip_dialog_free_all(struct sip_ua *ua)
{
	size_t i;

	for (i = 0; i < ua->dialogs.nb; i++)
		while (ua->dialogs.b[i])
			sip_dialog_terminate((struct sip_dialog *)ua->dialogs.b[i]);
}

const struct sip_dialog_layer sip_dialog_layer = {
	.match = sip_dialog_match,
	.ack = dialog_ack,
	.request = sip_dialog_receive,
	.txn_gone = dialog_txn_gone,
};
