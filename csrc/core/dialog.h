/*
 * dialog.h - dialogs (RFC 3261 section 12): identity, route set, remote
 * target, CSeq spaces, and the INVITE-specific duties the transactions
 * leave to them since RFC 6026 (ACK for 2xx, matching ACKs to 2xx).
 */
#ifndef SIP_DIALOG_H
#define SIP_DIALOG_H

#include "ua.h"

struct sip_dialog;

enum sip_dialog_event {
	SIP_DLG_REQUEST,        /* in-dialog request; BYE was answered 200 already */
	SIP_DLG_ACK,            /* the ACK for our 2xx arrived */
	SIP_DLG_NO_ACK,         /* our 2xx was never ACKed (64*T1) */
};
enum sip_dialog_state { SIP_DLG_EARLY, SIP_DLG_CONFIRMED, SIP_DLG_TERMINATED };

typedef void (*sip_dialog_cb)(void *arg, struct sip_dialog *d, int ev, struct sip_txn *st,
                              struct sip_msg *m);

/* UAS: from the INVITE's (or SUBSCRIBE's) server transaction, before
 * its 2xx is sent; from a NOTIFY that carries our tag, the dialog of our
 * SUBSCRIBE (then set the CSeq we are at with sip_dialog_set_local_cseq) */
int sip_dialog_new_uas(struct sip_txn *ist, struct sip_dialog **out);
/* UAC: from our INVITE's client transaction and the 2xx that answered it */
int sip_dialog_new_uac(struct sip_txn *ict, struct sip_msg *res, struct sip_dialog **out);
/* our CSeq is at least cseq: the next request of ours goes past it */
void sip_dialog_set_local_cseq(struct sip_dialog *d, unsigned cseq);
void sip_dialog_set_tu(struct sip_dialog *d, sip_dialog_cb cb, void *arg);
/* the TU's arg when cb is the dialog's TU, else NULL (whose is it?) */
void *sip_dialog_tu(const struct sip_dialog *d, sip_dialog_cb cb);
/* the dialog with these ids (Replaces, RFC 3891), or NULL */
struct sip_dialog *sip_dialog_find(struct sip_ua *ua, const char *call_id, const char *ltag,
                                   const char *rtag);
/* later requests in this dialog get 481; the object stays until freed */
void sip_dialog_terminate(struct sip_dialog *d);
void sip_dialog_free(struct sip_dialog *d);

int sip_dialog_state(const struct sip_dialog *d);
const char *sip_dialog_call_id(const struct sip_dialog *d);
const char *sip_dialog_local_tag(const struct sip_dialog *d);
const char *sip_dialog_remote_tag(const struct sip_dialog *d);
const char *sip_dialog_remote_target(const struct sip_dialog *d);
const char *sip_dialog_local_uri(const struct sip_dialog *d);
const char *sip_dialog_remote_uri(const struct sip_dialog *d);
const char *sip_dialog_contact(const struct sip_dialog *d);
/* the route set as "Route: ...\r\n" lines, empty when none */
const char *sip_dialog_routes(const struct sip_dialog *d);

/* UAS: a 2xx to an INVITE of this dialog was sent on st; wait for ACK */
void sip_dialog_answered(struct sip_dialog *d, struct sip_txn *st);
/* UAC: ACK the 2xx res (again for a retransmission of it) */
int sip_dialog_ack(struct sip_dialog *d, struct sip_msg *res, const char *body, size_t blen,
                   const char *ctype);

/* a request within the dialog; INVITE (re-INVITE) 2xx are ACKed here.
 * cb gets provisional and final responses like sip_ua_request's. */
struct sip_dialog_req {
	const char *method;
	const char *headers;
	const char *body;
	size_t body_len;
	const char *content_type;
	const char *contact;            /* a new Contact of ours (target refresh) */
};
int sip_dialog_request(struct sip_dialog *d, const struct sip_dialog_req *r,
                       sip_response_cb cb, void *arg, struct sip_txn **out,
                       char *err, size_t errlen);
/* 1 while our re-INVITE waits for its final response */
int sip_dialog_reinvite_pending(const struct sip_dialog *d);

/* CANCEL for a pending INVITE (sent once a provisional has arrived) */
int sip_txn_cancel(struct sip_txn *ict);

#endif
