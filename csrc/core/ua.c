/*
 * ua.c - the user agent core: listeners, the receive path (parse, checks,
 * transaction matching, the default answers) and the builders of requests
 * and responses.
 */
#define _GNU_SOURCE
#include "core.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static const char *const known_methods[] = {
	"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE",
	"NOTIFY", "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE", NULL
};

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

/* The two lists of server transactions the prepare watcher below serves
 * (linked by tnext/tprev; a transaction is in one at most): INVITEs owed
 * a 100, and answered transactions to retire. */
static void tlist_push(struct sip_txn **head, struct sip_txn *st)
{
	struct sip_ua *ua = st->ua;

	st->tprev = NULL;
	st->tnext = *head;
	if (*head)
		(*head)->tprev = st;
	*head = st;
	if (!ev_is_active(&ua->trying_w))
		ev_prepare_start(ua->env->loop, &ua->trying_w);
}

static void tlist_unlink(struct sip_txn **head, struct sip_txn *st)
{
	if (st->tprev)
		st->tprev->tnext = st->tnext;
	else
		*head = st->tnext;
	if (st->tnext)
		st->tnext->tprev = st->tprev;
	st->tnext = st->tprev = NULL;
}

void sip_txn_trying_done(struct sip_txn *st)
{
	if (!st->trying)
		return;
	st->trying = 0;
	tlist_unlink(&st->ua->trying, st);
}

void sip_txn_trying_owed(struct sip_txn *st)
{
	if (st->trying)
		return;
	st->trying = 1;
	tlist_push(&st->ua->trying, st);
}

void sip_txn_retire(struct sip_txn *st)
{
	if (st->retiring || st->trying)
		return;
	st->retiring = 1;
	tlist_push(&st->ua->retiring, st);
}

void sip_txn_retire_done(struct sip_txn *st)
{
	if (!st->retiring)
		return;
	st->retiring = 0;
	tlist_unlink(&st->ua->retiring, st);
}

/* The loop is about to wait: every INVITE not answered by now (the Lua
 * handlers ran first, at a higher priority) gets its 100. A handler that
 * rings or answers at once saves the datagram; one that waits for
 * something first still stops the caller's retransmissions in time. */
static void trying_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
	struct sip_ua *ua = w->data;

	(void)revents;
	ev_prepare_stop(loop, w);
	while (ua->trying) {
		struct sip_txn *st = ua->trying;
		struct sip_reply r = { .status = 100 };
		sip_txn_trying_done(st);
		if (st->state == TS_PROCEEDING && !st->out)
			sip_txn_reply(st, &r);
	}
	sip_txn_retire_pending(ua);
}

int sip_ua_new(struct sip_env *env, struct sip_ua **out)
{
	struct sip_ua *ua = calloc(1, sizeof *ua);

	*out = NULL;
	if (!ua)
		return -ENOMEM;
	ua->env = env;
	ua->cfg.t1 = 0.5;
	ua->cfg.t2 = 4.0;
	ua->cfg.t4 = 5.0;
	ua->cfg.max_udp = 65507;
	ua->cfg.max_stream_msg = 65536;
	ua->cfg.max_headers = 256;
	ua->cfg.max_header_line = 8192;
	ua->cfg.idle_timeout = 300.;
	ua->cfg.header_timeout = 10.;
	ua->cfg.max_conns = 1024;
	ua->cfg.max_conns_per_ip = 64;
	/* 2 lingering transactions a call for 32 s: room for ~10,000 cps */
	ua->cfg.max_server_txns = 1000000;
	ua->cfg.dns_timeout = 5.;
	ua->cfg.dns_blacklist = 30.;
	snprintf(ua->cfg.user_agent, sizeof ua->cfg.user_agent, "luasip/0.1");
	if (sip_htab_init(&ua->txns, 1024) || sip_htab_init(&ua->conns, 64) ||
	    sip_htab_init(&ua->dialogs, 256) || sip_htab_init(&ua->tombs, 1024)) {
		sip_htab_free(&ua->txns);
		sip_htab_free(&ua->conns);
		sip_htab_free(&ua->dialogs);
		sip_htab_free(&ua->tombs);
		free(ua);
		return -ENOMEM;
	}
	sip_txn_linger_init(ua);
	ev_prepare_init(&ua->trying_w, trying_cb);
	ev_set_priority(&ua->trying_w, EV_MINPRI);
	ua->trying_w.data = ua;
	*out = ua;
	return 0;
}

void sip_ua_free(struct sip_ua *ua)
{
	size_t i;

	if (!ua)
		return;
	ev_prepare_stop(ua->env->loop, &ua->trying_w);
	sip_dialog_bye_all(ua);
	sip_dialog_free_all(ua);
	sip_txn_free_all(ua);
	sip_txn_linger_stop(ua);
	sip_conn_close_all(ua);
	while (ua->listeners) {
		struct sip_listener *l = ua->listeners;
		ua->listeners = l->next;
		if (l->proto == SIP_UDP)
			sip_udp_close(l);
		else
			sip_stream_listener_close(l);
		free(l);
	}
	for (i = 0; i < ua->nserved; i++)
		free(ua->served[i]);
	free(ua->served);
	sip_tls_free(ua);
	sip_dns_free(ua->dns);          /* after the transactions that used it */
	sip_htab_free(&ua->txns);
	sip_htab_free(&ua->tombs);
	sip_htab_free(&ua->conns);
	sip_htab_free(&ua->dialogs);
	free(ua);
}

struct sip_ua_cfg *sip_ua_config(struct sip_ua *ua)
{
	return &ua->cfg;
}

void sip_ua_set_tu(struct sip_ua *ua, sip_request_cb on_request, void *arg)
{
	ua->on_request = on_request;
	ua->tu_arg = arg;
}

static int served(const struct sip_ua *ua, const char *method)
{
	size_t i;

	for (i = 0; i < ua->nserved; i++)
		if (!strcmp(ua->served[i], method) ||
		    (!strcmp(ua->served[i], "*") && strcmp(method, "ACK") && strcmp(method, "CANCEL")))
			return 1;
	return 0;
}

int sip_ua_serve(struct sip_ua *ua, const char *method)
{
	char **v, *m;

	if (served(ua, method))
		return 0;
	v = realloc(ua->served, (ua->nserved + 1) * sizeof *v);
	if (!v)
		return -ENOMEM;
	ua->served = v;
	m = strdup(method);
	if (!m)
		return -ENOMEM;
	v[ua->nserved++] = m;
	return 0;
}

int sip_ua_listen(struct sip_ua *ua, const char *spec, char *err, size_t errlen)
{
	struct sip_listener *l = calloc(1, sizeof *l), **pp;
	char host[INET6_ADDRSTRLEN];
	int rc;

	if (!l) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	l->ua = ua;
	l->fd = -1;
	if ((rc = sip_addr_parse_listen(spec, &l->proto, &l->addr))) {
		if (rc == -EINVAL)
			snprintf(err, errlen, "bad listen address '%s' (want udp:, tcp: or tls:HOST:PORT)", spec);
		else
			snprintf(err, errlen, "cannot resolve the host of listen address '%s'", spec);
		free(l);
		return rc;
	}
	if (l->proto == SIP_TLS && (rc = sip_tls_can_listen(ua, err, errlen))) {
		free(l);
		return rc;
	}
	rc = l->proto == SIP_UDP ? sip_udp_open(l, err, errlen) : sip_stream_listen(l, err, errlen);
	if (rc) {
		free(l);
		return rc;
	}
	sip_addr_host(&l->addr, host, sizeof host);
	if (l->addr.ss.ss_family == AF_INET6)
		snprintf(l->host, sizeof l->host, "[%s]", host);
	else
		snprintf(l->host, sizeof l->host, "%s", host);
	for (pp = &ua->listeners; *pp; pp = &(*pp)->next)
		;
	*pp = l;
	return 0;
}

int sip_ua_listener_spec(struct sip_ua *ua, int idx, char *buf, size_t n)
{
	struct sip_listener *l = ua->listeners;

	while (l && idx-- > 0)
		l = l->next;
	if (!l)
		return -ENOENT;
	snprintf(buf, n, "%s:%s:%d", l->proto == SIP_UDP ? "udp" : l->proto == SIP_TCP ? "tcp" : "tls",
	         l->host, sip_addr_port(&l->addr));
	return 0;
}

struct sip_listener *sip_ua_listener_for(struct sip_ua *ua, int proto, int family)
{
	struct sip_listener *l;

	for (l = ua->listeners; l; l = l->next)
		if (l->proto == proto && l->addr.ss.ss_family == family)
			return l;
	return NULL;
}

void sip_ua_trace(struct sip_ua *ua, int out, int proto, int fd, const struct sip_addr *peer,
                  const char *buf, size_t len)
{
	struct sip_addr local;

	if (!ua->env->trace_fn)
		return;
	/* one getsockname per traced message: the cost is paid only while
	 * tracing, and a stream's ephemeral port needs no field of its own */
	local.len = sizeof local.ss;
	if (fd < 0 || getsockname(fd, &local.ss.sa, &local.len) != 0)
		local.len = 0;
	ua->env->trace_fn(ua->env->trace_arg, out, proto, (const struct sockaddr *)&peer->ss,
	                  local.len ? &local.ss.sa : NULL, buf, len);
}

void sip_ua_drop(struct sip_ua *ua, const struct sip_addr *src, const char *why)
{
	char a[64];

	ua->dropped++;
	sip_addr_str((const struct sockaddr *)&src->ss, a, sizeof a);
	sip_log(ua->env, SIP_LOG_INFO, "dropped message from %s: %s", a, why);
}

void sip_ua_stats(struct sip_ua *ua, struct sip_ua_stats *s)
{
	/* tombs are transactions to a user: they still absorb retransmissions */
	s->txns = ua->txns.count + ua->ntombs;
	s->client_txns = ua->nclient;
	s->server_txns = ua->nserver + ua->ntombs;
	s->conns = ua->nconns;
	s->dialogs = ua->dialogs.count;
	s->rx = ua->rx;
	s->tx = ua->tx;
	s->dropped = ua->dropped;
	s->retransmits = ua->retransmits;
}

/* ---- responses ---- */


/* The response text for a request (8.2.6): Vias from the parsed request
 * (they carry received/rport), From, Call-ID and CSeq copied as received,
 * To with our tag. */
static int build_response(struct sip_ua *ua, struct sip_msg *req, const char *to_tag,
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

static const char *allow_list(struct sip_ua *ua, char *buf, size_t n);

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
		sip_buf_printf(&h, "Allow: %s\r\n", allow_list(st->ua, allow, sizeof allow));
	}
	/* 18x and 2xx to an INVITE carry our Contact (12.1.1) */
	if (st->kind == TXN_IST && r->status > 100 && r->status < 300 &&
	    !sip_headers_have(r->headers, "Contact", 'm')) {
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
	rc = build_response(st->ua, st->req, st->to_tag, &rr, &text, &len);
	sip_buf_free(&h);
	if (rc)
		return rc;
	if (st->kind == TXN_IST && st->dlg && r->status >= 200 && r->status < 300)
		sip_dialog_answered(st->dlg, st);
	else if (st->kind == TXN_IST && st->dlg && r->status >= 300)
		sip_dialog_txn_gone(st->dlg, st);      /* a refused re-INVITE frees its slot */
	return sip_txn_respond(st, r->status, text, len);
}

/* A response outside any transaction: errors for bad requests and the
 * overload 503. Sent back the way the request came. */
static void reply_stateless(struct sip_ua *ua, struct sip_msg *req, int proto,
                            struct sip_listener *l, struct sip_conn *c,
                            const struct sip_reply *r)
{
	char *text, tag[16];
	size_t len;

	sip_env_token(ua->env, tag, 10);
	if (build_response(ua, req, tag, r, &text, &len))
		return;
	if (c)
		sip_conn_send(c, text, len);
	else if (l && proto == SIP_UDP)
		sip_udp_send(l, &req->src, text, len);
	free(text);
}

static const char *allow_list(struct sip_ua *ua, char *buf, size_t n)
{
	size_t i, off = 0;

	off += (size_t)snprintf(buf, n, "OPTIONS");
	if (served(ua, "INVITE"))
		off += (size_t)snprintf(buf + off, n - off, ", INVITE, ACK, CANCEL, BYE");
	for (i = 0; i < ua->nserved && off < n; i++) {
		const char *m = ua->served[i];
		if (!strcmp(m, "OPTIONS") || !strcmp(m, "INVITE") || !strcmp(m, "ACK") ||
		    !strcmp(m, "CANCEL") || !strcmp(m, "BYE") || !strcmp(m, "*"))
			continue;
		off += (size_t)snprintf(buf + off, n - off, ", %s", m);
	}
	return buf;
}

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
	snprintf(hdr, sizeof hdr, "Allow: %s\r\n", allow_list(ua, allow, sizeof allow));
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
	} else if ((v = sip_msg_hdr(req, SIP_H_REQUIRE, 0, &n)) && n > 0) {
		/* no extension is supported: every option required is unknown */
		r.status = 420;
		snprintf(hdr, sizeof hdr, "Unsupported: %.*s\r\n", (int)(n < 500 ? n : 500), v);
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
	struct sip_txn *st;
	int rc, retired;

	if (strcmp(req->version, "SIP/2.0")) {
		struct sip_reply r = { .status = 505 };
		sip_ua_drop(ua, &req->src, "unsupported SIP version");
		reply_stateless(ua, req, proto, l, c, &r);
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
		d = sip_dialog_match(ua, req);
		if (d)
			sip_dialog_ack_received(d, req);
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
		reply_stateless(ua, req, proto, l, c, &r);
		return;
	}
	rc = sip_txn_new_server(ua, req, proto, l, c, &st);
	if (rc)
		return;
	if (strcmp(method, "CANCEL") && uas_checks(ua, st, req))
		return;
	if (req->to_tag && strcmp(method, "CANCEL")) {
		/* a To tag: a request within a dialog (12.2.2) */
		struct sip_dialog *d = sip_dialog_match(ua, req);
		if (d) {
			sip_dialog_receive(d, st, req);
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
			if (ua->on_request)
				ua->on_request(ua->tu_arg, ua, ist, req);
			else {
				struct sip_reply t = { .status = 487 };
				sip_txn_reply(ist, &t);
			}
		}
		return;
	}
	if (!served(ua, method) || !ua->on_request) {
		default_answer(ua, st, method);
		return;
	}
	ua->on_request(ua->tu_arg, ua, st, req);
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
			reply_stateless(ua, m, proto, l, c, &r);
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

/* ---- requests ---- */

int sip_uri_target(const char *text, struct sip_target *t, char *err, size_t errlen)
{
	struct sip_uri u;
	struct sip_span tp;
	char port[16];

	memset(t, 0, sizeof *t);
	/* only sip: and sips: have a host to send to; a scheme that is not
	 * even sip-like is no URI of ours at all */
	if (sip_uri_parse(text, strlen(text), &u) || u.scheme.n < 3 || strncasecmp(u.scheme.p, "sip", 3)) {
		snprintf(err, errlen, "bad URI '%s'", text);
		return -EINVAL;
	}
	if (!(u.scheme.n == 3 || (u.scheme.n == 4 && (u.scheme.p[3] | 0x20) == 's'))) {
		snprintf(err, errlen, "unsupported URI scheme '%.*s'", (int)u.scheme.n, u.scheme.p);
		return -EINVAL;
	}
	t->sips = u.scheme.n == 4;
	if (u.host.n >= sizeof t->host) {
		snprintf(err, errlen, "bad URI '%s'", text);
		return -EINVAL;
	}
	memcpy(t->host, u.host.p, u.host.n);
	t->host[u.host.n] = '\0';
	t->proto = t->sips ? SIP_TLS : SIP_UDP;
	if (sip_uri_param(&u, "transport", &tp) && tp.n) {
		t->proto_given = 1;
		if (tp.n == 3 && !strncasecmp(tp.p, "tcp", 3))
			t->proto = t->sips ? SIP_TLS : SIP_TCP;
		else if (tp.n == 3 && !strncasecmp(tp.p, "tls", 3))
			t->proto = SIP_TLS;
		else if (!(tp.n == 3 && !strncasecmp(tp.p, "udp", 3))) {
			snprintf(err, errlen, "unsupported transport '%.*s'", (int)tp.n, tp.p);
			return -EINVAL;
		}
	}
	t->port_given = u.port.n > 0;
	snprintf(port, sizeof port, "%.*s", (int)(u.port.n < 15 ? u.port.n : 15), u.port.p ? u.port.p : "");
	t->port = t->port_given ? atoi(port) : (t->proto == SIP_TLS ? 5061 : 5060);
	if (t->port <= 0 || t->port > 65535) {
		snprintf(err, errlen, "bad port in '%s'", text);
		return -EINVAL;
	}
	return 0;
}

struct sip_dns *sip_ua_dns(struct sip_ua *ua, char *err, size_t errlen)
{
	struct sip_dns_cfg cfg = { .servers = ua->cfg.dns_servers, .timeout = ua->cfg.dns_timeout,
	                           .blacklist = ua->cfg.dns_blacklist };

	if (!ua->dns && sip_dns_new(ua->env, &cfg, &ua->dns, err, errlen))
		return NULL;
	return ua->dns;
}

/* The address of a target for a request built outside sip_ua_request
 * (in-dialog requests, the ACK of a 2xx): numeric at once; a name from
 * the resolver's cache when an answer is there (the usual case: it was
 * looked up for the INVITE). Else -EWOULDBLOCK, never a blocking lookup:
 * the lookup starts (its answer fills the cache), in-dialog requests
 * take the way of sip_ua_request, and an ACK goes with the 2xx's next
 * retransmission. */
static void sync_cb(void *arg, const char *err, const struct sip_dns_target *t, size_t n)
{
	struct sip_target *x = arg;

	if (!err && n) {
		x->addr = t[0].addr;
		x->proto = t[0].proto;
	}
}

static int resolve_sync(struct sip_ua *ua, struct sip_target *t, char *err, size_t errlen)
{
	struct sip_dns_query q = { .host = t->host, .port = t->port_given ? t->port : 0,
	                           .proto = t->proto_given ? t->proto : -1, .sips = t->sips };
	struct sip_dns_lookup *lk = NULL;
	struct sip_dns *d;
	char e[160];

	if (!sip_addr_numeric(t->host, t->port, &t->addr))
		return 0;
	t->addr.len = 0;
	if ((d = sip_ua_dns(ua, e, sizeof e)) && !sip_dns_locate(d, &q, sync_cb, t, &lk)) {
		if (lk)
			sip_dns_forget(lk);     /* not in the cache: it will be */
		else if (t->addr.len)
			return 0;
	}
	snprintf(err, errlen, "dns: %s: not in the cache yet", t->host);
	return -EWOULDBLOCK;
}

/* Our address as the peer sees it: the listener's, or for a wildcard
 * listener the source address the kernel picks towards dst. */
static void local_host(struct sip_listener *l, const struct sip_addr *dst, char *buf, size_t n)
{
	struct sip_addr a;
	char h[INET6_ADDRSTRLEN];
	int fd;

	/* dst not known yet (a provisional text): the listener's own */
	if (!sip_addr_is_any(&l->addr) || !dst->len) {
		snprintf(buf, n, "%s", l->host);
		return;
	}
	a.len = sizeof a.ss;
	fd = socket(dst->ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd >= 0 && connect(fd, (const struct sockaddr *)&dst->ss, dst->len) == 0 &&
	    getsockname(fd, (struct sockaddr *)&a.ss, &a.len) == 0) {
		sip_addr_host(&a, h, sizeof h);
		snprintf(buf, n, a.ss.ss_family == AF_INET6 ? "[%s]" : "%s", h);
	} else {
		snprintf(buf, n, "%s", l->host);
	}
	if (fd >= 0)
		close(fd);
}

int sip_headers_have(const char *lines, const char *name, char compact)
{
	size_t n = strlen(name);
	const char *p = lines;

	while (p && *p) {
		const char *q = p;
		if (!strncasecmp(q, name, n))
			q += n;
		else if (compact && (*q == compact || *q == (compact ^ 0x20)))
			q++;
		else
			q = NULL;
		if (q) {
			while (*q == ' ' || *q == '\t')
				q++;
			if (*q == ':')
				return 1;
		}
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	return 0;
}

int sip_msg_sips(const struct sip_msg *m)
{
	return m && m->parsed && m->request && !strncasecmp(m->uri, "sips:", 5);
}

/* The listener a message we send names (Via sent-by, Contact): the
 * transport's own. TCP and TLS need none to go out: a connection is made
 * from an ephemeral port and its answers come back on it (18.2.2), so
 * the message names a listener of ours that can be reached instead, UDP
 * first, else any of the family, its Contact with its own transport. */
struct sip_listener *sip_ua_named_listener(struct sip_ua *ua, int proto, int family)
{
	struct sip_listener *l = sip_ua_listener_for(ua, proto, family);

	if (l || proto == SIP_UDP)
		return l;
	if ((l = sip_ua_listener_for(ua, SIP_UDP, family)))
		return l;
	for (l = ua->listeners; l; l = l->next)
		if (l->addr.ss.ss_family == family)
			return l;
	return NULL;
}

void sip_ua_contact(struct sip_ua *ua, int proto, const struct sip_addr *peer, int sips,
                    char *buf, size_t n)
{
	struct sip_listener *l = sip_ua_named_listener(ua, proto, peer->ss.ss_family);
	char host[INET6_ADDRSTRLEN + 2];

	if (ua->cfg.contact[0]) {
		/* the script's own (NAT: the public address it knows) */
		snprintf(buf, n, "%s", ua->cfg.contact);
		return;
	}
	if (!l)
		l = ua->listeners;
	if (!l) {
		snprintf(buf, n, "<sip:luasip@invalid>");
		return;
	}
	/* the Contact names where we listen: the listener's own transport */
	sips = sips && l->proto == SIP_TLS;
	if (l->contact[sips][0] && strlen(l->contact[sips]) < n) {
		memcpy(buf, l->contact[sips], strlen(l->contact[sips]) + 1);
		return;
	}
	local_host(l, peer, host, sizeof host);
	snprintf(buf, n, "<%s:luasip@%s:%d%s>", sips ? "sips" : "sip", host, sip_addr_port(&l->addr),
	         l->proto == SIP_TCP ? ";transport=tcp" : l->proto == SIP_TLS && !sips ? ";transport=tls" : "");
	/* a wildcard listener's host depends on the peer: not kept */
	if (!sip_addr_is_any(&l->addr) && strlen(buf) < sizeof l->contact[sips])
		memcpy(l->contact[sips], buf, strlen(buf) + 1);
}

int sip_ua_build_request(struct sip_ua *ua, const struct sip_request *rq, struct sip_outreq *o,
                         char *err, size_t errlen)
{
	struct sip_target t, rt;
	const char *hop;
	int rc;

	memset(o, 0, sizeof *o);
	/* the Request-URI must parse even when another hop is the target;
	 * only the hop we send to is looked up */
	hop = rq->next_hop ? rq->next_hop : rq->proxy;
	if ((rc = sip_uri_target(rq->uri, &rt, err, errlen)))
		return rc;
	if (hop) {
		if ((rc = sip_uri_target(hop, &t, err, errlen)))
			return rc;
	} else {
		t = rt;
	}
	if ((rc = resolve_sync(ua, &t, err, errlen)))
		return rc;
	return sip_ua_build_for(ua, rq, &t, rt.sips, NULL, o, err, errlen);
}

int sip_ua_build_for(struct sip_ua *ua, const struct sip_request *rq, const struct sip_target *tp,
                     int sips_uri, const char *given_branch, struct sip_outreq *o,
                     char *err, size_t errlen)
{
	const struct sip_target t = *tp;
	struct sip_listener *l;
	struct sip_buf b;
	struct sip_msg *m = NULL;
	char host[INET6_ADDRSTRLEN + 2], branch[24], tag[16], cid[24];
	const char *why;
	int rc, lport;

	memset(o, 0, sizeof *o);
	l = sip_ua_named_listener(ua, t.proto, t.addr.ss.ss_family);
	if (!l) {
		/* UDP needs a socket of its own; TCP and TLS only an address
		 * of the family to name (named_listener) */
		snprintf(err, errlen, "transport: no %slistener for %s", t.proto == SIP_UDP ? "UDP " : "",
		         t.addr.ss.ss_family == AF_INET6 ? "IPv6" : "IPv4");
		return -ENOTCONN;
	}
	local_host(l, &t.addr, host, sizeof host);
	lport = sip_addr_port(&l->addr);
	if (given_branch)
		snprintf(branch, sizeof branch, "%s", given_branch);
	else
		sip_env_token(ua->env, branch, 16);
	if (!rq->from || !strstr(rq->from, ";tag="))
		sip_env_token(ua->env, tag, 10);
	if (!rq->call_id)
		sip_env_token(ua->env, cid, 20);

	sip_buf_init(&b, 768 + rq->body_len);
	sip_buf_printf(&b, "%s %s SIP/2.0\r\n", rq->method, rq->uri);
	sip_buf_printf(&b, "Via: SIP/2.0/%s %s:%d;branch=z9hG4bK%s;rport\r\n",
	               sip_proto_name(t.proto), host, lport, branch);
	sip_buf_adds(&b, "Max-Forwards: 70\r\n");
	if (rq->proxy && !rq->next_hop)
		sip_buf_printf(&b, "Route: <%s;lr>\r\n", rq->proxy);
	if (rq->routes)
		sip_buf_adds(&b, rq->routes);
	if (rq->from)
		sip_buf_printf(&b, "From: %s%s%s\r\n", rq->from, strstr(rq->from, ";tag=") ? "" : ";tag=",
		               strstr(rq->from, ";tag=") ? "" : tag);
	else
		sip_buf_printf(&b, "From: <sip:luasip@%s:%d>;tag=%s\r\n", host, lport, tag);
	if (rq->to)
		sip_buf_printf(&b, "To: %s\r\n", rq->to);
	else
		sip_buf_printf(&b, "To: <%s>\r\n", rq->uri);
	if (rq->call_id)
		sip_buf_printf(&b, "Call-ID: %s\r\n", rq->call_id);
	else
		sip_buf_printf(&b, "Call-ID: %s@%s\r\n", cid, host);
	sip_buf_printf(&b, "CSeq: %u %s\r\n", rq->cseq ? rq->cseq : 1u, rq->method);
	if (sip_headers_have(rq->headers, "Contact", 'm'))
		;       /* the script's Contact replaces ours (never a second one) */
	else if (rq->contact)
		sip_buf_printf(&b, "Contact: %s\r\n", rq->contact);
	else if (ua->cfg.contact[0] && (!strcmp(rq->method, "INVITE") || !strcmp(rq->method, "SUBSCRIBE") ||
	         !strcmp(rq->method, "REFER") || !strcmp(rq->method, "UPDATE")))
		sip_buf_printf(&b, "Contact: %s\r\n", ua->cfg.contact);
	else if (!strcmp(rq->method, "INVITE") || !strcmp(rq->method, "SUBSCRIBE") ||
	         !strcmp(rq->method, "REFER") || !strcmp(rq->method, "UPDATE"))
	{
		/* where we listen: the chosen listener's transport; sips: for a
		 * sips: request over TLS (8.1.1.8) */
		int sips = sips_uri && l->proto == SIP_TLS;
		sip_buf_printf(&b, "Contact: <%s:luasip@%s:%d%s>\r\n", sips ? "sips" : "sip", host, lport,
		               l->proto == SIP_TCP ? ";transport=tcp" :
		               l->proto == SIP_TLS && !sips ? ";transport=tls" : "");
	}
	if (ua->cfg.user_agent[0] && strcmp(rq->method, "ACK"))
		sip_buf_printf(&b, "User-Agent: %s\r\n", ua->cfg.user_agent);
	if (rq->headers)
		sip_buf_adds(&b, rq->headers);
	if (rq->body_len && rq->content_type)
		sip_buf_printf(&b, "Content-Type: %s\r\n", rq->content_type);
	sip_buf_printf(&b, "Content-Length: %zu\r\n\r\n", rq->body_len);
	if (rq->body_len)
		sip_buf_add(&b, rq->body, rq->body_len);
	if (b.oom) {
		sip_buf_free(&b);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	rc = sip_msg_parse(b.p, b.len, &m, &why);
	if (rc) {
		SIP_LOGD(ua->env, "built request does not parse (%s):\n%s", why, b.p);
		sip_msg_unref(m);
		sip_buf_free(&b);
		snprintf(err, errlen, "bad request: %s", why);
		return -EINVAL;
	}
	o->len = b.len;
	o->text = sip_buf_take(&b);
	if (!o->text) {
		sip_msg_unref(m);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	o->msg = m;
	o->proto = t.proto;
	o->dst = t.addr;
	o->lst = l;
	snprintf(o->tls_name, sizeof o->tls_name, "%s", t.host);
	return 0;
}

int sip_ua_send_stateless(struct sip_ua *ua, int proto, const struct sip_addr *dst,
                          struct sip_listener *l, const char *tls_name, const char *text, size_t len)
{
	struct sip_conn *c;
	int rc;

	if (proto == SIP_UDP)
		return l ? sip_udp_send(l, dst, text, len) : -ENOTCONN;
	rc = sip_conn_get(ua, proto, dst, tls_name, &c);
	return rc ? rc : sip_conn_send(c, text, len);
}

int sip_ua_keepalive(struct sip_ua *ua, int proto, const struct sip_addr *dst, double seconds)
{
	struct sip_listener *l;

	if (proto != SIP_UDP)
		return sip_conn_keepalive(ua, proto, dst, seconds);
	/* UDP: one ping now, from the socket our requests to dst leave by */
	l = sip_ua_listener_for(ua, SIP_UDP, dst->ss.ss_family);
	return l ? sip_udp_send(l, dst, "\r\n\r\n", 4) : -ENOTCONN;
}

void sip_send_error(char *err, size_t errlen, int rc, const char *tls_name)
{
	if (rc == -EXDEV)
		snprintf(err, errlen, "tls: name mismatch: %s", tls_name ? tls_name : "");
	else
		sip_transport_error(err, errlen, rc);
}

int sip_ua_request(struct sip_ua *ua, const struct sip_request *rq,
                   sip_response_cb cb, void *arg, struct sip_txn **out,
                   char *err, size_t errlen)
{
	struct sip_target t, rt;
	struct sip_outreq o;
	const char *hop;
	int rc;

	*out = NULL;
	hop = rq->next_hop ? rq->next_hop : rq->proxy;
	if ((rc = sip_uri_target(rq->uri, &rt, err, errlen)))
		return rc;
	if (hop) {
		if ((rc = sip_uri_target(hop, &t, err, errlen)))
			return rc;
	} else {
		t = rt;
	}
	/* a name: RFC 3263 on the loop (locate.c); an address: at once */
	if (sip_addr_numeric(t.host, t.port, &t.addr))
		return sip_loc_request(ua, rq, &t, rt.sips, cb, arg, out, err, errlen);
	rc = sip_ua_build_for(ua, rq, &t, rt.sips, NULL, &o, err, errlen);
	if (rc)
		return rc;
	rc = sip_txn_new_client(ua, o.msg, o.text, o.len, o.proto, &o.dst, o.lst, o.tls_name, cb, arg, out);
	if (rc)
		sip_send_error(err, errlen, rc, o.tls_name);
	return rc;
}
