/*
 * msg.c - parsing SIP messages (our own parser: libosip2 turns every
 * header into small allocations) and in-place header access.
 */
#define _GNU_SOURCE
#include "msg.h"

#include <ctype.h>
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

/* the message and its text in one allocation */
static struct sip_msg *msg_alloc(size_t len)
{
	struct sip_msg *m = malloc(sizeof *m + len + 1);

	if (m) {
		memset(m, 0, sizeof *m);
		m->refs = 1;
		m->raw = (char *)(m + 1);
	}
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
static int scalar_ok(const struct sip_msg *m, int id, unsigned long max)
{
	size_t n;
	const char *v = sip_msg_hdr(m, id, 0, &n);

	return !v || digits_le(v, n, max);
}

/* 20.10: an addr-spec with '?', ';' or ',' must be enclosed in <> — a
 * bare one with a '?' hides headers (or a Route) in the URI */
static int contacts_ok(const struct sip_msg *m)
{
	const char *v;
	size_t n;
	int i;

	for (i = 0; (v = sip_msg_hdr(m, SIP_H_CONTACT, i, &n)); i++)
		if (!memchr(v, '<', n) && memchr(v, '?', n))
			return 0;
	return 1;
}

/* ---- the light parse ---- */

/* s[0..n) equals the lower-case name lc, ignoring the case of letters */
static int name_is(const char *s, const char *lc, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		char c = s[i];
		if (c >= 'A' && c <= 'Z')
			c = (char)(c + ('a' - 'A'));
		if (c != lc[i])
			return 0;
	}
	return 1;
}

/* by length, then by name: every header of every message comes here,
 * and so does every lookup by name */
static uint8_t header_id(const char *name, size_t n)
{
	const char *lc = NULL;
	uint8_t id = SIP_H_OTHER;

	switch (n) {
	case 2: lc = "to"; id = SIP_H_TO; break;
	case 3: lc = "via"; id = SIP_H_VIA; break;
	case 4:
		if ((name[0] | 0x20) == 'f') {
			lc = "from"; id = SIP_H_FROM;
		} else {
			lc = "cseq"; id = SIP_H_CSEQ;
		}
		break;
	case 5: lc = "route"; id = SIP_H_ROUTE; break;
	case 6: lc = "accept"; id = SIP_H_ACCEPT; break;
	case 7:
		switch (name[0] | 0x20) {
		case 'c':
			if ((name[1] | 0x20) == 'a') {
				lc = "call-id"; id = SIP_H_CALL_ID;
			} else {
				lc = "contact"; id = SIP_H_CONTACT;
			}
			break;
		case 'e': lc = "expires"; id = SIP_H_EXPIRES; break;
		case 'r': lc = "require"; id = SIP_H_REQUIRE; break;
		default: return SIP_H_OTHER;
		}
		break;
	case 12:
		switch (name[0] | 0x20) {
		case 'c': lc = "content-type"; id = SIP_H_CONTENT_TYPE; break;
		case 'r': lc = "record-route"; id = SIP_H_RECORD_ROUTE; break;
		case 'm': lc = "max-forwards"; id = SIP_H_MAX_FORWARDS; break;
		default: return SIP_H_OTHER;
		}
		break;
	case 14: lc = "content-length"; id = SIP_H_CONTENT_LENGTH; break;
	default: return SIP_H_OTHER;
	}
	return name_is(name, lc, n) ? id : SIP_H_OTHER;
}

/* the header lines of the section [p, end): one entry per header (a
 * folded header is one entry), lines without a colon skipped */
static int index_headers(const char *p, const char *end, struct sip_hdr *h, int max)
{
	int n = 0;

	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		const char *colon, *ne, *v, *ve, *ln;
		if (!eol)
			eol = end;
		if (eol == p || (eol == p + 1 && *p == '\r'))
			break;          /* the empty line */
		while (eol + 1 < end && (eol[1] == ' ' || eol[1] == '\t')) {
			const char *n2 = memchr(eol + 1, '\n', (size_t)(end - eol - 1));
			eol = n2 ? n2 : end;
		}
		colon = memchr(p, ':', (size_t)(eol - p));
		if (colon && n < max) {
			ne = colon;
			while (ne > p && (ne[-1] == ' ' || ne[-1] == '\t'))
				ne--;
			v = colon + 1;
			ve = eol;
			while (v < ve && (*v == ' ' || *v == '\t'))
				v++;
			while (ve > v && sip_is_ws(ve[-1]))
				ve--;
			ln = sip_header_long_name(p, (size_t)(ne - p));
			h[n].name = ln ? ln : p;
			h[n].nlen = (uint16_t)(ln ? strlen(ln) : (size_t)(ne - p));
			h[n].id = header_id(h[n].name, h[n].nlen);
			h[n].v = v;
			h[n].vlen = (uint32_t)(ve - v);
			n++;
		}
		p = eol + 1;
	}
	return n;
}

/* the top via-parm: "SIP / 2.0 / UDP host[:port] ;params" */
static int parse_via(const char *v, size_t n, struct sip_span *host, struct sip_span *port,
                     struct sip_span *params, size_t *via1_len)
{
	static const char *const names[] = { "branch", "received", "rport" };
	const char *p = v, *e = v + n, *h;
	int i;

	for (i = 0; i < 3; i++) {
		const char *t = p = sip_skip_ws(p, e);
		while (p < e && sip_is_token(*p) && *p != '/')
			p++;
		if (p == t)
			return -1;
		p = sip_skip_ws(p, e);
		if (i < 2) {
			if (p >= e || *p != '/')
				return -1;
			p++;
		}
	}
	h = p;
	if (p < e && *p == '[') {
		const char *rb = memchr(p, ']', (size_t)(e - p));
		if (!rb)
			return -1;
		p = rb + 1;
	} else {
		while (p < e && !sip_is_ws(*p) && *p != ':' && *p != ';' && *p != ',')
			p++;
	}
	if (p == h)
		return -1;
	host->p = h;
	host->n = (size_t)(p - h);
	p = sip_skip_ws(p, e);
	if (p < e && *p == ':') {
		const char *d;
		p = d = sip_skip_ws(p + 1, e);
		while (p < e && *p >= '0' && *p <= '9')
			p++;
		if (p == d || p - d > 5)
			return -1;
		port->p = d;
		port->n = (size_t)(p - d);
	}
	p = sip_params_scan(p, e, names, params, 3);
	p = sip_skip_ws(p, e);
	if (p < e && *p != ',')
		return -1;
	*via1_len = (size_t)(p - v);
	while (*via1_len > 0 && sip_is_ws(v[*via1_len - 1]))
		(*via1_len)--;
	return 0;
}

/* the URI of a From or To value: the whole value reads as one */
static int addr_whole(const char *v, size_t n)
{
	struct sip_name_addr na;

	return sip_name_addr_parse(v, v + n, 0, &na) == v + n;
}

/* "INVITE sip:x SIP/2.0" or "SIP/2.0 200 OK" */
static int parse_start(struct sip_msg *m, struct sip_span *method, struct sip_span *uri,
                       struct sip_span *version, struct sip_span *reason)
{
	const char *p = m->raw, *e = memchr(m->raw, '\n', m->len), *sp, *lsp;

	if (!e)
		e = m->raw + m->len;
	while (e > p && e[-1] == '\r')
		e--;
	if (e - p > 8 && !memcmp(p, "SIP/", 4)) {
		sp = memchr(p, ' ', (size_t)(e - p));
		if (!sp || e - sp < 4 || !isdigit((unsigned char)sp[1]) || !isdigit((unsigned char)sp[2]) ||
		    !isdigit((unsigned char)sp[3]) || (e - sp > 4 && sp[4] != ' '))
			return -1;
		m->status = (sp[1] - '0') * 100 + (sp[2] - '0') * 10 + (sp[3] - '0');
		if (m->status < 100 || m->status > 699)
			return -1;
		version->p = p;
		version->n = (size_t)(sp - p);
		reason->p = e - sp > 4 ? sp + 5 : e;
		reason->n = (size_t)(e - reason->p);
		return 0;
	}
	m->request = 1;
	for (sp = p; sp < e && sip_is_token(*sp); sp++)
		;
	if (sp == p || sp >= e || *sp != ' ')
		return -1;
	for (lsp = e; lsp > sp && lsp[-1] != ' '; lsp--)
		;
	lsp--;
	if (lsp <= sp + 1)
		return -1;
	method->p = p;
	method->n = (size_t)(sp - p);
	uri->p = sp + 1;
	uri->n = (size_t)(lsp - sp - 1);
	version->p = lsp + 1;
	version->n = (size_t)(e - lsp - 1);
	return sip_uri_ok(uri->p, uri->n) && version->n ? 0 : -1;
}

/* the one header of that id, or NULL with *dup set when there are more */
static const struct sip_hdr *single(const struct sip_msg *m, int id, int *dup)
{
	const struct sip_hdr *f = NULL;
	int i;

	for (i = 0; i < m->nhdrs; i++)
		if (m->hdrs[i].id == id) {
			if (f) {
				*dup = 1;
				return f;
			}
			f = &m->hdrs[i];
		}
	return f;
}

/* the light parse; *why set on failure. -EINVAL: not a SIP message we
 * can read (the start line); -EPROTO: read, but a field is missing or
 * bad (a 400 can name it) */
static int light_parse(struct sip_msg *m, const char **why)
{
	struct sip_span method = { 0 }, uri = { 0 }, version = { 0 }, reason = { 0 }, callid = { 0 };
	struct sip_span cmeth = { 0 }, ftag = { 0 }, ttag = { 0 }, vhost = { 0 }, vport = { 0 };
	struct sip_span vparams[3] = { { 0 } };
	struct sip_span *all[] = { &method, &uri, &version, &reason, &callid, &cmeth, &ftag, &ttag,
	                       &vhost, &vport, &vparams[0], &vparams[1], &vparams[2] };
	const char **dst[] = { &m->method, &m->uri, &m->version, &m->reason, &m->call_id,
	                       &m->cseq_method, &m->from_tag, &m->to_tag, &m->via_host, &m->via_port,
	                       &m->branch, &m->via_received, &m->via_rport };
	const char *hs = memchr(m->raw, '\n', m->body_off), *p;
	const struct sip_hdr *h;
	struct sip_hdr local[48], *tmp = local;
	size_t nlines = 0, strs = 0, i;
	int dup = 0, rc = 0, bad_start;
	char *s;

	/* the index first: a message with a bad start line keeps it for the
	 * 400 built from its raw headers */
	hs = hs ? hs + 1 : m->raw + m->body_off;
	for (p = hs; p < m->raw + m->body_off && (p = memchr(p, '\n', (size_t)(m->raw + m->body_off - p))); p++)
		nlines++;
	nlines++;
	if (nlines > sizeof local / sizeof local[0]) {
		tmp = malloc(nlines * sizeof *tmp);
		if (!tmp) {
			*why = "out of memory";
			return -ENOMEM;
		}
	}
	m->hdrs = tmp;
	m->nhdrs = index_headers(hs, m->raw + m->body_off, m->hdrs, (int)nlines);
	bad_start = parse_start(m, &method, &uri, &version, &reason);
	if (bad_start)
		goto store;
	m->parsed = 1;

	if ((h = single(m, SIP_H_CALL_ID, &dup)) && h->vlen) {
		callid.p = h->v;
		callid.n = h->vlen;
	}
	if ((h = single(m, SIP_H_CSEQ, &dup))) {
		const char *c = h->v, *ce = h->v + h->vlen, *d = c;
		while (c < ce && *c >= '0' && *c <= '9')
			c++;
		if (c > d && c < ce && sip_is_ws(*c)) {
			if (!digits_le(d, (size_t)(c - d), 2147483647UL)) {
				*why = "CSeq number out of range";
				rc = -EPROTO;
			}
			m->cseq = strtoul(d, NULL, 10);
			c = sip_skip_ws(c, ce);
			cmeth.p = c;
			while (c < ce && sip_is_token(*c))
				c++;
			cmeth.n = (size_t)(c - cmeth.p);
			if (!cmeth.n || c != ce)
				cmeth.p = NULL;
		}
	}
	if ((h = single(m, SIP_H_FROM, &dup)))
		ftag = sip_name_addr_tag(h->v, h->vlen);
	if ((h = single(m, SIP_H_TO, &dup)))
		ttag = sip_name_addr_tag(h->v, h->vlen);
	for (i = 0; i < (size_t)m->nhdrs; i++)
		if (m->hdrs[i].id == SIP_H_VIA) {
			if (parse_via(m->hdrs[i].v, m->hdrs[i].vlen, &vhost, &vport, vparams, &m->via1_len))
				vhost.p = NULL;
			break;
		}

store:
	/* one allocation of the exact size for the index and the fields
	 * (a call keeps its INVITE: no slack) */
	for (i = 0; i < sizeof all / sizeof all[0]; i++)
		if (all[i]->p)
			strs += all[i]->n + 1;
	m->block = malloc((size_t)m->nhdrs * sizeof *m->hdrs + strs + 1);
	if (m->block)
		memcpy(m->block, tmp, (size_t)m->nhdrs * sizeof *m->hdrs);
	if (tmp != local)
		free(tmp);
	m->hdrs = m->block;
	if (!m->block) {
		*why = "out of memory";
		return -ENOMEM;
	}
	if (bad_start) {
		*why = "unparsable message";
		return -EINVAL;
	}
	/* the fields, NUL-terminated, after the index */
	s = (char *)(m->hdrs + m->nhdrs);
	for (i = 0; i < sizeof all / sizeof all[0]; i++) {
		if (!all[i]->p) {
			*dst[i] = NULL;
			continue;
		}
		memcpy(s, all[i]->p, all[i]->n);
		s[all[i]->n] = '\0';
		*dst[i] = s;
		s += all[i]->n + 1;
	}
	if (!m->request)
		m->method = m->cseq_method;     /* spans copied once: they fit */
	if (rc)
		return rc;
	if (!m->call_id) { *why = "missing Call-ID"; return -EPROTO; }
	{
		const struct sip_hdr *f = single(m, SIP_H_FROM, &dup), *t = single(m, SIP_H_TO, &dup);
		if (!f || !addr_whole(f->v, f->vlen)) {
			*why = "missing or bad From";
			return -EPROTO;
		}
		if (!t || !addr_whole(t->v, t->vlen)) {
			*why = "missing or bad To";
			return -EPROTO;
		}
	}
	if (!m->cseq_method) { *why = "missing or bad CSeq"; return -EPROTO; }
	if (dup) { *why = "more than one From, To, Call-ID or CSeq"; return -EPROTO; }
	if (!m->via_host) { *why = "missing or bad Via"; return -EPROTO; }
	if (!scalar_ok(m, SIP_H_MAX_FORWARDS, 255)) { *why = "bad Max-Forwards"; return -EPROTO; }
	if (!scalar_ok(m, SIP_H_EXPIRES, 4294967295UL)) { *why = "bad Expires"; return -EPROTO; }
	if (!contacts_ok(m)) { *why = "Contact URI with parameters or headers outside <>"; return -EPROTO; }
	{
		size_t n1, n2;
		const char *a = sip_msg_hdr(m, SIP_H_CONTENT_LENGTH, 0, &n1);
		const char *b = sip_msg_hdr(m, SIP_H_CONTENT_LENGTH, 1, &n2);
		if (a && b) { *why = "more than one Content-Length"; return -EPROTO; }
	}
	if (m->request && strcmp(m->method, m->cseq_method)) {
		*why = "CSeq method does not match the request method";
		return -EPROTO;
	}
	return 0;
}

int sip_msg_parse(const char *buf, size_t len, struct sip_msg **out, const char **why)
{
	struct sip_msg *m;
	size_t off;
	long cl = -1;
	const char *v;
	size_t vlen;
	int rc;

	*out = NULL;
	*why = "out of memory";
	m = msg_alloc(len);
	if (!m)
		return -ENOMEM;
	memcpy(m->raw, buf, len);
	m->raw[len] = '\0';
	m->len = len;
	off = find_body(m->raw, len);
	if (!off)
		off = len;      /* a datagram ending inside its headers: all headers */
	m->body_off = off;
	m->body_len = len - off;
	rc = light_parse(m, why);
	if (rc == -ENOMEM)
		goto fail;
	if (rc == -EINVAL) {
		/* the raw text is still there for a 400 */
		*out = m;
		return -EINVAL;
	}
	if (rc) {
		/* parsed but invalid: the caller may still answer 400 */
		*out = m;
		return rc;
	}
	v = sip_msg_hdr(m, SIP_H_CONTENT_LENGTH, 0, &vlen);
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

struct sip_msg *sip_msg_ref(struct sip_msg *m)
{
	m->refs++;
	return m;
}

void sip_msg_unref(struct sip_msg *m)
{
	if (!m || --m->refs > 0)
		return;
	free(m->tls);
	free(m->top_via);
	free(m->block);
	free(m);
}

/* the accessors below also take a message that could not be parsed
 * (only its raw text) */
int sip_msg_is_request(const struct sip_msg *m)
{
	return m->parsed && m->request;
}

const char *sip_msg_method(const struct sip_msg *m)
{
	return m->parsed ? m->method : NULL;
}

int sip_msg_status(const struct sip_msg *m)
{
	return m->parsed && !m->request ? m->status : 0;
}

const char *sip_msg_hdr(const struct sip_msg *m, int id, int idx, size_t *vlen)
{
	int i;

	for (i = 0; i < m->nhdrs; i++) {
		const struct sip_hdr *h = &m->hdrs[i];
		if (h->id == id && idx-- == 0) {
			*vlen = h->vlen;
			return h->v;
		}
	}
	return NULL;
}

const char *sip_msg_header(const struct sip_msg *m, const char *name, int idx, size_t *vlen)
{
	const char *want;
	size_t wl;
	uint8_t id;
	int i;

	wl = strlen(name);
	want = sip_header_long_name(name, wl);
	if (want)
		wl = strlen(want);
	else
		want = name;
	if (!m->hdrs)
		return NULL;
	id = header_id(want, wl);
	if (id != SIP_H_OTHER)
		return sip_msg_hdr(m, id, idx, vlen);
	for (i = 0; i < m->nhdrs; i++) {
		const struct sip_hdr *h = &m->hdrs[i];
		if (h->id != SIP_H_OTHER || h->nlen != wl || strncasecmp(h->name, want, wl))
			continue;
		if (idx-- == 0) {
			*vlen = h->vlen;
			return h->v;
		}
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

int sip_msg_nameaddrs(const struct sip_msg *m, const char *name, struct sip_nameaddr *out, int max)
{
	const char *v;
	size_t n;
	int i, k = 0;

	for (i = 0; k < max && (v = sip_msg_header(m, name, i, &n)); i++) {
		const char *p = v, *e = v + n;
		while (k < max && p < e) {
			struct sip_name_addr na;
			const char *start = sip_skip_ws(p, e), *end = sip_name_addr_parse(start, e, 1, &na);
			const char *ve = end;
			if (!end)
				return -1;
			while (ve > start && sip_is_ws(ve[-1]))
				ve--;
			out[k].v = start;
			out[k].n = (size_t)(ve - start);
			out[k].uri = na.uri.p;
			out[k].un = na.uri.n;
			k++;
			p = end < e ? end + 1 : e;
		}
	}
	return k;
}

int sip_msg_answerable(const struct sip_msg *m)
{
	static const int need[] = { SIP_H_VIA, SIP_H_FROM, SIP_H_TO, SIP_H_CALL_ID, SIP_H_CSEQ };
	size_t i, n;

	for (i = 0; i < sizeof need / sizeof need[0]; i++)
		if (!sip_msg_hdr(m, need[i], 0, &n))
			return 0;
	return 1;
}

const char *sip_msg_branch(const struct sip_msg *m)
{
	return m->parsed ? m->branch : NULL;
}

const char *sip_msg_top_via(struct sip_msg *m, size_t *n)
{
	const char *v = sip_msg_hdr(m, SIP_H_VIA, 0, n);
	char ip[INET6_ADDRSTRLEN], port[8];
	struct sip_buf b;
	int rec;

	if (!v || !m->received || !m->via_host)
		return v;
	if (m->top_via) {
		*n = strlen(m->top_via);
		return m->top_via;
	}
	sip_addr_host(&m->src, ip, sizeof ip);
	/* received when the sent-by host is not the source address */
	{
		const char *h = m->via_host;
		size_t hl = strlen(h);
		if (h[0] == '[' && hl > 2 && h[hl - 1] == ']') {
			h++;
			hl -= 2;
		}
		rec = !(hl == strlen(ip) && !strncasecmp(h, ip, hl));
	}
	if (!rec && !(m->via_rport && !m->via_rport[0]))
		return v;       /* nothing to stamp: the value as received */
	sip_buf_init(&b, *n + 64);
	{
		/* the top via-parm with received and rport filled in, in place */
		const char *p = v, *e = v + m->via1_len;
		while (p < e) {
			const char *semi = memchr(p, ';', (size_t)(e - p)), *q, *nm;
			size_t nl;
			q = semi ? semi : e;
			if (p == v) {
				sip_buf_add(&b, p, (size_t)(q - p));
			} else {
				for (nm = p; nm < q && sip_is_ws(*nm); nm++)
					;
				for (nl = 0; nm + nl < q && sip_is_token(nm[nl]); nl++)
					;
				if (rec && nl == 8 && !strncasecmp(nm, "received", 8)) {
					sip_buf_adds(&b, ";received=");
					sip_buf_adds(&b, ip);
				} else if (nl == 5 && !strncasecmp(nm, "rport", 5) && !memchr(nm, '=', (size_t)(q - nm))) {
					snprintf(port, sizeof port, "%d", sip_addr_port(&m->src));
					sip_buf_adds(&b, ";rport=");
					sip_buf_adds(&b, port);
				} else {
					sip_buf_adds(&b, ";");
					sip_buf_add(&b, p, (size_t)(q - p));
				}
			}
			p = semi ? semi + 1 : e;
		}
		if (rec && !m->via_received) {
			sip_buf_adds(&b, ";received=");
			sip_buf_adds(&b, ip);
		}
		sip_buf_add(&b, v + m->via1_len, *n - m->via1_len);
	}
	if (b.oom) {
		sip_buf_free(&b);
		return v;
	}
	m->top_via = b.p;
	*n = b.len;
	return m->top_via;
}

int sip_msg_option(const struct sip_msg *m, const char *name, const char *tag)
{
	size_t tl = strlen(tag), n, k, s;
	const char *v;
	int i;

	for (i = 0; (v = sip_msg_header(m, name, i, &n)); i++) {
		for (k = 0; k < n;) {
			/* a folded line keeps its CRLF: blanks like the others */
			while (k < n && strchr(", \t\r\n", v[k]))
				k++;
			s = k;
			while (k < n && !strchr(", \t\r\n", v[k]))
				k++;
			if (k - s == tl && !strncasecmp(v + s, tag, tl))
				return 1;
		}
	}
	return 0;
}
