/***
 * sip.core.pcap - a pcap file of SIP messages, written with libpcap's dump
 * writer, for Wireshark, tshark and sngrep.
 *
 * Each message is one frame: an Ethernet header (zero MACs), an IPv4 or
 * IPv6 header and, for UDP, a UDP header; for TCP and TLS a TCP segment
 * (PSH|ACK) whose sequence numbers follow the bytes written per direction
 * of each connection, so the dissectors reassemble streams as they would
 * from a capture. A TLS message is written as its plaintext. Every frame is
 * flushed to the file at once: a crash loses nothing already traced.
 *
 * The file's addresses are the sockets' own: a listener on a wildcard
 * address (0.0.0.0, ::) shows the loopback address when the peer is on
 * loopback, the wildcard otherwise.
 *
 * The scheduler's trace hook feeds it (lua/sip/trace.lua); nothing here
 * knows SIP.
 * @module sip.core.pcap
 */
#define _DEFAULT_SOURCE         /* libpcap's headers use u_int, u_char */
#include "lsip.h"

#include <arpa/inet.h>
#include <pcap/pcap.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PCAP_MT "sip.Pcap"
#define SNAPLEN 262144
#define FLOWS 256               /* TCP sequence state: an open-addressed cache */
#define PROBES 16               /* slots a flow may sit in, from its hash on */
#define SEG_MAX 65000           /* the largest payload of one frame */

/* an endpoint: family, address bytes (4 or 16), port */
struct ep {
	int family;
	uint8_t a[16];
	uint16_t port;
};

/* one direction of one TCP connection and the next sequence number */
struct flow {
	struct ep src, dst;
	uint32_t seq;
	int used;
	unsigned long last;             /* frames written when it was last used */
};

struct lpcap {
	pcap_t *p;
	pcap_dumper_t *d;
	unsigned long frames;
	struct flow flows[FLOWS];
	uint8_t frame[14 + 40 + 20 + SEG_MAX];
};

static struct lpcap *check_pcap(lua_State *L, int idx)
{
	struct lpcap *pc = luaL_checkudata(L, idx, PCAP_MT);

	if (!pc->d)
		luaL_error(L, "sip.Pcap: the file is closed");
	return pc;
}

/* "1.2.3.4:5060" or "[::1]:5060" */
static int parse_ep(const char *s, struct ep *e)
{
	char host[64];
	const char *colon;
	size_t n;
	long port;
	char *end;

	memset(e, 0, sizeof *e);
	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (!close || close[1] != ':')
			return -1;
		n = (size_t)(close - s - 1);
		colon = close + 1;
		s++;
		e->family = AF_INET6;
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			return -1;
		n = (size_t)(colon - s);
		e->family = AF_INET;
	}
	if (n >= sizeof host)
		return -1;
	memcpy(host, s, n);
	host[n] = '\0';
	if (inet_pton(e->family, host, e->a) != 1)
		return -1;
	port = strtol(colon + 1, &end, 10);
	if (*end || port < 0 || port > 65535)
		return -1;
	e->port = (uint16_t)port;
	return 0;
}

static int ep_is_any(const struct ep *e)
{
	static const uint8_t zero[16];

	return memcmp(e->a, zero, e->family == AF_INET ? 4 : 16) == 0;
}

static int ep_is_loopback(const struct ep *e)
{
	static const uint8_t v6lo[16] = { [15] = 1 };

	if (e->family == AF_INET)
		return e->a[0] == 127;
	return memcmp(e->a, v6lo, 16) == 0;
}

/* the local end as the peer saw it: a wildcard becomes loopback when the
 * peer is on loopback; a family other than the peer's, the wildcard */
static void fix_local(struct ep *local, const struct ep *peer)
{
	uint16_t port = local->port;

	if (local->family != peer->family) {
		memset(local, 0, sizeof *local);
		local->family = peer->family;
		local->port = port;
	}
	if (ep_is_any(local) && ep_is_loopback(peer)) {
		if (peer->family == AF_INET) {
			local->a[0] = 127;
			local->a[3] = 1;
		} else {
			local->a[15] = 1;
		}
	}
}

static uint32_t sum16(uint32_t sum, const uint8_t *p, size_t n)
{
	while (n > 1) {
		sum += (uint32_t)p[0] << 8 | p[1];
		p += 2;
		n -= 2;
	}
	if (n)
		sum += (uint32_t)p[0] << 8;
	return sum;
}

static uint16_t fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

static void put16(uint8_t *p, unsigned v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static uint32_t ep_hash1(uint32_t h, const struct ep *e)
{
	for (int i = 0; i < 16; i++)
		h = (h ^ e->a[i]) * 16777619u;
	h = (h ^ e->port) * 16777619u;
	return (h ^ (uint32_t)e->family) * 16777619u;
}

/* FNV-1a over both ends */
static uint32_t ep_hash(const struct ep *a, const struct ep *b)
{
	return ep_hash1(ep_hash1(2166136261u, a), b);
}

static int ep_eq(const struct ep *a, const struct ep *b)
{
	return a->family == b->family && a->port == b->port && memcmp(a->a, b->a, 16) == 0;
}

/* the flow src -> dst, found in the PROBES slots from its hash on, or
 * created (its first sequence number from the hash) in a free one, else
 * in place of the one least recently used there: two live connections
 * never share a sequence space (that made tshark drop messages) */
static struct flow *flow_get(struct lpcap *pc, const struct ep *src, const struct ep *dst,
                             int create)
{
	uint32_t h = ep_hash(src, dst);
	struct flow *f, *victim = NULL;

	for (int i = 0; i < PROBES; i++) {
		f = &pc->flows[(h + (uint32_t)i) % FLOWS];
		if (f->used && ep_eq(&f->src, src) && ep_eq(&f->dst, dst)) {
			f->last = pc->frames;
			return f;
		}
		if (!victim || (victim->used && (!f->used || f->last < victim->last)))
			victim = f;
	}
	if (!create)
		return NULL;
	f = victim;
	f->used = 1;
	f->src = *src;
	f->dst = *dst;
	f->seq = h;
	f->last = pc->frames;
	return f;
}

/* one frame: Ethernet, IP, UDP or TCP, payload */
static int write_frame(struct lpcap *pc, int tcp, const struct ep *src, const struct ep *dst,
                       const char *data, size_t len, uint32_t seq, uint32_t ack)
{
	uint8_t *f = pc->frame, *ip = f + 14, *l4;
	size_t iplen = src->family == AF_INET ? 20 : 40, l4len = tcp ? 20 : 8;
	size_t total = 14 + iplen + l4len + len;
	struct pcap_pkthdr h;
	struct timespec ts;
	uint32_t sum;

	memset(f, 0, 14 + iplen + l4len);
	put16(f + 12, src->family == AF_INET ? 0x0800 : 0x86dd);
	l4 = ip + iplen;
	if (src->family == AF_INET) {
		ip[0] = 0x45;
		put16(ip + 2, (unsigned)(iplen + l4len + len));
		put16(ip + 4, (unsigned)(pc->frames & 0xffff));
		ip[6] = 0x40;           /* don't fragment */
		ip[8] = 64;
		ip[9] = tcp ? 6 : 17;
		memcpy(ip + 12, src->a, 4);
		memcpy(ip + 16, dst->a, 4);
		put16(ip + 10, fold(sum16(0, ip, 20)));
	} else {
		ip[0] = 0x60;
		put16(ip + 4, (unsigned)(l4len + len));
		ip[6] = tcp ? 6 : 17;
		ip[7] = 64;
		memcpy(ip + 8, src->a, 16);
		memcpy(ip + 24, dst->a, 16);
	}
	put16(l4, src->port);
	put16(l4 + 2, dst->port);
	if (tcp) {
		put32(l4 + 4, seq);
		put32(l4 + 8, ack);
		l4[12] = 5 << 4;        /* header length: 5 words */
		l4[13] = 0x18;          /* PSH, ACK */
		put16(l4 + 14, 65535);
	} else {
		put16(l4 + 4, (unsigned)(l4len + len));
	}
	memcpy(l4 + l4len, data, len);
	/* the checksum over the pseudo-header, header and payload */
	sum = src->family == AF_INET ? sum16(0, ip + 12, 8) : sum16(0, ip + 8, 32);
	sum += (uint32_t)(tcp ? 6 : 17) + (uint32_t)(l4len + len);
	sum = sum16(sum, l4, l4len + len);
	{
		uint16_t c = fold(sum);
		if (!tcp && c == 0)
			c = 0xffff;
		put16(l4 + (tcp ? 16 : 6), c);
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	h.ts.tv_sec = ts.tv_sec;
	h.ts.tv_usec = ts.tv_nsec / 1000;
	h.caplen = h.len = (bpf_u_int32)total;
	pcap_dump((u_char *)pc->d, &h, f);
	pc->frames++;
	return 0;
}

/***
 * Write one message.
 * @function write
 * @string dir "out" (sent) or "in" (received)
 * @string proto "UDP", "TCP" or "TLS"
 * @string peer the other end, "ip:port" or "[ip]:port"
 * @tparam ?string local this end (nil: the wildcard of the peer's family, port 0)
 * @string text the message
 * @treturn boolean true, or fail when an address cannot be read
 */
static int l_pcap_write(lua_State *L)
{
	struct lpcap *pc = check_pcap(L, 1);
	int out = strcmp(luaL_checkstring(L, 2), "out") == 0;
	const char *proto = luaL_checkstring(L, 3);
	const char *peer_s = luaL_checkstring(L, 4);
	const char *local_s = luaL_optstring(L, 5, NULL);
	size_t len;
	const char *text = luaL_checklstring(L, 6, &len);
	int tcp = strcmp(proto, "UDP") != 0;
	struct ep peer, local;
	const struct ep *src, *dst;

	if (parse_ep(peer_s, &peer)) {
		luaL_pushfail(L);
		lua_pushfstring(L, "bad peer address '%s'", peer_s);
		return 2;
	}
	if (!local_s || parse_ep(local_s, &local)) {
		memset(&local, 0, sizeof local);
		local.family = peer.family;
	}
	fix_local(&local, &peer);
	src = out ? &local : &peer;
	dst = out ? &peer : &local;
	if (!tcp) {
		/* a datagram is at most 65,507 bytes: longer text is cut */
		size_t max = 65535 - 8 - (peer.family == AF_INET ? 20 : 0);
		write_frame(pc, 0, src, dst, text, len > max ? max : len, 0, 0);
	} else {
		struct flow *f = flow_get(pc, src, dst, 1);
		struct flow *r = flow_get(pc, dst, src, 0);
		size_t off = 0;

		do {
			size_t n = len - off > SEG_MAX ? SEG_MAX : len - off;
			write_frame(pc, 1, src, dst, text + off, n, f->seq, r ? r->seq : 0);
			f->seq += (uint32_t)n;
			off += n;
		} while (off < len);
	}
	pcap_dump_flush(pc->d);
	lua_pushboolean(L, 1);
	return 1;
}

/* __gc, __close and close: idempotent */
static int l_pcap_close(lua_State *L)
{
	struct lpcap *pc = luaL_checkudata(L, 1, PCAP_MT);

	if (pc->d) {
		pcap_dump_close(pc->d);
		pc->d = NULL;
	}
	if (pc->p) {
		pcap_close(pc->p);
		pc->p = NULL;
	}
	return 0;
}

static int l_pcap_frames(lua_State *L)
{
	struct lpcap *pc = luaL_checkudata(L, 1, PCAP_MT);

	lua_pushinteger(L, (lua_Integer)pc->frames);
	return 1;
}

static int l_pcap_tostring(lua_State *L)
{
	struct lpcap *pc = luaL_checkudata(L, 1, PCAP_MT);

	lua_pushfstring(L, "sip.Pcap (%s, %I frames)", pc->d ? "open" : "closed",
	                (lua_Integer)pc->frames);
	return 1;
}

/***
 * Create (truncate) a pcap file.
 * @function open
 * @string path
 * @return a sip.Pcap, or fail and a message
 */
static int l_pcap_open(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	struct lpcap *pc;

	/* closed and zeroed, with its metatable, before any resource */
	pc = lua_newuserdatauv(L, sizeof *pc, 0);
	memset(pc, 0, sizeof *pc);
	luaL_setmetatable(L, PCAP_MT);
	pc->p = pcap_open_dead(DLT_EN10MB, SNAPLEN);
	if (!pc->p) {
		luaL_pushfail(L);
		lua_pushstring(L, "pcap: out of memory");
		return 2;
	}
	pc->d = pcap_dump_open(pc->p, path);
	if (!pc->d) {
		luaL_pushfail(L);
		lua_pushstring(L, pcap_geterr(pc->p));
		pcap_close(pc->p);
		pc->p = NULL;
		return 2;
	}
	pcap_dump_flush(pc->d);
	return 1;
}

static const luaL_Reg pcap_methods[] = {
	{ "write", l_pcap_write },
	{ "close", l_pcap_close },
	{ "frames", l_pcap_frames },
	{ NULL, NULL }
};

int lsip_open_pcap(lua_State *L)
{
	luaL_newmetatable(L, PCAP_MT);
	luaL_newlib(L, pcap_methods);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, l_pcap_close);
	lua_setfield(L, -2, "__gc");
	lua_pushcfunction(L, l_pcap_close);
	lua_setfield(L, -2, "__close");
	lua_pushcfunction(L, l_pcap_tostring);
	lua_setfield(L, -2, "__tostring");
	lua_pop(L, 1);
	lua_createtable(L, 0, 1);
	lua_pushcfunction(L, l_pcap_open);
	lua_setfield(L, -2, "open");
	return 1;
}
