/*
 * fuzz_stream.c - the TCP framer (transport_stream.c: conn_frame and
 * stream_content_length, static) with random split points: the bytes are
 * written to a real loopback connection to a UA's tcp listener in chunks,
 * and the UA's loop runs after each chunk so that it receives exactly that
 * chunk: Content-Length framing, CRLF keep-alives, several messages in one
 * read, a message across many reads, limits, and the close of an
 * unframeable stream. Replies are read and thrown away.
 *
 * Input: 4 bytes that seed the split points, then the stream.
 *
 * With -DHAVE_STREAM_HOOK the target uses the hook proposed for
 * transport_stream.c instead of the kernel, which makes every split exact
 * and needs no loopback:
 *
 *   // a connection over an already connected socket (socketpair, tests)
 *   int sip_conn_adopt(struct sip_ua *ua, int proto, int fd,
 *                      const struct sip_addr *peer, struct sip_conn **out);
 *   // bytes as if recv() had returned them: append (within the limits),
 *   // frame, deliver; 0, or -EPIPE when the connection closed (and was freed)
 *   int sip_conn_input(struct sip_conn *c, const char *buf, size_t len);
 *
 * (conn_rcb would become recv() + sip_conn_input().)
 */
#define _GNU_SOURCE
#include "core.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

void fuzz_init(void);
void fuzz_reset_random(void);
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#ifdef HAVE_STREAM_HOOK
int sip_conn_adopt(struct sip_ua *ua, int proto, int fd, const struct sip_addr *peer,
                   struct sip_conn **out);
int sip_conn_input(struct sip_conn *c, const char *buf, size_t len);
#endif

static void on_request(void *arg, struct sip_ua *ua, struct sip_txn *st, struct sip_msg *req)
{
	struct sip_reply r = { .status = 200 };

	(void)arg;
	(void)ua;
	(void)req;
	if (st && !sip_txn_final_sent(st)) {
		if (!strcmp(sip_msg_method(sip_txn_request(st)), "INVITE"))
			r.status = 486;         /* no dialogs here: fuzz_receive does those */
		sip_txn_reply(st, &r);
	}
}

static uint32_t rng;

static size_t next_chunk(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 17;
	rng ^= rng << 5;
	/* mostly small pieces (1..32 bytes), sometimes large ones */
	return (rng & 7) ? 1 + (rng >> 3) % 32 : 1 + (rng >> 3) % 4096;
}

static void drain(int fd)
{
	char buf[4096];

	while (recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0)
		;
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
	struct sip_env env;
	struct sip_ua *ua = NULL;
	const char *p, *end;
	int fd = -1, i;
	char err[256];
#ifdef HAVE_STREAM_HOOK
	int sv[2];
	struct sip_conn *c = NULL;
	struct sip_addr peer;
	int proto;
#else
	char spec[96];
	struct sip_addr a;
	int proto;
#endif

	fuzz_reset_random();
	if (size < 4 || size > 4 * 65536)
		return 0;
	rng = (uint32_t)data[0] | (uint32_t)data[1] << 8 | (uint32_t)data[2] << 16 |
	      (uint32_t)data[3] << 24;
	if (!rng)
		rng = 0x9e3779b9u;
	p = (const char *)data + 4;
	end = (const char *)data + size;

	memset(&env, 0, sizeof env);
	env.loop = ev_loop_new(EVFLAG_AUTO);
	env.log_level = SIP_LOG_ERROR - 1;
	if (!env.loop || sip_ua_new(&env, &ua))
		abort();
	sip_ua_set_tu(ua, on_request, NULL);
	sip_ua_serve(ua, "INVITE");
	sip_ua_serve(ua, "OPTIONS");
	sip_ua_serve(ua, "REGISTER");
	sip_ua_serve(ua, "MESSAGE");
	sip_ua_config(ua)->max_stream_msg = 16384;      /* reach the limits sooner */

#ifdef HAVE_STREAM_HOOK
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
		abort();
	sip_addr_parse_listen("tcp:127.0.0.1:5060", &proto, &peer);
	if (sip_conn_adopt(ua, SIP_TCP, sv[0], &peer, &c))
		abort();
	fd = sv[1];
	while (p < end) {
		size_t n = next_chunk();
		if (n > (size_t)(end - p))
			n = (size_t)(end - p);
		if (sip_conn_input(c, p, n))
			break;          /* closed: c is gone */
		p += n;
		ev_run(env.loop, EVRUN_NOWAIT);
		drain(fd);
	}
	(void)err;
#else
	if (sip_ua_listen(ua, "tcp:127.0.0.1:0", err, sizeof err)) {
		fprintf(stderr, "fuzz_stream: listen: %s (loopback down?)\n", err);
		abort();
	}
	if (sip_ua_listener_spec(ua, 0, spec, sizeof spec) ||
	    sip_addr_parse_listen(spec, &proto, &a))
		abort();
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		abort();
	if (connect(fd, (struct sockaddr *)&a.ss, a.len) < 0) {
		/* libFuzzer's timer signal may interrupt it: the connection
		 * completes anyway, wait until it is writable */
		struct pollfd pf = { .fd = fd, .events = POLLOUT };
		int r = -1;
		if (errno == EINTR) {
			do
				r = poll(&pf, 1, 2000);
			while (r < 0 && errno == EINTR);
		}
		if (r != 1) {
			perror("fuzz_stream: connect");
			abort();
		}
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	ev_run(env.loop, EVRUN_NOWAIT);         /* accept */
	while (p < end) {
		size_t n = next_chunk();
		ssize_t w;
		if (n > (size_t)(end - p))
			n = (size_t)(end - p);
		w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				break;          /* the UA closed the connection */
			w = 0;
		}
		p += w;
		/* one read per loop pass: run until the chunk is taken in */
		for (i = 0; i < 4; i++)
			ev_run(env.loop, EVRUN_NOWAIT);
		drain(fd);
	}
#endif
	for (i = 0; i < 4; i++)
		ev_run(env.loop, EVRUN_NOWAIT);
	drain(fd);
	close(fd);                              /* EOF: the UA closes its end */
	for (i = 0; i < 4; i++)
		ev_run(env.loop, EVRUN_NOWAIT);
	sip_ua_free(ua);
	ev_run(env.loop, EVRUN_NOWAIT);
	ev_loop_destroy(env.loop);
	return 0;
}
