/*
 * dialog.h - dialogs (RFC 3261 section 12): identity, route set, remote
 * target, CSeq spaces, matching; their usages sit on top (the INVITE
 * usage: dialog_invite.h).
 */
#ifndef SIP_DIALOG_H
#define SIP_DIALOG_H

#include "ua.h"

struct sip_dialog;

enum sip_dialog_event {
	SIP_DLG_REQUEST,        /* in-dialog request; BYE was answered 200 already */
	SIP_DLG_ACK,            /* the ACK for our 2xx arrived */
	SIP_DLG_NO_ACK,         /* our 2xx was never ACKed (64*T1) */
	SIP_DLG_PRACK,          /* the PRACK of our reliable 1xx (answered 200 already) */
	SIP_DLG_NO_PRACK,       /* our reliable 1xx was never PRACKed (64*T1) */
};
enum sip_dialog_state { SIP_DLG_EARLY, SIP_DLG_CONFIRMED, SIP_DLG_TERMINATED };

typedef void (*sip_dialog_cb)(void *arg, struct sip_dialog *d, int ev, struct sip_txn *st,
                              struct sip_msg *m);

/* UAS: from the INVITE's (or SUBSCRIBE's) server transaction, before
 * its 2xx or a reliable 18x is sent (an INVITE's is early until its 2xx);
 * from a NOTIFY that carries our tag, the dialog of our SUBSCRIBE (then
 * set the CSeq we are at with sip_dialog_set_local_cseq) */
int sip_dialog_new_uas(struct sip_txn *ist, struct sip_dialog **out);
/* UAC: from our INVITE's client transaction and the 2xx that answered
 * it, or the reliable 1xx that makes it early (RFC 3262) */
int sip_dialog_new_uac(struct sip_txn *ict, struct sip_msg *res, struct sip_dialog **out);
/* an early dialog is confirmed: as UAC by the 2xx res (its route set
 * and target recomputed, 13.2.2.4), as UAS (res NULL) by our 2xx */
int sip_dialog_confirm(struct sip_dialog *d, struct sip_msg *res);
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

/* a request within the dialog; an INVITE (re-INVITE) goes to the INVITE
 * usage, which ACKs its 2xx. cb gets provisional and final responses
 * like sip_ua_request's. */
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

/* CANCEL for a pending INVITE (sent once a provisional has arrived) */
int sip_txn_cancel(struct sip_txn *ict);

/* For the usages (dialog_invite.c) */
struct sip_outreq;
struct sip_invite;
/* the next request (CSeq + 1): 0 with o built, 1 when its transaction
 * exists already (its target is looked up first: *out set, cb/arg its TU) */
int sip_dialog_next(struct sip_dialog *d, const struct sip_dialog_req *r, sip_response_cb cb,
                    void *arg, struct sip_txn **out, struct sip_outreq *o, char *err, size_t errlen);
/* an ACK with the given CSeq; -EWOULDBLOCK while its target is looked up */
int sip_dialog_build_ack(struct sip_dialog *d, unsigned cseq, const struct sip_dialog_req *r,
                         struct sip_outreq *o, char *err, size_t errlen);
/* the INVITE usage's slot in the dialog (NULL until it is used) */
struct sip_invite **sip_dialog_invite(struct sip_dialog *d);
struct sip_ua *sip_dialog_ua(const struct sip_dialog *d);
/* the remote target from m's Contact (12.2.1.2, 12.2.2) */
int sip_dialog_target_refresh(struct sip_dialog *d, struct sip_msg *m);
/* tell the dialog's TU (sip_dialog_set_tu) of ev */
void sip_dialog_tell(struct sip_dialog *d, int ev, struct sip_txn *st, struct sip_msg *m);

#endif
