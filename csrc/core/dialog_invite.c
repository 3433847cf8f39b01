/*
 * dialog_invite.c - the INVITE usage of a dialog: what RFC 6026 gives the
 * TU (the UAC ACKs every 2xx, retransmitted or forked; the UAS matches
 * the ACK to its 2xx and hears when none came), re-INVITEs both ways
 * (14.1 glare, one at a time, the ACKs of an older one's 2xx copies).
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
};

/* the usage's state, made on first use; NULL only when out of memory */
static struct sip_invite *usage(struct sip_dialog *d)
{
	struct sip_invite **slot = sip_dialog_invite(d);

	if (!*slot)
		*slot = calloc(1, sizeof **slot);
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

void sip_dialog_answered(struct sip_dialog *d, struct sip_txn *st)
{
	struct sip_invite *u = usage(d);

	if (!u)
		return;         /* no memory: the ACK is absorbed, no NO_ACK */
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
	free(u->ack);
	free(u);
	*slot = NULL;
}

const struct sip_invite_usage sip_invite_usage = {
	.request = invite_request,
	.receive = invite_receive,
	.ack = invite_ack,
	.txn_gone = invite_txn_gone,
	.free = invite_free,
};
