/*
 * dns.c - RFC 3263 server location with c-ares on the libev loop.
 *
 * c-ares tells us which sockets it wants watched (ARES_OPT_SOCK_STATE_CB):
 * each gets an ev_io watcher, and one ev_timer follows ares_timeout(), so
 * nothing here ever blocks the loop. The watchers are weak (ev_unref): a
 * lookup keeps nothing alive by itself, whoever waits for it does.
 *
 * A lookup runs in stages, each a batch of queries in flight at once:
 * NAPTR on the domain (4.1, only when neither transport nor port is
 * given), SRV on what NAPTR named (or on _sip._udp, _sip._tcp and
 * _sips._tcp when it named nothing), then A and AAAA on every SRV target
 * (or on the domain itself when there is no SRV record). The depth is
 * fixed, so answers that loop (CNAME or SRV to itself) cannot make a
 * lookup go round: they end as "no address".
 *
 * Answers are cached as c-ares received them, for the smallest TTL of
 * their records (negative ones for the SOA's, RFC 2308, or NEG_TTL; a
 * TTL of 0 for one second), and
 * parsed again on a hit with the same code; c-ares's parsers read them
 * (ares_parse_naptr_reply, _srv_, _a_, _aaaa_), sip_dns_info only reads
 * the header and the TTLs, which c-ares does not give for NAPTR and SRV.
 */
#define _GNU_SOURCE
#include "dns.h"

#include <ares.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netdb.h>
#include <errno.h>
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/rand.h>

#define MAX_SRVQ 8              /* SRV queries (NAPTR records used) */
#define MAX_HOSTS 16            /* SRV targets, all SRV queries together */
#define MAX_ADDRS 4             /* addresses per family and target */
#define MAX_TARGETS 64
#define CACHE_MAX 1024
#define NEG_TTL 30              /* a negative answer without a SOA */
#define MAX_TTL 86400
#define BL_MAX 64

#ifndef T_NAPTR
#define T_NAPTR 35
#endif
#ifndef T_SRV
#define T_SRV 33
#endif

struct dns_io {
	struct dns_io *next;
	struct sip_dns *d;
	int fd;
	ev_io w;
};

struct dns_cache {
	struct sip_hnode hn;            /* d->cache, by key "type name" */
	struct dns_cache *next, *prev;  /* d->chead..ctail, oldest first */
	double expires;
	int status;
	int alen;
	unsigned char *abuf;
	char key[];
};

struct dns_bl {
	int proto;
	struct sip_addr addr;
	double until;
};

struct sip_dns {
	struct sip_env *env;
	ares_channel ch;
	int ch_ok;
	struct dns_io *ios;
	ev_timer tmo;
	int tmo_weak;
	struct sip_htab cache;
	struct dns_cache *chead, *ctail;
	struct dns_bl bl[BL_MAX];
	int nbl;
	double blacklist;
	struct sip_dns_lookup *lookups;
	int destroying;
};

enum { ST_START, ST_NAPTR, ST_SRV, ST_ADDR, ST_DONE };

struct srvq {
	char name[256];
	int proto;
};

struct host {
	char name[256];
	int port, proto, prio, weight, rank;
	int n4, n6;
	struct sip_addr a4[MAX_ADDRS], a6[MAX_ADDRS];
};

struct sip_dns_lookup {
	struct sip_dns *d;
	struct sip_dns_lookup *next, *prev;
	sip_dns_cb cb;
	void *arg;
	char host[256];
	int port, proto, sips;
	int stage;
	int outstanding;                /* queries in flight */
	int busy;                       /* inside progress() */
	int worst;                      /* the worst c-ares status seen */
	int no_service;                 /* an SRV target "." (RFC 2782) */
	int fatal;                      /* the servers failed: stop here */
	int nsrv, nhosts;
	struct srvq srv[MAX_SRVQ];
	struct host hosts[MAX_HOSTS];
};

/* one query in flight; key is "type name", the cache's key */
struct dq {
	struct sip_dns_lookup *lk;
	int type;
	int idx;                        /* the SRV query it answers */
	size_t name_off;
	char key[];
};

/* ---- our own parser: header and TTLs ---- */

static int skip_name(const unsigned char *buf, size_t len, size_t *off)
{
	size_t p = *off;
	int labels = 0;

	for (;;) {
		unsigned c;
		if (p >= len)
			return -EINVAL;
		c = buf[p];
		if (c == 0) {
			*off = p + 1;
			return 0;
		}
		if ((c & 0xc0) == 0xc0) {
			/* a pointer ends the name where it stands */
			if (p + 1 >= len)
				return -EINVAL;
			*off = p + 2;
			return 0;
		}
		if (c & 0xc0)
			return -EINVAL;         /* 0x40 and 0x80: no such label */
		p += 1 + c;
		if (++labels > 127)
			return -EINVAL;
	}
}

static unsigned get16(const unsigned char *p)
{
	return (unsigned)p[0] << 8 | p[1];
}

static uint32_t get32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int sip_dns_info(const unsigned char *buf, size_t len, struct sip_dns_info *out)
{
	unsigned qd, an, ns, i;
	size_t off = 12;

	memset(out, 0, sizeof *out);
	out->ttl = out->neg_ttl = -1;
	if (!buf || len < 12)
		return -EINVAL;
	out->tc = (buf[2] & 0x02) != 0;
	out->rcode = buf[3] & 0x0f;
	qd = get16(buf + 4);
	an = get16(buf + 6);
	ns = get16(buf + 8);
	for (i = 0; i < qd; i++) {
		if (skip_name(buf, len, &off) || off + 4 > len)
			return -EINVAL;
		off += 4;
	}
	for (i = 0; i < an + ns; i++) {
		unsigned type, rdlen;
		uint32_t ttl;
		if (skip_name(buf, len, &off) || off + 10 > len)
			return -EINVAL;
		type = get16(buf + off);
		ttl = get32(buf + off + 4);
		rdlen = get16(buf + off + 8);
		off += 10;
		if (off + rdlen > len)
			return -EINVAL;
		/* RFC 2181 8: a TTL with the top bit set counts as 0 */
		if (ttl & 0x80000000u)
			ttl = 0;
		if (i < an) {
			out->ancount++;
			if (out->ttl < 0 || ttl < out->ttl)
				out->ttl = ttl;
		} else if (type == 6) {
			/* SOA: MNAME, RNAME, then SERIAL REFRESH RETRY EXPIRE MINIMUM */
			size_t p = off;
			if (!skip_name(buf, off + rdlen, &p) && !skip_name(buf, off + rdlen, &p) &&
			    p + 20 <= off + rdlen) {
				uint32_t min = get32(buf + p + 16);
				if (min & 0x80000000u)
					min = 0;
				out->neg_ttl = min < ttl ? min : ttl;
			}
		}
		off += rdlen;
	}
	return 0;
}

/* ---- watchers ---- */

static void timer_stop(struct sip_dns *d)
{
	struct ev_loop *loop = d->env->loop;

	if (!ev_is_active(&d->tmo) && !ev_is_pending(&d->tmo))
		return;
	if (d->tmo_weak)
		ev_ref(loop);
	d->tmo_weak = 0;
	ev_timer_stop(loop, &d->tmo);
}

/* the next c-ares deadline, after anything that may have changed it */
static void timer_arm(struct sip_dns *d)
{
	struct timeval tv, *tvp;

	timer_stop(d);
	if (d->destroying || !d->ch_ok)
		return;
	tvp = ares_timeout(d->ch, NULL, &tv);
	if (!tvp)
		return;
	ev_timer_set(&d->tmo, (double)tvp->tv_sec + tvp->tv_usec / 1e6, 0.);
	ev_timer_start(d->env->loop, &d->tmo);
	ev_unref(d->env->loop);
	d->tmo_weak = 1;
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct sip_dns *d = w->data;

	(void)revents;
	if (d->tmo_weak) {
		ev_ref(loop);   /* the fired timer dropped the loop's count */
		d->tmo_weak = 0;
	}
	ares_process_fd(d->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	timer_arm(d);
}

static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct dns_io *io = w->data;
	struct sip_dns *d = io->d;
	int fd = io->fd;

	(void)loop;
	/* io may be freed inside (c-ares closes the socket): not used after */
	ares_process_fd(d->ch, (revents & EV_READ) ? fd : ARES_SOCKET_BAD,
	                (revents & EV_WRITE) ? fd : ARES_SOCKET_BAD);
	timer_arm(d);
}

static void io_stop(struct sip_dns *d, struct dns_io *io)
{
	if (ev_is_active(&io->w)) {
		ev_ref(d->env->loop);
		ev_io_stop(d->env->loop, &io->w);
	}
}

static void sock_state_cb(void *data, ares_socket_t fd, int readable, int writable)
{
	struct sip_dns *d = data;
	struct dns_io *io, **pp;

	for (pp = &d->ios; (io = *pp); pp = &io->next)
		if (io->fd == fd)
			break;
	if (!readable && !writable) {
		if (io) {
			io_stop(d, io);
			*pp = io->next;
			free(io);
		}
		return;
	}
	if (!io) {
		io = calloc(1, sizeof *io);
		if (!io)
			return;         /* c-ares times the query out */
		io->d = d;
		io->fd = fd;
		ev_init(&io->w, io_cb);
		io->w.data = io;
		io->next = d->ios;
		d->ios = io;
	}
	io_stop(d, io);
	if (d->destroying)
		return;
	ev_io_set(&io->w, fd, (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0));
	ev_io_start(d->env->loop, &io->w);
	ev_unref(d->env->loop);
}

/* ---- set-up ---- */

int sip_dns_new(struct sip_env *env, const struct sip_dns_cfg *cfg, struct sip_dns **out,
                char *err, size_t errlen)
{
	static int lib_ok;
	struct ares_options o;
	struct sip_dns *d;
	double timeout = cfg && cfg->timeout > 0 ? cfg->timeout : 5.;
	int rc;

	*out = NULL;
	if (!lib_ok) {
		if (ares_library_init(ARES_LIB_INIT_ALL) != ARES_SUCCESS) {
			snprintf(err, errlen, "dns: c-ares does not start");
			return -ENOMEM;
		}
		lib_ok = 1;
	}
	d = calloc(1, sizeof *d);
	if (!d || sip_htab_init(&d->cache, 64)) {
		free(d);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	d->env = env;
	d->blacklist = cfg && cfg->blacklist >= 0 ? cfg->blacklist : 30.;
	ev_init(&d->tmo, timer_cb);
	d->tmo.data = d;
	memset(&o, 0, sizeof o);
	o.sock_state_cb = sock_state_cb;
	o.sock_state_cb_data = d;
	/* two tries, the second twice as long (c-ares doubles it): the
	 * query gives up after `timeout` in all */
	o.tries = 2;
	o.timeout = (int)(timeout * 1000. / 3.);
	if (o.timeout < 1)
		o.timeout = 1;
	o.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES;
	rc = ares_init_options(&d->ch, &o, ARES_OPT_SOCK_STATE_CB | ARES_OPT_TRIES |
	                       ARES_OPT_TIMEOUTMS | ARES_OPT_FLAGS);
	if (rc != ARES_SUCCESS) {
		snprintf(err, errlen, "dns: %s", ares_strerror(rc));
		sip_htab_free(&d->cache);
		free(d);
		return rc == ARES_ENOMEM ? -ENOMEM : -EINVAL;
	}
	d->ch_ok = 1;
	if (cfg && cfg->servers && cfg->servers[0]) {
		rc = ares_set_servers_ports_csv(d->ch, cfg->servers);
		if (rc != ARES_SUCCESS) {
			snprintf(err, errlen, "dns: bad servers '%s'", cfg->servers);
			sip_dns_free(d);
			return -EINVAL;
		}
	}
	*out = d;
	return 0;
}

static void cache_drop(struct sip_dns *d, struct dns_cache *e)
{
	sip_htab_remove(&d->cache, &e->hn);
	if (e->prev)
		e->prev->next = e->next;
	else
		d->chead = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		d->ctail = e->prev;
	free(e->abuf);
	free(e);
}

static void lookup_free(struct sip_dns_lookup *lk)
{
	struct sip_dns *d = lk->d;

	if (lk->prev)
		lk->prev->next = lk->next;
	else
		d->lookups = lk->next;
	if (lk->next)
		lk->next->prev = lk->prev;
	free(lk);
}

void sip_dns_free(struct sip_dns *d)
{
	if (!d)
		return;
	d->destroying = 1;
	timer_stop(d);
	/* every query in flight gets ARES_EDESTRUCTION: its dq is freed */
	if (d->ch_ok)
		ares_destroy(d->ch);
	while (d->ios) {
		struct dns_io *io = d->ios;
		d->ios = io->next;
		io_stop(d, io);
		free(io);
	}
	while (d->lookups)
		lookup_free(d->lookups);
	while (d->chead)
		cache_drop(d, d->chead);
	sip_htab_free(&d->cache);
	free(d);
}

/* ---- the cache ---- */

static struct dns_cache *cache_get(struct sip_dns *d, const char *key)
{
	struct dns_cache *e = (struct dns_cache *)sip_htab_find(&d->cache, key);

	if (e && e->expires <= ev_now(d->env->loop)) {
		cache_drop(d, e);
		return NULL;
	}
	return e;
}

static void cache_put(struct sip_dns *d, const char *key, int status, const unsigned char *abuf,
                      int alen)
{
	struct sip_dns_info info;
	struct dns_cache *e;
	int64_t ttl;
	size_t kl = strlen(key);

	if (!abuf || alen <= 0 || sip_dns_info(abuf, (size_t)alen, &info))
		return;
	if (status == ARES_SUCCESS)
		ttl = info.ttl;
	else if (status == ARES_ENODATA || status == ARES_ENOTFOUND)
		ttl = info.neg_ttl >= 0 ? info.neg_ttl : NEG_TTL;
	else
		return;
	/* TTL 0 is kept one second all the same: the request and what
	 * follows it at once (its ACK, an in-dialog request built outside
	 * the transaction) find the same answer without a second lookup */
	if (ttl <= 0)
		ttl = 1;
	if (ttl > MAX_TTL)
		ttl = MAX_TTL;
	if ((e = (struct dns_cache *)sip_htab_find(&d->cache, key)))
		cache_drop(d, e);
	/* full: the oldest goes (they were put in order; most expire first) */
	while (d->cache.count >= CACHE_MAX && d->chead)
		cache_drop(d, d->chead);
	e = malloc(sizeof *e + kl + 1);
	if (!e)
		return;
	e->abuf = malloc((size_t)alen);
	if (!e->abuf) {
		free(e);
		return;
	}
	memcpy(e->abuf, abuf, (size_t)alen);
	e->alen = alen;
	e->status = status;
	e->expires = ev_now(d->env->loop) + (double)ttl;
	memcpy(e->key, key, kl + 1);
	e->hn.key = e->key;
	sip_htab_insert(&d->cache, &e->hn);
	e->next = NULL;
	e->prev = d->ctail;
	if (d->ctail)
		d->ctail->next = e;
	else
		d->chead = e;
	d->ctail = e;
}

int sip_dns_cache_answer(struct sip_dns *d, const unsigned char *abuf, size_t alen)
{
	struct sip_dns_info info;
	char key[300], *name = NULL;
	long enclen;
	int status, type, i;

	if (alen > 65535 || sip_dns_info(abuf, alen, &info) || alen < 13 || get16(abuf + 4) < 1)
		return -EINVAL;
	if (ares_expand_name(abuf + 12, abuf, (int)alen, &name, &enclen) != ARES_SUCCESS)
		return -EINVAL;
	if (12 + (size_t)enclen + 4 > alen || strlen(name) > 255) {
		ares_free_string(name);
		return -EINVAL;
	}
	type = (int)get16(abuf + 12 + enclen);
	snprintf(key, sizeof key, "%d %s", type, name);
	ares_free_string(name);
	for (i = 0; key[i]; i++)
		if (key[i] >= 'A' && key[i] <= 'Z')
			key[i] = (char)(key[i] + 32);
	/* as c-ares's ares_query judges a header */
	if (info.rcode == 0)
		status = get16(abuf + 6) > 0 ? ARES_SUCCESS : ARES_ENODATA;
	else if (info.rcode == 3)
		status = ARES_ENOTFOUND;
	else
		return -EINVAL;
	cache_put(d, key, status, abuf, (int)alen);
	return 0;
}

/* ---- the blacklist ---- */

void sip_dns_blacklist(struct sip_dns *d, int proto, const struct sip_addr *a, double seconds)
{
	double now = ev_now(d->env->loop);
	int i, slot = -1;

	if (seconds < 0)
		seconds = d->blacklist;
	if (seconds <= 0)
		return;
	for (i = 0; i < d->nbl; i++) {
		if (d->bl[i].proto == proto && sip_addr_eq(&d->bl[i].addr, a)) {
			slot = i;
			break;
		}
		if (d->bl[i].until <= now || slot < 0 || d->bl[i].until < d->bl[slot].until)
			slot = i;       /* expired, or the one that ends first */
	}
	if (i == d->nbl && d->nbl < BL_MAX)
		slot = d->nbl++;
	d->bl[slot].proto = proto;
	d->bl[slot].addr = *a;
	d->bl[slot].until = now + seconds;
}

int sip_dns_blacklisted(struct sip_dns *d, int proto, const struct sip_addr *a)
{
	double now = ev_now(d->env->loop);
	int i;

	for (i = 0; i < d->nbl; i++)
		if (d->bl[i].until > now && d->bl[i].proto == proto && sip_addr_eq(&d->bl[i].addr, a))
			return 1;
	return 0;
}

/* ---- lookups ---- */

/* which failure to report when nothing was found: the servers' own
 * trouble first, then a missing name, then missing records */
static int severity(int status)
{
	switch (status) {
	case ARES_SUCCESS: return 0;
	case ARES_ENODATA: return 1;
	case ARES_ENOTFOUND: return 2;
	case ARES_EBADRESP: case ARES_EFORMERR: case ARES_ENOTIMP: case ARES_EBADNAME: return 3;
	default: return 4;      /* timeout, unreachable, refused, server failure */
	}
}

static void note(struct sip_dns_lookup *lk, int status)
{
	if (severity(status) > severity(lk->worst))
		lk->worst = status;
}

static const char *reason(int status)
{
	switch (status) {
	case ARES_ENODATA: return "no address";
	case ARES_ENOTFOUND: return "not found";
	case ARES_ETIMEOUT: return "timeout";
	case ARES_ECONNREFUSED: return "server unreachable";
	case ARES_EBADRESP: return "bad answer";
	case ARES_EFORMERR: return "format error";
	case ARES_ESERVFAIL: return "server failure";
	case ARES_EREFUSED: return "refused";
	case ARES_ENOTIMP: return "not implemented";
	case ARES_EBADNAME: return "bad name";
	case ARES_ENOMEM: return "out of memory";
	default: return ares_strerror(status);
	}
}

static int proto_of_service(const char *s, int sips)
{
	if (!strcasecmp(s, "SIPS+D2T"))
		return SIP_TLS;
	if (sips)
		return -1;
	if (!strcasecmp(s, "SIP+D2U"))
		return SIP_UDP;
	if (!strcasecmp(s, "SIP+D2T"))
		return SIP_TCP;
	return -1;
}

static const char *srv_prefix(int proto)
{
	return proto == SIP_TLS ? "_sips._tcp." : proto == SIP_TCP ? "_sip._tcp." : "_sip._udp.";
}

static void srv_add(struct sip_dns_lookup *lk, const char *name, int proto)
{
	struct srvq *s;
	int i;

	if (lk->nsrv >= MAX_SRVQ || strlen(name) >= sizeof s->name)
		return;
	for (i = 0; i < lk->nsrv; i++)
		if (lk->srv[i].proto == proto && !strcasecmp(lk->srv[i].name, name))
			return;
	s = &lk->srv[lk->nsrv++];
	snprintf(s->name, sizeof s->name, "%s", name);
	s->proto = proto;
}

static struct host *host_add(struct sip_dns_lookup *lk, const char *name, int port, int proto,
                             int prio, int weight, int rank)
{
	struct host *h;
	int i;

	if (lk->nhosts >= MAX_HOSTS || strlen(name) >= sizeof h->name || !name[0])
		return NULL;
	for (i = 0; i < lk->nhosts; i++)
		if (lk->hosts[i].port == port && lk->hosts[i].proto == proto &&
		    !strcasecmp(lk->hosts[i].name, name))
			return NULL;
	h = &lk->hosts[lk->nhosts++];
	memset(h, 0, sizeof *h);
	snprintf(h->name, sizeof h->name, "%s", name);
	h->port = port;
	h->proto = proto;
	h->prio = prio;
	h->weight = weight;
	h->rank = rank;
	return h;
}

static void on_naptr(struct sip_dns_lookup *lk, int status, const unsigned char *abuf, int alen)
{
	struct ares_naptr_reply *list = NULL, *r, *pick[MAX_SRVQ];
	int n = 0, i, j;

	if (status == ARES_SUCCESS && (status = ares_parse_naptr_reply(abuf, alen, &list)) == ARES_SUCCESS) {
		for (r = list; r && n < MAX_SRVQ; r = r->next) {
			/* only terminal "s" records to SRV, for a service we speak */
			if (!r->flags || strcasecmp((const char *)r->flags, "s") || !r->service ||
			    proto_of_service((const char *)r->service, lk->sips) < 0 || !r->replacement ||
			    !r->replacement[0])
				continue;
			pick[n++] = r;
		}
		/* order, then preference (RFC 3403) */
		for (i = 1; i < n; i++)
			for (j = i; j > 0 && (pick[j]->order < pick[j - 1]->order ||
			     (pick[j]->order == pick[j - 1]->order &&
			      pick[j]->preference < pick[j - 1]->preference)); j--) {
				r = pick[j];
				pick[j] = pick[j - 1];
				pick[j - 1] = r;
			}
		for (i = 0; i < n; i++)
			srv_add(lk, pick[i]->replacement, proto_of_service((const char *)pick[i]->service, lk->sips));
		ares_free_data(list);
		return;
	}
	note(lk, status);
	/* the servers fail or the domain does not exist: SRV and A on it
	 * cannot do better */
	if (severity(status) >= 4 || status == ARES_ENOTFOUND)
		lk->fatal = 1;
}

static uint32_t rand32(void)
{
	uint32_t r = 0;

	if (RAND_bytes((unsigned char *)&r, sizeof r) != 1)
		r = (uint32_t)random();
	return r;
}

/* RFC 2782: by priority; within one, a random order weighted by weight
 * (zero weights first, so they get a small chance) */
static void srv_order(struct ares_srv_reply **v, int n)
{
	int i, j, start;

	for (i = 1; i < n; i++)
		for (j = i; j > 0 && (v[j]->priority < v[j - 1]->priority ||
		     (v[j]->priority == v[j - 1]->priority && v[j]->weight == 0 && v[j - 1]->weight)); j--) {
			struct ares_srv_reply *t = v[j];
			v[j] = v[j - 1];
			v[j - 1] = t;
		}
	for (start = 0; start < n; ) {
		int end = start;
		while (end < n && v[end]->priority == v[start]->priority)
			end++;
		for (i = start; i < end; i++) {
			uint32_t sum = 0, r, run = 0;
			for (j = i; j < end; j++)
				sum += v[j]->weight;
			r = sum ? rand32() % (sum + 1) : 0;
			for (j = i; j < end; j++) {
				run += v[j]->weight;
				if (run >= r)
					break;
			}
			if (j >= end)
				j = end - 1;
			if (j != i) {
				struct ares_srv_reply *t = v[j];
				memmove(&v[i + 1], &v[i], (size_t)(j - i) * sizeof *v);
				v[i] = t;
			}
		}
		start = end;
	}
}

static void on_srv(struct sip_dns_lookup *lk, int idx, int status, const unsigned char *abuf, int alen)
{
	struct ares_srv_reply *list = NULL, *r, *v[MAX_HOSTS];
	int n = 0, i;

	if (status == ARES_SUCCESS)
		status = ares_parse_srv_reply(abuf, alen, &list);
	if (status != ARES_SUCCESS) {
		note(lk, status);
		return;
	}
	for (r = list; r && n < MAX_HOSTS; r = r->next) {
		if (!r->host || !r->host[0] || !strcmp(r->host, ".")) {
			lk->no_service = 1;     /* "decidedly not available" */
			continue;
		}
		v[n++] = r;
	}
	srv_order(v, n);
	for (i = 0; i < n; i++)
		host_add(lk, v[i]->host, v[i]->port, lk->srv[idx].proto, v[i]->priority, v[i]->weight, idx);
	ares_free_data(list);
}

static void on_addr(struct sip_dns_lookup *lk, int type, const char *name, int status,
                    const unsigned char *abuf, int alen)
{
	struct ares_addrttl a4[MAX_ADDRS];
	struct ares_addr6ttl a6[MAX_ADDRS];
	int n = MAX_ADDRS, i, k;

	if (status == ARES_SUCCESS)
		status = type == T_A ? ares_parse_a_reply(abuf, alen, NULL, a4, &n)
		                     : ares_parse_aaaa_reply(abuf, alen, NULL, a6, &n);
	if (status == ARES_SUCCESS && n <= 0)
		status = ARES_ENODATA;
	if (status != ARES_SUCCESS) {
		note(lk, status);
		return;
	}
	for (k = 0; k < lk->nhosts; k++) {
		struct host *h = &lk->hosts[k];
		if (strcasecmp(h->name, name))
			continue;
		for (i = 0; i < n && i < MAX_ADDRS; i++) {
			struct sip_addr *a = type == T_A ? &h->a4[i] : &h->a6[i];
			memset(a, 0, sizeof *a);
			if (type == T_A) {
				a->ss.sin.sin_family = AF_INET;
				a->ss.sin.sin_addr = a4[i].ipaddr;
				a->len = sizeof(struct sockaddr_in);
			} else {
				a->ss.sin6.sin6_family = AF_INET6;
				memcpy(&a->ss.sin6.sin6_addr, &a6[i].ip6addr, 16);
				a->len = sizeof(struct sockaddr_in6);
			}
			sip_addr_set_port(a, h->port);
		}
		if (type == T_A)
			h->n4 = n < MAX_ADDRS ? n : MAX_ADDRS;
		else
			h->n6 = n < MAX_ADDRS ? n : MAX_ADDRS;
	}
}

static void handle(struct sip_dns_lookup *lk, int type, int idx, const char *name, int status,
                   const unsigned char *abuf, int alen)
{
	if (type == T_NAPTR)
		on_naptr(lk, status, abuf, alen);
	else if (type == T_SRV)
		on_srv(lk, idx, status, abuf, alen);
	else
		on_addr(lk, type, name, status, abuf, alen);
}

static int progress(struct sip_dns_lookup *lk);

static void query_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct dq *q = arg;
	struct sip_dns_lookup *lk = q->lk;
	struct sip_dns *d = lk->d;

	(void)timeouts;
	lk->outstanding--;
	if (status == ARES_EDESTRUCTION || d->destroying) {
		free(q);
		return;         /* sip_dns_free frees the lookups */
	}
	cache_put(d, q->key, status, abuf, alen);
	if (lk->cb)
		handle(lk, q->type, q->idx, q->key + q->name_off, status, abuf, alen);
	free(q);
	progress(lk);
}

/* ask for name's records of type: from the cache at once, else c-ares */
static void ask(struct sip_dns_lookup *lk, const char *name, int type, int idx)
{
	char key[300];
	struct dns_cache *e;
	struct dq *q;
	size_t kl;
	int off;

	off = snprintf(key, sizeof key, "%d ", type);
	kl = (size_t)snprintf(key + off, sizeof key - (size_t)off, "%s", name) + (size_t)off;
	if (kl >= sizeof key) {
		note(lk, ARES_EBADNAME);
		return;
	}
	/* names compare without case, and a trailing dot changes nothing */
	{
		size_t i;
		for (i = (size_t)off; i < kl; i++)
			if (key[i] >= 'A' && key[i] <= 'Z')
				key[i] = (char)(key[i] + 32);
		if (kl > (size_t)off + 1 && key[kl - 1] == '.')
			key[--kl] = '\0';
	}
	if ((e = cache_get(lk->d, key))) {
		handle(lk, type, idx, key + off, e->status, e->abuf, e->alen);
		return;
	}
	q = malloc(sizeof *q + kl + 1);
	if (!q) {
		note(lk, ARES_ENOMEM);
		return;
	}
	q->lk = lk;
	q->type = type;
	q->idx = idx;
	q->name_off = (size_t)off;
	memcpy(q->key, key, kl + 1);
	lk->outstanding++;
	/* the callback may run before this returns (a bad name, no server) */
	ares_query(lk->d->ch, q->key + off, C_IN, type, query_cb, q);
}

/* nothing from SRV: the domain itself, with the transport asked for or
 * the first NAPTR named, and the default port (4.2) */
static void fallback_host(struct sip_dns_lookup *lk)
{
	int proto = lk->proto >= 0 ? lk->proto : lk->sips ? SIP_TLS : lk->nsrv ? lk->srv[0].proto : SIP_UDP;
	int port = lk->port ? lk->port : proto == SIP_TLS ? 5061 : 5060;

	host_add(lk, lk->host, port, proto, 0, 0, 0);
}

static void start_addr(struct sip_dns_lookup *lk)
{
	int i, j;

	/* by the rank of the SRV query (NAPTR order), stable */
	for (i = 1; i < lk->nhosts; i++)
		for (j = i; j > 0 && lk->hosts[j].rank < lk->hosts[j - 1].rank; j--) {
			struct host t = lk->hosts[j];
			lk->hosts[j] = lk->hosts[j - 1];
			lk->hosts[j - 1] = t;
		}
	lk->stage = ST_ADDR;
	/* names missing on the way here were fallbacks: the error to tell,
	 * if any, is about the addresses now */
	if (severity(lk->worst) < 3)
		lk->worst = ARES_SUCCESS;
	for (i = 0; i < lk->nhosts; i++) {
		struct host *h = &lk->hosts[i];
		struct sip_addr a;
		int seen = 0;
		for (j = 0; j < i; j++)
			if (!strcasecmp(lk->hosts[j].name, h->name))
				seen = 1;
		if (seen)
			continue;
		if (!sip_addr_numeric(h->name, h->port, &a)) {
			/* an SRV target written as an address */
			for (j = i; j < lk->nhosts; j++) {
				struct host *o = &lk->hosts[j];
				struct sip_addr b = a;
				if (strcasecmp(o->name, h->name))
					continue;
				sip_addr_set_port(&b, o->port);
				if (b.ss.ss_family == AF_INET && o->n4 < MAX_ADDRS)
					o->a4[o->n4++] = b;
				else if (b.ss.ss_family == AF_INET6 && o->n6 < MAX_ADDRS)
					o->a6[o->n6++] = b;
			}
			continue;
		}
		ask(lk, h->name, T_A, i);
		ask(lk, h->name, T_AAAA, i);
	}
}

/* the first host of lk (made on first use) gets one address of family
 * f (0: IPv4 from 4 bytes, 1: IPv6 from 16) */
static struct host *hosts_add_addr(struct sip_dns_lookup *lk, struct host *h, int f, const void *raw)
{
	struct sip_addr *a;

	if (!h) {
		fallback_host(lk);
		if (!lk->nhosts)
			return NULL;
		h = &lk->hosts[0];
	}
	if ((f == 0 ? h->n4 : h->n6) >= MAX_ADDRS)
		return h;
	a = f == 0 ? &h->a4[h->n4++] : &h->a6[h->n6++];
	memset(a, 0, sizeof *a);
	if (f == 0) {
		a->ss.sin.sin_family = AF_INET;
		memcpy(&a->ss.sin.sin_addr, raw, 4);
		a->len = sizeof(struct sockaddr_in);
	} else {
		a->ss.sin6.sin6_family = AF_INET6;
		memcpy(&a->ss.sin6.sin6_addr, raw, 16);
		a->len = sizeof(struct sockaddr_in6);
	}
	sip_addr_set_port(a, h->port);
	return h;
}

/* "localhost" and names under it (RFC 6761 6.3) */
static int is_localhost(const char *name)
{
	size_t n = strlen(name);

	if (n && name[n - 1] == '.')
		n--;
	if (n == 9)
		return !strncasecmp(name, "localhost", 9);
	return n > 10 && !strncasecmp(name + n - 10, ".localhost", 10);
}

/* A name the hosts file knows (localhost, ...) is a host, not a SIP
 * domain: its addresses, no DNS (c-ares reads the file, a local read).
 * localhost is the loopback even where the file omits it (RFC 6761):
 * never a query that a closed network leaves unanswered. */
static int from_hosts(struct sip_dns_lookup *lk)
{
	static const int fams[2] = { AF_INET, AF_INET6 };
	static const unsigned char lo4[4] = { 127, 0, 0, 1 };
	static const unsigned char lo6[16] = { [15] = 1 };
	struct host *h = NULL;
	int f, i;

	for (f = 0; f < 2; f++) {
		struct hostent *he = NULL;
		if (ares_gethostbyname_file(lk->d->ch, lk->host, fams[f], &he) != ARES_SUCCESS || !he)
			continue;
		for (i = 0; he->h_addr_list[i]; i++) {
			if (he->h_length != (f == 0 ? 4 : 16))
				continue;
			if (!(h = hosts_add_addr(lk, h, f, he->h_addr_list[i]))) {
				ares_free_hostent(he);
				return 0;
			}
		}
		ares_free_hostent(he);
	}
	if (!h && is_localhost(lk->host) && (h = hosts_add_addr(lk, h, 0, lo4)))
		hosts_add_addr(lk, h, 1, lo6);
	return h != NULL;
}

/* the queries of the next stage, once those of this one are answered */
static void next_stage(struct sip_dns_lookup *lk)
{
	int i;

	switch (lk->stage) {
	case ST_START:
		if (from_hosts(lk)) {
			lk->stage = ST_ADDR;
			return;
		}
		if (lk->proto < 0 && !lk->port) {
			lk->stage = ST_NAPTR;
			ask(lk, lk->host, T_NAPTR, 0);
			return;
		}
		if (!lk->port) {
			char name[300];
			snprintf(name, sizeof name, "%s%s", srv_prefix(lk->proto), lk->host);
			srv_add(lk, name, lk->proto);
			break;
		}
		fallback_host(lk);
		start_addr(lk);
		return;
	case ST_NAPTR:
		if (lk->fatal) {
			lk->stage = ST_DONE;
			return;
		}
		if (!lk->nsrv) {
			/* no NAPTR for us: SRV for each transport we speak (4.1) */
			char name[300];
			static const int order[] = { SIP_UDP, SIP_TCP, SIP_TLS };
			for (i = 0; i < 3; i++) {
				if (lk->sips && order[i] != SIP_TLS)
					continue;
				snprintf(name, sizeof name, "%s%s", srv_prefix(order[i]), lk->host);
				srv_add(lk, name, order[i]);
			}
		}
		break;
	case ST_SRV:
		if (!lk->nhosts) {
			if (lk->no_service || severity(lk->worst) >= 3) {
				lk->stage = ST_DONE;
				return;
			}
			fallback_host(lk);
		}
		start_addr(lk);
		return;
	case ST_ADDR:
		lk->stage = ST_DONE;
		return;
	default:
		return;
	}
	/* the SRV stage */
	lk->stage = ST_SRV;
	for (i = 0; i < lk->nsrv; i++)
		ask(lk, lk->srv[i].name, T_SRV, i);
}

static void deliver(struct sip_dns_lookup *lk)
{
	struct sip_dns_target t[MAX_TARGETS];
	sip_dns_cb cb = lk->cb;
	size_t n = 0, i, nb;
	int k, j;

	lk->cb = NULL;
	if (!cb)
		return;
	for (k = 0; k < lk->nhosts; k++) {
		struct host *h = &lk->hosts[k];
		for (j = 0; j < h->n4 + h->n6 && n < MAX_TARGETS; j++) {
			t[n].proto = h->proto;
			t[n].addr = j < h->n4 ? h->a4[j] : h->a6[j - h->n4];
			t[n].priority = h->prio;
			t[n].weight = h->weight;
			n++;
		}
	}
	if (!n) {
		char why[400];
		int st = lk->worst;
		if (lk->no_service && severity(st) < 3)
			snprintf(why, sizeof why, "dns: %s: service not available", lk->host);
		else
			snprintf(why, sizeof why, "dns: %s: %s", lk->host, reason(st ? st : ARES_ENODATA));
		cb(lk->arg, why, NULL, 0);
		return;
	}
	/* blacklisted targets last, in their order */
	for (i = 0, nb = 0; i < n; i++) {
		if (sip_dns_blacklisted(lk->d, t[i].proto, &t[i].addr))
			continue;
		if (i != nb) {
			struct sip_dns_target x = t[i];
			memmove(&t[nb + 1], &t[nb], (i - nb) * sizeof *t);
			t[nb] = x;
		}
		nb++;
	}
	cb(lk->arg, NULL, t, n);
}

/* move on while nothing is in flight; 1 when lk was freed */
static int progress(struct sip_dns_lookup *lk)
{
	if (lk->busy)
		return 0;
	lk->busy = 1;
	while (lk->outstanding == 0 && lk->cb && lk->stage != ST_DONE)
		next_stage(lk);
	if (lk->outstanding) {
		lk->busy = 0;
		return 0;
	}
	/* still busy: a cancel from inside the callback frees nothing */
	if (lk->stage == ST_DONE)
		deliver(lk);
	lookup_free(lk);
	return 1;
}

int sip_dns_locate(struct sip_dns *d, const struct sip_dns_query *q, sip_dns_cb cb, void *arg,
                   struct sip_dns_lookup **out)
{
	struct sip_dns_lookup *lk;
	size_t n = strlen(q->host);

	*out = NULL;
	lk = calloc(1, sizeof *lk);
	if (!lk)
		return -ENOMEM;
	lk->d = d;
	lk->cb = cb;
	lk->arg = arg;
	lk->port = q->port;
	lk->proto = q->sips && q->proto >= 0 ? SIP_TLS : q->proto;
	lk->sips = q->sips;
	if (n >= sizeof lk->host || !n) {
		lk->stage = ST_DONE;
		lk->worst = ARES_EBADNAME;
		n = 0;
	}
	memcpy(lk->host, q->host, n);
	lk->host[n] = '\0';
	lk->next = d->lookups;
	if (lk->next)
		lk->next->prev = lk;
	d->lookups = lk;
	if (!progress(lk))
		*out = lk;
	timer_arm(d);
	return 0;
}

static void forgotten(void *arg, const char *err, const struct sip_dns_target *t, size_t n)
{
	(void)arg; (void)err; (void)t; (void)n;
}

void sip_dns_forget(struct sip_dns_lookup *lk)
{
	if (lk) {
		lk->cb = forgotten;
		lk->arg = NULL;
	}
}

void sip_dns_cancel(struct sip_dns_lookup *lk)
{
	if (!lk)
		return;
	lk->cb = NULL;
	lk->arg = NULL;
	if (!lk->outstanding && !lk->busy)
		lookup_free(lk);
	/* else freed when its last query comes back */
}
