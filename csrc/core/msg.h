/*
 * msg.h - a parsed SIP message shared by reference between the transaction
 * layer and the Lua binding. The raw bytes are kept: header lookups by
 * name and the body read them in place instead of re-serialising.
 */
#ifndef SIP_MSG_H
#define SIP_MSG_H

#include "sip_core.h"
#include "uri.h"

/* one header line of the index built at parse time */
struct sip_hdr {
	const char *name;       /* in raw, or the long form of a compact name */
	const char *v;          /* value in raw, trimmed (folded lines kept) */
	uint32_t vlen;
	uint16_t nlen;
	uint8_t id;             /* SIP_H_* for the names the core reads */
};

/*
 * Every message is read by our own parser: the start line, a header index
 * and the fields transactions and dialogs match on, as NUL-terminated
 * copies, with the syntax checks that decide 400 (From/To name-addr, URI,
 * CSeq, Via). libosip2's message parser turned every header into small
 * allocations and is not used for messages (its SDP parser is, in l_sdp.c).
 */
struct sip_msg {
	int refs;
	char *raw;              /* NUL-terminated wire text */
	size_t len;
	size_t body_off;        /* offset of the body in raw */
	size_t body_len;
	int proto;              /* transport it came in on (received messages) */
	struct sip_addr src;    /* peer address (received messages) */
	unsigned received : 1;
	unsigned request : 1;
	unsigned parsed : 1;    /* the light parse succeeded (fields below set) */
	struct sip_tls_info *tls; /* peer certificate facts, TLS only */
	int status;             /* responses */
	const char *method;     /* request method, or a response's CSeq method */
	const char *uri;        /* Request-URI as received */
	const char *version;    /* "SIP/2.0" */
	const char *reason;     /* reason phrase of a response */
	const char *call_id;
	const char *cseq_method;
	unsigned long cseq;
	const char *from_tag, *to_tag;  /* NULL without a tag */
	const char *branch;     /* top Via: branch, sent-by, received, rport */
	const char *via_host, *via_port, *via_received, *via_rport;
	size_t via1_len;        /* length of the top via-parm in the first Via value */
	struct sip_hdr *hdrs;
	int nhdrs;
	char *top_via;          /* top Via stamped with received/rport (responses) */
	void *block;            /* hdrs and the field copies, one allocation */
};

enum {
	SIP_H_OTHER, SIP_H_VIA, SIP_H_FROM, SIP_H_TO, SIP_H_CALL_ID, SIP_H_CSEQ, SIP_H_CONTACT,
	SIP_H_CONTENT_LENGTH, SIP_H_CONTENT_TYPE, SIP_H_RECORD_ROUTE, SIP_H_ROUTE,
	SIP_H_MAX_FORWARDS, SIP_H_EXPIRES, SIP_H_REQUIRE, SIP_H_ACCEPT,
};

/* parse wire bytes; on failure *why names the reason. -EPROTO: parsed
 * but invalid (missing header, bad CSeq), *out set so a 400 can be built;
 * -EINVAL: unparsable, *out NULL */
int sip_msg_parse(const char *buf, size_t len, struct sip_msg **out, const char **why);
/* take ownership of a serialised message (built by the UA) */
int sip_msg_from_text(char *text, size_t len, struct sip_msg **out);
struct sip_msg *sip_msg_ref(struct sip_msg *m);
void sip_msg_unref(struct sip_msg *m);

int sip_msg_is_request(const struct sip_msg *m);
const char *sip_msg_method(const struct sip_msg *m);  /* request method, or CSeq method of a response */
int sip_msg_status(const struct sip_msg *m);
/* the idx-th header of a known name (SIP_H_*, not SIP_H_OTHER): what
 * sip_msg_header does without working out the id from the name */
const char *sip_msg_hdr(const struct sip_msg *m, int id, int idx, size_t *vlen);
/* idx-th header line of that name (compact forms understood); value is
 * trimmed, folded lines joined by the caller's buffer rules: returns a
 * pointer into raw and its length, or NULL */
const char *sip_msg_header(const struct sip_msg *m, const char *name, int idx, size_t *vlen);
const char *sip_msg_branch(const struct sip_msg *m);
/* 1 when an option tag ("100rel") is in the lists of every header line
 * of that name (Require, Supported or its compact k), any case */
int sip_msg_option(const struct sip_msg *m, const char *name, const char *tag);
/* NULL when the header section keeps within max_headers lines of at
 * most max_line bytes each, else why not (checked before any parsing) */
const char *sip_msg_limits(const char *buf, size_t len, size_t max_headers, size_t max_line);
/* the raw text has what a response needs: Via, From, To, Call-ID, CSeq */
int sip_msg_answerable(const struct sip_msg *m);
/* a name-addr or addr-spec value (Contact, Record-Route) and its URI */
struct sip_nameaddr {
	const char *v, *uri;
	size_t n, un;
};
/* the values of every header line of that name, comma-separated ones
 * split: up to max into out; the count, or -1 when one does not read */
int sip_msg_nameaddrs(const struct sip_msg *m, const char *name, struct sip_nameaddr *out, int max);
/* the top Via value with received/rport stamped in (18.2.1, RFC 3581):
 * cached in the message; falls back to the value as received */
const char *sip_msg_top_via(struct sip_msg *m, size_t *n);

/* header name -> long form for compact names, NULL otherwise */
const char *sip_header_long_name(const char *name, size_t n);
/* 1 when a header value contains CR, LF or NUL (header injection) */
int sip_header_value_bad(const char *v, size_t n);

#endif
