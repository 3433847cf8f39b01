/*
 * fuzz_auth.c - digest authentication (auth.c) on hostile text:
 * WWW-Authenticate / Proxy-Authenticate values (every challenge of a list,
 * sip_auth_challenge_choose over them, and a response computed for each
 * usable one, which must parse back as credentials), Authorization values
 * (sip_auth_credentials_parse, then the server's check and verify against
 * a password, with the replay table), and algorithm names. Invariants: what
 * a parser keeps is NUL-terminated within its documented bounds.
 */
#include "auth.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void fuzz_init(void);
void fuzz_reset_random(void);
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile unsigned sink;
static const double NOW = 1700000000.0;

static void bounded(const char *s, size_t max)
{
	if (strnlen(s, max + 1) > max)
		abort();
}

static void verify(struct sip_auth_server *srv, const struct sip_auth_credentials *cr)
{
	struct sip_auth_verify_in vin;

	bounded(cr->username, SIP_AUTH_MAXLEN);
	bounded(cr->realm, SIP_AUTH_MAXLEN);
	bounded(cr->nonce, SIP_AUTH_MAXLEN);
	bounded(cr->uri, SIP_AUTH_URI_MAXLEN);
	bounded(cr->response, SIP_AUTH_HEX_MAX);
	bounded(cr->cnonce, SIP_AUTH_MAXLEN);
	bounded(cr->opaque, SIP_AUTH_MAXLEN);
	bounded(cr->nc_text, 8);
	bounded(cr->qop_text, 8);
	memset(&vin, 0, sizeof vin);
	vin.realm = "example.com";
	vin.method = "REGISTER";
	vin.now = NOW;
	sink += (unsigned)sip_auth_server_check(srv, cr, &vin);
	vin.password = "secret";
	sink += (unsigned)sip_auth_server_verify(srv, cr, &vin);
	/* the same credentials again: a replay unless something failed */
	sink += (unsigned)sip_auth_server_verify(srv, cr, &vin);
	vin.password = NULL;    /* no such user */
	sink += (unsigned)sip_auth_server_verify(srv, cr, &vin);
}

static void answer(struct sip_auth_server *srv, const struct sip_auth_challenge *ch)
{
	struct sip_auth_input in;
	struct sip_auth_client cl;
	struct sip_auth_credentials cr;
	struct sip_buf out;
	char hex[SIP_AUTH_HEX_MAX + 1];
	const char *why;

	bounded(ch->realm, SIP_AUTH_MAXLEN);
	bounded(ch->nonce, SIP_AUTH_MAXLEN);
	bounded(ch->opaque, SIP_AUTH_MAXLEN);
	memset(&in, 0, sizeof in);
	in.method = "REGISTER";
	in.uri = "sip:example.com";
	in.user = "alice";
	in.password = "secret";
	in.body = "body";
	in.body_len = 4;
	in.qop_pref = SIP_AUTH_QOP_AUTH_INT;
	sip_buf_init(&out, 256);
	if (sip_auth_digest(ch, &in, 1, &out, hex) == 0 && !out.oom) {
		int rc = sip_auth_credentials_parse(out.p, out.len, &cr, &why);
		if (rc == -EINVAL)
			abort();        /* our own Authorization must parse */
		if (rc == 0)
			verify(srv, &cr);
	}
	sip_buf_free(&out);
	memset(&cl, 0, sizeof cl);
	sink += (unsigned)sip_auth_client_update(&cl, ch);
	sip_buf_init(&out, 256);
	sink += (unsigned)sip_auth_client_authorize(&cl, &in, &out);
	sip_buf_free(&out);
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
	const char *s = (const char *)data;
	struct sip_auth_server *srv = NULL;
	struct sip_auth_challenge ch;
	struct sip_auth_credentials cr;
	const char *why = NULL;
	size_t off = 0, next = 0;
	int i, rc;

	fuzz_reset_random();
	if (size > 16384)
		return 0;
	if (sip_auth_server_new("fuzz-secret", 11, 16, &srv))
		abort();

	for (i = 0; i < 8 && off < size; i++) {
		next = size;
		rc = sip_auth_challenge_parse(s + off, size - off, &ch, &next, &why);
		if (rc == 0)
			answer(srv, &ch);
		if (next > size - off)
			abort();        /* *next must stay inside the value */
		if (next == 0)
			break;
		off += next;
	}
	{
		const char *vals[2] = { s, s + size / 2 };
		size_t lens[2] = { size, size - size / 2 };
		if (sip_auth_challenge_choose(vals, lens, 2, &ch) == 0)
			answer(srv, &ch);
	}
	if (sip_auth_credentials_parse(s, size, &cr, &why) == 0)
		verify(srv, &cr);
	sink += (unsigned)sip_auth_alg_parse(s, size < 32 ? size : 32);
	sip_auth_server_free(srv);
	return 0;
}
