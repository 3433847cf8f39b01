/*
 * fuzz_dns.c - DNS answers as dns.c reads them. The input is a series of
 * DNS messages, each preceded by its length (2 bytes, big-endian). Each
 * goes through our own parser (sip_dns_info: header, TTLs, the SOA of a
 * negative answer) and into a resolver's cache under its own question
 * (sip_dns_cache_answer); then RFC 3263 lookups of "fuzz.test" run on
 * what the cache holds, the way they run on answers from a server:
 * c-ares's parsers (NAPTR, SRV, A, AAAA), NAPTR order and service
 * filtering, SRV priority and weight ordering, the A/AAAA fallback, the
 * blacklist order. Whatever the cache lacks is asked of 127.0.0.1:1
 * (nobody), and the lookup is cancelled at once: no answer ever comes
 * from outside the input.
 */
#define _GNU_SOURCE
#include "dns.h"

#include <ev.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void fuzz_init(void);
void fuzz_reset_random(void);
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct sip_env env;
static volatile unsigned sink;

static void got(void *arg, const char *err, const struct sip_dns_target *t, size_t n)
{
	size_t i;

	(void)arg;
	if (err)
		sink += (unsigned)strlen(err);
	for (i = 0; i < n; i++) {
		char a[80];
		sip_addr_str((const struct sockaddr *)&t[i].addr.ss, a, sizeof a);
		sink += (unsigned)t[i].proto + (unsigned)t[i].priority + (unsigned)t[i].weight + (unsigned)a[0];
	}
}

static void locate(struct sip_dns *d, int port, int proto, int sips)
{
	struct sip_dns_query q = { .host = "fuzz.test", .port = port, .proto = proto, .sips = sips };
	struct sip_dns_lookup *lk = NULL;

	if (sip_dns_locate(d, &q, got, NULL, &lk) == 0 && lk)
		sip_dns_cancel(lk);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_init();
	env.loop = ev_loop_new(EVFLAG_AUTO);
	env.log_level = -1;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sip_dns_cfg cfg = { .servers = "127.0.0.1:1", .timeout = 1, .blacklist = 30 };
	struct sip_dns *d;
	char err[160];
	size_t off = 0;

	fuzz_reset_random();
	if (sip_dns_new(&env, &cfg, &d, err, sizeof err))
		return 0;
	while (off + 2 <= size) {
		size_t n = (size_t)data[off] << 8 | data[off + 1];
		struct sip_dns_info info;
		unsigned char *m;
		off += 2;
		if (n > size - off)
			n = size - off;
		/* a copy of its exact size: ASan sees a read past the end */
		m = malloc(n ? n : 1);
		memcpy(m, data + off, n);
		if (sip_dns_info(m, n, &info) == 0)
			sink += (unsigned)info.rcode + info.ancount + (unsigned)info.ttl + (unsigned)info.neg_ttl;
		sip_dns_cache_answer(d, m, n);
		free(m);
		off += n;
	}
	locate(d, 0, -1, 0);            /* NAPTR, SRV, A/AAAA */
	locate(d, 0, -1, 1);            /* sips: TLS only */
	locate(d, 0, SIP_TCP, 0);       /* SRV for one transport */
	locate(d, 5060, -1, 0);         /* A/AAAA only */
	{
		struct sip_addr a;
		if (!sip_addr_numeric("127.0.0.1", 5060, &a)) {
			sip_dns_blacklist(d, SIP_UDP, &a, -1);
			locate(d, 0, -1, 0);    /* again, that target last */
		}
	}
	sip_dns_free(d);
	return 0;
}
