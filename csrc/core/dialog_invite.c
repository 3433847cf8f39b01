/*
 * dialog_invite.c - the INVITE usage of a dialog: what RFC 6026 gives the
 * TU (the UAC ACKs every 2xx, retransmitted or forked; the UAS matches
 * the ACK to its 2xx and hears when none came), re-INVITEs both ways
 * (14.1 glare, one at a time, the ACKs of an older one's 2xx copies),
 * reliable provisional responses and their PRACKs both ways (RFC 3262).
 * Its state is allocated the first time a dialog needs it, so the
 * dialogs of other usages (subscriptions) carry none. The dialog layer
 * reaches it through ua->inv, set when the UA is made.
 */
#define _GNU_SOURCE
#include "core.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/rand.h>

struct sip_invite {
	struct sip_txn *invite_st;      /* UAS: 2xx sent, ACK awaited */
	unsigned ack_cseq;              /* UAC: CSeq of the last ACKed INVITE */
	char *ack;                      /* UAC: that ACK's text, resent per 2xx */
	size_t acklen;
	int ack_proto;
	struct sip_addr ack_dst;
	struct sip_listener *ack_lst;
	struct sip_txn *reinvite_ct;    /* our re-INVITE in progress */
	struct sip_txn *old_reinvite_ct; /* the one before, in Accepted: its 2xx copies get ACKs */
	struct sip_txn *reinvite_st;    /* their re-INVITE, until answered */
	sip_response_cb ri_cb;
	void *ri_arg;
	/* UAS, RFC 3262: our last reliable provisional, resent on prov_st
	 * (the INVITE's transaction) until its PRACK or prov_due */
	unsigned long rseq;             /* its RSeq; 0 before the first */
	unsigned long prov_cseq;        /* the INVITE's CSeq, for RAck */
	unsigned prov_pending : 1;      /* no PRACK for it yet */
	unsigned prov_armed : 1;        /* prov_w runs */
	struct sip_txn *prov_st;
	char *prov;
	size_t provlen;
	double prov_interval, prov_due;
	ev_timer prov_w;
	/* UAC: the RSeq of the last reliable provisional PRACKed, in order */
	unsigned long rseq_in;
	unsigned rseq_in_set : 1;
};

static void prov_cb(struct ev_loop *loop, ev_timer *w, int revents);

/* the usage's state, made on first use; NULL only when out of memory */
static struct sip_invite *usage(struct sip_dialog *d)
{
	struct sip_invite **slot = sip_dialog_invite(d);

	if (!*slot) {
		*slot = calloc(1, sizeof **slot);
		if (*slot) {
			ev_init(&(*slot)->prov_w, prov_cb);
			(*slot)->prov_w.data = d;
		}
	}
	return *slot;
}

static struct sip_invite *usage_if(const struct sip_dialog *d)
{
	return *sip_dialog_invite((struct sip_dialog *)d);
}

int sip_dialog_ack(struct sip_dialog *d, struct sip_msg *res, const char *body, size_t blen,
                   const char *ctype)
{
	struct sip_invite *u = usage(d);
	unsigned cseq = (unsigned)res->cseq;
	struct sip_dialog_req r = { .method = "ACK", .body = body, .body_len = blen,
	                            .content_type = ctype };
	struct sip_outreq o;
	char err[128];
	int rc;

	if (!u)
		return -ENOMEM;
	if (!u->ack || u->ack_cseq != cseq) {
		rc = sip_dialog_build_ack(d, cseq, &r, &o, err, sizeof err);
		if (rc == -EWOULDBLOCK) {
			/* its target is being looked up: the 2xx comes again
			 * (13.3.1.4) and finds the answer in the cache */
			SIP_LOGD(sip_dialog_ua(d)->env, "ACK waits for the 2xx again: %s", err);
			return 0;
		}
		if (rc)
			return rc;
		sip_msg_unref(o.msg);
		free(u->ack);
		u->ack = o.text;
		u->acklen = o.len;
		u->ack_cseq = cseq;
		u->ack_proto = o.proto;
		u->ack_dst = o.dst;
		u->ack_lst = o.lst;
	}
	return sip_ua_send_stateless(sip_dialog_ua(d), u->ack_proto, &u->ack_dst, u->ack_lst, NULL,
	                             u->ack, u->acklen);
}

/* responses to our re-INVITE: the dialog ACKs each 2xx */
static void reinvite_cb(void *arg, struct sip_txn *ct, struct sip_msg *res, const char *err)
{
	struct sip_dialog *d = arg;
	struct sip_invite *u = usage_if(d);
	sip_response_cb cb = u->ri_cb;
	void *cbarg = u->ri_arg;

	if (res && sip_msg_status(res) >= 200 && sip_msg_status(res) < 300) {
		sip_dialog_target_refresh(d, res);      /* 12.2.1.2 */
		sip_dialog_ack(d, res, NULL, 0, NULL);
	}
	if (!res || sip_msg_status(res) >= 200) {
		u->ri_cb = NULL;
		u->ri_arg = NULL;
		if (!res || sip_msg_status(res) >= 300) {
			ct->dlg = NULL;
			u->reinvite_ct = NULL;
		}
	}
	if (cb)
		cb(cbarg, ct, res, err);
	/* the TU, whose wait is over, may have detached the transaction; the
	 * copies of this 2xx still need the dialog's ACK (13.2.2.4) */
	if (res && sip_msg_status(res) >= 200 && sip_msg_status(res) < 300 && ct->dlg == d && !ct->cb) {
		ct->cb = reinvite_cb;
		ct->cb_arg = d;
	}
}

/* a copy of an older re-INVITE's 2xx, after the next one went out: it is
 * ACKed again all the same (13.2.2.4), and nobody else hears of it */
static void old_reinvite_cb(void *arg, struct sip_txn *ct, struct sip_msg *res, const char *err)
{
	struct sip_dialog *d = arg;

	(void)ct; (void)err;
	if (res && sip_msg_status(res) >= 200 && sip_msg_status(res) < 300)
		sip_dialog_ack(d, res, NULL, 0, NULL);
}

/* our re-INVITE (sip_dialog_request with method INVITE) */
static int invite_request(struct sip_dialog *d, const struct sip_dialog_req *r, sip_response_cb cb,
                          void *arg, struct sip_txn **out, char *err, size_t errlen)
{
	struct sip_invite *u = usage(d);
	struct sip_outreq o;
	int rc;

	if (!u) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	if (u->ri_cb && sip_dialog_state(d) != SIP_DLG_TERMINATED) {
		snprintf(err, errlen, "491 Request Pending");
		return -EBUSY;
	}
	rc = sip_dialog_next(d, r, reinvite_cb, d, out, &o, err, errlen);
	if (rc < 0)
		return rc;
	if (u->reinvite_ct) {
		/* an older re-INVITE lingers in Accepted: copies of its 2xx
		 * still get their ACK; the one before it is forgotten */
		if (u->old_reinvite_ct) {
			u->old_reinvite_ct->dlg = NULL;
			sip_txn_detach(u->old_reinvite_ct);
		}
		u->old_reinvite_ct = u->reinvite_ct;
		u->old_reinvite_ct->cb = old_reinvite_cb;
		u->old_reinvite_ct->cb_arg = d;
		u->reinvite_ct = NULL;
	}
	u->ri_cb = cb;
	u->ri_arg = arg;
	/* rc 1: the transaction is made (*out), waiting for a DNS lookup */
	if (rc != 1)
		rc = sip_txn_new_client(sip_dialog_ua(d), o.msg, o.text, o.len, o.proto, &o.dst, o.lst,
		                        o.tls_name, reinvite_cb, d, out);
	else
		rc = 0;
	if (rc) {
		u->ri_cb = NULL;
		u->ri_arg = NULL;
		sip_send_error(err, errlen, rc, o.tls_name);
	} else {
		u->reinvite_ct = *out;
		(*out)->dlg = d;
	}
	return rc;
}

int sip_dialog_reinvite_pending(const struct sip_dialog *d)
{
	const struct sip_invite *u = usage_if(d);

	return u && u->ri_cb != NULL;
}

static void prov_forget(struct sip_dialog *d, struct sip_invite *u);

void sip_dialog_answered(struct sip_dialog *d, struct sip_txn *st)
{
	struct sip_invite *u = usage(d);

	sip_dialog_confirm(d, NULL);
	if (!u)
		return;         /* no memory: the ACK is absorbed, no NO_ACK */
	/* the 2xx ends the resends of a reliable 1xx; its PRACK, if it
	 * still comes, gets 200 all the same */
	if (u->prov_st == st)
		prov_forget(d, u);
	if (u->invite_st && u->invite_st != st)
		u->invite_st->dlg = NULL;
	if (u->reinvite_st == st)
		u->reinvite_st = NULL;
	u->invite_st = st;
	st->dlg = d;
}

static void invite_ack(struct sip_dialog *d, struct sip_msg *ack)
{
	struct sip_invite *u = usage_if(d);
	struct sip_txn *st = u->invite_st;

	if (st && st->cseq == (unsigned)ack->cseq) {
		sip_txn_ack_seen(st);
		st->dlg = NULL;
		u->invite_st = NULL;
		sip_txn_retire(st);     /* it only absorbs INVITE retransmissions now */
		sip_dialog_tell(d, SIP_DLG_ACK, NULL, ack);
		return;
	}
	/* a retransmitted ACK, or one for a 2xx we never sent: absorbed */
}

static void invite_txn_gone(struct sip_dialog *d, struct sip_txn *t)
{
	struct sip_invite *u = usage_if(d);

	if (t == u->invite_st) {
		u->invite_st = NULL;
		/* Timer L ran out with the 2xx still unacknowledged (13.3.1.4) */
		if (t->last_status >= 200 && t->last_status < 300)
			sip_dialog_tell(d, SIP_DLG_NO_ACK, NULL, NULL);
	}
	if (t == u->reinvite_ct)
		u->reinvite_ct = NULL;
	if (t == u->old_reinvite_ct)
		u->old_reinvite_ct = NULL;
	if (t == u->reinvite_st) {
		u->reinvite_st = NULL;
		t->dlg = NULL;
	}
	if (t == u->prov_st) {
		/* the INVITE was refused (or its transaction went): a PRACK
		 * coming now matches nothing (481) */
		prov_forget(d, u);
		u->prov_pending = 0;
	}
}

/* their re-INVITE: 1 when answered here (glare 491, or 500 while theirs
 * is still open), else it is the dialog's TU's to answer */
static int invite_receive(struct sip_dialog *d, struct sip_txn *st, struct sip_msg *req)
{
	struct sip_invite *u = usage(d);

	(void)req;
	if (u && u->ri_cb) {
		/* glare: both sides re-INVITE at once (14.1) */
		struct sip_reply r = { .status = 491 };
		sip_txn_reply(st, &r);
		return 1;
	}
	if (!u || u->reinvite_st) {
		/* 14.2: one re-INVITE at a time */
		struct sip_reply r = { .status = 500, .headers = "Retry-After: 1\r\n" };
		sip_txn_reply(st, &r);
		return 1;
	}
	u->reinvite_st = st;
	st->dlg = d;
	return 0;
}

/* the dialog goes: the transactions it watched forget it */
static void invite_free(struct sip_dialog *d)
{
	struct sip_invite **slot = sip_dialog_invite(d), *u = *slot;

	if (!u)
		return;
	if (u->invite_st)
		u->invite_st->dlg = NULL;
	if (u->reinvite_ct) {
		u->reinvite_ct->dlg = NULL;
		sip_txn_detach(u->reinvite_ct);
	}
	if (u->old_reinvite_ct) {
		u->old_reinvite_ct->dlg = NULL;
		sip_txn_detach(u->old_reinvite_ct);
	}
	if (u->reinvite_st)
		u->reinvite_st->dlg = NULL;
	prov_forget(d, u);
	free(u->ack);
	free(u);
	*slot = NULL;
}

/* ---- RFC 3262: reliable provisional responses and PRACK ---- */

/* the weak timer of the resends: a 1xx waiting for its PRACK does not
 * keep a script running by itself (the call's waits do) */
static void prov_arm(struct sip_dialog *d, struct sip_invite *u, double after)
{
	struct ev_loop *loop = sip_dialog_ua(d)->env->loop;

	ev_timer_set(&u->prov_w, after > 0. ? after : 0., 0.);
	ev_timer_start(loop, &u->prov_w);
	ev_unref(loop);
	u->prov_armed = 1;
}

static void prov_stop(struct sip_dialog *d, struct sip_invite *u)
{
	struct ev_loop *loop = sip_dialog_ua(d)->env->loop;

	/* an expired timer whose callback has not run yet is pending */
	if (u->prov_armed && loop && (ev_is_active(&u->prov_w) || ev_is_pending(&u->prov_w))) {
		ev_ref(loop);
		ev_timer_stop(loop, &u->prov_w);
	}
	u->prov_armed = 0;
}

/* no more resends: the timer, the text and the transaction go (RSeq and
 * prov_pending stay, for a PRACK still on its way) */
static void prov_forget(struct sip_dialog *d, struct sip_invite *u)
{
	prov_stop(d, u);
	free(u->prov);
	u->prov = NULL;
	u->provlen = 0;
	if (u->prov_st && u->prov_st != u->invite_st)
		u->prov_st->dlg = NULL;
	u->prov_st = NULL;
}

static void prov_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct sip_dialog *d = w->data;
	struct sip_invite *u = usage_if(d);
	struct sip_ua *ua = sip_dialog_ua(d);
	double left = u->prov_due - ev_now(loop);

	(void)revents;
	ev_ref(loop);           /* the fired one-shot dropped the loop's count */
	u->prov_armed = 0;
	if (left <= 1e-6) {
		/* 3: 64*T1 without a PRACK: the TU answers the INVITE 5xx, and
		 * a PRACK after that matches nothing */
		prov_forget(d, u);
		u->prov_pending = 0;
		sip_dialog_tell(d, SIP_DLG_NO_PRACK, NULL, NULL);
		return;         /* the TU may have freed d */
	}
	if (u->prov_st) {       /* else no copy could be kept: only the deadline runs */
		ua->retransmits++;
		sip_txn_send(u->prov_st, u->prov, u->provlen);
	}
	u->prov_interval *= 2;
	if (u->prov_interval > ua->cfg.t2)
		u->prov_interval = ua->cfg.t2;
	prov_arm(d, u, u->prov_interval < left ? u->prov_interval : left);
}

int sip_dialog_reliable(struct sip_dialog *d, struct sip_txn *st, const struct sip_reply *r)
{
	struct sip_invite *u = usage(d);
	struct sip_ua *ua = sip_dialog_ua(d);
	struct sip_reply rr = *r;
	struct sip_buf h;
	unsigned long rseq;
	char mem[512];
	int rc;

	if (!u)
		return -ENOMEM;
	if (r->status <= 100 || r->status >= 200 || st->kind != TXN_IST)
		return -EINVAL;
	if (u->prov_pending)
		return -EBUSY;  /* 3: one at a time, each after the last's PRACK */
	if (u->rseq) {
		rseq = u->rseq + 1;
	} else {
		/* 3: a random start, kept below 2**31 - 1 with room to count */
		unsigned char b[4];
		if (RAND_bytes(b, sizeof b) != 1)
			return -EIO;
		rseq = (((unsigned long)b[0] << 24 | (unsigned long)b[1] << 16 | (unsigned long)b[2] << 8 | b[3])
		        & 0x3fffffffUL) + 1;
	}
	sip_buf_init_on(&h, mem, sizeof mem);
	if (r->headers)
		sip_buf_adds(&h, r->headers);
	sip_buf_adds(&h, "Require: 100rel\r\nRSeq: ");
	sip_buf_addu(&h, rseq);
	sip_buf_adds(&h, "\r\n");
	if (h.oom) {
		sip_buf_free(&h);
		return -ENOMEM;
	}
	rr.headers = h.p;
	rc = sip_txn_reply(st, &rr);
	sip_buf_free(&h);
	if (rc == -EALREADY || rc == -ENOMEM)
		return rc;      /* nothing went; after a send error the resends try again */
	u->rseq = rseq;
	u->prov_cseq = st->cseq;
	u->prov_pending = 1;
	prov_forget(d, u);
	/* our own copy: a later unreliable 1xx replaces the transaction's */
	u->prov = malloc(st->outlen);
	if (u->prov) {
		memcpy(u->prov, st->out, st->outlen);
		u->provlen = st->outlen;
		u->prov_st = st;
		st->dlg = d;    /* the transaction's end stops the resends */
	}
	u->prov_interval = ua->cfg.t1;
	u->prov_due = ev_now(ua->env->loop) + 64 * ua->cfg.t1;
	prov_arm(d, u, u->prov_interval);
	return rc;
}

/* "RAck: 776656 1 INVITE" (7.2) */
static int rack_read(const struct sip_msg *req, unsigned long *rseq, unsigned long *cseq,
                     char *method, size_t mlen)
{
	char buf[128], fmt[32];
	size_t n;
	const char *v = sip_msg_header(req, "RAck", 0, &n);

	if (!v || n >= sizeof buf || mlen < 2)
		return 0;
	memcpy(buf, v, n);
	buf[n] = '\0';
	snprintf(fmt, sizeof fmt, "%%lu %%lu %%%zus", mlen - 1);
	return sscanf(buf, fmt, rseq, cseq, method) == 3;
}

static void invite_prack(struct sip_dialog *d, struct sip_txn *st, struct sip_msg *req)
{
	struct sip_invite *u = usage_if(d);
	struct sip_reply r = { .status = 481 };
	unsigned long rseq, cseq;
	char method[16];

	/* 3: a PRACK for no reliable 1xx waiting for one: 481 */
	if (u && u->prov_pending && rack_read(req, &rseq, &cseq, method, sizeof method) &&
	    rseq == u->rseq && cseq == u->prov_cseq && !strcmp(method, "INVITE")) {
		prov_forget(d, u);
		u->prov_pending = 0;
		r.status = 200;
		sip_txn_reply(st, &r);
		sip_dialog_tell(d, SIP_DLG_PRACK, st, req);
		return;
	}
	sip_txn_reply(st, &r);
}

static int rseq_read(const struct sip_msg *m, unsigned long *v)
{
	size_t n, i;
	const char *s = sip_msg_header(m, "RSeq", 0, &n);
	unsigned long x = 0;

	/* 7.1: 1*DIGIT, 1 to 2**32 - 1 */
	if (!s || n == 0 || n > 10)
		return 0;
	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return 0;
		x = x * 10 + (unsigned long)(s[i] - '0');
	}
	if (x == 0 || x > 0xffffffffUL)
		return 0;
	*v = x;
	return 1;
}

int sip_msg_reliable(const struct sip_msg *res)
{
	unsigned long v;
	int status = sip_msg_status(res);

	return status > 100 && status < 200 && sip_msg_option(res, "Require", "100rel") && rseq_read(res, &v);
}

int sip_dialog_rseq_next(struct sip_dialog *d, const struct sip_msg *res)
{
	struct sip_invite *u = usage(d);
	unsigned long v;

	if (!u || !rseq_read(res, &v))
		return 0;
	if (u->rseq_in_set && v != u->rseq_in + 1)
		return 0;
	u->rseq_in = v;
	u->rseq_in_set = 1;
	return 1;
}

int sip_dialog_prack(struct sip_dialog *d, const struct sip_msg *res, const char *body, size_t blen,
                     const char *ctype)
{
	char hdr[96], err[128];
	struct sip_dialog_req r = { .method = "PRACK", .headers = hdr, .body = body, .body_len = blen,
	                            .content_type = ctype };
	struct sip_txn *ct;
	unsigned long v;

	if (!rseq_read(res, &v))
		return -EINVAL;
	/* 7.2: the RSeq, then the CSeq number and method of the response */
	snprintf(hdr, sizeof hdr, "RAck: %lu %lu %s\r\n", v, (unsigned long)res->cseq, sip_msg_method(res));
	return sip_dialog_request(d, &r, NULL, NULL, &ct, err, sizeof err);
}

const struct sip_invite_usage sip_invite_usage = {
	.request = invite_request,
	.receive = invite_receive,
	.ack = invite_ack,
	.prack = invite_prack,
	.txn_gone = invite_txn_gone,
	.free = invite_free,
};
