/*
 * session.c - one RTP session: its socket pair, what it sends (frames the
 * engine's tick asks for), what it receives (symmetric RTP, RFC 3550
 * statistics, the recorder), its RTCP, and the operations that end
 * through the session's done callback.
 */
#define _GNU_SOURCE
#include "media_int.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <openssl/rand.h>

#define RTP_SEQ_MOD (1u << 16)
#define MAX_DROPOUT 3000
#define MAX_MISORDER 100
#define RX_BATCH 32             /* datagrams read per wakeup, then others get a turn */
#define PORT_DRAWS 16           /* random draws before a scan from a random start */
#define REC_GRACE 0.3           /* a recording's timer waits this long for late packets */
#define NTP_UNIX_OFFSET 2208988800u

static uint32_t random32(void)
{
	uint32_t v = 0;

	/* the CSPRNG: SSRCs, sequence numbers, timestamps and ports must not
	 * be guessable (RFC 3550 5.1, RFC 3261 26.3.2) */
	if (RAND_bytes((unsigned char *)&v, sizeof v) != 1) {
		struct timespec t;
		clock_gettime(CLOCK_MONOTONIC, &t);
		v = (uint32_t)t.tv_nsec ^ (uint32_t)getpid();
	}
	return v;
}

static int addr_parse(const char *host, int port, struct media_addr *a)
{
	struct addrinfo hints, *res = NULL;
	char buf[INET6_ADDRSTRLEN + 16];
	size_t n = strlen(host);

	/* "[::1]" as SDP and listen specs write IPv6 */
	if (n >= 2 && host[0] == '[' && host[n - 1] == ']' && n - 2 < sizeof buf) {
		memcpy(buf, host + 1, n - 2);
		buf[n - 2] = '\0';
		host = buf;
	}
	memset(&hints, 0, sizeof hints);
	hints.ai_flags = AI_NUMERICHOST;
	hints.ai_socktype = SOCK_DGRAM;
	if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res)
		return -EINVAL;
	memset(a, 0, sizeof *a);
	memcpy(&a->u, res->ai_addr, res->ai_addrlen);
	a->len = res->ai_addrlen;
	freeaddrinfo(res);
	if (a->u.sa.sa_family == AF_INET)
		a->u.sin.sin_port = htons((uint16_t)port);
	else if (a->u.sa.sa_family == AF_INET6)
		a->u.sin6.sin6_port = htons((uint16_t)port);
	else
		return -EAFNOSUPPORT;
	return 0;
}

static int addr_port(const struct media_addr *a)
{
	return ntohs(a->u.sa.sa_family == AF_INET6 ? a->u.sin6.sin6_port : a->u.sin.sin_port);
}

static void addr_set_port(struct media_addr *a, int port)
{
	if (a->u.sa.sa_family == AF_INET6)
		a->u.sin6.sin6_port = htons((uint16_t)port);
	else
		a->u.sin.sin_port = htons((uint16_t)port);
}

static int addr_eq(const struct media_addr *a, const struct sockaddr *b)
{
	if (a->u.sa.sa_family != b->sa_family)
		return 0;
	if (b->sa_family == AF_INET) {
		const struct sockaddr_in *x = (const struct sockaddr_in *)b;
		return a->u.sin.sin_port == x->sin_port &&
		       a->u.sin.sin_addr.s_addr == x->sin_addr.s_addr;
	}
	if (b->sa_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)b;
		return a->u.sin6.sin6_port == x->sin6_port &&
		       !memcmp(&a->u.sin6.sin6_addr, &x->sin6_addr, sizeof x->sin6_addr);
	}
	return 0;
}

static int same_host(const struct media_addr *a, const struct media_addr *b)
{
	if (a->u.sa.sa_family != b->u.sa.sa_family)
		return 0;
	if (a->u.sa.sa_family == AF_INET)
		return a->u.sin.sin_addr.s_addr == b->u.sin.sin_addr.s_addr;
	return !memcmp(&a->u.sin6.sin6_addr, &b->u.sin6.sin6_addr, sizeof a->u.sin6.sin6_addr);
}

static int addr_is_any(const struct media_addr *a)
{
	if (a->u.sa.sa_family == AF_INET)
		return a->u.sin.sin_addr.s_addr == htonl(INADDR_ANY);
	return IN6_IS_ADDR_UNSPECIFIED(&a->u.sin6.sin6_addr);
}

static void addr_host(const struct media_addr *a, char *buf, size_t n)
{
	const void *p = a->u.sa.sa_family == AF_INET6 ? (const void *)&a->u.sin6.sin6_addr
	                                              : (const void *)&a->u.sin.sin_addr;
	if (!inet_ntop(a->u.sa.sa_family, p, buf, (socklen_t)n) && n)
		buf[0] = '\0';
}

static void addr_str(const struct media_addr *a, char *buf, size_t n)
{
	char h[INET6_ADDRSTRLEN];

	addr_host(a, h, sizeof h);
	snprintf(buf, n, a->u.sa.sa_family == AF_INET6 ? "[%s]:%d" : "%s:%d", h, addr_port(a));
}

static int bind_one(const struct media_addr *base, int port, int *fd)
{
	struct media_addr a = *base;
	int s = socket(a.u.sa.sa_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (s < 0)
		return -errno;
	addr_set_port(&a, port);
	if (bind(s, &a.u.sa, a.len) != 0) {
		int e = errno;
		close(s);
		return -e;
	}
	*fd = s;
	return 0;
}

/* RTP on the even port, RTCP on the next (RFC 3550 11); -EADDRINUSE when
 * either is taken */
static int bind_pair(struct media_session *s, int port)
{
	int rc = bind_one(&s->local, port, &s->fd[0]);

	if (rc)
		return rc;
	rc = bind_one(&s->local, port + 1, &s->fd[1]);
	if (rc) {
		close(s->fd[0]);
		s->fd[0] = -1;
	}
	return rc;
}

static int open_ports(struct media_session *s, int lo, int hi, char *err, size_t errlen)
{
	int first = lo + (lo & 1);
	int pairs = hi - 1 >= first ? (hi - 1 - first) / 2 + 1 : 0;
	int rc = -EADDRINUSE, i;

	if (pairs <= 0) {
		snprintf(err, errlen, "ports: no even port with a next one in %d-%d", lo, hi);
		return -EINVAL;
	}
	/* random draws first: ports an attacker cannot predict; then, in a
	 * crowded range, every pair once from a random start */
	for (i = 0; i < PORT_DRAWS && i < pairs; i++) {
		rc = bind_pair(s, first + 2 * (int)(random32() % (uint32_t)pairs));
		if (rc != -EADDRINUSE)
			break;
	}
	if (rc == -EADDRINUSE) {
		int start = (int)(random32() % (uint32_t)pairs);
		for (i = 0; i < pairs; i++) {
			rc = bind_pair(s, first + 2 * ((start + i) % pairs));
			if (rc != -EADDRINUSE)
				break;
		}
	}
	if (rc == -EADDRINUSE)
		snprintf(err, errlen, "ports: no free pair in %d-%d", lo, hi);
	else if (rc)
		snprintf(err, errlen, "ports: %s", strerror(-rc));
	return rc;
}

static void rtp_cb(struct ev_loop *loop, ev_io *w, int revents);
static void rtcp_cb(struct ev_loop *loop, ev_io *w, int revents);
static void rec_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);

int media_session_new(struct media_session **out, struct media_engine *m,
                      const struct media_session_cfg *cfg, char *err, size_t errlen)
{
	struct media_session *s;
	int rc;

	*out = NULL;
	if (cfg->port_lo < 1 || cfg->port_hi > 65535 || cfg->port_lo >= cfg->port_hi) {
		snprintf(err, errlen, "ports: bad range %d-%d", cfg->port_lo, cfg->port_hi);
		return -EINVAL;
	}
	s = calloc(1, sizeof *s);
	if (!s) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	s->m = m;
	s->fd[0] = s->fd[1] = -1;
	s->done = cfg->done;
	s->digit = cfg->digit;
	s->arg = cfg->arg;
	s->te_pt = -1;
	s->din.rfc4733 = 1;
	s->din.inband = -1;
	s->din.local_te_pt = -1;
	s->din.last_inband = -1;
	dtmf_track_reset(&s->din.track);
	s->codec = MEDIA_PCMU;
	s->pt = 0;
	s->ptime = 20;
	s->frame = 160;
	s->rx.bad_seq = RTP_SEQ_MOD + 1;
	if (addr_parse(cfg->addr ? cfg->addr : "127.0.0.1", 0, &s->local)) {
		snprintf(err, errlen, "addr: not a numeric address: %s", cfg->addr ? cfg->addr : "");
		free(s);
		return -EINVAL;
	}
	rc = open_ports(s, cfg->port_lo, cfg->port_hi, err, errlen);
	if (rc)
		goto out;
	{
		struct media_addr a;
		a.len = sizeof a.u;
		if (getsockname(s->fd[0], &a.u.sa, &a.len) == 0)
			s->local = a;
	}
	s->ssrc = random32();
	s->seq = (uint16_t)random32();
	s->ts = random32();
	s->spurt = 1;
	snprintf(s->cname, sizeof s->cname, "luasip-%08x%08x", random32(), random32());
	ev_io_init(&s->io[0], rtp_cb, s->fd[0], EV_READ);
	ev_io_init(&s->io[1], rtcp_cb, s->fd[1], EV_READ);
	s->io[0].data = s->io[1].data = s;
	ev_timer_init(&s->rec_w, rec_timer_cb, 0., 1.);
	s->rec_w.data = s;
	media_io_start(m, &s->io[0]);
	media_io_start(m, &s->io[1]);
	if (m->nsessions++ == 0)
		media_timer_start(m, &m->rtcp_w);
	media_engine_rtcp_add(m, s);
	*out = s;
	return 0;
out:
	free(s);
	return rc;
}

static void release_output(struct media_session *s)
{
	player_free(s->player);
	s->player = NULL;
	prompt_play_free(&s->m->prompts, s->prompt);
	s->prompt = NULL;
	tone_free(s->tone);
	s->tone = NULL;
	s->out = OUT_NONE;
	s->barge = 0;
	media_tick_update(s);
}

static void release_record(struct media_session *s, double *dur)
{
	double d;

	media_timer_stop(s->m, &s->rec_w);
	d = recorder_close(s->rec);
	if (dur)
		*dur = d < 0 ? 0 : d;
	s->rec = NULL;
	s->rec_running = 0;
	if (s->out == OUT_BEEP)
		release_output(s);
}

void media_session_free(struct media_session *s)
{
	struct media_engine *m;

	if (!s)
		return;
	m = s->m;
	media_session_relay(s, NULL);
	media_session_report(s, m->loop ? ev_now(m->loop) : 0, 1);
	s->dout.mode = DTMF_OUT_NONE;  /* a send ends without a word: off the tick too */
	release_output(s);
	release_record(s, NULL);
	media_io_stop(m, &s->io[0]);
	media_io_stop(m, &s->io[1]);
	media_engine_rtcp_remove(m, s);
	if (--m->nsessions == 0)
		media_timer_stop(m, &m->rtcp_w);
	for (int i = 0; i < 2; i++)
		if (s->fd[i] >= 0)
			close(s->fd[i]);
	if (s->din.det)
		dtmf_rx_free(s->din.det);
	if (s->dout.gen)
		dtmf_tx_free(s->dout.gen);
	free(s);
}

int media_session_port(const struct media_session *s)
{
	return addr_port(&s->local);
}

void media_session_addr(const struct media_session *s, char *buf, size_t n)
{
	addr_host(&s->local, buf, n);
}

int media_session_set_remote(struct media_session *s, const struct media_remote *r,
                             char *err, size_t errlen)
{
	struct media_addr a;
	int ptime = r->ptime ? r->ptime : 20;

	if (r->codec != MEDIA_PCMU && r->codec != MEDIA_PCMA) {
		snprintf(err, errlen, "codec: only PCMU and PCMA");
		return -EINVAL;
	}
	if (r->pt < 0 || r->pt > 127 || r->te_pt > 127 || r->port < 0 || r->port > 65535 ||
	    r->rtcp_port < 0 || r->rtcp_port > 65535) {
		snprintf(err, errlen, "payload type or port out of range");
		return -EINVAL;
	}
	if (r->te_pt >= 0 && (r->te_pt == r->pt || r->te_pt == MEDIA_PCMU || r->te_pt == MEDIA_PCMA)) {
		snprintf(err, errlen, "telephone_event_pt: %d is an audio payload type", r->te_pt);
		return -EINVAL;
	}
	if (ptime < 10 || ptime > MEDIA_MAX_PTIME || ptime % 10) {
		snprintf(err, errlen, "ptime: %d ms is not 10 to %d in steps of 10", ptime,
		         MEDIA_MAX_PTIME);
		return -EINVAL;
	}
	if (addr_parse(r->addr, r->port, &a)) {
		snprintf(err, errlen, "addr: not a numeric address: %s", r->addr);
		return -EINVAL;
	}
	if (a.u.sa.sa_family != s->local.u.sa.sa_family) {
		snprintf(err, errlen, "addr: %s is not of the session's address family", r->addr);
		return -EAFNOSUPPORT;
	}
	s->codec = r->codec;
	s->pt = r->pt;
	s->te_pt = r->te_pt < 0 ? -1 : r->te_pt;
	if (s->ptime != ptime)
		s->credit = 0;
	s->ptime = ptime;
	s->frame = ptime * MEDIA_RATE / 1000;
	/* a port 0 or a null address is a stream that receives nothing */
	s->have_remote = r->port != 0 && !addr_is_any(&a);
	if (!s->have_remote || !s->learned_rtp || !addr_eq(&s->sdp_rtp, &a.u.sa)) {
		/* somewhere new: learn the peer's source again */
		s->learned_rtp = s->learned_rtcp = 0;
	}
	s->sdp_rtp = a;
	s->sdp_rtcp = a;
	addr_set_port(&s->sdp_rtcp, r->rtcp_port ? r->rtcp_port : r->port + 1);
	return 0;
}

void media_session_direction(struct media_session *s, int dir)
{
	if (dir >= MEDIA_SENDRECV && dir <= MEDIA_INACTIVE)
		s->dir = dir;
}

int media_session_get_direction(const struct media_session *s)
{
	return s->dir;
}

int media_can_send(const struct media_session *s)
{
	return s->have_remote && (s->dir == MEDIA_SENDRECV || s->dir == MEDIA_SENDONLY);
}

int media_can_receive(const struct media_session *s)
{
	return s->dir == MEDIA_SENDRECV || s->dir == MEDIA_RECVONLY;
}

void media_done(struct media_session *s, const struct media_result *r)
{
	if (s->done)
		s->done(s->arg, r);
}

/* ---- sending ------------------------------------------------------ */

void media_send_packet(struct media_session *s, size_t len, size_t payload_len)
{
	const struct media_addr *to = s->learned_rtp ? &s->peer_rtp : &s->sdp_rtp;

	if (sendto(s->fd[0], s->pkt, len, 0, &to->u.sa, to->len) < 0) {
		s->st.send_errors++;
	} else {
		s->st.packets_sent++;
		s->st.octets_sent += payload_len;
	}
	s->seq++;
}

/* n samples of payload are in s->pkt after the header's room: send */
static void send_payload(struct media_session *s, int n, double now)
{
	if (media_can_send(s)) {
		struct rtp_packet p;

		p.marker = s->spurt;
		p.pt = (unsigned)s->pt;
		p.seq = s->seq;
		p.ts = s->ts;
		p.ssrc = s->ssrc;
		rtp_write_header(s->pkt, &p);
		media_send_packet(s, RTP_HDR_LEN + (size_t)n, (size_t)n);
		s->spurt = 0;
	} else {
		/* on hold: time goes on, and sending again starts a talkspurt */
		s->spurt = 1;
	}
	s->ts += (uint32_t)n;
	s->last_sent = now;
}

void media_send_pcm(struct media_session *s, int n, double now)
{
	if (media_can_send(s))
		media_g711_encode(&s->m->law, s->codec == MEDIA_PCMA, s->pkt + RTP_HDR_LEN, s->pcm, n);
	send_payload(s, n, now);
}

static void finish_output(struct media_session *s, int ok, const char *reason, char digit);
static void start_recording(struct media_session *s);

/* the next frame of the output; 0 once the output has ended */
static int send_frame(struct media_session *s, double now)
{
	char err[256];
	int n = s->frame, got;

	if (s->out == OUT_PLAY && s->prompt) {
		/* the payload straight from the shared copy */
		int alaw = s->codec == MEDIA_PCMA;
		uint8_t *pl = s->pkt + RTP_HDR_LEN;
		got = prompt_play_read(s->prompt, alaw, pl, n);
		if (got > 0) {
			int16_t zero = 0;
			uint8_t silence;
			media_g711_encode(&s->m->law, alaw, &silence, &zero, 1);
			if (got < n)
				memset(pl + got, silence, (size_t)(n - got));
			send_payload(s, n, now);
		}
		if (got < n) {
			finish_output(s, 1, NULL, 0);
			return 0;
		}
		return 1;
	}
	if (s->out == OUT_PLAY)
		got = player_read(s->player, s->pcm, n, err, sizeof err);
	else if (s->tone)
		got = tone_read(s->tone, s->pcm, n);
	else
		got = 0;
	if (got < 0) {
		finish_output(s, 0, err, 0);
		return 0;
	}
	if (got > 0) {
		if (got < n)
			memset(s->pcm + got, 0, (size_t)(n - got) * sizeof *s->pcm);
		media_send_pcm(s, n, now);
	}
	if (got < n) {
		if (s->out == OUT_BEEP) {
			release_output(s);
			start_recording(s);
		} else {
			finish_output(s, 1, NULL, 0);
		}
		return 0;
	}
	return 1;
}

void media_session_tick(struct media_session *s, double now)
{
	if (s->dout.mode == DTMF_OUT_EVENTS) {
		/* events go out in place of the audio, whose frames wait: the
		 * clock runs on, the prompt resumes where it was */
		media_dtmf_events_tick(s, now);
		return;
	}
	s->credit += MEDIA_TICK_MS;
	while (s->credit >= s->ptime) {
		if (s->dout.mode == DTMF_OUT_INBAND) {
			/* tones in place of the audio's frames */
			s->credit -= s->ptime;
			media_dtmf_inband_frame(s, now);
			continue;
		}
		if (s->out == OUT_NONE)
			break;
		s->credit -= s->ptime;
		if (!send_frame(s, now))
			break;
	}
}

void media_tick_update(struct media_session *s)
{
	if (s->out == OUT_NONE && s->dout.mode == DTMF_OUT_NONE)
		media_engine_play_remove(s->m, s);
}

/* something to send starts: on the tick list, a new talkspurt if it was idle */
void media_tick_begin(struct media_session *s)
{
	if (!s->on_tick) {
		double now = s->m->loop ? ev_now(s->m->loop) : 0;
		s->spurt = 1;
		/* the timestamp follows the clock across the pause (RFC 3550 5.1) */
		if (s->last_sent > 0 && now > s->last_sent) {
			double gap = (now - s->last_sent) * MEDIA_RATE - s->frame;
			if (gap > 0)
				s->ts += (uint32_t)gap;
		}
		s->credit = s->ptime - MEDIA_TICK_MS;
		media_engine_play_add(s->m, s);
	}
}

static void finish_output(struct media_session *s, int ok, const char *reason, char digit)
{
	struct media_result r;

	if (s->out == OUT_NONE)
		return;
	release_output(s);
	memset(&r, 0, sizeof r);
	r.op = MEDIA_OUTPUT;
	r.ok = ok;
	r.reason = reason;
	r.digit = digit;
	media_done(s, &r);
}

static void finish_record(struct media_session *s, const char *end)
{
	struct media_result r;

	if (!s->rec)
		return;
	memset(&r, 0, sizeof r);
	r.op = MEDIA_RECORD;
	r.ok = 1;
	r.end = end;
	release_record(s, &r.duration);
	media_done(s, &r);
}

/* ---- operations --------------------------------------------------- */

int media_session_play(struct media_session *s, const char *const *files, int nfiles,
                       const struct media_play_opts *o, char *err, size_t errlen)
{
	struct player *p = NULL;
	struct prompt_play *pp = NULL;
	int rc;

	if (s->out == OUT_BEEP) {
		/* a recording's beep is not to be cut by a prompt */
		snprintf(err, errlen, "busy: a recording's beep is playing");
		return -EBUSY;
	}
	/* short files from the engine's shared copies; others (or any that
	 * cannot be read: player_open says why) streamed from disk */
	if (prompt_play_open(&s->m->prompts, &s->m->law, &pp, files, nfiles, o && o->loop)) {
		rc = player_open(&p, files, nfiles, o && o->loop, err, errlen);
		if (rc)
			return rc;
	}
	finish_output(s, 0, "stopped", 0);
	s->player = p;
	s->prompt = pp;
	s->out = OUT_PLAY;
	s->barge = o && o->barge;
	media_tick_begin(s);
	return 0;
}

int media_session_tone(struct media_session *s, const struct tone_spec *t, char *err, size_t errlen)
{
	struct tone *tn;
	int rc;

	if (s->out == OUT_BEEP) {
		snprintf(err, errlen, "busy: a recording's beep is playing");
		return -EBUSY;
	}
	rc = tone_open(&tn, t);
	if (rc) {
		snprintf(err, errlen, rc == -EINVAL ? "tone: frequency, cadence or level out of range"
		                                    : "tone: out of memory");
		return rc;
	}
	finish_output(s, 0, "stopped", 0);
	s->tone = tn;
	s->out = OUT_TONE;
	media_tick_begin(s);
	return 0;
}

static void rec_arm(struct media_session *s, double now)
{
	double next = -1;

	if (s->rec_max > 0)
		next = s->rec_start + s->rec_max + REC_GRACE - now;
	if (s->rec_silence > 0) {
		double t = recorder_last_voice(s->rec) + s->rec_silence - now;
		if (next < 0 || t < next)
			next = t;
	}
	if (next < 0 && s->rec_max <= 0 && s->rec_silence <= 0) {
		media_timer_stop(s->m, &s->rec_w);
		return;
	}
	if (next < 0.005)
		next = 0.005;
	s->rec_w.repeat = next;
	if (s->m->loop) {
		if (ev_is_active(&s->rec_w)) {
			ev_timer_again(s->m->loop, &s->rec_w);
		} else {
			ev_timer_set(&s->rec_w, next, next);
			media_timer_start(s->m, &s->rec_w);
		}
	}
}

static void start_recording(struct media_session *s)
{
	double now = 0;

	/* from now, not from the loop's last wake (a script may have run a
	 * while without waiting): max and silence count from here */
	if (s->m->loop) {
		ev_now_update(s->m->loop);
		now = ev_now(s->m->loop);
	}

	s->rec_running = 1;
	s->rec_start = now;
	recorder_set_start(s->rec, now);
	rec_arm(s, now);
}

/* checked lazily: voice moves the silence deadline without touching the
 * timer, which looks again when it fires */
static void rec_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct media_session *s = w->data;
	double now = ev_now(loop);

	(void)revents;
	if (!s->rec || !s->rec_running)
		return;
	if (s->rec_max > 0 && now >= s->rec_start + s->rec_max + REC_GRACE - 0.001) {
		finish_record(s, "max");
		return;
	}
	if (s->rec_silence > 0 && now - recorder_last_voice(s->rec) >= s->rec_silence - 0.001) {
		finish_record(s, "silence");
		return;
	}
	rec_arm(s, now);
}

int media_session_record(struct media_session *s, const char *path,
                         const struct media_record_opts *o, char *err, size_t errlen)
{
	struct recorder_opts ro;
	struct recorder *rec;
	struct tone *beep = NULL;
	int rc;

	if (o->beep && s->out == OUT_BEEP) {
		snprintf(err, errlen, "busy: a recording's beep is playing");
		return -EBUSY;
	}
	memset(&ro, 0, sizeof ro);
	ro.format = o->format;
	ro.max = o->max;
	ro.threshold = o->threshold;
	ro.law = &s->m->law;
	if (o->beep) {
		struct tone_spec t;
		tone_named("beep", &t);
		rc = tone_open(&beep, &t);
		if (rc) {
			snprintf(err, errlen, "tone: out of memory");
			return rc;
		}
	}
	rc = recorder_open(&rec, path, &ro, err, errlen);
	if (rc) {
		tone_free(beep);
		return rc;
	}
	finish_record(s, "stopped");
	s->rec = rec;
	s->rec_max = o->max;
	s->rec_silence = o->silence;
	if (beep) {
		finish_output(s, 0, "stopped", 0);
		s->tone = beep;
		s->out = OUT_BEEP;
		media_tick_begin(s);
	} else {
		start_recording(s);
	}
	return 0;
}

int media_session_stop(struct media_session *s, int op, const char *reason)
{
	int n = 0;

	if ((op < 0 || op == MEDIA_OUTPUT) && s->out != OUT_NONE && s->out != OUT_BEEP) {
		finish_output(s, 0, reason ? reason : "stopped", 0);
		n++;
	}
	if ((op < 0 || op == MEDIA_RECORD) && s->rec) {
		finish_record(s, reason ? reason : "stopped");
		n++;
	}
	if ((op < 0 || op == MEDIA_DTMF) && s->dout.mode != DTMF_OUT_NONE) {
		media_dtmf_finish(s, 0, reason ? reason : "stopped");
		n++;
	}
	return n;
}

int media_session_barge(struct media_session *s, char digit)
{
	if (s->out != OUT_PLAY || !s->barge)
		return 0;
	finish_output(s, 0, "digit", digit);
	return 1;
}

int media_session_busy(const struct media_session *s)
{
	return (s->out != OUT_NONE && s->out != OUT_BEEP ? 1 : 0) | (s->rec ? 2 : 0) |
	       (s->dout.mode != DTMF_OUT_NONE ? 4 : 0);
}

/* ---- receiving ---------------------------------------------------- */

static void rx_init(struct rx_state *r, uint32_t ssrc, uint16_t seq)
{
	memset(r, 0, sizeof *r);
	r->init = 1;
	r->ssrc = ssrc;
	r->base_seq = seq;
	r->max_seq = seq;
	r->bad_seq = RTP_SEQ_MOD + 1;
}

/* RFC 3550 A.1 without the probation (a call's peer is already known
 * from the SDP): 0 for a packet to drop */
static int rx_update(struct rx_state *r, uint16_t seq)
{
	uint16_t udelta = (uint16_t)(seq - r->max_seq);

	if (udelta < MAX_DROPOUT) {
		if (seq < r->max_seq)
			r->cycles += RTP_SEQ_MOD;
		r->max_seq = seq;
	} else if (udelta <= RTP_SEQ_MOD - MAX_MISORDER) {
		if (seq == r->bad_seq) {
			/* two in a row: the sender restarted its numbering */
			uint32_t ssrc = r->ssrc;
			rx_init(r, ssrc, seq);
		} else {
			r->bad_seq = (seq + 1) & (RTP_SEQ_MOD - 1);
			return 0;
		}
	}
	/* else a duplicate or a reordered packet: counted, as A.1 does */
	r->received++;
	return 1;
}

static void rx_jitter(struct rx_state *r, uint32_t ts, double now)
{
	int32_t transit = (int32_t)((uint32_t)(int64_t)(now * MEDIA_RATE) - ts);

	if (r->have_transit) {
		int32_t d = transit - r->transit;
		if (d < 0)
			d = -d;
		r->jitter += ((double)d - r->jitter) / 16.;
	}
	r->transit = transit;
	r->have_transit = 1;
}

static int pt_known(const struct media_session *s, unsigned pt)
{
	/* both G.711 laws are decoded whatever was negotiated: an answer may
	 * list both and the peer send either; 13 is comfort noise */
	return pt == 0 || pt == 8 || pt == 13 || (int)pt == s->pt || (int)pt == s->te_pt ||
	       (int)pt == s->din.local_te_pt;
}

void media_session_relay(struct media_session *s, struct media_session *other)
{
	if (s->relay && s->relay != other)
		s->relay->relay = NULL;
	s->relay = other;
	if (other) {
		if (other->relay && other->relay != s)
			other->relay->relay = NULL;
		other->relay = s;
		/* what they played or recorded ends, its waiter told why */
		media_session_stop(s, -1, "bridged");
		media_session_stop(other, -1, "bridged");
	}
}

/* one packet of s's peer out of the bridged session o, in s->buf (n
 * bytes, parsed as p): no copy, a payload re-encoded in place */
static void relay_packet(struct media_session *s, struct media_session *o, const struct rtp_packet *p,
                         size_t n)
{
	const struct media_addr *to = o->learned_rtp ? &o->peer_rtp : o->have_remote ? &o->sdp_rtp : NULL;
	uint8_t *payload = s->buf + (p->payload - s->buf);

	if (!to || !media_can_send(o)) {
		s->st.relay_dropped++;
		return;
	}
	if ((int)p->pt == s->te_pt || (int)p->pt == s->din.local_te_pt) {
		if (o->te_pt < 0) {
			s->st.relay_dropped++;  /* the other leg takes no events */
			return;
		}
		s->buf[1] = (uint8_t)((s->buf[1] & 0x80) | o->te_pt);
	} else if ((p->pt == 0 || p->pt == 8) && (p->pt == 8) != (o->codec == MEDIA_PCMA)) {
		/* one law to the other, sample by sample through linear */
		const int16_t *dec = p->pt == 8 ? s->m->law.alaw_dec : s->m->law.ulaw_dec;
		const uint8_t *enc = p->pt == 8 ? s->m->law.ulaw : s->m->law.alaw;
		for (size_t i = 0; i < p->payload_len; i++)
			payload[i] = enc[(uint16_t)dec[payload[i]]];
		s->buf[1] = (uint8_t)((s->buf[1] & 0x80) | (p->pt == 8 ? 0 : 8));
	}
	if (sendto(o->fd[0], s->buf, n, 0, &to->u.sa, to->len) < 0)
		o->st.send_errors++;
	else
		s->st.relayed++;
}

static void rtp_packet_in(struct media_session *s, const struct sockaddr *src, socklen_t slen,
                          size_t n, double now)
{
	struct rtp_packet p;

	if (rtp_parse(s->buf, n, &p) != 0) {
		s->st.invalid++;
		return;
	}
	if (s->learned_rtp && !addr_eq(&s->peer_rtp, src)) {
		s->st.unexpected_source++;
		return;
	}
	if (!pt_known(s, p.pt)) {
		s->st.unknown_pt++;
		return;
	}
	if (!s->learned_rtp) {
		/* symmetric RTP: from now on this is the peer */
		memcpy(&s->peer_rtp.u, src, slen);
		s->peer_rtp.len = slen;
		s->learned_rtp = 1;
	}
	if (!s->rx.init || s->rx.ssrc != p.ssrc) {
		rx_init(&s->rx, p.ssrc, p.seq);
		s->rx.received = 1;
	} else if (!rx_update(&s->rx, p.seq)) {
		s->st.invalid++;
		return;
	}
	s->st.packets_received++;
	s->st.octets_received += p.payload_len;
	if (s->relay) {
		relay_packet(s, s->relay, &p, n);
		return;
	}
	if ((int)p.pt == s->te_pt || (int)p.pt == s->din.local_te_pt) {
		if (media_can_receive(s))
			media_dtmf_event_in(s, &p, now);
		return;
	}
	if (p.pt != 0 && p.pt != 8)
		return;         /* comfort noise: not audio to record */
	rx_jitter(&s->rx, p.ts, now);
	if (!media_can_receive(s))
		return;
	/* the detector first: a digit that barges a play is heard at once */
	media_dtmf_audio_in(s, &p, now);
	if (s->rec && s->rec_running &&
	    recorder_packet(s->rec, p.seq, p.ts, p.ssrc, (int)p.pt, p.payload, p.payload_len, now))
		finish_record(s, "max");
}

static void rtp_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct media_session *s = w->data;
	double now = ev_time();

	(void)loop;
	(void)revents;
	for (int i = 0; i < RX_BATCH; i++) {
		struct media_addr src;
		ssize_t n;

		src.len = sizeof src.u;
		n = recvfrom(s->fd[0], s->buf, sizeof s->buf, 0, &src.u.sa, &src.len);
		if (n < 0)
			return;         /* EAGAIN, or an ICMP error: nothing more now */
		rtp_packet_in(s, &src.u.sa, src.len, (size_t)n, now);
	}
}

static void ntp_now(uint32_t *sec, uint32_t *frac)
{
	struct timespec t;

	clock_gettime(CLOCK_REALTIME, &t);
	*sec = (uint32_t)((uint64_t)t.tv_sec + NTP_UNIX_OFFSET);
	*frac = (uint32_t)(((uint64_t)t.tv_nsec << 32) / 1000000000u);
}

static uint32_t ntp_middle(uint32_t sec, uint32_t frac)
{
	return sec << 16 | frac >> 16;
}

static void rtcp_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct media_session *s = w->data;
	double now = ev_now(loop);

	(void)revents;
	for (int i = 0; i < RX_BATCH; i++) {
		struct media_addr src;
		struct rtcp_info info;
		ssize_t n;

		src.len = sizeof src.u;
		n = recvfrom(s->fd[1], s->buf, sizeof s->buf, 0, &src.u.sa, &src.len);
		if (n < 0)
			return;
		if (rtcp_parse(s->buf, (size_t)n, &info) != 0) {
			s->st.rtcp_invalid++;
			continue;
		}
		/* the peer's RTCP comes from its RTP host, whatever port it uses */
		if (s->learned_rtcp ? !addr_eq(&s->peer_rtcp, &src.u.sa)
		                    : s->learned_rtp && !same_host(&s->peer_rtp, &src)) {
			s->st.unexpected_source++;
			continue;
		}
		if (!s->learned_rtcp) {
			s->peer_rtcp = src;
			s->learned_rtcp = 1;
		}
		s->st.rtcp_received++;
		if (info.bye)
			s->st.remote_bye = 1;
		if (info.has_sr) {
			s->rx.lsr = ntp_middle(info.ntp_sec, info.ntp_frac);
			s->rx.lsr_at = now;
		}
		for (int k = 0; k < info.nblocks; k++) {
			const struct rtcp_block *b = &info.blocks[k];
			if (b->ssrc != s->ssrc)
				continue;
			s->st.have_remote_report = 1;
			s->st.remote_fraction_lost = b->fraction / 256.;
			s->st.remote_lost = b->lost;
			s->st.remote_jitter = (double)b->jitter / MEDIA_RATE;
			if (b->lsr) {
				uint32_t sec, frac;
				ntp_now(&sec, &frac);
				s->st.rtt = (double)(uint32_t)(ntp_middle(sec, frac) - b->lsr - b->dlsr) /
				            65536.;
			}
		}
	}
}

/* an SR (we sent since the last report) or an RR, SDES, and BYE at the end */
void media_session_report(struct media_session *s, double now, int bye)
{
	struct rtcp_out o;
	const struct media_addr *to;
	uint8_t pkt[256];
	size_t n;

	if (!s->have_remote && !s->learned_rtcp)
		return;
	to = s->learned_rtcp ? &s->peer_rtcp : &s->sdp_rtcp;
	memset(&o, 0, sizeof o);
	o.ssrc = s->ssrc;
	o.cname = s->cname;
	o.bye = bye;
	o.sender = s->st.packets_sent > s->sent_at_report;
	if (o.sender) {
		double ahead = s->last_sent > 0 ? (now - s->last_sent) * MEDIA_RATE - s->frame : 0;
		ntp_now(&o.ntp_sec, &o.ntp_frac);
		o.rtp_ts = s->ts + (uint32_t)(int64_t)ahead;
		o.packets = (uint32_t)s->st.packets_sent;
		o.octets = (uint32_t)s->st.octets_sent;
	}
	if (s->rx.init) {
		struct rx_state *r = &s->rx;
		uint64_t ext_max = r->cycles + r->max_seq;
		uint64_t expected = ext_max - r->base_seq + 1;
		uint64_t exp_int = expected - r->expected_prior;
		uint64_t rec_int = r->received - r->received_prior;
		int64_t lost_int = (int64_t)exp_int - (int64_t)rec_int;

		o.has_block = 1;
		o.block.ssrc = r->ssrc;
		o.block.lost = (int32_t)((int64_t)expected - (int64_t)r->received);
		o.block.fraction = (uint8_t)(exp_int == 0 || lost_int <= 0 ? 0 :
		                             (lost_int << 8) / (int64_t)exp_int);
		o.block.ext_max_seq = (uint32_t)ext_max;
		o.block.jitter = (uint32_t)r->jitter;
		if (r->lsr) {
			o.block.lsr = r->lsr;
			o.block.dlsr = (uint32_t)((now - r->lsr_at) * 65536.);
		}
		r->expected_prior = expected;
		r->received_prior = r->received;
	}
	n = rtcp_build(pkt, sizeof pkt, &o);
	if (n && sendto(s->fd[1], pkt, n, 0, &to->u.sa, to->len) >= 0)
		s->st.rtcp_sent++;
	s->sent_at_report = s->st.packets_sent;
}

void media_session_stats(const struct media_session *s, struct media_stats *st)
{
	*st = s->st;
	if (s->rx.init) {
		uint64_t expected = s->rx.cycles + s->rx.max_seq - s->rx.base_seq + 1;
		st->lost = (int64_t)expected - (int64_t)s->rx.received;
		st->jitter = s->rx.jitter / MEDIA_RATE;
	}
	if (!s->st.rtt)
		st->rtt = -1;
	if (s->rec) {
		struct recorder_stats rs;
		recorder_get_stats(s->rec, &rs);
		st->late = rs.late;
		st->reordered = rs.reordered;
	}
	st->codec = s->codec;
	st->pt = s->pt;
	st->ptime = s->ptime;
	st->learned = s->learned_rtp;
	st->remote[0] = '\0';
	if (s->learned_rtp)
		addr_str(&s->peer_rtp, st->remote, sizeof st->remote);
	else if (s->have_remote)
		addr_str(&s->sdp_rtp, st->remote, sizeof st->remote);
}
