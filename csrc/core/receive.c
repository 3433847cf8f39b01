/*
 * receive.c - the receive path every transport hands its messages to:
 * limits, parse, 400/501/505 for what cannot be served, matching to a
 * transaction (17.1.3, 17.2.3) or a dialog, ACK and CANCEL outside
 * transactions, the UAS checks of 8.2.2, and the default answers for
 * methods nobody serves.
 */
#define _GNU_SOURCE
#include "core.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const known_methods[] = {
	"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE",
	"NOTIFY", "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE", NULL
};

/* The core answers what no handler serves: OPTIONS 200, others 405/501 */
static void default_answer(struct sip_ua *ua, struct sip_txn *st, const char *method)
{
	char allow[256], hdr[300];
	struct sip_reply r = { 0 };
	size_t i;
	int known = 0;

	for (i = 0; known_methods[i]; i++)
		if (!strcmp(known_methods[i], method))
			known = 1;
	snprintf(hdr, sizeof hdr, "Allow: %s\r\n", sip_ua_allow_list(ua, allow, sizeof allow));
	r.headers = hdr;
	if (!strcmp(method, "OPTIONS")) {
		r.status = 200;
		snprintf(hdr, sizeof hdr, "Allow: %s\r\nAccept: application/sdp\r\n", allow);
	} else if (!strcmp(method, "BYE")) {
		r.status = 481;         /* no dialog layer knows this call */
	} else {
		r.status = known ? 405 : 501;
	}
	sip_txn_reply(st, &r);
}

/* The datagram an ICMP error brings back is often cut (576 bytes), so no
 * full parse: the method, the top Via's branch and the CSeq method are
 * read from the header text, which is enough to find the transaction. */
void sip_ua_icmp_error(struct sip_ua *ua, const char *buf, size_t len, const char *why)
{
	struct sip_msg *m = NULL;
	struct sip_txn *t = NULL;
	const char *err;

	/* the datagram may come back cut short: the branch and the CSeq
	 * method are all it takes, whatever else is missing */
	sip_msg_parse(buf, len, &m, &err);
	if (m && m->request && m->branch && m->method)
		t = sip_txn_match_client(ua, m);
	sip_msg_unref(m);
	if (t)
		sip_txn_transport_error(t, why);
}

/* 1 when a media type list (Accept) takes application/sdp */
static int accepts_sdp(const char *v, size_t n)
{
	char buf[512];

	if (n >= sizeof buf)
		return 1;
	memcpy(buf, v, n);
	buf[n] = '\0';
	return strcasestr(buf, "application/sdp") || strcasestr(buf, "*/*") ||
	       strcasestr(buf, "application/*");
}

/* the option tags we support (RFC 3891 replaces, RFC 4488 norefersub,
 * RFC 3262 100rel) */
static int supported_tag(const char *t, size_t n)
{
	return (n == 8 && !strncasecmp(t, "replaces", 8)) || (n == 10 && !strncasecmp(t, "norefersub", 10)) ||
	       (n == 6 && !strncasecmp(t, "100rel", 6));
}

/* 1 with "Unsupported: ...\r\n" in out when a Require tag is not ours */
static int unsupported(const char *v, size_t n, char *out, size_t outlen)
{
	size_t i = 0, len = 0;
	int any = 0;

	while (i < n) {
		size_t s, e;
		while (i < n && (v[i] == ',' || v[i] == ' ' || v[i] == '\t'))
			i++;
		s = i;
		while (i < n && v[i] != ',' && v[i] != ' ' && v[i] != '\t')
			i++;
		e = i;
		if (e > s && !supported_tag(v + s, e - s)) {
			/* a tag is named up to 100 bytes: the first always fits */
			int w = snprintf(out + len, outlen - len, "%s%.*s", any ? ", " : "Unsupported: ",
			                 (int)(e - s > 100 ? 100 : e - s), v + s);
			if (w < 0 || (size_t)w >= outlen - len - 2)
				break;          /* the tags that fit are named */
			len += (size_t)w;
			any = 1;
		}
	}
	if (any)
		snprintf(out + len, outlen - len, "\r\n");
	return any;
}

/* The UAS checks of 8.2.2 and 8.2.3: URI scheme (416), Require (420),
 * and for INVITE the body type (415) and Accept (406). 1 when answered. */
static int uas_checks(struct sip_ua *ua, struct sip_txn *st, struct sip_msg *req)
{
	const char *v;
	struct sip_reply r = { 0 };
	char hdr[600];
	size_t n;

	(void)ua;
	if (strncasecmp(req->uri, "sip:", 4) && strncasecmp(req->uri, "sips:", 5) &&
	    strncasecmp(req->uri, "tel:", 4)) {
		r.status = 416;
	} else if ((v = sip_msg_hdr(req, SIP_H_REQUIRE, 0, &n)) && n > 0 && unsupported(v, n, hdr, sizeof hdr)) {
		r.status = 420;
		r.headers = hdr;
	} else if (!strcmp(req->method, "INVITE") && req->body_len &&
	           (v = sip_msg_hdr(req, SIP_H_CONTENT_TYPE, 0, &n)) &&
	           !(n >= 15 && !strncasecmp(v, "application/sdp", 15)) &&
	           !(n >= 10 && !strncasecmp(v, "multipart/", 10))) {
		r.status = 415;
		r.headers = "Accept: application/sdp\r\n";
	} else if (!strcmp(req->method, "INVITE") &&
	           (v = sip_msg_hdr(req, SIP_H_ACCEPT, 0, &n)) && n > 0 && !accepts_sdp(v, n)) {
		r.status = 406;
	} else {
		return 0;
	}
	sip_txn_reply(st, &r);
	return 1;
}

static void receive_request(struct sip_ua *ua, struct sip_msg *req, int proto,
                            struct sip_listener *l, struct sip_conn *c)
{
	const char *method = req->method;
	const struct sip_handler *h;
	struct sip_txn *st;
	int rc, retired;

	if (strcmp(req->version, "SIP/2.0")) {
		struct sip_reply r = { .status = 505 };
		sip_ua_drop(ua, &req->src, "unsupported SIP version");
		sip_ua_reply_stateless(ua, req, proto, l, c, &r);
		return;
	}
	st = sip_txn_match_server(ua, req, method, &retired);
	if (!strcmp(method, "ACK")) {
		struct sip_dialog *d;
		if (st && st->state == TS_COMPLETED) {
			sip_txn_ack_seen(st);   /* ACK for our non-2xx */
			return;
		}
		/* ACK for a 2xx: the dialog's business, never a transaction's */
		d = ua->dl->match(ua, req);
		if (d)
			ua->dl->ack(d, req);
		else if (!st && !retired)
			sip_ua_drop(ua, &req->src, "ACK matches no dialog");
		return;
	}
	if (st) {
		sip_txn_server_retransmit(st, req);
		return;
	}
	if (retired)
		return;         /* its response went again */
	if ((int)(ua->nserver + ua->ntombs) >= ua->cfg.max_server_txns) {
		struct sip_reply r = { .status = 503, .headers = "Retry-After: 5\r\n" };
		sip_ua_drop(ua, &req->src, "server transaction limit reached: 503");
		sip_ua_reply_stateless(ua, req, proto, l, c, &r);
		return;
	}
	rc = sip_txn_new_server(ua, req, proto, l, c, &st);
	if (rc)
		return;
	if (strcmp(method, "CANCEL") && uas_checks(ua, st, req))
		return;
	if ((req->to_tag && strcmp(method, "CANCEL")) || !strcmp(method, "PRACK")) {
		/* a To tag: a request within a dialog (12.2.2); a PRACK is
		 * never outside one (RFC 3262 3: else 481) */
		struct sip_dialog *d = ua->dl->match(ua, req);
		if (d) {
			ua->dl->request(d, st, req);
		} else if (ua->orphans.fn && !strcmp(method, "NOTIFY")) {
			ua->orphans.fn(ua->orphans.arg, ua, st, req);
		} else {
			struct sip_reply r = { .status = 481 };
			sip_txn_reply(st, &r);
		}
		return;
	}
	if (!strcmp(method, "INVITE"))
		sip_txn_trying_owed(st);
	if (!strcmp(method, "CANCEL")) {
		/* 9.2: the CANCEL matches the INVITE's transaction */
		struct sip_txn *ist = sip_txn_match_server(ua, req, "INVITE", &retired);
		/* a retired INVITE transaction answered already: nothing to
		 * cancel, but it exists (9.2) */
		struct sip_reply r = { .status = ist || retired ? 200 : 481 };
		sip_txn_reply(st, &r);
		if (ist && !sip_txn_final_sent(ist)) {
			if ((h = sip_ua_handler_for(ua, "CANCEL")))
				h->fn(h->arg, ua, ist, req);
			else {
				struct sip_reply t = { .status = 487 };
				sip_txn_reply(ist, &t);
			}
		}
		return;
	}
	if (!sip_ua_served(ua, method) || !(h = sip_ua_handler_for(ua, method))) {
		default_answer(ua, st, method);
		return;
	}
	h->fn(h->arg, ua, st, req);
}

static int method_known(const char *m, size_t n)
{
	size_t i;

	for (i = 0; known_methods[i]; i++)
		if (strlen(known_methods[i]) == n && !memcmp(known_methods[i], m, n))
			return 1;
	return 0;
}

/* a request we could not parse: answer from the raw text when it
 * has what a response needs (Via, From, To, Call-ID, CSeq) — 501 for a
 * method we do not know (nothing else about it matters), 400 otherwise.
 * Responses and ACKs are only dropped. */
static void reply_unparsable(struct sip_ua *ua, struct sip_msg *m, int proto,
                             struct sip_listener *l, struct sip_conn *c,
                             const struct sip_addr *src)
{
	static const char *const copy[] = { "From", "To", "Call-ID", "CSeq" };
	const char *sp = memchr(m->raw, ' ', m->body_off), *v;
	struct sip_buf b;
	size_t n, i;
	int status, k;

	if (!sp || sp == m->raw || !strncmp(m->raw, "SIP/", 4) ||
	    ((size_t)(sp - m->raw) == 3 && !memcmp(m->raw, "ACK", 3)))
		return;
	if (!sip_msg_answerable(m))
		return;
	status = method_known(m->raw, (size_t)(sp - m->raw)) ? 400 : 501;
	{
		/* a Request-URI scheme we do not know: 416 (8.2.2.1) */
		const char *u = sp + 1, *colon = memchr(u, ':', (size_t)(m->raw + m->body_off - u));
		const char *sp2 = memchr(u, ' ', (size_t)(m->raw + m->body_off - u));
		size_t k2 = 0;
		/* only a well-formed scheme (RFC 3986: ALPHA *( ALPHA / DIGIT / "+" / "-" / ".")) */
		while (colon && u + k2 < colon && (isalpha((unsigned char)u[k2]) ||
		       (k2 > 0 && (isdigit((unsigned char)u[k2]) || u[k2] == '+' || u[k2] == '-' || u[k2] == '.'))))
			k2++;
		if (colon && (!sp2 || colon < sp2) && k2 > 0 && u + k2 == colon) {
			size_t sl = (size_t)(colon - u);
			if (!((sl == 3 && !strncasecmp(u, "sip", 3)) || (sl == 4 && !strncasecmp(u, "sips", 4)) ||
			      (sl == 3 && !strncasecmp(u, "tel", 3))))
				status = 416;
		}
	}
	sip_buf_init(&b, 512);
	sip_buf_printf(&b, "SIP/2.0 %d %s\r\n", status, sip_reason_phrase(status));
	for (i = 0; (v = sip_msg_hdr(m, SIP_H_VIA, (int)i, &n)); i++)
		sip_buf_header(&b, "Via", v, n);
	for (k = 0; k < 4; k++) {
		v = sip_msg_header(m, copy[k], 0, &n);
		sip_buf_header(&b, copy[k], v, n);
	}
	if (ua->cfg.user_agent[0])
		sip_buf_header(&b, "Server", ua->cfg.user_agent, strlen(ua->cfg.user_agent));
	sip_buf_adds(&b, "Content-Length: 0\r\n\r\n");
	if (!b.oom) {
		if (c)
			sip_conn_send(c, b.p, b.len);
		else if (l && proto == SIP_UDP)
			sip_udp_send(l, src, b.p, b.len);
	}
	sip_buf_free(&b);
}

void sip_ua_receive(struct sip_ua *ua, int proto, struct sip_listener *l, struct sip_conn *c,
                    const struct sip_addr *src, const char *buf, size_t len)
{
	struct sip_msg *m = NULL;
	const char *why;
	int rc;

	ua->rx++;
	sip_ua_trace(ua, 0, proto, c ? c->fd : l ? l->fd : -1, src, buf, len);
	/* a stray CRLF keep-alive on UDP (RFC 5626) is not an error */
	if (len <= 4) {
		size_t i = 0;
		while (i < len && (buf[i] == '\r' || buf[i] == '\n'))
			i++;
		if (i == len)
			return;
	}
	if ((why = sip_msg_limits(buf, len, ua->cfg.max_headers, ua->cfg.max_header_line))) {
		/* over a limit: nothing of it is parsed or kept */
		sip_ua_drop(ua, src, why);
		return;
	}
	rc = sip_msg_parse(buf, len, &m, &why);
	if (rc == -EINVAL && m) {
		reply_unparsable(ua, m, proto, l, c, src);
		sip_ua_drop(ua, src, why);
		sip_msg_unref(m);
		return;
	}
	if (rc == -EINVAL || !m) {
		sip_ua_drop(ua, src, why);
		return;
	}
	m->proto = proto;
	m->src = *src;
	m->received = 1;
	if (c && c->tls_info) {
		m->tls = malloc(sizeof *m->tls);
		if (m->tls)
			*m->tls = *c->tls_info;
	}
	if (rc) {
		/* parsed but broken: a request gets 400 naming the fault when
		 * it can be answered at all, a response is dropped */
		size_t vn;
		if (m->request && sip_msg_hdr(m, SIP_H_VIA, 0, &vn) && strcmp(m->method, "ACK")) {
			struct sip_reply r = { .status = 400, .reason = why };
			sip_ua_reply_stateless(ua, m, proto, l, c, &r);
		}
		sip_ua_drop(ua, src, why);
		sip_msg_unref(m);
		return;
	}
	if (m->request) {
		receive_request(ua, m, proto, l, c);
	} else {
		struct sip_txn *ct = sip_txn_match_client(ua, m);
		if (ct)
			sip_txn_client_response(ct, m);
		else
			sip_ua_drop(ua, src, "response matches no transaction");
	}
	sip_msg_unref(m);
}

const struct sip_transport_user sip_receive_user = {
	.recv = sip_ua_receive,
	.icmp_error = sip_ua_icmp_error,
	.conn_closed = sip_txn_conn_closed,
};
