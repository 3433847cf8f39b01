/*
 * reply.c - responses: their text (8.2.6, 12.1.1), the reply a
 * transaction user gives on a server transaction, and the ones sent
 * outside any transaction (errors for bad requests, the overload 503).
 */
#define _GNU_SOURCE
#include "core.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *sip_reason_phrase(int s)
{
	switch (s) {
	case 100: return "Trying";
	case 180: return "Ringing";
	case 181: return "Call Is Being Forwarded";
	case 182: return "Queued";
	case 183: return "Session Progress";
	case 200: return "OK";
	case 202: return "Accepted";
	case 204: return "No Notification";
	case 300: return "Multiple Choices";
	case 301: return "Moved Permanently";
	case 302: return "Moved Temporarily";
	case 305: return "Use Proxy";
	case 380: return "Alternative Service";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 402: return "Payment Required";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 406: return "Not Acceptable";
	case 407: return "Proxy Authentication Required";
	case 408: return "Request Timeout";
	case 410: return "Gone";
	case 413: return "Request Entity Too Large";
	case 414: return "Request-URI Too Long";
	case 415: return "Unsupported Media Type";
	case 416: return "Unsupported URI Scheme";
	case 420: return "Bad Extension";
	case 421: return "Extension Required";
	case 423: return "Interval Too Brief";
	case 480: return "Temporarily Unavailable";
	case 481: return "Call/Transaction Does Not Exist";
	case 482: return "Loop Detected";
	case 483: return "Too Many Hops";
	case 484: return "Address Incomplete";
	case 485: return "Ambiguous";
	case 486: return "Busy Here";
	case 487: return "Request Terminated";
	case 488: return "Not Acceptable Here";
	case 489: return "Bad Event";
	case 491: return "Request Pending";
	case 493: return "Undecipherable";
	case 500: return "Server Internal Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Server Time-out";
	case 505: return "Version Not Supported";
	case 513: return "Message Too Large";
	case 600: return "Busy Everywhere";
	case 603: return "Decline";
	case 604: return "Does Not Exist Anywhere";
	case 606: return "Not Acceptable";
	default:
		if (s < 200) return "Session Progress";
		if (s < 300) return "OK";
		if (s < 400) return "Redirect";
		if (s < 500) return "Client Error";
		if (s < 600) return "Server Error";
		return "Global Failure";
	}
}

/* The response text for a request (8.2.6): Vias from the parsed request
 * (they carry received/rport), From, Call-ID and CSeq copied as received,
 * To with our tag. */
int sip_response_build(struct sip_ua *ua, struct sip_msg *req, const char *to_tag,
                       const struct sip_reply *r, char **text, size_t *len)
{
	struct sip_buf b;
	const char *v;
	char mem[1024];
	size_t n;
	int i;

	/* built on the stack, kept at its exact size: a final response
	 * lingers with its transaction (Timer J, 32 s) */
	sip_buf_init_on(&b, mem, sizeof mem);
	sip_buf_adds(&b, "SIP/2.0 ");
	sip_buf_addu(&b, (unsigned long)r->status);
	sip_buf_adds(&b, " ");
	sip_buf_adds(&b, r->reason ? r->reason : sip_reason_phrase(r->status));
	sip_buf_adds(&b, "\r\n");
	if ((v = sip_msg_top_via(req, &n)))
		sip_buf_header(&b, "Via", v, n);
	for (i = 1; (v = sip_msg_hdr(req, SIP_H_VIA, i, &n)); i++)
		sip_buf_header(&b, "Via", v, n);
	if ((v = sip_msg_hdr(req, SIP_H_FROM, 0, &n)))
		sip_buf_header(&b, "From", v, n);
	if ((v = sip_msg_hdr(req, SIP_H_TO, 0, &n))) {
		sip_buf_adds(&b, "To: ");
		sip_buf_add(&b, v, n);
		if (to_tag && to_tag[0] && r->status > 100 && !req->to_tag) {
			sip_buf_adds(&b, ";tag=");
			sip_buf_adds(&b, to_tag);
		}
		sip_buf_adds(&b, "\r\n");
	}
	/* 12.1.1: a response that may establish a dialog carries the
	 * request's Record-Route, in order */
	if (r->status > 100 && r->status < 300 && req->request &&
	    (!strcmp(req->method, "INVITE") || !strcmp(req->method, "SUBSCRIBE") ||
	     !strcmp(req->method, "REFER"))) {
		for (i = 0; (v = sip_msg_hdr(req, SIP_H_RECORD_ROUTE, i, &n)); i++)
			sip_buf_header(&b, "Record-Route", v, n);
	}
	if ((v = sip_msg_hdr(req, SIP_H_CALL_ID, 0, &n)))
		sip_buf_header(&b, "Call-ID", v, n);
	if ((v = sip_msg_hdr(req, SIP_H_CSEQ, 0, &n)))
		sip_buf_header(&b, "CSeq", v, n);
	if (ua->cfg.user_agent[0])
		sip_buf_header(&b, "Server", ua->cfg.user_agent, strlen(ua->cfg.user_agent));
	if (r->headers)
		sip_buf_adds(&b, r->headers);
	if (r->body_len && r->content_type)
		sip_buf_header(&b, "Content-Type", r->content_type, strlen(r->content_type));
	sip_buf_adds(&b, "Content-Length: ");
	sip_buf_addu(&b, r->body_len);
	sip_buf_adds(&b, "\r\n\r\n");
	if (r->body_len)
		sip_buf_add(&b, r->body, r->body_len);
	*len = b.len;
	*text = sip_buf_take(&b);
	return *text ? 0 : -ENOMEM;
}

int sip_txn_reply(struct sip_txn *st, const struct sip_reply *r)
{
	struct sip_reply rr = *r;
	struct sip_buf h;
	char *text, hmem[512];
	size_t len;
	int rc;

	if (sip_txn_final_sent(st))
		return -EALREADY;
	sip_buf_init_on(&h, hmem, sizeof hmem);
	if (r->headers)
		sip_buf_adds(&h, r->headers);
	/* a 2xx to OPTIONS says what we allow, whoever wrote the reply */
	if (r->status >= 200 && r->status < 300 && !strcmp(st->req->method, "OPTIONS") &&
	    !sip_headers_have(r->headers, "Allow", 0)) {
		char allow[256];
		sip_buf_printf(&h, "Allow: %s\r\n", sip_ua_allow_list(st->ua, allow, sizeof allow));
	}
	/* 18x and 2xx to an INVITE carry our Contact (12.1.1), and so does
	 * a 2xx to a request that makes or refreshes a dialog: SUBSCRIBE
	 * (RFC 6665 4.2.1.1), REFER, a NOTIFY that made our subscription's */
	if (r->status > 100 && r->status < 300 && !sip_headers_have(r->headers, "Contact", 'm') &&
	    (st->kind == TXN_IST || (r->status >= 200 && (!strcmp(st->req->method, "SUBSCRIBE") ||
	     !strcmp(st->req->method, "REFER") || !strcmp(st->req->method, "NOTIFY"))))) {
		char contact[200];
		const char *ct = contact;
		if (st->dlg)
			ct = sip_dialog_contact(st->dlg);
		else
			sip_ua_contact(st->ua, st->proto, &st->req->src, sip_msg_sips(st->req),
			               contact, sizeof contact);
		sip_buf_header(&h, "Contact", ct, strlen(ct));
	}
	rr.headers = h.oom ? r->headers : h.p;
	if (!st->to_tag[0] && r->status > 100 && !st->req->to_tag)
		sip_env_token(st->ua->env, st->to_tag, 12);
	rc = sip_response_build(st->ua, st->req, st->to_tag, &rr, &text, &len);
	sip_buf_free(&h);
	if (rc)
		return rc;
	if (st->kind == TXN_IST && st->dlg && r->status >= 200 && r->status < 300)
		sip_dialog_answered(st->dlg, st);
	else if (st->kind == TXN_IST && st->dlg && r->status >= 300)
		st->ua->dl->txn_gone(st->dlg, st);     /* a refused re-INVITE frees its slot */
	return sip_txn_respond(st, r->status, text, len);
}

/* A response outside any transaction: errors for bad requests and the
 * overload 503. Sent back the way the request came. */
void sip_ua_reply_stateless(struct sip_ua *ua, struct sip_msg *req, int proto,
                            struct sip_listener *l, struct sip_conn *c,
                            const struct sip_reply *r)
{
	char *text, tag[16];
	size_t len;

	sip_env_token(ua->env, tag, 10);
	if (sip_response_build(ua, req, tag, r, &text, &len))
		return;
	if (c)
		sip_conn_send(c, text, len);
	else if (l && proto == SIP_UDP)
		sip_udp_send(l, &req->src, text, len);
	free(text);
}

const char *sip_ua_allow_list(struct sip_ua *ua, char *buf, size_t n)
{
	size_t i, off = 0;

	off += (size_t)snprintf(buf, n, "OPTIONS");
	if (sip_ua_served(ua, "INVITE"))
		off += (size_t)snprintf(buf + off, n - off, ", INVITE, ACK, CANCEL, BYE, PRACK");
	for (i = 0; i < ua->nserved && off < n; i++) {
		const char *m = ua->served[i];
		if (!strcmp(m, "OPTIONS") || !strcmp(m, "INVITE") || !strcmp(m, "ACK") ||
		    !strcmp(m, "CANCEL") || !strcmp(m, "BYE") || !strcmp(m, "PRACK") || !strcmp(m, "*"))
			continue;
		off += (size_t)snprintf(buf + off, n - off, ", %s", m);
	}
	return buf;
}
