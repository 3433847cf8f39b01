/*
 * bench/relay_rtp.c: the RTP source and sink of the bridging benchmark
 * (bench/run.lua, section 10). One stream per line of FILE, each line the
 * port on 127.0.0.1 its packets go to (the B2BUA's leg A of one call, or
 * SIPp's -rtp_echo port for every stream): each stream sends 172-byte PCMU
 * packets (160 bytes of payload) every 20 ms from a UDP socket of its own
 * and reads what comes back on that socket (the echo, through the B2BUA or
 * not).
 *
 *   relay_rtp FILE
 *
 * Prints "READY N" once its sockets are open and starts sending at once.
 * SIGUSR1 opens a window, SIGUSR2 closes it: one "RESULT ..." line (what
 * was sent and what came back in the window, the sequence numbers missing
 * from what came back, round trip p50/p99/max). SIGTERM or SIGINT stop the
 * sending; what is still on its way is read for half a second, then one
 * "TOTAL ..." line (since the start) and the end.
 *
 * The streams' 20 ms are spread evenly: stream i is due at i * 20 ms / N
 * into each period, and the source wakes every millisecond (clock_nanosleep
 * to absolute deadlines) to send the packets that are due, N / 20 at a
 * time, as calls placed at random moments would be. A burst of all N at
 * once would measure the burst (the last packet waits for the N - 1 before
 * it in the B2BUA's queue), not the relay.
 *
 * Each packet carries its send time (CLOCK_REALTIME, ns) in the first 8
 * bytes of its payload; the round trip is the kernel's receive timestamp
 * (SO_TIMESTAMPNS) of the packet back, less that. The sockets are read
 * every millisecond (epoll_wait that does not wait, then recvmmsg), never
 * slept on: on loopback a sleeping receiver is woken inside the sender's
 * sendto(), which would bill the B2BUA (or SIPp's echo) for this process's
 * wake-ups (bench/media_rx.c does the same).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PAYLOAD 160
#define PKT (12 + PAYLOAD)
#define PERIOD_NS 20000000ull
#define TICK_NS 1000000ull
#define LATE_NS 2000000ull               /* a packet sent 2 ms after it was due is late */
#define BATCH 32
#define BIN_US 10                        /* round trip histogram: 10 us bins ... */
#define NBINS 200000                     /* ... up to 2 s */
#define MAX_STREAMS 20000

struct stream {
	int fd;
	struct sockaddr_in to;
	uint32_t ssrc;
	uint16_t seq;                    /* the next to send */
	uint32_t ts;
	uint64_t due;                    /* CLOCK_MONOTONIC ns */
	/* what comes back */
	int have_seq;
	uint16_t last_seq;
	uint32_t cycles;
	int have_total, have_window;
	uint32_t first_total, last_total, first_window, last_window;
	uint64_t received_total, received_window;
	uint32_t drops;                  /* SO_RXQ_OVFL: the socket's count so far */
};

static struct stream *streams;
static int n;
static uint32_t *hist;
static volatile sig_atomic_t want_open, want_close, want_quit;

/* the window's totals */
static int open_;
static uint64_t w_start_ns, w_sent, w_received, w_late_back, w_late_sends, w_bad, w_rtt_n, w_rtt_max, w_drops;
static double w_rtt_sum;
static uint64_t w_lag_max;
/* since the start */
static uint64_t t_sent, t_received, t_late_back, t_bad, t_send_errors;

static void on_sig(int sig)
{
	if (sig == SIGUSR1)
		want_open = 1;
	else if (sig == SIGUSR2)
		want_close = 1;
	else
		want_quit = 1;
}

static uint64_t clock_ns(clockid_t c)
{
	struct timespec ts;
	clock_gettime(c, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void send_one(struct stream *s, uint64_t now)
{
	uint8_t pkt[PKT];
	uint64_t real = clock_ns(CLOCK_REALTIME);

	pkt[0] = 0x80;                   /* version 2 */
	pkt[1] = 0;                      /* PCMU */
	pkt[2] = (uint8_t)(s->seq >> 8);
	pkt[3] = (uint8_t)s->seq;
	pkt[4] = (uint8_t)(s->ts >> 24);
	pkt[5] = (uint8_t)(s->ts >> 16);
	pkt[6] = (uint8_t)(s->ts >> 8);
	pkt[7] = (uint8_t)s->ts;
	pkt[8] = (uint8_t)(s->ssrc >> 24);
	pkt[9] = (uint8_t)(s->ssrc >> 16);
	pkt[10] = (uint8_t)(s->ssrc >> 8);
	pkt[11] = (uint8_t)s->ssrc;
	for (int i = 0; i < 8; i++)
		pkt[12 + i] = (uint8_t)(real >> (56 - 8 * i));
	memset(pkt + 20, 0xff, PAYLOAD - 8);
	if (sendto(s->fd, pkt, sizeof pkt, 0, (struct sockaddr *)&s->to, sizeof s->to) < 0) {
		t_send_errors++;
	} else {
		t_sent++;
		if (open_)
			w_sent++;
	}
	if (open_ && now > s->due) {
		uint64_t lag = now - s->due;
		if (lag > LATE_NS)
			w_late_sends++;
		if (lag > w_lag_max)
			w_lag_max = lag;
	}
	s->seq++;
	s->ts += PAYLOAD;
	s->due += PERIOD_NS;
}

static void back(struct stream *s, const uint8_t *b, ssize_t len, uint64_t rx_ns)
{
	if (len < 20 || (b[0] >> 6) != 2) {
		t_bad++;
		if (open_)
			w_bad++;
		return;
	}
	uint16_t seq = (uint16_t)(b[2] << 8 | b[3]);
	int fwd = 1;
	if (!s->have_seq) {
		s->have_seq = 1;
		s->last_seq = seq;
	} else {
		uint16_t d = (uint16_t)(seq - s->last_seq);
		if (d == 0 || d >= 0x8000) {
			fwd = 0;
		} else {
			if (seq < s->last_seq)
				s->cycles += 0x10000;
			s->last_seq = seq;
		}
	}
	uint32_t ext = s->cycles + s->last_seq;
	if (!fwd) {
		t_late_back++;
		if (open_)
			w_late_back++;
		return;
	}
	t_received++;
	s->received_total++;
	if (!s->have_total) {
		s->have_total = 1;
		s->first_total = ext;
	}
	s->last_total = ext;
	if (!open_ || rx_ns < w_start_ns)
		return;
	w_received++;
	s->received_window++;
	if (!s->have_window) {
		s->have_window = 1;
		s->first_window = ext;
	}
	s->last_window = ext;
	uint64_t sent_ns = 0;
	for (int i = 0; i < 8; i++)
		sent_ns = sent_ns << 8 | b[12 + i];
	if (rx_ns >= sent_ns) {
		uint64_t rtt = rx_ns - sent_ns, bin = rtt / (BIN_US * 1000u);
		hist[bin < NBINS ? bin : NBINS - 1]++;
		w_rtt_n++;
		w_rtt_sum += (double)rtt;
		if (rtt > w_rtt_max)
			w_rtt_max = rtt;
	}
}

/* what one socket has queued */
static void drain(struct stream *s)
{
	static uint8_t bufs[BATCH][2048];
	static char ctl[BATCH][256];
	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];

	for (;;) {
		for (int i = 0; i < BATCH; i++) {
			iov[i].iov_base = bufs[i];
			iov[i].iov_len = sizeof bufs[i];
			memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
			msgs[i].msg_hdr.msg_iov = &iov[i];
			msgs[i].msg_hdr.msg_iovlen = 1;
			msgs[i].msg_hdr.msg_control = ctl[i];
			msgs[i].msg_hdr.msg_controllen = sizeof ctl[i];
		}
		int got = recvmmsg(s->fd, msgs, BATCH, MSG_DONTWAIT, NULL);
		if (got <= 0)
			return;
		for (int i = 0; i < got; i++) {
			uint64_t ns = 0;
			for (struct cmsghdr *c = CMSG_FIRSTHDR(&msgs[i].msg_hdr); c;
			     c = CMSG_NXTHDR(&msgs[i].msg_hdr, c)) {
				if (c->cmsg_level != SOL_SOCKET)
					continue;
				if (c->cmsg_type == SCM_TIMESTAMPNS) {
					struct timespec ts;
					memcpy(&ts, CMSG_DATA(c), sizeof ts);
					ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
				} else if (c->cmsg_type == SO_RXQ_OVFL) {
					uint32_t d;
					memcpy(&d, CMSG_DATA(c), sizeof d);
					if (open_ && d > s->drops)
						w_drops += d - s->drops;
					s->drops = d;
				}
			}
			if (!ns)
				ns = clock_ns(CLOCK_REALTIME);
			back(s, bufs[i], msgs[i].msg_len, ns);
		}
	}
}

static double pctl(double p)
{
	uint64_t want, acc = 0;
	if (!w_rtt_n)
		return 0;
	want = (uint64_t)(p * (double)w_rtt_n);
	if (want >= w_rtt_n)
		want = w_rtt_n - 1;
	for (uint32_t i = 0; i < NBINS; i++) {
		acc += hist[i];
		if (acc > want)
			return (i + 0.5) * BIN_US;      /* the bin's middle, us */
	}
	return (double)w_rtt_max / 1000;
}

static void open_window(void)
{
	for (int i = 0; i < n; i++) {
		streams[i].have_window = 0;
		streams[i].received_window = 0;
	}
	memset(hist, 0, NBINS * sizeof *hist);
	w_sent = w_received = w_late_back = w_late_sends = w_bad = w_rtt_n = w_rtt_max = w_drops = 0;
	w_rtt_sum = 0;
	w_lag_max = 0;
	w_start_ns = clock_ns(CLOCK_REALTIME);
	open_ = 1;
}

static void close_window(double secs)
{
	uint64_t returning = 0, expected = 0, lost = 0;

	for (int i = 0; i < n; i++) {
		struct stream *s = &streams[i];
		if (!s->have_window)
			continue;
		returning++;
		uint64_t exp = (uint64_t)(s->last_window - s->first_window) + 1;
		expected += exp;
		if (exp > s->received_window)
			lost += exp - s->received_window;
	}
	printf("RESULT window=%.3f streams=%d returning=%llu sent=%llu received=%llu expected=%llu lost=%llu "
	       "late=%llu bad=%llu drops=%llu rtt_n=%llu rtt_mean_us=%.1f rtt_p50_us=%.0f rtt_p99_us=%.0f "
	       "rtt_p999_us=%.0f rtt_max_us=%.0f late_sends=%llu lag_max_us=%.0f\n",
	       secs, n, (unsigned long long)returning, (unsigned long long)w_sent,
	       (unsigned long long)w_received, (unsigned long long)expected, (unsigned long long)lost,
	       (unsigned long long)w_late_back, (unsigned long long)w_bad, (unsigned long long)w_drops,
	       (unsigned long long)w_rtt_n, w_rtt_n ? w_rtt_sum / (double)w_rtt_n / 1000 : 0, pctl(0.50),
	       pctl(0.99), pctl(0.999), (double)w_rtt_max / 1000, (unsigned long long)w_late_sends,
	       (double)w_lag_max / 1000);
	fflush(stdout);
	open_ = 0;
}

static void drain_ready(int ep, struct epoll_event *evs, int max)
{
	int k = epoll_wait(ep, evs, max, 0);
	for (int i = 0; i < k; i++)
		drain(&streams[evs[i].data.u32]);
}

int main(int argc, char **argv)
{
	FILE *f = argc == 2 ? fopen(argv[1], "r") : NULL;
	struct sigaction sa;
	int ep, port, one = 1;

	if (!f) {
		fprintf(stderr, "usage: relay_rtp FILE (one destination port on 127.0.0.1 a line, a stream each)\n");
		return 2;
	}
	streams = calloc(MAX_STREAMS, sizeof *streams);
	hist = calloc(NBINS, sizeof *hist);
	ep = epoll_create1(0);
	if (!streams || !hist || ep < 0)
		return 1;
	while (n < MAX_STREAMS && fscanf(f, "%d", &port) == 1) {
		struct stream *s = &streams[n];
		struct sockaddr_in me;
		if (port <= 0 || port > 65535) {
			fprintf(stderr, "relay_rtp: bad port %d\n", port);
			return 2;
		}
		s->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
		memset(&me, 0, sizeof me);
		me.sin_family = AF_INET;
		inet_pton(AF_INET, "127.0.0.1", &me.sin_addr);
		if (s->fd < 0 || bind(s->fd, (struct sockaddr *)&me, sizeof me) < 0) {
			fprintf(stderr, "relay_rtp: socket %d: %s\n", n, strerror(errno));
			return 1;
		}
		setsockopt(s->fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
		setsockopt(s->fd, SOL_SOCKET, SO_RXQ_OVFL, &one, sizeof one);
		struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)n };
		if (epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev) < 0) {
			fprintf(stderr, "relay_rtp: epoll: %s\n", strerror(errno));
			return 1;
		}
		s->to.sin_family = AF_INET;
		s->to.sin_port = htons((uint16_t)port);
		inet_pton(AF_INET, "127.0.0.1", &s->to.sin_addr);
		s->ssrc = 0x52000000u | (uint32_t)n;        /* unique: the stream's index */
		s->seq = (uint16_t)(n * 37u);
		s->ts = (uint32_t)n * 8000u;
		n++;
	}
	fclose(f);
	if (n == 0) {
		fprintf(stderr, "relay_rtp: no stream in %s\n", argv[1]);
		return 2;
	}
	struct epoll_event *evs = calloc((size_t)n, sizeof *evs);
	if (!evs)
		return 1;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_sig;
	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGUSR2, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	uint64_t start = clock_ns(CLOCK_MONOTONIC) + TICK_NS, tick = start;
	for (int i = 0; i < n; i++)
		streams[i].due = start + PERIOD_NS * (uint64_t)i / (uint64_t)n;
	printf("READY %d\n", n);
	fflush(stdout);
	int next = 0;                                /* the stream due first: the streams are in due order */
	uint64_t w_open_mono = 0;
	while (!want_quit) {
		struct timespec ts = { .tv_sec = (time_t)(tick / 1000000000u), .tv_nsec = (long)(tick % 1000000000u) };
		clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
		uint64_t now = clock_ns(CLOCK_MONOTONIC);
		if (want_open) {
			want_open = 0;
			open_window();
			w_open_mono = now;
		}
		if (want_close) {
			want_close = 0;
			if (open_) {
				drain_ready(ep, evs, n);
				close_window((double)(now - w_open_mono) / 1e9);
			}
		}
		/* every stream due by now (a stream late by more than a period
		 * sends once and keeps its phase: it does not catch up in a burst) */
		for (int k = 0; k < n && streams[next].due <= now; k++) {
			struct stream *s = &streams[next];
			send_one(s, now);
			while (s->due + PERIOD_NS <= now)
				s->due += PERIOD_NS;
			next = (next + 1) % n;
		}
		drain_ready(ep, evs, n);
		tick += TICK_NS;
		if (tick + 100 * TICK_NS < now)
			tick = now - now % TICK_NS + TICK_NS;   /* asleep for long: no rush of ticks */
	}
	/* what is still on its way */
	uint64_t end = clock_ns(CLOCK_MONOTONIC) + 500 * TICK_NS;
	while (clock_ns(CLOCK_MONOTONIC) < end) {
		nanosleep(&(struct timespec){ .tv_sec = 0, .tv_nsec = (long)TICK_NS }, NULL);
		drain_ready(ep, evs, n);
	}
	uint64_t lost = 0, returning = 0, drops = 0;
	for (int i = 0; i < n; i++) {
		struct stream *s = &streams[i];
		drops += s->drops;
		if (!s->have_total)
			continue;
		returning++;
		uint64_t exp = (uint64_t)(s->last_total - s->first_total) + 1;
		if (exp > s->received_total)
			lost += exp - s->received_total;
	}
	printf("TOTAL streams=%d returning=%llu sent=%llu received=%llu lost=%llu late=%llu bad=%llu drops=%llu "
	       "send_errors=%llu\n", n, (unsigned long long)returning, (unsigned long long)t_sent,
	       (unsigned long long)t_received, (unsigned long long)lost, (unsigned long long)t_late_back,
	       (unsigned long long)t_bad, (unsigned long long)drops, (unsigned long long)t_send_errors);
	fflush(stdout);
	return 0;
}
