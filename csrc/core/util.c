/*
 * util.c - logging, addresses, random tokens, buffers and the hash table
 * that every layer of the engine shares.
 */
#define _GNU_SOURCE
#include "sip_core.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/rand.h>

void sip_log(const struct sip_env *env, int level, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	if (!env || level > env->log_level)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (env->log_fn)
		env->log_fn(env->log_arg, level, msg);
	else
		fprintf(stderr, "luasip: %s\n", msg);
}

void sip_transport_error(char *buf, size_t n, int err)
{
	int len = snprintf(buf, n, "transport: %s", strerror(err < 0 ? -err : err));

	/* "Connection refused" reads as a message part: lower-case it */
	if (len > 12 && (size_t)len < n && buf[11] >= 'A' && buf[11] <= 'Z' &&
	    !(buf[12] >= 'A' && buf[12] <= 'Z'))
		buf[11] = (char)(buf[11] - 'A' + 'a');
}

const char *sip_proto_name(int proto)
{
	switch (proto) {
	case SIP_TCP: return "TCP";
	case SIP_TLS: return "TLS";
	default: return "UDP";
	}
}

/* host without the brackets of "[::1]" (as written in URIs and Via) */
static int unbracket(const char *host, char *h, size_t hn)
{
	size_t n = strlen(host);

	if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
		if (n - 2 >= hn)
			return -EINVAL;
		memcpy(h, host + 1, n - 2);
		h[n - 2] = '\0';
	} else {
		if (n >= hn)
			return -EINVAL;
		memcpy(h, host, n + 1);
	}
	return 0;
}

int sip_addr_numeric(const char *host, int port, struct sip_addr *a)
{
	char h[INET6_ADDRSTRLEN + 8];

	if (unbracket(host, h, sizeof h))
		return -EINVAL;
	memset(a, 0, sizeof *a);
	if (inet_pton(AF_INET, h, &a->ss.sin.sin_addr) == 1) {
		a->ss.ss_family = AF_INET;
		a->len = sizeof(struct sockaddr_in);
	} else if (inet_pton(AF_INET6, h, &a->ss.sin6.sin6_addr) == 1) {
		a->ss.ss_family = AF_INET6;
		a->len = sizeof(struct sockaddr_in6);
	} else {
		/* what else the libc takes for a number ("127.1", "0x7f.1",
		 * "fe80::1%lo"): never a lookup */
		struct addrinfo hints, *res = NULL;
		memset(&hints, 0, sizeof hints);
		hints.ai_socktype = SOCK_DGRAM;
		hints.ai_flags = AI_NUMERICHOST;
		if (getaddrinfo(h, NULL, &hints, &res) != 0 || !res)
			return -EINVAL;
		if (res->ai_addrlen > sizeof a->ss) {
			freeaddrinfo(res);
			return -EINVAL;
		}
		memcpy(&a->ss, res->ai_addr, res->ai_addrlen);
		a->len = res->ai_addrlen;
		freeaddrinfo(res);
	}
	sip_addr_set_port(a, port);
	return 0;
}

int sip_addr_resolve(const char *host, int port, struct sip_addr *a)
{
	struct addrinfo hints, *res = NULL;
	char h[256];

	if (unbracket(host, h, sizeof h))
		return -EINVAL;
	memset(&hints, 0, sizeof hints);
	hints.ai_socktype = SOCK_DGRAM;
	hints.ai_flags = AI_NUMERICHOST;
	if (getaddrinfo(h, NULL, &hints, &res) != 0) {
		/* a name: this lookup blocks (set-up only: listen addresses;
		 * requests to names go through dns.c) */
		hints.ai_flags = AI_ADDRCONFIG;
		if (getaddrinfo(h, NULL, &hints, &res) != 0 || !res)
			return -EHOSTUNREACH;
	}
	if (res->ai_addrlen > sizeof a->ss) {
		freeaddrinfo(res);      /* neither IPv4 nor IPv6 */
		return -EAFNOSUPPORT;
	}
	memset(a, 0, sizeof *a);
	memcpy(&a->ss, res->ai_addr, res->ai_addrlen);
	a->len = res->ai_addrlen;
	freeaddrinfo(res);
	sip_addr_set_port(a, port);
	return 0;
}

int sip_addr_parse_listen(const char *spec, int *proto, struct sip_addr *a)
{
	const char *p = spec, *colon;
	char host[128];
	long port;
	char *end;

	if (!strncasecmp(p, "udp:", 4))
		*proto = SIP_UDP;
	else if (!strncasecmp(p, "tcp:", 4))
		*proto = SIP_TCP;
	else if (!strncasecmp(p, "tls:", 4))
		*proto = SIP_TLS;
	else
		return -EINVAL;
	p += 4;
	if (*p == '[') {
		const char *rb = strchr(p, ']');
		if (!rb || rb[1] != ':')
			return -EINVAL;
		if ((size_t)(rb - p - 1) >= sizeof host)
			return -EINVAL;
		memcpy(host, p + 1, rb - p - 1);
		host[rb - p - 1] = '\0';
		colon = rb + 1;
	} else {
		colon = strrchr(p, ':');
		if (!colon || (size_t)(colon - p) >= sizeof host)
			return -EINVAL;
		memcpy(host, p, colon - p);
		host[colon - p] = '\0';
	}
	port = strtol(colon + 1, &end, 10);
	if (*end || port < 0 || port > 65535 || end == colon + 1 || !host[0])
		return -EINVAL;
	memset(a, 0, sizeof *a);
	if (inet_pton(AF_INET, host, &((struct sockaddr_in *)&a->ss)->sin_addr) == 1) {
		a->ss.ss_family = AF_INET;
		a->len = sizeof(struct sockaddr_in);
	} else if (inet_pton(AF_INET6, host, &((struct sockaddr_in6 *)&a->ss)->sin6_addr) == 1) {
		a->ss.ss_family = AF_INET6;
		a->len = sizeof(struct sockaddr_in6);
	} else if (*p == '[') {
		return -EINVAL;         /* brackets hold an IPv6 literal only */
	} else {
		/* a name: looked up once, at set-up, where blocking is fine.
		 * The first address is taken, as sip_addr_resolve takes it for
		 * a URI, so sip:NAME:PORT reaches a listener on NAME:PORT. */
		return sip_addr_resolve(host, (int)port, a);
	}
	sip_addr_set_port(a, (int)port);
	return 0;
}

int sip_addr_port(const struct sip_addr *a)
{
	if (a->ss.ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
	return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
}

void sip_addr_set_port(struct sip_addr *a, int port)
{
	if (a->ss.ss_family == AF_INET6)
		((struct sockaddr_in6 *)&a->ss)->sin6_port = htons((uint16_t)port);
	else
		((struct sockaddr_in *)&a->ss)->sin_port = htons((uint16_t)port);
}

void sip_addr_host(const struct sip_addr *a, char *buf, size_t n)
{
	if (a->ss.ss_family == AF_INET6) {
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)&a->ss)->sin6_addr, buf, (socklen_t)n);
	} else if (n >= INET_ADDRSTRLEN) {
		/* every message's source is written out (Via received): by hand,
		 * as inet_ntop goes through sprintf */
		const unsigned char *q = (const unsigned char *)&((const struct sockaddr_in *)&a->ss)->sin_addr;
		char *p = buf;
		int i;
		for (i = 0; i < 4; i++) {
			unsigned v = q[i];
			if (v >= 100)
				*p++ = (char)('0' + v / 100);
			if (v >= 10)
				*p++ = (char)('0' + v / 10 % 10);
			*p++ = (char)('0' + v % 10);
			*p++ = i < 3 ? '.' : '\0';
		}
	} else {
		inet_ntop(AF_INET, &((const struct sockaddr_in *)&a->ss)->sin_addr, buf, (socklen_t)n);
	}
}

void sip_addr_str(const struct sockaddr *sa, char *buf, size_t n)
{
	char h[INET6_ADDRSTRLEN];

	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &s6->sin6_addr, h, sizeof h);
		snprintf(buf, n, "[%s]:%d", h, ntohs(s6->sin6_port));
	} else {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &s4->sin_addr, h, sizeof h);
		snprintf(buf, n, "%s:%d", h, ntohs(s4->sin_port));
	}
}

int sip_addr_eq(const struct sip_addr *a, const struct sip_addr *b)
{
	if (a->ss.ss_family != b->ss.ss_family)
		return 0;
	if (a->ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const void *)&a->ss, *y = (const void *)&b->ss;
		return x->sin6_port == y->sin6_port &&
		       !memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr);
	}
	const struct sockaddr_in *x = (const void *)&a->ss, *y = (const void *)&b->ss;
	return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
}

uint32_t sip_addr_hash(const struct sip_addr *a)
{
	uint32_t h = 2166136261u;
	const unsigned char *p;
	size_t n;

	if (a->ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const void *)&a->ss;
		p = (const unsigned char *)&x->sin6_addr;
		n = 16;
		h ^= x->sin6_port;
	} else {
		const struct sockaddr_in *x = (const void *)&a->ss;
		p = (const unsigned char *)&x->sin_addr;
		n = 4;
		h ^= x->sin_port;
	}
	while (n--)
		h = (h ^ *p++) * 16777619u;
	return h;
}

int sip_addr_is_any(const struct sip_addr *a)
{
	if (a->ss.ss_family == AF_INET6)
		return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)&a->ss)->sin6_addr);
	return ((const struct sockaddr_in *)&a->ss)->sin_addr.s_addr == htonl(INADDR_ANY);
}

int sip_random_token(char *buf, size_t nchars)
{
	static const char alpha[] =
		"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";
	unsigned char rnd[64];
	size_t i;

	if (nchars > sizeof rnd)
		nchars = sizeof rnd;
	if (RAND_bytes(rnd, (int)nchars) != 1)
		return -EIO;
	for (i = 0; i < nchars; i++)
		buf[i] = alpha[rnd[i] & 63];
	buf[nchars] = '\0';
	return 0;
}

int sip_env_token(struct sip_env *env, char *buf, size_t nchars)
{
	static const char alpha[] =
		"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";
	size_t i;

	if (nchars > sizeof env->rnd)
		return sip_random_token(buf, nchars);
	if (env->rnd_left < nchars) {
		if (RAND_bytes(env->rnd, (int)sizeof env->rnd) != 1)
			return -EIO;
		env->rnd_left = sizeof env->rnd;
	}
	for (i = 0; i < nchars; i++)
		buf[i] = alpha[env->rnd[--env->rnd_left] & 63];
	buf[nchars] = '\0';
	/* used bytes are not kept around */
	memset(env->rnd + env->rnd_left, 0, nchars);
	return 0;
}

void sip_buf_init_on(struct sip_buf *b, char *mem, size_t cap)
{
	b->p = mem;
	b->cap = cap;
	b->len = 0;
	b->oom = 0;
	b->ext = 1;
	mem[0] = '\0';
}

void sip_buf_init(struct sip_buf *b, size_t hint)
{
	b->len = 0;
	b->oom = 0;
	b->ext = 0;
	b->cap = hint ? hint : 256;
	b->p = malloc(b->cap);
	if (!b->p) {
		b->cap = 0;
		b->oom = 1;
	} else {
		b->p[0] = '\0';
	}
}

static int buf_grow(struct sip_buf *b, size_t need)
{
	size_t cap;
	char *p;

	if (b->oom)
		return -1;
	if (b->len + need + 1 <= b->cap)
		return 0;
	cap = b->cap ? b->cap : 256;
	while (cap < b->len + need + 1)
		cap *= 2;
	p = b->ext ? malloc(cap) : realloc(b->p, cap);
	if (!p) {
		b->oom = 1;
		return -1;
	}
	if (b->ext)
		memcpy(p, b->p, b->len + 1);
	b->ext = 0;
	b->p = p;
	b->cap = cap;
	return 0;
}

void sip_buf_add(struct sip_buf *b, const char *s, size_t n)
{
	if (buf_grow(b, n))
		return;
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

void sip_buf_adds(struct sip_buf *b, const char *s)
{
	sip_buf_add(b, s, strlen(s));
}

void sip_buf_printf(struct sip_buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->oom)
		return;
	va_start(ap, fmt);
	n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
	va_end(ap);
	if (n < 0) {
		b->oom = 1;
		return;
	}
	if ((size_t)n >= b->cap - b->len) {
		if (buf_grow(b, (size_t)n))
			return;
		va_start(ap, fmt);
		vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
	}
	b->len += (size_t)n;
}

void sip_buf_header(struct sip_buf *b, const char *name, const char *v, size_t n)
{
	size_t nl = strlen(name);

	if (buf_grow(b, nl + n + 4))
		return;
	memcpy(b->p + b->len, name, nl);
	b->len += nl;
	b->p[b->len++] = ':';
	b->p[b->len++] = ' ';
	memcpy(b->p + b->len, v, n);
	b->len += n;
	b->p[b->len++] = '\r';
	b->p[b->len++] = '\n';
	b->p[b->len] = '\0';
}

void sip_buf_addu(struct sip_buf *b, unsigned long v)
{
	char tmp[24];
	size_t i = sizeof tmp;

	do {
		tmp[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	sip_buf_add(b, tmp + i, sizeof tmp - i);
}

void sip_buf_free(struct sip_buf *b)
{
	if (!b->ext)
		free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}

char *sip_buf_take(struct sip_buf *b)
{
	char *p = NULL;

	if (!b->oom && b->ext) {
		p = malloc(b->len + 1);
		if (p)
			memcpy(p, b->p, b->len + 1);
	} else if (!b->oom) {
		p = realloc(b->p, b->len + 1);
		if (!p)
			p = b->p;       /* could not shrink: keep it as it is */
		b->ext = 1;         /* p is the caller's now */
	}
	sip_buf_free(b);
	return p;
}

uint32_t sip_hash_str(const char *s)
{
	uint32_t h = 2166136261u;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 16777619u;
	return h;
}

int sip_htab_init(struct sip_htab *h, size_t nb)
{
	h->nb = nb;
	h->count = 0;
	h->b = calloc(nb, sizeof *h->b);
	return h->b ? 0 : -ENOMEM;
}

void sip_htab_free(struct sip_htab *h)
{
	free(h->b);
	h->b = NULL;
	h->nb = h->count = 0;
}

/* Doubling keeps chains short as load grows: lookups stay O(1). */
static void htab_grow(struct sip_htab *h)
{
	size_t nb = h->nb * 2, i;
	struct sip_hnode **b = calloc(nb, sizeof *b);

	if (!b)
		return;
	for (i = 0; i < h->nb; i++) {
		struct sip_hnode *n = h->b[i], *next;
		for (; n; n = next) {
			next = n->next;
			n->next = b[n->hash & (nb - 1)];
			b[n->hash & (nb - 1)] = n;
		}
	}
	free(h->b);
	h->b = b;
	h->nb = nb;
}

void sip_htab_insert(struct sip_htab *h, struct sip_hnode *n)
{
	size_t i;

	if (h->count >= h->nb)
		htab_grow(h);
	n->hash = sip_hash_str(n->key);
	i = n->hash & (h->nb - 1);
	n->next = h->b[i];
	h->b[i] = n;
	h->count++;
}

struct sip_hnode *sip_htab_find(const struct sip_htab *h, const char *key)
{
	uint32_t hash = sip_hash_str(key);
	struct sip_hnode *n = h->b[hash & (h->nb - 1)];

	for (; n; n = n->next)
		if (n->hash == hash && !strcmp(n->key, key))
			return n;
	return NULL;
}

void sip_htab_remove(struct sip_htab *h, struct sip_hnode *n)
{
	struct sip_hnode **pp = &h->b[n->hash & (h->nb - 1)];

	for (; *pp; pp = &(*pp)->next) {
		if (*pp == n) {
			*pp = n->next;
			n->next = NULL;
			h->count--;
			return;
		}
	}
}
