/*
 * ua.c - the user agent object: its life cycle, configuration, listeners,
 * the methods it serves, its resolver and counters. The receive path is
 * receive.c, requests build.c, responses reply.c.
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

int sip_ua_new(struct sip_env *env, struct sip_ua **out)
{
	struct sip_ua *ua = calloc(1, sizeof *ua);

	*out = NULL;
	if (!ua)
		return -ENOMEM;
	ua->env = env;
	ua->tpu = &sip_receive_user;
	ua->dl = &sip_dialog_layer;
	ua->inv = &sip_invite_usage;
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
	sip_txn_trying_init(ua);
	*out = ua;
	return 0;
}

void sip_ua_free(struct sip_ua *ua)
{
	size_t i;

	if (!ua)
		return;
	sip_txn_trying_stop(ua);
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

int sip_ua_handler(struct sip_ua *ua, const char *method, sip_request_cb fn, void *arg)
{
	struct sip_handler *h = NULL;
	size_t i;

	if (!method) {
		ua->fallback.fn = fn;
		ua->fallback.arg = arg;
		return 0;
	}
	if (strlen(method) >= sizeof h->method)
		return -EINVAL;
	for (i = 0; i < ua->nhandlers && !h; i++)
		if (!strcmp(ua->handlers[i].method, method))
			h = &ua->handlers[i];
	if (!h) {
		if (ua->nhandlers == SIP_UA_MAX_HANDLERS)
			return -ENOSPC;
		h = &ua->handlers[ua->nhandlers++];
		memcpy(h->method, method, strlen(method) + 1);
	}
	h->fn = fn;
	h->arg = arg;
	return 0;
}

void sip_ua_set_tu(struct sip_ua *ua, sip_request_cb on_request, void *arg)
{
	sip_ua_handler(ua, NULL, on_request, arg);
}

void sip_ua_orphans(struct sip_ua *ua, sip_request_cb fn, void *arg)
{
	ua->orphans.fn = fn;
	ua->orphans.arg = arg;
}

const struct sip_handler *sip_ua_handler_for(const struct sip_ua *ua, const char *method)
{
	size_t i;

	for (i = 0; i < ua->nhandlers; i++)
		if (ua->handlers[i].fn && !strcmp(ua->handlers[i].method, method))
			return &ua->handlers[i];
	if (!strcmp(method, "CANCEL"))
		return NULL;
	return ua->fallback.fn ? &ua->fallback : NULL;
}

int sip_ua_served(const struct sip_ua *ua, const char *method)
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

	if (sip_ua_served(ua, method))
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

struct sip_dns *sip_ua_dns(struct sip_ua *ua, char *err, size_t errlen)
{
	struct sip_dns_cfg cfg = { .servers = ua->cfg.dns_servers, .timeout = ua->cfg.dns_timeout,
	                           .blacklist = ua->cfg.dns_blacklist };

	if (!ua->dns && sip_dns_new(ua->env, &cfg, &ua->dns, err, errlen))
		return NULL;
	return ua->dns;
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
