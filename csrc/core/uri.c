/*
 * uri.c - URIs, name-addrs and parameters read in place (see uri.h). The
 * message parser checks From and To with it on every message, so it
 * stays a single pass without allocations.
 */
#define _GNU_SOURCE
#include "uri.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

const char *sip_param_next(const char *p, const char *e, struct sip_span *name,
                           struct sip_span *value)
{
	p = sip_skip_ws(p, e);
	if (p >= e || *p != ';')
		return NULL;
	p = sip_skip_ws(p + 1, e);
	name->p = p;
	while (p < e && sip_is_token(*p))
		p++;
	name->n = (size_t)(p - name->p);
	value->p = NULL;
	value->n = 0;
	p = sip_skip_ws(p, e);
	if (p < e && *p == '=') {
		p = sip_skip_ws(p + 1, e);
		value->p = p;
		if (p < e && *p == '"') {
			for (p++; p < e && *p != '"'; p++)
				if (*p == '\\' && p + 1 < e)
					p++;
			if (p < e)
				p++;
		} else {
			/* the stops (white space, ';' and ',') sort below '<' */
			while (p < e && ((unsigned char)*p > ';' || (!sip_is_ws(*p) && *p != ';' && *p != ',')))
				p++;
		}
		value->n = (size_t)(p - value->p);
	}
	return p;
}

const char *sip_params_scan(const char *p, const char *e, const char *const *names,
                            struct sip_span *vals, int nnames)
{
	for (;;) {
		struct sip_span nm, v;
		const char *q = sip_param_next(p, e, &nm, &v);
		int i;
		if (!q)
			return sip_skip_ws(p, e);
		p = q;
		if (nm.n == 0)
			return p;
		for (i = 0; i < nnames; i++)
			if (strlen(names[i]) == nm.n && !strncasecmp(names[i], nm.p, nm.n) && !vals[i].p) {
				vals[i].p = v.p ? v.p : nm.p + nm.n;
				vals[i].n = v.p ? v.n : 0;
			}
	}
}

int sip_uri_ok(const char *u, size_t n)
{
	size_t i = 0;

	while (i < n && (((u[i] | 0x20) >= 'a' && (u[i] | 0x20) <= 'z') ||
	       (i > 0 && ((u[i] >= '0' && u[i] <= '9') || u[i] == '+' || u[i] == '-' || u[i] == '.'))))
		i++;
	if (i == 0 || i >= n || u[i] != ':')
		return 0;
	for (i++; i < n; i++) {
		unsigned char c = (unsigned char)u[i];
		/* everything refused sorts at or below '>' */
		if (c <= '>' && (sip_is_ws((char)c) || c == '<' || c == '>' || c == '\0'))
			return 0;
	}
	return 1;
}

int sip_uri_has_lr(const char *uri, size_t n)
{
	const char *p = memchr(uri, ';', n), *e = uri + n, *q = memchr(uri, '?', n);

	if (q)
		e = q;
	while (p && p < e) {
		p++;
		if (e - p >= 2 && !strncasecmp(p, "lr", 2) && (e - p == 2 || p[2] == ';' || p[2] == '='))
			return 1;
		p = memchr(p, ';', (size_t)(e - p));
	}
	return 0;
}

const char *sip_name_addr_parse(const char *v, const char *e, int list, struct sip_name_addr *na)
{
	const char *p = sip_skip_ws(v, e), *q;

	na->display.p = NULL;
	na->display.n = 0;
	if (p < e && *p == '"') {
		na->display.p = p;
		for (p++; p < e && *p != '"'; p++)
			if (*p == '\\' && p + 1 < e)
				p++;
		if (p >= e)
			return NULL;
		na->display.n = (size_t)(p + 1 - na->display.p);
		p = sip_skip_ws(p + 1, e);
		if (p >= e || *p != '<')
			return NULL;
	} else {
		for (q = p; q < e && *q != '<' && *q != ';' && !(list && *q == ','); q++)
			;
		if (q < e && *q == '<') {
			const char *de = q;
			for (; p < q; p++)
				if (!sip_is_token(*p) && !sip_is_ws(*p))
					return NULL;
			while (de > v && sip_is_ws(de[-1]))
				de--;
			p = sip_skip_ws(v, e);
			if (de > p) {
				na->display.p = p;
				na->display.n = (size_t)(de - p);
			}
			p = q;
		} else {
			/* an addr-spec: its parameters are the header's */
			for (q = p; q < e && *q != ';' && !sip_is_ws(*q) && !(list && *q == ','); q++)
				;
			na->uri.p = p;
			na->uri.n = (size_t)(q - p);
			if (!sip_uri_ok(na->uri.p, na->uri.n))
				return NULL;
			p = q;
			goto params;
		}
	}
	q = memchr(p, '>', (size_t)(e - p));
	if (!q)
		return NULL;
	na->uri.p = p + 1;
	na->uri.n = (size_t)(q - p - 1);
	if (!sip_uri_ok(na->uri.p, na->uri.n))
		return NULL;
	p = q + 1;
params:
	na->params.p = p;
	p = sip_params_scan(p, e, NULL, NULL, 0);
	na->params.n = (size_t)(p - na->params.p);
	while (na->params.n && sip_is_ws(na->params.p[na->params.n - 1]))
		na->params.n--;
	p = sip_skip_ws(p, e);
	return p == e || *p == ',' ? p : NULL;
}

struct sip_span sip_name_addr_tag(const char *v, size_t n)
{
	static const char *const tag[] = { "tag" };
	const char *p = v, *e = v + n, *params = NULL;
	struct sip_span t = { NULL, 0 };

	for (; p < e; p++) {
		if (*p == '"') {
			for (p++; p < e && *p != '"'; p++)
				if (*p == '\\' && p + 1 < e)
					p++;
		} else if (*p == '<') {
			const char *gt = memchr(p, '>', (size_t)(e - p));
			params = gt ? gt + 1 : e;
			break;
		}
	}
	if (!params) {
		/* an addr-spec: its parameters are the header's (20.10) */
		params = memchr(v, ';', n);
		if (!params)
			return t;
	}
	sip_params_scan(params, e, tag, &t, 1);
	return t;
}

int sip_uri_parse(const char *s, size_t n, struct sip_uri *u)
{
	const char *p = s, *e = s + n, *at, *q, *hs;

	memset(u, 0, sizeof *u);
	while (p < e && (((*p | 0x20) >= 'a' && (*p | 0x20) <= 'z') ||
	       (p > s && ((*p >= '0' && *p <= '9') || *p == '+' || *p == '-' || *p == '.'))))
		p++;
	if (p == s || p >= e || *p != ':')
		return -EINVAL;
	u->scheme.p = s;
	u->scheme.n = (size_t)(p - s);
	p++;
	/* the headers first: a '?' ends what comes before */
	q = memchr(p, '?', (size_t)(e - p));
	if (q) {
		u->headers.p = q + 1;
		u->headers.n = (size_t)(e - q - 1);
		e = q;
	}
	/* '@' appears unescaped in the userinfo only */
	at = memchr(p, '@', (size_t)(e - p));
	if (at) {
		const char *colon = memchr(p, ':', (size_t)(at - p));
		u->user.p = p;
		u->user.n = (size_t)((colon ? colon : at) - p);
		if (colon) {
			u->password.p = colon + 1;
			u->password.n = (size_t)(at - colon - 1);
		}
		p = at + 1;
	}
	hs = p;
	if (p < e && *p == '[') {
		q = memchr(p, ']', (size_t)(e - p));
		if (!q)
			return -EINVAL;
		u->host.p = p + 1;
		u->host.n = (size_t)(q - p - 1);
		p = q + 1;
	} else {
		while (p < e && *p != ':' && *p != ';')
			p++;
		u->host.p = hs;
		u->host.n = (size_t)(p - hs);
	}
	if (!u->host.n)
		return -EINVAL;
	if (p < e && *p == ':') {
		q = ++p;
		while (p < e && *p != ';')
			p++;
		u->port.p = q;
		u->port.n = (size_t)(p - q);
		if (!u->port.n)
			return -EINVAL;
	}
	if (p < e && *p != ';')
		return -EINVAL;
	u->params.p = p;
	u->params.n = (size_t)(e - p);
	return 0;
}

int sip_uri_param(const struct sip_uri *u, const char *name, struct sip_span *value)
{
	const char *p = u->params.p, *e = p + u->params.n;
	size_t nl = strlen(name);

	/* uri-parameters are ';'-separated without white space; read them
	 * plainly rather than as header parameters (a value may hold '"') */
	while (p && p < e && *p == ';') {
		const char *s = p + 1, *end = memchr(s, ';', (size_t)(e - s)), *eq;
		if (!end)
			end = e;
		eq = memchr(s, '=', (size_t)(end - s));
		if ((size_t)((eq ? eq : end) - s) == nl && !strncasecmp(s, name, nl)) {
			value->p = eq ? eq + 1 : end;
			value->n = eq ? (size_t)(end - eq - 1) : 0;
			return 1;
		}
		p = end;
	}
	return 0;
}
