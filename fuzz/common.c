/*
 * common.c - linked into every fuzz target.
 *
 * - No DNS, ever: getaddrinfo is interposed here and forced to numeric
 *   hosts, so a host name in a fuzzed URI, Via or Contact can never make
 *   the engine (sip_addr_resolve) send a query.
 * - Deterministic randomness: RAND_bytes is interposed with a stream
 *   restarted before every input, so tags, branches and nonces are the
 *   same on every run of an input and a crash reproduces exactly.
 * - libosip2's lookup tables are built (parser_init) and its own stderr
 *   traces switched off, as the Lua binding does in luaopen.
 *
 * These definitions win over libc's and libcrypto's because the engine's
 * objects are linked into the fuzz executable itself.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdarg.h>
#include <stdint.h>
#include <netdb.h>
#include <string.h>
#include <sys/socket.h>

#include <osipparser2/osip_parser.h>
#include <osipparser2/osip_port.h>

void fuzz_init(void);
void fuzz_reset_random(void);
int RAND_bytes(unsigned char *buf, int num);
int RAND_priv_bytes(unsigned char *buf, int num);

typedef int (*gai_fn)(const char *, const char *, const struct addrinfo *, struct addrinfo **);

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res)
{
	static gai_fn real;
	struct addrinfo h;

	if (!real)
		real = (gai_fn)dlsym(RTLD_NEXT, "getaddrinfo");
	if (!real)
		return EAI_FAIL;
	if (hints) {
		h = *hints;
	} else {
		memset(&h, 0, sizeof h);
		h.ai_family = AF_UNSPEC;
	}
	h.ai_flags |= AI_NUMERICHOST | AI_NUMERICSERV;
	return real(node, service, &h, res);
}

static uint32_t rand_state;

void fuzz_reset_random(void)
{
	rand_state = 0x2545f491u;
}

/* a xorshift stream restarted for every input: not random, reproducible */
int RAND_bytes(unsigned char *buf, int num)
{
	int i;

	for (i = 0; i < num; i++) {
		rand_state ^= rand_state << 13;
		rand_state ^= rand_state >> 17;
		rand_state ^= rand_state << 5;
		buf[i] = (unsigned char)(rand_state >> 11);
	}
	return 1;
}

int RAND_priv_bytes(unsigned char *buf, int num)
{
	return RAND_bytes(buf, num);
}

/* libosip2 5.3 prints parse errors to stdout unless a trace function is
 * installed: disabling the levels alone does not silence it */
static void quiet(const char *fi, int li, osip_trace_level_t level, const char *chfr, va_list ap)
{
	(void)fi;
	(void)li;
	(void)level;
	(void)chfr;
	(void)ap;
}

void fuzz_init(void)
{
	int lvl;

	parser_init();
	osip_trace_initialize_func(TRACE_LEVEL0, quiet);
	for (lvl = 0; lvl < END_TRACE_LEVEL; lvl++)
		osip_trace_disable_level((osip_trace_level_t)lvl);
}
