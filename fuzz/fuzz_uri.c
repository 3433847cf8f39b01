/*
 * fuzz_uri.c - URIs and addresses as the engine reads them: uri.c's
 * sip_uri_parse with the parameter lookups request targets do (transport,
 * lr, maddr, the port), name-addr values (one From/To value, and Contact
 * lists as sip.core.name_addrs splits them, with their parameters and
 * tags), and our address helpers: sip_addr_parse_listen on the
 * text itself and as "udp:"/"tcp:"/"tls:" + text, sip_addr_resolve on
 * hosts that are numeric addresses (anything else is skipped: no DNS; the
 * getaddrinfo in common.c is numeric-only besides), and the printers,
 * hash and comparison of every address obtained.
 */
#define _GNU_SOURCE
#include "msg.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void fuzz_init(void);
void fuzz_reset_random(void);
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile unsigned sink;

static void touch(const char *s)
{
	if (s)
		while (*s)
			sink += (unsigned char)*s++;
}

static void use_addr(const struct sip_addr *a)
{
	char buf[80], host[64];
	struct sip_addr b = *a;

	sip_addr_str((const struct sockaddr *)&a->ss, buf, sizeof buf);
	touch(buf);
	sip_addr_host(a, host, sizeof host);
	touch(host);
	sink += (unsigned)sip_addr_port(a) + sip_addr_hash(a) + (unsigned)sip_addr_is_any(a);
	if (!sip_addr_eq(a, &b))
		abort();
	sip_addr_set_port(&b, 5061);
	sink += (unsigned)sip_addr_eq(a, &b);
	/* small buffers truncate, never overflow */
	sip_addr_str((const struct sockaddr *)&a->ss, buf, 8);
	sip_addr_host(a, host, 4);
}

/* numeric IPv4 or IPv6 (brackets allowed), as sip_addr_resolve may take
 * without a lookup */
static int numeric_host(const char *h)
{
	unsigned char buf[16];
	char tmp[64];
	size_t n = strlen(h);

	if (n >= 2 && h[0] == '[' && h[n - 1] == ']') {
		if (n - 2 >= sizeof tmp)
			return 0;
		memcpy(tmp, h + 1, n - 2);
		tmp[n - 2] = '\0';
		h = tmp;
	}
	return inet_pton(AF_INET, h, buf) == 1 || inet_pton(AF_INET6, h, buf) == 1;
}

static void touch_span(struct sip_span sp)
{
	size_t i;

	for (i = 0; sp.p && i < sp.n; i++)
		sink += (unsigned char)sp.p[i];
}

/* a URI as request targets read it (sip_uri_parse, then the parameters
 * ua.c asks for); n bytes without a NUL after them, so ASan sees any
 * read past the end */
static void try_uri(const char *s, size_t n)
{
	char *c = malloc(n ? n : 1);
	struct sip_uri u;
	struct sip_span v;

	memcpy(c, s, n);
	if (sip_uri_parse(c, n, &u) == 0) {
		touch_span(u.scheme);
		touch_span(u.user);
		touch_span(u.password);
		touch_span(u.port);
		touch_span(u.headers);
		if (sip_uri_param(&u, "transport", &v))
			touch_span(v);
		if (sip_uri_param(&u, "maddr", &v))
			touch_span(v);
		sink += (unsigned)sip_uri_param(&u, "lr", &v);
		if (u.host.n < 64) {
			char host[64];
			memcpy(host, u.host.p, u.host.n);
			host[u.host.n] = '\0';
			if (numeric_host(host)) {
				struct sip_addr a;
				if (sip_addr_resolve(host, 5060, &a) == 0)
					use_addr(&a);
			}
		}
	}
	sink += (unsigned)sip_uri_ok(c, n) + (unsigned)sip_uri_has_lr(c, n);
	free(c);
}

/* name-addrs as one From/To value and as a Contact list (the split
 * sip.core.name_addrs and the dialogs use), their parameters and tag */
static void try_name_addr(const char *s, size_t n)
{
	char *c = malloc(n ? n : 1);
	const char *p, *e;
	int list;

	memcpy(c, s, n);
	e = c + n;
	for (list = 0; list < 2; list++) {
		p = c;
		while (p < e) {
			struct sip_name_addr na;
			struct sip_span name, value;
			const char *q, *end = sip_name_addr_parse(p, e, list, &na);
			if (!end)
				break;
			if (na.uri.p < c || na.uri.p + na.uri.n > e ||
			    na.params.p < c || na.params.p + na.params.n > e ||
			    (na.display.p && (na.display.p < c || na.display.p + na.display.n > e)))
				abort();
			touch_span(na.display);
			touch_span(na.uri);
			q = na.params.p;
			while ((q = sip_param_next(q, na.params.p + na.params.n, &name, &value)) && name.n) {
				touch_span(name);
				touch_span(value);
			}
			if (end == e || !list)
				break;
			p = end + 1;
		}
	}
	touch_span(sip_name_addr_tag(c, n));
	free(c);
}

static void try_listen(const char *s)
{
	struct sip_addr a;
	int proto;

	if (sip_addr_parse_listen(s, &proto, &a) == 0) {
		touch(sip_proto_name(proto));
		use_addr(&a);
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_init();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s, *pre;
	static const char *const prefixes[] = { "udp:", "tcp:", "tls:" };
	size_t i;

	fuzz_reset_random();
	if (size > 8192)
		return 0;
	s = malloc(size + 1);
	memcpy(s, data, size);
	s[size] = '\0';         /* the engine's URI text is always a C string */

	try_uri(s, size);
	try_name_addr(s, size);
	try_listen(s);
	pre = malloc(size + 5);
	for (i = 0; i < 3; i++) {
		memcpy(pre, prefixes[i], 4);
		memcpy(pre + 4, s, size + 1);
		try_listen(pre);
	}
	if (numeric_host(s)) {
		struct sip_addr a;
		if (sip_addr_resolve(s, 5060, &a) == 0)
			use_addr(&a);
	}
	free(pre);
	free(s);
	return 0;
}
