/*
 * msg.c - parsing (libosip2) and in-place header access for SIP messages.
 */
#define _GNU_SOURCE
#include "msg.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const struct { char c; const char *name; } compact[] = {
	{ 'a', "Accept-Contact" }, { 'b', "Referred-By" }, { 'c', "Content-Type" },
	{ 'd', "Request-Disposition" }, { 'e', "Content-Encoding" }, { 'f', "From" },
	{ 'i', "Call-ID" }, { 'j', "Reject-Contact" }, { 'k', "Supported" },
	{ 'l', "Content-Length" }, { 'm', "Contact" }, { 'o', "Event" },
	{ 'r', "Refer-To" }, { 's', "Subject" }, { 't', "To" }, { 'u', "Allow-Events" },
	{ 'v', "Via" }, { 'x', "Session-Expires" }, { 'y', "Identity" },
};

const char *sip_header_long_name(const char *name, size_t n)
{
	size_t i;

	if (n != 1)
		return NULL;
	for (i = 0; i < sizeof compact / sizeof compact[0]; i++)
		if ((name[0] | 0x20) == compact[i].c)
			return compact[i].name;
	return NULL;
}

int sip_header_value_bad(const char *v, size_t n)
{
	return memchr(v, '\r', n) || memchr(v, '\n', n) || memchr(v, '\0', n);
}

/* Locate the end of the header section; returns the body offset or 0. */
static size_t find_body(const char *raw, size_t len)
{
	const char *p = raw, *end = raw + len;

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		if (!nl)
			return 0;
		if (nl + 1 < end && nl[1] == '\n')
			return (size_t)(nl + 2 - raw);
		if (nl + 2 < end && nl[1] == '\r' && nl[2] == '\n')
			return (size_t)(nl + 3 - raw);
		p = nl + 1;
	}
	return 0;
}

static struct sip_msg *msg_alloc(void)
{
	struct sip_msg *m = calloc(1, sizeof *m);

	if (m)
		m->refs = 1;
	return m;
}

/* an unsigned decimal of at most max, with nothing else */
static int digits_le(const char *v, size_t n, unsigned long max)
{
	unsigned long long x = 0;
	size_t i;

	if (n == 0 || n > 10)
		return 0;
	for (i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return 0;
		x = x * 10 + (unsigned)(v[i] - '0');
	}
	return x <= max;
}

/* RFC 3261 25.1: Max-Forwards 0..255, Expires delta-seconds 32 bits */
static int scalar_ok(const struct sip_msg *m, const char *name, unsigned long max)
{
	size_t n;
	const char *v = sip_msg_header(m, name, 0, &n);

	return !v || digits_le(v, n, max);
}

/* 20.10: an addr-spec with '?', ';' or ',' must be enclosed in <> — a
 * bare one with a '?' hides headers (or a Route) in the URI */
static int contacts_ok(const struct sip_msg *m)
{
	const char *v;
	size_t n;
	int i;

	for (i = 0; (v = sip_msg_header(m, "Contact", i, &n)); i++)
		if (!memchr(v, '<', n) && memchr(v, '?', n))
			return 0;
	return 1;
}

static int msg_check(struct sip_msg *m, const char **why)
{
	osip_message_t *s = m->m;

	if (!s->call_id || !s->call_id->number) { *why = "missing Call-ID"; return -EINVAL; }
	if (!s->from || !s->from->url) { *why = "missing or bad From"; return -EINVAL; }
	if (!s->to || !s->to->url) { *why = "missing or bad To"; return -EINVAL; }
	if (!s->cseq || !s->cseq->number || !s->cseq->method) { *why = "missing or bad CSeq"; return -EINVAL; }
	if (osip_list_size(&s->vias) < 1) { *why = "missing Via"; return -EINVAL; }
	if (!digits_le(s->cseq->number, strlen(s->cseq->number), 2147483647UL)) {
		*why = "CSeq number out of range";
		return -EINVAL;
	}
	if (!scalar_ok(m, "Max-Forwards", 255)) { *why = "bad Max-Forwards"; return -EINVAL; }
	if (!scalar_ok(m, "Expires", 4294967295UL)) { *why = "bad Expires"; return -EINVAL; }
	if (!contacts_ok(m)) { *why = "Contact URI with parameters or headers outside <>"; return -EINVAL; }
	{
		size_t n1, n2;
		const char *a = sip_msg_header(m, "Content-Length", 0, &n1);
		const char *b = sip_msg_header(m, "Content-Length", 1, &n2);
		if (a && b) { *why = "more than one Content-Length"; return -EINVAL; }
	}
	if (MSG_IS_REQUEST(s)) {
		if (!s->req_uri || !s->sip_method) { *why = "bad request line"; return -EINVAL; }
		if (strcmp(s->sip_method, s->cseq->method)) {
			*why = "CSeq method does not match the request method";
			return -EINVAL;
		}
	}
	return 0;
}

/*
 * libosip2 sees the header section only, without Content-Length, and never
 * the body: the body is read from raw in place, so libosip2's body and MIME
 * parsing (copies, multipart splitting, and a leak on odd multipart input)
 * are never on the receive path.
 */
static int osip_parse_headers(struct sip_msg *m)
{
	const char *p = m->raw, *end = m->raw + m->body_off;
	struct sip_buf b;
	int rc;

	/* no body and a complete header section: the text goes as it is */
	if (m->body_off == m->len && m->len >= 4 &&
	    (!memcmp(m->raw + m->len - 4, "\r\n\r\n", 4) || !memcmp(m->raw + m->len - 2, "\n\n", 2)))
		return osip_message_parse(m->m, m->raw, m->len);
	sip_buf_init(&b, m->body_off + 4);
	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		const char *colon;
		size_t n;
		eol = eol ? eol + 1 : end;
		n = (size_t)(eol - p);
		colon = memchr(p, ':', n);
		if (colon && p > m->raw) {
			const char *ne = colon;
			while (ne > p && (ne[-1] == ' ' || ne[-1] == '\t'))
				ne--;
			if (((ne - p) == 14 && !strncasecmp(p, "Content-Length", 14)) ||
			    ((ne - p) == 1 && (*p | 0x20) == 'l')) {
				p = eol;
				continue;
			}
		}
		sip_buf_add(&b, p, n);
		p = eol;
	}
	/* make sure the section ends with an empty line */
	if (b.len < 2 || b.p[b.len - 1] != '\n')
		sip_buf_adds(&b, "\r\n");
	if (b.len < 4 || (memcmp(b.p + b.len - 4, "\r\n\r\n", 4) && memcmp(b.p + b.len - 2, "\n\n", 2)))
		sip_buf_adds(&b, "\r\n");
	rc = b.oom ? -1 : osip_message_parse(m->m, b.p, b.len);
	sip_buf_free(&b);
	return rc;
}

int sip_msg_parse(const char *buf, size_t len, struct sip_msg **out, const char **why)
{
	struct sip_msg *m;
	size_t off;
	long cl = -1;
	const char *v;
	size_t vlen;

	*out = NULL;
	*why = "out of memory";
	m = msg_alloc();
	if (!m)
		return -ENOMEM;
	m->raw = malloc(len + 1);
	if (!m->raw)
		goto fail;
	memcpy(m->raw, buf, len);
	m->raw[len] = '\0';
	m->len = len;
	off = find_body(m->raw, len);
	if (!off)
		off = len;      /* a datagram ending inside its headers: all headers */
	m->body_off = off;
	m->body_len = len - off;
	if (osip_message_init(&m->m) != 0)
		goto fail;
	if (osip_parse_headers(m)) {
		/* libosip2 gave up: the raw text is still there for a 400 */
		osip_message_free(m->m);
		m->m = NULL;
		*why = "unparsable message";
		*out = m;
		return -EINVAL;
	}
	if (m->m->call_id && m->m->call_id->number) {
		const osip_call_id_t *c = m->m->call_id;
		size_t n = strlen(c->number) + (c->host ? strlen(c->host) + 1 : 0) + 1;
		m->call_id = malloc(n);
		if (!m->call_id)
			goto fail;
		snprintf(m->call_id, n, "%s%s%s", c->number, c->host ? "@" : "", c->host ? c->host : "");
	}
	if (msg_check(m, why)) {
		/* parsed but invalid: the caller may still answer 400 */
		*out = m;
		return -EPROTO;
	}
	v = sip_msg_header(m, "Content-Length", 0, &vlen);
	if (v) {
		char *end;
		cl = strtol(v, &end, 10);
		if (end == v || cl < 0) {
			*why = "bad Content-Length";
			*out = m;
			return -EPROTO;
		}
		if ((size_t)cl > m->body_len) {
			*why = "Content-Length larger than the body";
			*out = m;
			return -EPROTO;
		}
		/* extra bytes after the declared body are ignored (RFC 3261 18.3) */
		m->body_len = (size_t)cl;
	}
	*out = m;
	return 0;
fail:
	sip_msg_unref(m);
	return -EINVAL;
}

int sip_msg_from_text(char *text, size_t len, struct sip_msg **out)
{
	const char *why;
	int rc = sip_msg_parse(text, len, out, &why);

	free(text);
	if (rc && *out) {
		sip_msg_unref(*out);
		*out = NULL;
	}
	return rc;
}

void sip_msg_compact(struct sip_msg *m)
{
	if (m->m) {
		osip_message_free(m->m);
		m->m = NULL;
	}
}

osip_message_t *sip_msg_osip(struct sip_msg *m)
{
	if (m->m)
		return m->m;
	if (osip_message_init(&m->m) != 0)
		return NULL;
	if (osip_parse_headers(m)) {
		osip_message_free(m->m);
		m->m = NULL;
	}
	return m->m;
}

struct sip_msg *sip_msg_ref(struct sip_msg *m)
{
	m->refs++;
	return m;
}

void sip_msg_unref(struct sip_msg *m)
{
	if (!m || --m->refs > 0)
		return;
	if (m->m)
		osip_message_free(m->m);
	free(m->tls);
	free(m->call_id);
	free(m->raw);
	free(m);
}

/* the accessors below also take a message libosip2 could not parse
 * (m->m NULL, only its raw text) */
int sip_msg_is_request(const struct sip_msg *m)
{
	return m->m && MSG_IS_REQUEST(m->m);
}

const char *sip_msg_method(const struct sip_msg *m)
{
	if (!m->m)
		return NULL;
	if (MSG_IS_REQUEST(m->m))
		return m->m->sip_method;
	return m->m->cseq ? m->m->cseq->method : NULL;
}

int sip_msg_status(const struct sip_msg *m)
{
	return m->m ? m->m->status_code : 0;
}

static int name_matches(const char *line, size_t n, const char *want)
{
	const char *l = sip_header_long_name(line, n);

	if (l)
		return !strcasecmp(l, want);
	return n == strlen(want) && !strncasecmp(line, want, n);
}

const char *sip_msg_header(const struct sip_msg *m, const char *name, int idx, size_t *vlen)
{
	const char *p, *end, *want;

	if (!m->raw)
		return NULL;
	want = sip_header_long_name(name, strlen(name));
	if (!want)
		want = name;
	end = m->raw + (m->body_off ? m->body_off : m->len);
	p = memchr(m->raw, '\n', (size_t)(end - m->raw));   /* skip start line */
	if (!p)
		return NULL;
	p++;
	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		const char *colon, *v, *ve;
		if (!eol)
			eol = end;
		/* a folded header continues while the next line starts with SP/HT */
		while (eol + 1 < end && (eol[1] == ' ' || eol[1] == '\t')) {
			const char *n2 = memchr(eol + 1, '\n', (size_t)(end - eol - 1));
			eol = n2 ? n2 : end;
		}
		colon = memchr(p, ':', (size_t)(eol - p));
		if (colon) {
			const char *ne = colon;
			while (ne > p && (ne[-1] == ' ' || ne[-1] == '\t'))
				ne--;
			if (name_matches(p, (size_t)(ne - p), want) && idx-- == 0) {
				v = colon + 1;
				ve = eol;
				while (v < ve && (*v == ' ' || *v == '\t'))
					v++;
				while (ve > v && (ve[-1] == '\r' || ve[-1] == '\n' || ve[-1] == ' ' || ve[-1] == '\t'))
					ve--;
				*vlen = (size_t)(ve - v);
				return v;
			}
		}
		p = eol + 1;
	}
	return NULL;
}

const char *sip_msg_limits(const char *buf, size_t len, size_t max_headers, size_t max_line)
{
	const char *p = buf, *end = buf + len;
	size_t lines = 0;

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
		if (n == 0 || (n == 1 && *p == '\r'))
			break;          /* the empty line: the body follows */
		if (n > 0 && p[n - 1] == '\r')
			n--;            /* the length of a line is without its CRLF */
		if (n > max_line)
			return "header line longer than max_header_line";
		if (++lines > max_headers + 1)
			return "more header lines than max_headers";
		if (!nl)
			break;
		p = nl + 1;
	}
	return NULL;
}

int sip_msg_answerable(const struct sip_msg *m)
{
	static const char *const need[] = { "Via", "From", "To", "Call-ID", "CSeq" };
	size_t i, n;

	for (i = 0; i < sizeof need / sizeof need[0]; i++)
		if (!sip_msg_header(m, need[i], 0, &n))
			return 0;
	return 1;
}

const char *sip_msg_branch(const struct sip_msg *m)
{
	osip_via_t *via = m->m ? osip_list_get(&m->m->vias, 0) : NULL;
	osip_generic_param_t *br = NULL;

	if (!via)
		return NULL;
	osip_via_param_get_byname(via, "branch", &br);
	return br ? br->gvalue : NULL;
}

const char *sip_msg_tag(const osip_from_t *f)
{
	osip_generic_param_t *tag = NULL;

	if (!f)
		return NULL;
	osip_from_get_tag((osip_from_t *)f, &tag);
	return tag ? tag->gvalue : NULL;
}
