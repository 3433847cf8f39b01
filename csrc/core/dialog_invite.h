/*
 * dialog_invite.h - the INVITE usage of a dialog (dialog_invite.c): 2xx
 * and ACK (RFC 6026), re-INVITEs both ways. The dialog layer calls it
 * through ua->inv; the TU (calls) through the functions below.
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

/* what the dialog layer calls (ua->inv) */
struct sip_invite_usage {
	/* our re-INVITE */
	int (*request)(struct sip_dialog *d, const struct sip_dialog_req *r, sip_response_cb cb,
	               void *arg, struct sip_txn **out, char *err, size_t errlen);
	/* theirs: 1 when answered here (491, 500), else the TU answers */
	int (*receive)(struct sip_dialog *d, struct sip_txn *st, struct sip_msg *req);
	/* the ACK for a 2xx of ours */
	void (*ack)(struct sip_dialog *d, struct sip_msg *ack);
	/* a transaction it watched (t->dlg) ended */
	void (*txn_gone)(struct sip_dialog *d, struct sip_txn *t);
	/* the dialog goes */
	void (*free)(struct sip_dialog *d);
};
extern const struct sip_invite_usage sip_invite_usage;

#endif
