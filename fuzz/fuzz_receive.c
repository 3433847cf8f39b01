/*
 * fuzz_receive.c - the whole receive path of a UA, as one UDP datagram (or
 * several) would take it: sip_ua_receive -> parse -> checks -> transaction
 * matching -> dialog matching -> the TU, which answers like a trivial Lua
 * handler would (200 to everything, INVITE answered 200 with a dialog,
 * after a reliable 183 when it names 100rel, CANCEL 487), then the loop
 * runs so the sends happen. Everything is freed
 * each input, so a leak in any layer shows.
 *
 * Input: an optional flags byte (a first byte below 0x20: bit 0 = fast
 * timers, i.e. T1 = 10 us and the loop is driven until every transaction
 * timer has run, so retransmission and termination paths run too), then
 * one or more messages separated by SEP. Messages come from 127.0.0.1 and
 * the replies go to 127.0.0.1 ports named by the Via headers: run it in a
 * private network namespace (the Makefile does) to keep them there.
 *
 * A message may say TAG_MARK where the To tag of the dialog created last
 * belongs: it is replaced by that tag before delivery, so a seed can ACK,
 * BYE or re-INVITE the dialog its INVITE created.
 */
#define _GNU_SOURCE
#include "core.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SEP "\r\n--next-message--\r\n"
#define MAX_DIALOGS 16
#define TAG_MARK "@@TAG@@"

void fuzz_init(void);
void fuzz_reset_random(void);
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fz {
	struct sip_dialog *dlg[MAX_DIALOGS];
	int ndlg;
};

static const char sdp[] =
	"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
	"m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

static void dialog_cb(void *arg, struct sip_dialog *d, int ev, struct sip_txn *st, struct sip_msg *m)
{
	(void)arg;
	(void)d;
	(void)m;
	if (ev == SIP_DLG_REQUEST && st && !sip_txn_final_sent(st)) {
		struct sip_reply r = { .status = 200 };
		sip_txn_reply(st, &r);
	}
}

static void on_request(void *arg, struct sip_ua *ua, struct sip_txn *st, struct sip_msg *req)
{
	struct fz *f = arg;
	struct sip_msg *treq;
	const char *method = sip_msg_method(req);
	struct sip_reply r = { .status = 200 };

	(void)ua;
	if (!st || sip_txn_final_sent(st))
		return;
	treq = sip_txn_request(st);
	if (method && !strcmp(method, "CANCEL")) {
		r.status = 487;         /* st is the cancelled INVITE's transaction */
		sip_txn_reply(st, &r);
		return;
	}
	if (treq && !strcmp(sip_msg_method(treq), "INVITE")) {
		struct sip_dialog *d;
		if (f->ndlg < MAX_DIALOGS && sip_dialog_new_uas(st, &d) == 0) {
			f->dlg[f->ndlg++] = d;
			sip_dialog_set_tu(d, dialog_cb, f);
			if (sip_msg_option(treq, "Require", "100rel") || sip_msg_option(treq, "Supported", "100rel")) {
				/* a reliable 183 (RFC 3262); when 100rel is required
				 * the INVITE is left to its PRACK and the resends */
				struct sip_reply p = { .status = 183, .body = sdp, .body_len = sizeof sdp - 1,
				                       .content_type = "application/sdp" };
				sip_dialog_reliable(d, st, &p);
				if (sip_msg_option(treq, "Require", "100rel"))
					return;
			}
			sip_dialog_answered(d, st);
			r.body = sdp;
			r.body_len = sizeof sdp - 1;
			r.content_type = "application/sdp";
		} else {
			r.status = 486;
		}
	}
	sip_txn_reply(st, &r);
}

/* a copy of p[0..*n) with TAG_MARK replaced by the last dialog's tag,
 * in a heap block of exactly the new *n bytes (reading past it shows) */
static char *with_tag(const char *p, size_t *n, const struct fz *f)
{
	const char *tag = f->ndlg ? sip_dialog_local_tag(f->dlg[f->ndlg - 1]) : "none";
	size_t mlen = sizeof TAG_MARK - 1, tlen = tag ? strlen(tag) : 0, out = 0;
	const char *s = p, *e = p + *n, *hit;
	char *buf;

	while ((hit = memmem(s, (size_t)(e - s), TAG_MARK, mlen))) {
		out += (size_t)(hit - s) + tlen;
		s = hit + mlen;
	}
	out += (size_t)(e - s);
	buf = malloc(out ? out : 1);
	out = 0;
	for (s = p; (hit = memmem(s, (size_t)(e - s), TAG_MARK, mlen)); s = hit + mlen) {
		memcpy(buf + out, s, (size_t)(hit - s));
		out += (size_t)(hit - s);
		memcpy(buf + out, tag, tlen);
		out += tlen;
	}
	memcpy(buf + out, s, (size_t)(e - s));
	*n = out + (size_t)(e - s);
	return buf;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
}

static int sink_fd = -1;
static int debug;               /* FUZZ_DEBUG=1: one line per message */
static struct sip_addr sink_addr;

static void drain_sink(void)
{
	char buf[2048];

	while (recv(sink_fd, buf, sizeof buf, MSG_DONTWAIT) > 0)
		;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_init();
	debug = getenv("FUZZ_DEBUG") != NULL;
	/* the peer every message comes from: a socket of ours that swallows
	 * whatever is answered to the source address */
	sink_fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (sip_addr_parse_listen("udp:127.0.0.1:0", &(int){ 0 }, &sink_addr) ||
	    bind(sink_fd, (struct sockaddr *)&sink_addr.ss, sink_addr.len) < 0) {
		perror("fuzz_receive: bind 127.0.0.1 (loopback down?)");
		exit(1);
	}
	sink_addr.len = sizeof sink_addr.ss;
	getsockname(sink_fd, (struct sockaddr *)&sink_addr.ss, &sink_addr.len);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sip_env env;
	struct sip_ua *ua = NULL;
	struct fz f = { .ndlg = 0 };
	struct sip_listener *l;
	const char *p = (const char *)data, *end = p + size;
	char err[256];
	int fast = 0, i;

	fuzz_reset_random();
	if (size > 4 * 65536)
		return 0;
	if (size && (unsigned char)p[0] < 0x20 && p[0] != '\r' && p[0] != '\n') {
		fast = p[0] & 1;
		p++;
	}
	memset(&env, 0, sizeof env);
	env.loop = ev_loop_new(EVFLAG_AUTO);
	env.log_level = debug ? SIP_LOG_DEBUG : SIP_LOG_ERROR - 1;     /* silent unless debugging */
	if (!env.loop || sip_ua_new(&env, &ua))
		abort();
	if (fast) {
		struct sip_ua_cfg *cfg = sip_ua_config(ua);
		cfg->t1 = 1e-5;
		cfg->t2 = 8e-5;
		cfg->t4 = 1e-4;
	}
	sip_ua_set_tu(ua, on_request, &f);
	sip_ua_serve(ua, "INVITE");
	sip_ua_serve(ua, "OPTIONS");
	sip_ua_serve(ua, "REGISTER");
	sip_ua_serve(ua, "MESSAGE");
	sip_ua_serve(ua, "SUBSCRIBE");
	if (sip_ua_listen(ua, "udp:127.0.0.1:0", err, sizeof err)) {
		fprintf(stderr, "fuzz_receive: listen: %s\n", err);
		abort();
	}
	l = sip_ua_listener_for(ua, SIP_UDP, AF_INET);

	while (p < end) {
		const char *next = memmem(p, (size_t)(end - p), SEP, sizeof SEP - 1);
		size_t n = (size_t)((next ? next : end) - p);
		/* an exact-size heap copy, so reading past the datagram shows */
		char *msg = with_tag(p, &n, &f);
		sip_ua_receive(ua, SIP_UDP, l, NULL, &sink_addr, msg, n);
		free(msg);
		ev_run(env.loop, EVRUN_NOWAIT);
		if (debug) {
			struct sip_ua_stats s;
			sip_ua_stats(ua, &s);
			fprintf(stderr, "fuzz_receive: %zu bytes: rx %llu tx %llu dropped %llu "
			        "txns %zu dialogs %zu (ours %d)\n", n, (unsigned long long)s.rx,
			        (unsigned long long)s.tx, (unsigned long long)s.dropped, s.txns,
			        s.dialogs, f.ndlg);
		}
		p = next ? next + sizeof SEP - 1 : end;
	}
	ev_run(env.loop, EVRUN_NOWAIT);
	if (fast) {
		/* every transaction and dialog timer is due within ~1 ms; the
		 * tick bounds each wait in case nothing else is armed */
		double t0 = now_s();
		ev_timer tick;
		ev_timer_init(&tick, tick_cb, 2e-4, 2e-4);
		ev_timer_start(env.loop, &tick);
		for (i = 0; i < 10000 && now_s() - t0 < 0.005; i++) {
			struct sip_ua_stats s;
			sip_ua_stats(ua, &s);
			if (!s.txns)
				break;
			ev_run(env.loop, EVRUN_ONCE);
		}
		ev_timer_stop(env.loop, &tick);
	}
	drain_sink();
	/* the Lua binding releases its calls (dialogs) before the UA */
	for (i = 0; i < f.ndlg; i++)
		sip_dialog_free(f.dlg[i]);
	sip_ua_free(ua);
	ev_run(env.loop, EVRUN_NOWAIT);
	ev_loop_destroy(env.loop);
	drain_sink();
	return 0;
}
