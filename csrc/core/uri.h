/*
 * uri.h - the one reader of URIs, name-addrs and parameters (RFC 3261
 * 19.1.1, 20.10, 25.1): message parsing, dialogs, request targets and
 * the Lua binding all go through it. Nothing is allocated: every result
 * is a span of the text given.
 */
#ifndef SIP_URI_H
#define SIP_URI_H

#include <stddef.h>

/* a piece of text: p NULL for one that is absent */
struct sip_span {
	const char *p;
	size_t n;
};

static inline int sip_is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* RFC 3261 25.1 token characters */
static inline int sip_is_token(char c)
{
	switch (c) {
	case '-': case '.': case '!': case '%': case '*': case '_': case '+': case '`': case '\'': case '~':
		return 1;
	default:
		return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
	}
}

static inline const char *sip_skip_ws(const char *p, const char *e)
{
	while (p < e && sip_is_ws(*p))
		p++;
	return p;
}

/* params ";name[=value]..." from p; sets the value of each wanted name
 * (a present parameter without value gets an empty span). Stops at ','
 * or at anything that is not a parameter; returns where it stopped. */
const char *sip_params_scan(const char *p, const char *e, const char *const *names,
                            struct sip_span *vals, int nnames);
/* the parameter at p (";name[=value]"): its name, its value (p NULL
 * without one; a quoted value with its quotes) and where it ends; NULL
 * when there is no parameter at p */
const char *sip_param_next(const char *p, const char *e, struct sip_span *name,
                           struct sip_span *value);

/* a URI as one word with a scheme, nothing that would end it (space,
 * <, >) */
int sip_uri_ok(const char *u, size_t n);
/* 1 when a SIP URI has the lr parameter (loose routing, 16.12) */
int sip_uri_has_lr(const char *uri, size_t n);

/* One name-addr or addr-spec (20.10): [display-name] <URI> params, or
 * URI params (whose parameters are then the header's). */
struct sip_name_addr {
	struct sip_span display;        /* as written (a quoted one with its
	                                 * quotes); p NULL without one */
	struct sip_span uri;
	struct sip_span params;         /* the header parameters, ";..." */
};
/* Reads one value from v. NULL when it does not read that way (an
 * unbalanced quote, a display name that is not tokens, a URI with
 * spaces), else where it ends: e, or the ',' before the next value.
 * `list`: the value is one of a comma-separated list (Contact, Route),
 * so an addr-spec ends at a comma (20.10 puts a URI with a comma in
 * <>); without it a comma may be part of an addr-spec (From, To). */
const char *sip_name_addr_parse(const char *v, const char *e, int list, struct sip_name_addr *na);
/* the tag parameter of a From or To value */
struct sip_span sip_name_addr_tag(const char *v, size_t n);

/* A URI in the parts of a SIP URI (19.1.1), whatever its scheme (the
 * caller judges it); an IPv6 host without its brackets. */
struct sip_uri {
	struct sip_span scheme, user, password, host, port;
	struct sip_span params;         /* ";..." up to the headers */
	struct sip_span headers;        /* after '?' */
};
/* 0, or -EINVAL: no scheme, no host, an unclosed IPv6 bracket, a ':'
 * without a port */
int sip_uri_parse(const char *s, size_t n, struct sip_uri *u);
/* a uri-parameter by name (any case): 1 and its value (empty without
 * one), 0 when absent */
int sip_uri_param(const struct sip_uri *u, const char *name, struct sip_span *value);

#endif
