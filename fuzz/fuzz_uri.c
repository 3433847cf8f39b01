/*
 * fuzz_uri.c - URIs and addresses as the engine reads them: osip_uri_parse
 * with the parameter lookups and serialisation ua.c does (transport, lr,
 * maddr, the port), name-addr values (From/To/Contact via osip_from_parse,
 * and their tags), and our address helpers: sip_addr_parse_listen on the
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

static void try_uri(const char *s)
{
	osip_uri_t *u = NULL;
	osip_uri_param_t *p = NULL;
	char *out = NULL;

	if (osip_uri_init(&u))
		return;
	if (osip_uri_parse(u, s) == 0) {
		if (osip_uri_to_str(u, &out) == 0) {
			touch(out);
			osip_free(out);
		}
		touch(u->scheme);
		osip_uri_uparam_get_byname(u, "transport", &p);
		if (p)
			touch(p->gvalue);
		p = NULL;
		osip_uri_uparam_get_byname(u, "lr", &p);
		p = NULL;
		osip_uri_uparam_get_byname(u, "maddr", &p);
		if (u->host && numeric_host(u->host)) {
			struct sip_addr a;
			int port = u->port && *u->port ? atoi(u->port) : 5060;
			if (port > 0 && port <= 65535 && sip_addr_resolve(u->host, port, &a) == 0)
				use_addr(&a);
		}
	}
	osip_uri_free(u);
}

static void try_name_addr(const char *s)
{
	osip_from_t *f = NULL;
	char *out = NULL;

	if (osip_from_init(&f))
		return;
	if (osip_from_parse(f, s) == 0) {
		osip_generic_param_t *tag = NULL;
		osip_from_get_tag(f, &tag);
		touch(tag ? tag->gvalue : NULL);
		if (osip_from_to_str(f, &out) == 0) {
			touch(out);
			osip_free(out);
		}
		if (f->url && osip_uri_to_str(f->url, &out) == 0) {
			touch(out);
			osip_free(out);
		}
	}
	osip_from_free(f);
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

	try_uri(s);
	try_name_addr(s);
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
