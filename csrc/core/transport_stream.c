/*
 * transport_stream.c - TCP listeners and connections: non-blocking connect,
 * connection reuse by peer address, framing by Content-Length (RFC 3261
 * 18.3), CRLF keep-alive pings answered (RFC 5626 4.4.1), bounded buffers
 * and an idle timeout. TLS rides on the same code.
 */
#define _GNU_SOURCE
#include "core.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

static void conn_key(char *key, size_t n, int proto, const struct sip_addr *a)
{
	char s[64];

	sip_addr_str((const struct sockaddr *)&a->ss, s, sizeof s);
	snprintf(key, n, "%d/%s", proto, s);
}

/* RFC 5626 4.4.1: a pong is due within 10 s of its ping */
#define PONG_WAIT 10.

/* what the idle timer waits for now: the end of a partial message, the
 * next keep-alive ping (or its pong), else the idle close */
static double idle_repeat(const struct sip_conn *c)
{
	if (c->partial)
		return c->ua->cfg.header_timeout;
	if (c->keepalive > 0)
		return c->pong_due && c->pong_seen && c->keepalive > PONG_WAIT ? PONG_WAIT : c->keepalive;
	return c->ua->cfg.idle_timeout;
}

/* Activity restarts the idle timer, except while a message is only
 * partly in: then the header timeout set when it started keeps running,
 * so a peer trickling bytes (slowloris) cannot hold the connection. */
static void conn_touch(struct sip_conn *c)
{
	if (!c->partial)
		ev_timer_again(c->ua->env->loop, &c->idle);
}

/* after framing: start or stop the deadline of a partial message; a
 * busy connection that completed messages meanwhile starts a new one */
static void conn_partial(struct sip_conn *c, int delivered)
{
	struct sip_ua *ua = c->ua;
	/* what conn_frame leaves of CRLFs (half a ping, a late pong) is no
	 * message begun: no header timeout for it */
	int crlf = c->inlen > 0 && c->inlen < 4 && !memcmp(c->in, "\r\n\r\n", c->inlen);
	int partial = c->inlen > 0 && !c->handshaking && !crlf;

	if (partial == c->partial) {
		if (partial && delivered > 0)
			ev_timer_again(ua->env->loop, &c->idle);
		return;
	}
	c->partial = partial;
	c->idle.repeat = idle_repeat(c);
	ev_timer_again(ua->env->loop, &c->idle);
}

void sip_conn_close(struct sip_conn *c, const char *why)
{
	struct ev_loop *loop = c->ua->env->loop;
	struct sip_ua *ua = c->ua;
	char peer[64];

	if (c->closing == 2) {
		/* inside conn_frame: it finishes the close when it returns */
		c->closing = 1;
		snprintf(c->close_why, sizeof c->close_why, "%s", why ? why : "");
		return;
	}
	if (c->closing)
		return;
	c->closing = 1;
	sip_addr_str((const struct sockaddr *)&c->peer.ss, peer, sizeof peer);
	if (why)
		SIP_LOGD(ua->env, "%s connection %s closed: %s", sip_proto_name(c->proto), peer, why);
	sip_htab_remove(&ua->conns, &c->hn);
	if (c->prev)
		c->prev->next = c->next;
	else
		ua->conn_list = c->next;
	if (c->next)
		c->next->prev = c->prev;
	ua->nconns--;
	ev_ref(loop);
	ev_io_stop(loop, &c->rio);
	if (ev_is_active(&c->wio)) {
		ev_ref(loop);
		ev_io_stop(loop, &c->wio);
	}
	ev_ref(loop);
	ev_timer_stop(loop, &c->idle);
	/* transactions on this connection fail or forget it */
	ua->tpu->conn_closed(c, why ? why : "connection closed");
	sip_tls_conn_free(c);
	close(c->fd);
	free(c->in);
	sip_buf_free(&c->out);
	free(c);
}

static void wio_start(struct sip_conn *c)
{
	if (!ev_is_active(&c->wio)) {
		ev_io_start(c->ua->env->loop, &c->wio);
		ev_unref(c->ua->env->loop);
	}
}

static void wio_stop(struct sip_conn *c)
{
	if (ev_is_active(&c->wio)) {
		ev_ref(c->ua->env->loop);
		ev_io_stop(c->ua->env->loop, &c->wio);
	}
}

/* -1: the connection failed and is gone (freed) */
static int conn_flush(struct sip_conn *c)
{
	struct ev_loop *loop = c->ua->env->loop;

	if (c->connecting || c->handshaking)
		return 0;
	while (c->ssl && c->outoff < c->out.len) {
		char why[160];
		long n = sip_tls_write(c, c->out.p + c->outoff, c->out.len - c->outoff, why, sizeof why);
		if (n == SIP_TLS_WANT_WRITE) {
			wio_start(c);
			return 0;
		}
		if (n == SIP_TLS_WANT_READ)
			return 0;       /* the read callback flushes again */
		if (n <= 0) {
			/* inside conn_frame the close is deferred and c lives on */
			int deferred = c->closing == 2;
			sip_conn_close(c, why);
			return deferred ? 0 : -1;
		}
		c->outoff += (size_t)n;
	}
	while (c->outoff < c->out.len) {
		ssize_t n = send(c->fd, c->out.p + c->outoff, c->out.len - c->outoff, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			if (errno == EINTR)
				continue;
			char why[96];
			int deferred = c->closing == 2;
			sip_transport_error(why, sizeof why, errno);
			sip_conn_close(c, why);
			return deferred ? 0 : -1;
		}
		c->outoff += (size_t)n;
	}
	if (c->outoff == c->out.len) {
		c->out.len = c->outoff = 0;
		if (ev_is_active(&c->wio)) {
			ev_ref(loop);
			ev_io_stop(loop, &c->wio);
		}
	} else if (!ev_is_active(&c->wio)) {
		ev_io_start(loop, &c->wio);
		ev_unref(loop);
	}
	return 0;
}

/* drive a TLS handshake; on success the idle timer returns to normal
 * and what was queued meanwhile goes out. -1: the connection failed and
 * is gone (freed). */
static int conn_handshake(struct sip_conn *c)
{
	char why[200];
	int rc = sip_tls_handshake(c, why, sizeof why);

	if (rc == SIP_TLS_WANT_WRITE) {
		wio_start(c);
		return 0;
	}
	if (rc == SIP_TLS_WANT_READ) {
		wio_stop(c);
		return 0;
	}
	if (rc < 0) {
		sip_log(c->ua->env, SIP_LOG_INFO, "%s", why);
		sip_conn_close(c, why);
		return -1;
	}
	wio_stop(c);
	c->idle.repeat = idle_repeat(c);
	ev_timer_again(c->ua->env->loop, &c->idle);
	return conn_flush(c);
}

static void conn_wcb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct sip_conn *c = w->data;

	(void)loop;
	(void)revents;
	if (c->connecting) {
		int err = 0;
		socklen_t len = sizeof err;
		getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
		if (err) {
			char why[96];
			sip_transport_error(why, sizeof why, err);
			sip_conn_close(c, why);
			return;
		}
		c->connecting = 0;
		if (!c->ssl && c->keepalive > 0) {
			c->idle.repeat = idle_repeat(c);
			ev_timer_again(loop, &c->idle);
		}
		if (c->ssl) {
			conn_handshake(c);
			return;
		}
	}
	if (c->handshaking) {
		conn_handshake(c);
		return;
	}
	conn_flush(c);
}

/* Content-Length of a header block, -1 when absent, -2 when malformed */
static long stream_content_length(const char *h, size_t n)
{
	const char *p = h, *end = h + n;

	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		const char *colon;
		if (!eol)
			eol = end;
		colon = memchr(p, ':', (size_t)(eol - p));
		if (colon) {
			const char *ne = colon;
			while (ne > p && (ne[-1] == ' ' || ne[-1] == '\t'))
				ne--;
			if (((ne - p) == 14 && !strncasecmp(p, "Content-Length", 14)) ||
			    ((ne - p) == 1 && (*p | 0x20) == 'l')) {
				const char *v = colon + 1;
				long cl = 0;
				while (v < eol && (*v == ' ' || *v == '\t'))
					v++;
				if (v >= eol || *v < '0' || *v > '9')
					return -2;
				while (v < eol && *v >= '0' && *v <= '9') {
					cl = cl * 10 + (*v++ - '0');
					if (cl > 100000000)
						return -2;
				}
				return cl;
			}
		}
		p = eol + 1;
	}
	return -1;
}

/* Deliver every complete message in the input buffer; -1 when the
 * connection was closed (and freed) meanwhile, else how many went up. Closes requested while we
 * work (by a reply, a pong, a framing error) are deferred to the end. */
static int conn_frame(struct sip_conn *c)
{
	struct sip_ua *ua = c->ua;
	size_t off = 0;
	int delivered = 0;

	c->closing = 2;
	while (off < c->inlen && c->closing == 2) {
		char *p = c->in + off;
		size_t avail = c->inlen - off;
		char *hend;
		size_t hlen;
		long cl;

		/* CRLF keep-alive: a double CRLF ping gets a single CRLF pong */
		if (p[0] == '\r' || p[0] == '\n') {
			if (c->pong_due && avail >= 2 && p[0] == '\r' && p[1] == '\n' && (avail == 2 || p[2] != '\r')) {
				/* the pong of our ping: the flow is alive */
				c->pong_due = 0;
				c->pong_seen = 1;
				off += 2;
				c->idle.repeat = idle_repeat(c);
				ev_timer_again(ua->env->loop, &c->idle);
				continue;
			}
			if (avail >= 4 && !memcmp(p, "\r\n\r\n", 4)) {
				sip_conn_send(c, "\r\n", 2);
				off += 4;
				continue;
			}
			if (avail < 4 && !memcmp(p, "\r\n\r\n", avail))
				break;
			off++;
			continue;
		}
		hend = memmem(p, avail, "\r\n\r\n", 4);
		if (!hend) {
			if (avail > ua->cfg.max_stream_msg) {
				sip_ua_drop(ua, &c->peer, "header section larger than the stream limit");
				sip_conn_close(c, "message too large");
			}
			break;
		}
		hlen = (size_t)(hend - p) + 4;
		cl = stream_content_length(p, hlen);
		if (cl < 0) {
			/* without a length a stream cannot be framed (18.3): close */
			sip_ua_drop(ua, &c->peer, cl == -1 ? "no Content-Length on a stream"
			                                    : "bad Content-Length on a stream");
			sip_conn_close(c, "unframeable message");
			break;
		}
		if (hlen + (size_t)cl > ua->cfg.max_stream_msg) {
			sip_ua_drop(ua, &c->peer, "Content-Length beyond the stream limit");
			sip_conn_close(c, "message too large");
			break;
		}
		if (avail < hlen + (size_t)cl)
			break;
		ua->tpu->recv(ua, c->proto, c->lst, c, &c->peer, p, hlen + (size_t)cl);
		off += hlen + (size_t)cl;
		delivered++;
	}
	if (c->closing == 1) {
		c->closing = 0;
		sip_conn_close(c, c->close_why[0] ? c->close_why : NULL);
		return -1;
	}
	c->closing = 0;
	if (off) {
		memmove(c->in, c->in + off, c->inlen - off);
		c->inlen -= off;
	}
	return delivered;
}

static int conn_grow(struct sip_conn *c)
{
	if (c->incap - c->inlen < 4096) {
		size_t cap = c->incap ? c->incap * 2 : 8192;
		char *p;
		if (cap > c->ua->cfg.max_stream_msg + 8192)
			cap = c->ua->cfg.max_stream_msg + 8192;
		if (cap <= c->inlen) {
			sip_conn_close(c, "input buffer full");
			return -1;
		}
		p = realloc(c->in, cap);
		if (!p) {
			sip_conn_close(c, "out of memory");
			return -1;
		}
		c->in = p;
		c->incap = cap;
	}
	return 0;
}

/* TLS: read every decrypted record available (epoll will not report
 * what OpenSSL has buffered already) */
static void conn_tls_read(struct sip_conn *c)
{
	char why[160];
	int delivered;

	if (c->handshaking) {
		/* conn_flush at its end may have closed it too */
		if (conn_handshake(c) < 0 || c->closing || c->handshaking)
			return;
	}
	for (;;) {
		long n;
		if (conn_grow(c))
			return;
		n = sip_tls_read(c, c->in + c->inlen, c->incap - c->inlen, why, sizeof why);
		if (n == SIP_TLS_WANT_READ || n == SIP_TLS_WANT_WRITE)
			break;
		if (n <= 0) {
			sip_conn_close(c, n == 0 ? "closed by peer" : why);
			return;
		}
		c->inlen += (size_t)n;
		conn_touch(c);
		if ((delivered = conn_frame(c)) < 0)
			return;
		conn_partial(c, delivered);
	}
	if (c->outoff < c->out.len)
		conn_flush(c);
}

static void conn_rcb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct sip_conn *c = w->data;
	ssize_t n;
	int delivered;

	(void)loop;
	(void)revents;
	if (c->ssl) {
		conn_tls_read(c);
		return;
	}
	if (conn_grow(c))
		return;
	n = recv(c->fd, c->in + c->inlen, c->incap - c->inlen, 0);
	if (n == 0) {
		sip_conn_close(c, "closed by peer");
		return;
	}
	if (n < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			return;
		char why[96];
		sip_transport_error(why, sizeof why, errno);
		sip_conn_close(c, why);
		return;
	}
	c->inlen += (size_t)n;
	conn_touch(c);
	if ((delivered = conn_frame(c)) >= 0)
		conn_partial(c, delivered);
}

/* a CRLF ping on a kept-alive flow (not a message: neither counted nor
 * traced); -1 when the connection failed and is gone */
static int conn_ping(struct sip_conn *c)
{
	if (c->closing || c->connecting || c->handshaking)
		return 0;
	sip_buf_add(&c->out, "\r\n\r\n", 4);
	if (c->out.oom) {
		sip_conn_close(c, "out of memory");
		return -1;
	}
	c->pong_due = 1;
	c->idle.repeat = idle_repeat(c);
	ev_timer_again(c->ua->env->loop, &c->idle);
	return ev_is_active(&c->wio) ? 0 : conn_flush(c);
}

static void conn_idle_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct sip_conn *c = w->data;

	(void)loop;
	(void)revents;
	if (c->keepalive > 0 && !c->partial && !c->handshaking && !c->connecting) {
		/* a peer that answered pings and stopped: the flow is dead
		 * (RFC 5626 4.4.1); one that never answers is only pinged */
		if (c->pong_due && c->pong_seen)
			sip_conn_close(c, "keep-alive: no pong");
		else
			conn_ping(c);
		return;
	}
	sip_conn_close(c, "idle timeout");
}

int sip_conn_keepalive(struct sip_ua *ua, int proto, const struct sip_addr *dst, double seconds)
{
	struct sip_conn *c = sip_conn_find(ua, proto, dst);

	if (!c || c->closing)
		return -ENOTCONN;
	if (seconds >= 0 && seconds != c->keepalive) {
		c->keepalive = seconds;
		c->idle.repeat = idle_repeat(c);
		ev_timer_again(ua->env->loop, &c->idle);
	}
	return 0;
}

static struct sip_conn *conn_new(struct sip_ua *ua, int proto, int fd, const struct sip_addr *peer)
{
	struct ev_loop *loop = ua->env->loop;
	struct sip_conn *c = calloc(1, sizeof *c);
	int on = 1;

	if (!c)
		return NULL;
	c->ua = ua;
	c->proto = proto;
	c->fd = fd;
	c->peer = *peer;
	c->lst = sip_ua_listener_for(ua, proto, peer->ss.ss_family);
	sip_buf_init(&c->out, 1024);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
	conn_key(c->key, sizeof c->key, proto, peer);
	c->hn.key = c->key;
	sip_htab_insert(&ua->conns, &c->hn);
	c->next = ua->conn_list;
	if (c->next)
		c->next->prev = c;
	ua->conn_list = c;
	ua->nconns++;
	ev_io_init(&c->rio, conn_rcb, fd, EV_READ);
	ev_io_init(&c->wio, conn_wcb, fd, EV_WRITE);
	c->rio.data = c->wio.data = c;
	ev_init(&c->idle, conn_idle_cb);
	/* a TLS peer gets the handshake timeout first (an idle client that
	 * never speaks is closed then), the idle timeout after */
	c->idle.repeat = proto == SIP_TLS ? sip_tls_handshake_timeout(ua) : ua->cfg.idle_timeout;
	c->idle.data = c;
	ev_io_start(loop, &c->rio);
	ev_unref(loop);
	/* from now, not from when the loop last woke: a script that ran a
	 * while without waiting would find its new connection timed out */
	ev_now_update(loop);
	ev_timer_again(loop, &c->idle);
	ev_unref(loop);
	return c;
}

/* connections from one address (any port): a walk, on accept only */
static int conns_from(struct sip_ua *ua, const struct sip_addr *a)
{
	const struct sip_conn *c;
	int n = 0;

	for (c = ua->conn_list; c; c = c->next) {
		if (c->peer.ss.ss_family != a->ss.ss_family)
			continue;
		if (a->ss.ss_family == AF_INET6 ?
		    !memcmp(&((const struct sockaddr_in6 *)&c->peer.ss)->sin6_addr,
		            &((const struct sockaddr_in6 *)&a->ss)->sin6_addr, 16) :
		    ((const struct sockaddr_in *)&c->peer.ss)->sin_addr.s_addr ==
		    ((const struct sockaddr_in *)&a->ss)->sin_addr.s_addr)
			n++;
	}
	return n;
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct sip_listener *l = w->data;
	struct sip_ua *ua = l->ua;
	int i;

	(void)loop;
	(void)revents;
	for (i = 0; i < 32; i++) {
		struct sip_addr peer;
		int fd;
		peer.len = sizeof peer.ss;
		fd = accept4(l->fd, (struct sockaddr *)&peer.ss, &peer.len, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			return;
		if ((int)ua->nconns >= ua->cfg.max_conns) {
			sip_ua_drop(ua, &peer, "connection limit reached");
			close(fd);
			continue;
		}
		if (conns_from(ua, &peer) >= ua->cfg.max_conns_per_ip) {
			sip_ua_drop(ua, &peer, "per-address connection limit reached");
			close(fd);
			continue;
		}
		struct sip_hnode *old;
		char key[80];
		/* a new connection from the same address and port means the
		 * old one is dead on the peer's side: close it */
		conn_key(key, sizeof key, l->proto, &peer);
		old = sip_htab_find(&ua->conns, key);
		if (old)
			sip_conn_close((struct sip_conn *)old, "replaced by a new connection");
		struct sip_conn *c = conn_new(ua, l->proto, fd, &peer);
		if (!c) {
			close(fd);
			continue;
		}
		if (l->proto == SIP_TLS && sip_tls_conn_start(c, 1, NULL))
			sip_conn_close(c, "tls: cannot start");
	}
}

int sip_stream_listen(struct sip_listener *l, char *err, size_t errlen)
{
	int fd, on = 1;
	socklen_t alen;

	fd = socket(l->addr.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
	/* the workers of `luasip -w N` share their listen ports (connections
	 * spread over them) */
	if (getenv("LUASIP_WORKERS"))
		setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on);
	if (l->addr.ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on);
	if (bind(fd, (struct sockaddr *)&l->addr.ss, l->addr.len) < 0 || listen(fd, 1024) < 0)
		goto fail;
	alen = sizeof l->addr.ss;
	getsockname(fd, (struct sockaddr *)&l->addr.ss, &alen);
	l->addr.len = alen;
	l->fd = fd;
	ev_io_init(&l->io, accept_cb, fd, EV_READ);
	l->io.data = l;
	ev_io_start(l->ua->env->loop, &l->io);
	ev_unref(l->ua->env->loop);
	return 0;
fail:
	snprintf(err, errlen, "%s", strerror(errno));
	if (fd >= 0)
		close(fd);
	return -errno;
}

void sip_stream_listener_close(struct sip_listener *l)
{
	if (l->fd < 0)
		return;
	ev_ref(l->ua->env->loop);
	ev_io_stop(l->ua->env->loop, &l->io);
	close(l->fd);
	l->fd = -1;
}

struct sip_conn *sip_conn_find(struct sip_ua *ua, int proto, const struct sip_addr *dst)
{
	char key[80];

	conn_key(key, sizeof key, proto, dst);
	return (struct sip_conn *)sip_htab_find(&ua->conns, key);
}

int sip_conn_get(struct sip_ua *ua, int proto, const struct sip_addr *dst, const char *tls_name,
                 struct sip_conn **out)
{
	char key[80];
	struct sip_hnode *n;
	struct sip_conn *c;
	int fd;

	conn_key(key, sizeof key, proto, dst);
	n = sip_htab_find(&ua->conns, key);
	if (n) {
		c = (struct sip_conn *)n;
		/* a TLS connection opened for one domain carries requests for
		 * another only when its certificate names that one too */
		if (proto == SIP_TLS && c->ssl && !sip_tls_conn_serves(c, tls_name))
			return -EXDEV;
		*out = c;
		return 0;
	}
	if ((int)ua->nconns >= ua->cfg.max_conns)
		return -EMFILE;
	fd = socket(dst->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (const struct sockaddr *)&dst->ss, dst->len) < 0 && errno != EINPROGRESS) {
		int e = errno;
		close(fd);
		return -e;
	}
	c = conn_new(ua, proto, fd, dst);
	if (!c) {
		close(fd);
		return -ENOMEM;
	}
	c->connecting = 1;
	ev_io_start(ua->env->loop, &c->wio);
	ev_unref(ua->env->loop);
	/* a flow we opened is kept alive when the UA asks (NAT bindings),
	 * from when it is up */
	c->keepalive = ua->cfg.keepalive;
	if (proto == SIP_TLS) {
		char host[INET6_ADDRSTRLEN];
		if (!tls_name) {
			/* no domain known (a stateless send): the address it is */
			sip_addr_host(dst, host, sizeof host);
			tls_name = host;
		}
		if (sip_tls_conn_start(c, 0, tls_name)) {
			sip_conn_close(c, "tls: cannot start");
			return -EPROTO;
		}
	}
	*out = c;
	return 0;
}

int sip_conn_send(struct sip_conn *c, const char *buf, size_t len)
{
	if (c->closing == 1)
		return -EPIPE;
	if (c->out.len - c->outoff + len > c->ua->cfg.max_stream_msg * 4)
		return -ENOBUFS;
	sip_buf_add(&c->out, buf, len);
	if (c->out.oom)
		return -ENOMEM;
	if (len > 4) {          /* a message, not a pong */
		c->ua->tx++;
		sip_ua_trace(c->ua, 1, c->proto, c->fd, &c->peer, buf, len);
	}
	conn_touch(c);
	if (!c->connecting && !c->handshaking && !ev_is_active(&c->wio) && conn_flush(c) < 0)
		return -EPIPE;  /* the connection failed and is gone */
	return 0;
}

void sip_conn_close_all(struct sip_ua *ua)
{
	while (ua->conn_list)
		sip_conn_close(ua->conn_list, "user agent closed");
}
