/***
 * sip.core.socket - a raw UDP socket, or a TCP listener with its
 * connections, on the luasip loop: bytes in, bytes out, no SIP. The test
 * peer of sip.test is built on it (lua/sip/test.lua), so a spec can send
 * anything, malformed messages included, and see exactly what arrived.
 *
 * What arrives is queued in the socket (a Lua table in its user value:
 * data, then the peer "ip:port"); one coroutine at a time may wait for it,
 * with a timeout, and is woken once through the scheduler's queue. The
 * watchers do not keep the loop alive: a waiting coroutine does.
 * @module sip.core.socket
 */
#define _POSIX_C_SOURCE 200809L
#include "lsip.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define SOCK_MT "sip.Socket"
#define RX_MAX 65536

struct lsock;

/* a TCP connection, accepted or opened by send */
struct sconn {
	struct lsock *s;
	int fd;
	ev_io io;
	char peer[64];
	struct sconn *next, *prev;
};

struct lsock {
	struct lsip_env *e;
	int fd;                 /* UDP socket or TCP listener; -1 once closed */
	int tcp;
	ev_io io;
	ev_timer tmo;
	int co_ref;             /* the coroutine waiting, or LUA_NOREF */
	int self_ref;           /* pins the socket while its watchers run */
	lua_Integer head, tail; /* queued items: inbox[2i-1] data, inbox[2i] peer */
	struct sconn *conns;
	char rx[RX_MAX];
};

static struct lsock *check_sock(lua_State *L, int idx)
{
	struct lsock *s = luaL_checkudata(L, idx, SOCK_MT);

	if (s->fd < 0)
		luaL_error(L, "sip.Socket: closed");
	return s;
}

static int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* a watcher that does not hold the loop alive */
static void io_start(struct lsip_env *e, ev_io *w)
{
	ev_io_start(e->env.loop, w);
	ev_unref(e->env.loop);
}

static void io_stop(struct lsip_env *e, ev_io *w)
{
	if (ev_is_active(w)) {
		ev_ref(e->env.loop);
		ev_io_stop(e->env.loop, w);
	}
}

/* the waiting coroutine, if any, is woken with `ok` */
static void wake(struct lsock *s, int ok)
{
	lua_State *L;

	if (s->co_ref == LUA_NOREF)
		return;
	ev_timer_stop(s->e->env.loop, &s->tmo);
	L = lsip_wake_begin(s->e, s->co_ref);
	s->co_ref = LUA_NOREF;
	lua_pushboolean(L, ok);
	lsip_call(s->e, L, 2);
}

/* queue data from peer (the socket's user value, through its pin) */
static void push_item(struct lsock *s, const char *data, size_t len, const char *peer)
{
	lua_State *L = s->e->L;

	if (!L || s->self_ref == LUA_NOREF)
		return;
	lua_rawgeti(L, LUA_REGISTRYINDEX, s->self_ref);
	lua_getiuservalue(L, -1, 1);
	lua_pushlstring(L, data, len);
	lua_rawseti(L, -2, 2 * s->tail + 1);
	lua_pushstring(L, peer);
	lua_rawseti(L, -2, 2 * s->tail + 2);
	s->tail++;
	lua_pop(L, 2);
	wake(s, 1);
}

static void conn_free(struct sconn *c)
{
	struct lsock *s = c->s;

	io_stop(s->e, &c->io);
	close(c->fd);
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	free(c);
}

static void conn_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct sconn *c = w->data;
	struct lsock *s = c->s;
	ssize_t n;

	(void)loop; (void)revents;
	n = recv(c->fd, s->rx, sizeof s->rx, 0);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (n <= 0) {
		/* closed by the peer: an empty item says so */
		push_item(s, "", 0, c->peer);
		conn_free(c);
		return;
	}
	push_item(s, s->rx, (size_t)n, c->peer);
}

static struct sconn *conn_add(struct lsock *s, int fd, const struct sockaddr *peer)
{
	struct sconn *c = calloc(1, sizeof *c);

	if (!c)
		return NULL;
	c->s = s;
	c->fd = fd;
	sip_addr_str(peer, c->peer, sizeof c->peer);
	ev_io_init(&c->io, conn_cb, fd, EV_READ);
	c->io.data = c;
	io_start(s->e, &c->io);
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	return c;
}

static void sock_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct lsock *s = w->data;
	union sip_sockaddr from;
	socklen_t flen = sizeof from;
	char peer[64];

	(void)loop; (void)revents;
	if (s->tcp) {
		int fd = accept(s->fd, &from.sa, &flen);
		if (fd < 0)
			return;
		if (set_nonblock(fd) < 0 || !conn_add(s, fd, &from.sa))
			close(fd);
		return;
	}
	for (int i = 0; i < 64; i++) {
		ssize_t n;

		flen = sizeof from;
		n = recvfrom(s->fd, s->rx, sizeof s->rx, 0, &from.sa, &flen);
		if (n < 0)
			return;
		sip_addr_str(&from.sa, peer, sizeof peer);
		push_item(s, s->rx, (size_t)n, peer);
	}
}

static void tmo_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct lsock *s = w->data;

	(void)loop; (void)revents;
	wake(s, 0);
}

/* "ip:port" or "[ip]:port" -> address */
static int parse_dest(const char *spec, struct sip_addr *a)
{
	char host[128];
	const char *colon;
	size_t n;
	char *end;
	long port;

	if (spec[0] == '[') {
		const char *close = strchr(spec, ']');
		if (!close || close[1] != ':')
			return -EINVAL;
		n = (size_t)(close - spec - 1);
		colon = close + 1;
		spec++;
	} else {
		colon = strrchr(spec, ':');
		if (!colon)
			return -EINVAL;
		n = (size_t)(colon - spec);
	}
	if (n == 0 || n >= sizeof host)
		return -EINVAL;
	memcpy(host, spec, n);
	host[n] = '\0';
	port = strtol(colon + 1, &end, 10);
	if (*end || port < 1 || port > 65535)
		return -EINVAL;
	return sip_addr_resolve(host, (int)port, a);
}

/* write all of it; the socket is non-blocking, so wait (briefly) when full */
static int write_all(int fd, const char *p, size_t len)
{
	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0) {
			struct pollfd pf = { .fd = fd, .events = POLLOUT };
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				return -errno;
			if (poll(&pf, 1, 1000) <= 0)
				return -ETIMEDOUT;
			continue;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int fail(lua_State *L, int err)
{
	char buf[160];

	sip_transport_error(buf, sizeof buf, err);
	luaL_pushfail(L);
	lua_pushstring(L, buf);
	return 2;
}

/***
 * Send bytes to a peer.
 * @function send
 * @string data
 * @string to "ip:port" or "[ip]:port"; over TCP, the connection from or
 * to that address (opened now when there is none)
 * @treturn boolean true, or fail and a message
 */
static int l_sock_send(lua_State *L)
{
	struct lsock *s = check_sock(L, 1);
	size_t len;
	const char *data = luaL_checklstring(L, 2, &len);
	const char *to = luaL_checkstring(L, 3);
	struct sip_addr a;
	struct sconn *c;
	int rc, fd;

	if (s->tcp) {
		for (c = s->conns; c; c = c->next)
			if (!strcmp(c->peer, to))
				break;
		if (!c) {
			if ((rc = parse_dest(to, &a)))
				return fail(L, rc);
			/* a blocking connect: the peer is meant for loopback */
			fd = socket(a.ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
			if (fd < 0)
				return fail(L, errno);
			if (connect(fd, &a.ss.sa, a.len) < 0 || set_nonblock(fd) < 0) {
				rc = errno;
				close(fd);
				return fail(L, rc);
			}
			c = conn_add(s, fd, &a.ss.sa);
			if (!c) {
				close(fd);
				return fail(L, ENOMEM);
			}
		}
		if ((rc = write_all(c->fd, data, len)))
			return fail(L, rc);
		lua_pushboolean(L, 1);
		return 1;
	}
	if ((rc = parse_dest(to, &a)))
		return fail(L, rc);
	if (sendto(s->fd, data, len, 0, &a.ss.sa, a.len) < 0)
		return fail(L, errno);
	lua_pushboolean(L, 1);
	return 1;
}

/***
 * The next queued item: data and the peer's "ip:port" (over TCP, data is
 * what one read gave; "" when the peer closed), or nil when none is queued.
 * @function recv
 */
static int l_sock_recv(lua_State *L)
{
	struct lsock *s = luaL_checkudata(L, 1, SOCK_MT);

	if (s->head == s->tail)
		return 0;
	lua_getiuservalue(L, 1, 1);
	lua_rawgeti(L, -1, 2 * s->head + 1);
	lua_rawgeti(L, -2, 2 * s->head + 2);
	lua_pushnil(L);
	lua_rawseti(L, -4, 2 * s->head + 1);
	lua_pushnil(L);
	lua_rawseti(L, -4, 2 * s->head + 2);
	s->head++;
	if (s->head == s->tail)
		s->head = s->tail = 0;
	return 2;
}

/***
 * Wake `co` (scheduler: wake(co, ok)) once an item is queued (ok true) or
 * after `timeout` seconds (ok false). One waiter at a time.
 * @function wait
 * @tparam thread co
 * @number timeout
 */
static int l_sock_wait(lua_State *L)
{
	struct lsock *s = check_sock(L, 1);
	double t = luaL_checknumber(L, 3);

	luaL_checktype(L, 2, LUA_TTHREAD);
	luaL_argcheck(L, s->co_ref == LUA_NOREF, 2, "another coroutine already waits on this socket");
	lua_pushvalue(L, 2);
	s->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	if (s->head != s->tail) {
		wake(s, 1);
		return 0;
	}
	lsip_timer_in(s->e->env.loop, &s->tmo, t < 0 ? 0 : t);
	return 0;
}

/* forget the waiter without waking it (it was woken otherwise) */
static int l_sock_cancel(lua_State *L)
{
	struct lsock *s = luaL_checkudata(L, 1, SOCK_MT);

	if (s->e && !s->e->closed)
		ev_timer_stop(s->e->env.loop, &s->tmo);
	luaL_unref(L, LUA_REGISTRYINDEX, s->co_ref);
	s->co_ref = LUA_NOREF;
	return 0;
}

/***
 * The bound address, "ip:port".
 * @function address
 */
static int l_sock_address(lua_State *L)
{
	struct lsock *s = check_sock(L, 1);
	union sip_sockaddr a;
	socklen_t alen = sizeof a;
	char buf[64];

	if (getsockname(s->fd, &a.sa, &alen) < 0)
		return fail(L, errno);
	sip_addr_str(&a.sa, buf, sizeof buf);
	lua_pushstring(L, buf);
	return 1;
}

/* __gc, __close and close: idempotent; a waiter is woken (ok false) */
static int l_sock_close(lua_State *L)
{
	struct lsock *s = luaL_checkudata(L, 1, SOCK_MT);
	int live = s->e && !s->e->closed;

	if (s->fd < 0)
		return 0;
	if (live) {
		wake(s, 0);
		while (s->conns)
			conn_free(s->conns);
		io_stop(s->e, &s->io);
		ev_timer_stop(s->e->env.loop, &s->tmo);
	} else {
		while (s->conns) {
			struct sconn *c = s->conns;
			s->conns = c->next;
			close(c->fd);
			free(c);
		}
	}
	luaL_unref(L, LUA_REGISTRYINDEX, s->co_ref);
	s->co_ref = LUA_NOREF;
	close(s->fd);
	s->fd = -1;
	luaL_unref(L, LUA_REGISTRYINDEX, s->self_ref);
	s->self_ref = LUA_NOREF;
	return 0;
}

static int l_sock_tostring(lua_State *L)
{
	struct lsock *s = luaL_checkudata(L, 1, SOCK_MT);

	lua_pushfstring(L, "sip.Socket (%s%s)", s->tcp ? "tcp" : "udp", s->fd < 0 ? ", closed" : "");
	return 1;
}

/***
 * Open a socket bound to host:port (port 0: a free one).
 * @function open
 * @string proto "udp" or "tcp" (a listener)
 * @string host a numeric address
 * @int port
 * @return a sip.Socket, or fail and a message
 */
static int l_sock_open(lua_State *L)
{
	struct lsip_env *e = lsip_env(L);
	static const char *const protos[] = { "udp", "tcp", NULL };
	int tcp = luaL_checkoption(L, 1, NULL, protos);
	const char *host = luaL_checkstring(L, 2);
	lua_Integer port = luaL_checkinteger(L, 3);
	struct sip_addr a;
	struct lsock *s;
	int rc, one = 1;

	luaL_argcheck(L, port >= 0 && port <= 65535, 3, "port out of range");
	/* closed and zeroed, with its metatable, before the socket exists */
	s = lua_newuserdatauv(L, sizeof *s, 1);
	memset(s, 0, sizeof *s);
	s->fd = -1;
	s->co_ref = s->self_ref = LUA_NOREF;
	luaL_setmetatable(L, SOCK_MT);
	lua_newtable(L);
	lua_setiuservalue(L, -2, 1);
	if ((rc = sip_addr_resolve(host, (int)port, &a)))
		return fail(L, rc);
	s->fd = socket(a.ss.ss_family, (tcp ? SOCK_STREAM : SOCK_DGRAM) | SOCK_CLOEXEC, 0);
	if (s->fd < 0)
		return fail(L, errno);
	if (tcp)
		setsockopt(s->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(s->fd, &a.ss.sa, a.len) < 0 || (tcp && listen(s->fd, 64) < 0) ||
	    set_nonblock(s->fd) < 0) {
		rc = errno;
		close(s->fd);
		s->fd = -1;
		return fail(L, rc);
	}
	s->e = e;
	s->tcp = tcp;
	ev_io_init(&s->io, sock_cb, s->fd, EV_READ);
	s->io.data = s;
	ev_timer_init(&s->tmo, tmo_cb, 0., 0.);
	s->tmo.data = s;
	io_start(e, &s->io);
	lua_pushvalue(L, -1);
	s->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	return 1;
}

static const luaL_Reg sock_methods[] = {
	{ "send", l_sock_send },
	{ "recv", l_sock_recv },
	{ "wait", l_sock_wait },
	{ "cancel", l_sock_cancel },
	{ "address", l_sock_address },
	{ "close", l_sock_close },
	{ NULL, NULL }
};

int lsip_open_socket(lua_State *L)
{
	luaL_newmetatable(L, SOCK_MT);
	luaL_newlib(L, sock_methods);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, l_sock_close);
	lua_setfield(L, -2, "__gc");
	lua_pushcfunction(L, l_sock_close);
	lua_setfield(L, -2, "__close");
	lua_pushcfunction(L, l_sock_tostring);
	lua_setfield(L, -2, "__tostring");
	lua_pop(L, 1);
	lua_createtable(L, 0, 1);
	lua_pushcfunction(L, l_sock_open);
	lua_setfield(L, -2, "open");
	return 1;
}
