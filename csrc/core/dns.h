/*
 * dns.h - RFC 3263 server location on the loop: c-ares queries (NAPTR,
 * SRV, A, AAAA) driven by libev watchers, never blocking; answers cached
 * for their TTL; a short-lived blacklist of targets found dead. Knows
 * nothing of requests or transactions: locate.c uses it through the
 * callback of sip_dns_locate. No lua.h here.
 */
#ifndef SIP_DNS_H
#define SIP_DNS_H

#include "sip_core.h"

struct sip_dns;
struct sip_dns_lookup;

struct sip_dns_cfg {
	const char *servers;            /* "127.0.0.1:5353,[::1]:53"; NULL or "": the system's */
	double timeout;                 /* seconds one query waits for its answer */
	double blacklist;               /* seconds a dead target goes last; 0: never */
};

/* one place to send a request to, in the order to try them */
struct sip_dns_target {
	int proto;                      /* SIP_UDP, SIP_TCP, SIP_TLS */
	struct sip_addr addr;           /* with the port */
	int priority, weight;           /* the SRV record's; 0 without one */
};

/* RFC 3263 4.1 and 4.2 for a URI whose host is a name */
struct sip_dns_query {
	const char *host;               /* no brackets */
	int port;                       /* 0: none in the URI */
	int proto;                      /* -1: no transport parameter, else SIP_* */
	int sips;                       /* a sips: URI: TLS only */
};

/* The outcome: err NULL and n >= 1 targets (valid during the call), or
 * err "dns: <host>: <reason>" and no target. */
typedef void (*sip_dns_cb)(void *arg, const char *err, const struct sip_dns_target *t, size_t n);

int sip_dns_new(struct sip_env *env, const struct sip_dns_cfg *cfg, struct sip_dns **out,
                char *err, size_t errlen);
/* pending lookups end without their callback */
void sip_dns_free(struct sip_dns *d);

/* Start a lookup. 0: *out is the pending lookup and cb comes later, once
 * (after it the lookup is gone); or *out is NULL and cb has already been
 * called, before the return (everything was in the cache, or the name
 * cannot be looked up). -errno: out of memory, and no callback. */
int sip_dns_locate(struct sip_dns *d, const struct sip_dns_query *q, sip_dns_cb cb, void *arg,
                   struct sip_dns_lookup **out);
/* An answer (a whole DNS message) put in the cache under its question's
 * name and type, as if a server had sent it: for tests and fuzzing. */
int sip_dns_cache_answer(struct sip_dns *d, const unsigned char *abuf, size_t alen);

/* no callback for l after this */
void sip_dns_cancel(struct sip_dns_lookup *l);
/* no callback either, but the lookup goes on to its end: its answers
 * fill the cache for the next one */
void sip_dns_forget(struct sip_dns_lookup *l);

/* a target that failed (transport error, timeout, 503 with Retry-After)
 * goes last in answers for `seconds` (< 0: the configured time) */
void sip_dns_blacklist(struct sip_dns *d, int proto, const struct sip_addr *a, double seconds);
int sip_dns_blacklisted(struct sip_dns *d, int proto, const struct sip_addr *a);

/* What c-ares does not parse: the header, the smallest TTL of the
 * answer records and the negative TTL (RFC 2308: the SOA of the
 * authority section) of a DNS message. Our own parser, fuzzed
 * (fuzz/fuzz_dns.c). 0, or -EINVAL for a message that does not parse. */
struct sip_dns_info {
	int rcode;
	int tc;                         /* truncated */
	unsigned ancount;               /* answer records read */
	int64_t ttl;                    /* smallest answer TTL; -1 without answers */
	int64_t neg_ttl;                /* min(SOA TTL, SOA MINIMUM); -1 without a SOA */
};
int sip_dns_info(const unsigned char *buf, size_t len, struct sip_dns_info *out);

#endif
