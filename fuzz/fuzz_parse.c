/*
 * fuzz_parse.c - bytes -> sip_msg_parse, then every accessor the engine
 * uses on a received message: header lookups by long and compact name and
 * by index, the parsed fields (branch, tags, CSeq...), the top Via as a
 * response stamps it, and the name-addr lists dialogs read (Contact,
 * Record-Route).
 * Invariants checked: the body lies inside the message, header values
 * point into the raw text.
 */
#include "msg.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void fuzz_init(void);
void fuzz_reset_random(void);
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const names[] = {
	"Via", "v", "From", "f", "To", "t", "Call-ID", "i", "CSeq", "Content-Length", "l",
	"Content-Type", "c", "Contact", "m", "Max-Forwards", "Route", "Record-Route",
	"Require", "Proxy-Require", "Supported", "k", "Accept", "Expires", "Authorization",
	"Proxy-Authorization", "WWW-Authenticate", "Event", "o", "X-Unknown", "", ":",
};

static volatile unsigned sink;

static void touch(const char *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		sink += (unsigned char)p[i];
}

static void touch_s(const char *s)
{
	if (s)
		touch(s, strlen(s));
}

static void check_msg(struct sip_msg *m)
{
	size_t i, n;
	int k;

	if (m->body_off > m->len || m->body_len > m->len - m->body_off)
		abort();        /* body outside the message */
	if (m->raw[m->len] != '\0')
		abort();
	for (i = 0; i < sizeof names / sizeof names[0]; i++) {
		for (k = 0; k < 4; k++) {
			const char *v = sip_msg_header(m, names[i], k, &n);
			if (!v)
				break;
			if (v < m->raw || v + n > m->raw + m->len)
				abort();        /* value outside the raw text */
			touch(v, n);
		}
	}
	sink += (unsigned)sip_msg_is_request(m);
	{
		const char *s = sip_msg_method(m);
		if (s)
			touch(s, strlen(s));
	}
	sink += (unsigned)sip_msg_status(m);
	if (m->parsed) {
		/* the light parse's fields, and the top Via stamped as for a
		 * response to a request from 192.0.2.1:5062 */
		const char *const f[] = { m->method, m->uri, m->version, m->reason, m->call_id,
		                          m->cseq_method, m->from_tag, m->to_tag, m->branch,
		                          m->via_host, m->via_port, m->via_received, m->via_rport };
		struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(5062) };
		const char *tv;
		sin.sin_addr.s_addr = htonl(0xc0000201);
		for (i = 0; i < sizeof f / sizeof f[0]; i++)
			touch_s(f[i]);
		memcpy(&m->src.ss, &sin, sizeof sin);
		m->src.len = sizeof sin;
		m->received = 1;
		if ((tv = sip_msg_top_via(m, &n)))
			touch(tv, n);
	}
	if (m->parsed) {
		/* what dialogs take from a message: route set, remote target */
		struct sip_nameaddr na[8];
		const char *b = sip_msg_branch(m);
		int c;
		if (b)
			touch(b, strlen(b));
		for (k = 0; k < 2; k++) {
			c = sip_msg_nameaddrs(m, k ? "Record-Route" : "Contact", na, 8);
			if (c > 8)
				abort();
			for (i = 0; c > 0 && i < (size_t)c; i++) {
				if (na[i].v < m->raw || na[i].v + na[i].n > m->raw + m->len ||
				    na[i].uri < na[i].v || na[i].uri + na[i].un > na[i].v + na[i].n)
					abort();        /* spans outside the value */
				sink += (unsigned)sip_uri_has_lr(na[i].uri, na[i].un);
			}
		}
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
	struct sip_msg *m = NULL;
	const char *why = NULL;
	int rc;

	fuzz_reset_random();
	if (size > 65535)
		return 0;       /* the UDP limit; streams are bounded lower */
	rc = sip_msg_parse((const char *)data, size, &m, &why);
	if (rc == 0 && !m)
		abort();
	if (rc != 0 && !why)
		abort();
	if (m) {
		check_msg(m);
		sip_msg_ref(m);
		sip_msg_unref(m);
		sip_msg_unref(m);
	}
	sink += (unsigned)sip_header_value_bad((const char *)data, size);
	if (size >= 1) {
		const char *l = sip_header_long_name((const char *)data, size < 2 ? size : 1);
		if (l)
			touch(l, strlen(l));
	}
	return 0;
}
