/*
 * dialog_invite.h - the INVITE usage of a dialog (dialog_invite.c): 2xx
 * and ACK (RFC 6026), re-INVITEs both ways, reliable provisional
 * responses and PRACK (RFC 3262). The dialog layer calls it through
 * ua->inv; the TU (calls) through the functions below.
 */
#ifndef SIP_DIALOG_INVITE_H
#define SIP_DIALOG_INVITE_H

#include "dialog.h"

/* UAS: a 2xx to an INVITE of this dialog was sent on st; wait for ACK */
void sip_dialog_answered(struct sip_dialog *d, struct sip_txn *st);
/* UAC: ACK the 2xx res (again for a retransmission of it) */
int sip_dialog_ack(struct sip_dialog *d, struct sip_msg *res, const char *body, size_t blen,
                   const char *ctype);
/* 1 while our re-INVITE waits for its final response */
int sip_dialog_reinvite_pending(const struct sip_dialog *d);

/* RFC 3262. UAS: r (101..199) goes on st, the INVITE's transaction of
 * this early dialog, with Require: 100rel and the next RSeq (random
 * start), and again (T1 doubling up to T2) until its PRACK, which gets
 * 200 and reaches the TU (SIP_DLG_PRACK); after 64*T1 without one the TU
 * hears SIP_DLG_NO_PRACK and answers the INVITE 5xx. -EBUSY while an
 * earlier one waits for its PRACK. Our 2xx stops the resends. */
int sip_dialog_reliable(struct sip_dialog *d, struct sip_txn *st, const struct sip_reply *r);
/* UAC: 1 when res is a reliable provisional (Require: 100rel, RSeq) */
int sip_msg_reliable(const struct sip_msg *res);
/* UAC: 1 when the reliable provisional res is the next of this early
 * dialog (the first, or RSeq one above the last): PRACK it; 0 for a copy
 * or one out of order, which is ignored (RFC 3262 4) */
int sip_dialog_rseq_next(struct sip_dialog *d, const struct sip_msg *res);
/* UAC: PRACK res (RAck: its RSeq, CSeq number and method) in the dialog,
 * with body when it answers res's offer; nobody waits for its answer */
int sip_dialog_prack(struct sip_dialog *d, const struct sip_msg *res, const char *body, size_t blen,
                     const char *ctype);

/* what the dialog layer calls (ua->inv) */
struct sip_invite_usage {
	/* our re-INVITE */
	int (*request)(struct sip_dialog *d, const struct sip_dialog_req *r, sip_response_cb cb,
	               void *arg, struct sip_txn **out, char *err, size_t errlen);
	/* theirs: 1 when answered here (491, 500), else the TU answers */
	int (*receive)(struct sip_dialog *d, struct sip_txn *st, struct sip_msg *req);
	/* the ACK for a 2xx of ours */
	void (*ack)(struct sip_dialog *d, struct sip_msg *ack);
	/* a PRACK (RFC 3262): answered here, 200 or 481 */
	void (*prack)(struct sip_dialog *d, struct sip_txn *st, struct sip_msg *req);
	/* a transaction it watched (t->dlg) ended */
	void (*txn_gone)(struct sip_dialog *d, struct sip_txn *t);
	/* the dialog goes */
	void (*free)(struct sip_dialog *d);
};
extern const struct sip_invite_usage sip_invite_usage;

#endif
