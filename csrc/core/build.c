/*
 * build.c - requests: where a URI says to send (the Request-URI, the
 * outbound proxy, a route set's first hop), our Via, From, Contact and
 * Route, and the request put in its client transaction (at once for an
 * address, through locate.c for a host name).
 */
#define _GNU_SOURCE
#include "core.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

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

/* The Request-URI's target (rt) and the next hop's (t): a route set's
 * first hop, else the outbound proxy, else the Request-URI itself. The
 * Request-URI must parse even when another hop is the target; only the
 * hop we send to is looked up. */
static int request_targets(const struct sip_request *rq, struct sip_target *t, struct sip_target *rt,
                           char *err, size_t errlen)
{
	const char *hop = rq->next_hop ? rq->next_hop : rq->proxy;
	int rc;

	if ((rc = sip_uri_target(rq->uri, rt, err, errlen)))
		return rc;
	if (!hop) {
		*t = *rt;
		return 0;
	}
	return sip_uri_target(hop, t, err, errlen);
}

int sip_ua_build_request(struct sip_ua *ua, const struct sip_request *rq, struct sip_outreq *o,
                         char *err, size_t errlen)
{
	struct sip_target t, rt;
	int rc;

	memset(o, 0, sizeof *o);
	if ((rc = request_targets(rq, &t, &rt, err, errlen)))
		return rc;
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
	int rc;

	*out = NULL;
	if ((rc = request_targets(rq, &t, &rt, err, errlen)))
		return rc;
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
