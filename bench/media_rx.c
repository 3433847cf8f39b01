/*
 * bench/media_rx.c: the RTP receiver of the media benchmark (bench/run.lua,
 * section 6). Binds the port the callers offer in their SDP (RTP) and the
 * one above it (RTCP), counts every RTP stream that arrives there and, over
 * a window, measures each stream's inter-packet interval and loss.
 *
 *   media_rx PORT [ADDR]          (ADDR: 127.0.0.1 by default)
 *
 * Prints "READY" once bound. SIGUSR1 opens the window, SIGUSR2 closes it:
 * the receiver drains what the kernel has queued, prints one "RESULT ..."
 * line and goes back to idle (a later SIGUSR1 opens a new window).
 * SIGTERM or SIGINT end it. It reads the sockets every millisecond rather
 * than sleeping on them (see main).
 *
 * Streams are told apart by SSRC and source address (SIPp's rtp_stream
 * sends every call's stream from one socket, luasip each from its own).
 * Times are the kernel's receive timestamps (SO_TIMESTAMPNS), taken when
 * the datagram was queued to the socket; on loopback that happens inside
 * the sender's sendto(), so the intervals are the sender's pacing and not
 * this process's scheduling, as long as the socket's buffer (32 MiB, set
 * with SO_RCVBUFFORCE when allowed) does not overflow: its drops are
 * reported (SO_RXQ_OVFL) apart from the loss seen in the sequence numbers.
 * The window is cut on those timestamps too: packets queued before the
 * SIGUSR1 was handled are not in it, packets queued before the SIGUSR2 are.
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
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define PKT 2048
#define BIN_US 10                       /* histogram: 10 us bins ... */
#define NBINS 200000                    /* ... up to 2 s */
#define HCAP 65536                      /* streams: open addressing, a power of 2 */

struct stream {
	int used;
	uint32_t ssrc;
	uint32_t src;                   /* IPv4 address and port, network order */
	uint16_t sport;
	int in_window;                  /* has a packet in the current window */
	uint32_t first_ext, last_ext;   /* extended sequence numbers in the window */
	uint16_t last_seq;              /* the last one seen, in or out of the window */
	uint32_t cycles;
	int have_seq;
	uint64_t last_ns;               /* arrival of the previous packet (window) */
	uint64_t received, late;
	uint64_t max_gap_ns;
	int pt;
};

static struct stream *streams;
static uint32_t *hist;
static volatile sig_atomic_t want_open, want_close, want_quit;

static void on_sig(int sig)
{
	if (sig == SIGUSR1)
		want_open = 1;
	else if (sig == SIGUSR2)
		want_close = 1;
	else
		want_quit = 1;
}

static uint64_t realtime_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static struct stream *lookup(uint32_t ssrc, uint32_t src, uint16_t sport)
{
	uint32_t h = (ssrc * 2654435761u) ^ (src * 40503u) ^ ((uint32_t)sport * 2246822519u);
	for (uint32_t i = 0; i < HCAP; i++) {
		struct stream *s = &streams[(h + i) & (HCAP - 1)];
		if (!s->used) {
			s->used = 1;
			s->ssrc = ssrc;
			s->src = src;
			s->sport = sport;
			return s;
		}
		if (s->ssrc == ssrc && s->src == src && s->sport == sport)
			return s;
	}
	return NULL;
}

/* the window's totals */
static int open_;
static uint64_t w_start, w_end;
static uint64_t w_packets, w_intervals, w_max_ns, w_min_ns, w_out2, w_bad, w_rtcp, w_toomany;
static double w_gap_sum;      /* ns */
static uint32_t w_drops0, drops_now;

static void open_window(void)
{
	for (uint32_t i = 0; i < HCAP; i++) {
		struct stream *s = &streams[i];
		if (!s->used)
			continue;
		s->in_window = 0;
		s->received = s->late = s->max_gap_ns = 0;
	}
	memset(hist, 0, NBINS * sizeof *hist);
	w_packets = w_intervals = w_max_ns = w_out2 = w_bad = w_rtcp = w_toomany = 0;
	w_gap_sum = 0;
	w_min_ns = UINT64_MAX;
	w_drops0 = drops_now;
	w_start = realtime_ns();
	w_end = UINT64_MAX;
	open_ = 1;
}

static void packet(const uint8_t *b, ssize_t n, const struct sockaddr_in *from, uint64_t ns)
{
	uint16_t seq;
	uint32_t ssrc;
	struct stream *s;
	int in;

	if (n < 12 || (b[0] >> 6) != 2) {
		if (open_ && ns >= w_start && ns < w_end)
			w_bad++;
		return;
	}
	seq = (uint16_t)(b[2] << 8 | b[3]);
	ssrc = (uint32_t)b[8] << 24 | (uint32_t)b[9] << 16 | (uint32_t)b[10] << 8 | b[11];
	s = lookup(ssrc, from->sin_addr.s_addr, from->sin_port);
	in = open_ && ns >= w_start && ns < w_end;
	if (!s) {
		if (in)
			w_toomany++;
		return;
	}
	/* extended sequence number (RFC 3550 A.1, without probation): a
	 * packet at or behind the last one is late (reordered or doubled) */
	int fwd = 1;
	if (!s->have_seq) {
		s->have_seq = 1;
		s->cycles = 0;
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
	if (!in)
		return;
	w_packets++;
	if (!fwd) {
		if (s->in_window)
			s->late++;
		return;
	}
	if (!s->in_window) {
		s->in_window = 1;
		s->first_ext = s->last_ext = ext;
		s->received = 1;
		s->last_ns = ns;
		s->pt = b[1] & 0x7f;
		return;
	}
	s->received++;
	s->last_ext = ext;
	uint64_t gap = ns > s->last_ns ? ns - s->last_ns : 0;
	s->last_ns = ns;
	uint64_t bin = gap / (BIN_US * 1000u);
	hist[bin < NBINS ? bin : NBINS - 1]++;
	w_intervals++;
	w_gap_sum += (double)gap;
	if (gap > w_max_ns)
		w_max_ns = gap;
	if (gap < w_min_ns)
		w_min_ns = gap;
	if (gap > s->max_gap_ns)
		s->max_gap_ns = gap;
	if (gap < 18000000u || gap > 22000000u)
		w_out2++;
}

static double pctl(double p)
{
	uint64_t want, acc = 0;
	if (!w_intervals)
		return 0;
	want = (uint64_t)(p * (double)w_intervals);
	if (want >= w_intervals)
		want = w_intervals - 1;
	for (uint32_t i = 0; i < NBINS; i++) {
		acc += hist[i];
		if (acc > want)
			return (i + 0.5) * BIN_US;      /* the bin's middle, us */
	}
	return (double)w_max_ns / 1000;
}

static void close_window(void)
{
	uint64_t nstreams = 0, lost = 0, late = 0, expected = 0, worst = 0;
	int pt = -1;

	for (uint32_t i = 0; i < HCAP; i++) {
		struct stream *s = &streams[i];
		if (!s->used || !s->in_window)
			continue;
		nstreams++;
		uint64_t exp = (uint64_t)(s->last_ext - s->first_ext) + 1;
		expected += exp;
		if (exp > s->received)
			lost += exp - s->received;
		late += s->late;
		if (s->max_gap_ns > worst)
			worst = s->max_gap_ns;
		if (pt < 0)
			pt = s->pt;
		else if (pt != s->pt)
			pt = 999;
	}
	printf("RESULT window=%.3f streams=%llu packets=%llu expected=%llu lost=%llu late=%llu "
	       "intervals=%llu mean_us=%.1f p50_us=%.0f p99_us=%.0f p999_us=%.0f max_us=%.0f min_us=%.0f "
	       "out2ms=%llu drops=%u bad=%llu rtcp=%llu overflow=%llu pt=%d\n",
	       (double)(w_end - w_start) / 1e9, (unsigned long long)nstreams,
	       (unsigned long long)w_packets, (unsigned long long)expected,
	       (unsigned long long)lost, (unsigned long long)late,
	       (unsigned long long)w_intervals, w_intervals ? w_gap_sum / (double)w_intervals / 1000 : 0,
	       pctl(0.50), pctl(0.99), pctl(0.999),
	       (double)w_max_ns / 1000, w_intervals ? (double)w_min_ns / 1000 : 0,
	       (unsigned long long)w_out2, drops_now - w_drops0, (unsigned long long)w_bad,
	       (unsigned long long)w_rtcp, (unsigned long long)w_toomany, pt);
	if (getenv("MEDIA_RX_HIST")) {
		/* the distribution in 0.5 ms steps, for a person looking at it */
		for (uint32_t b = 0; b < NBINS; b += 50) {
			uint64_t n = 0;
			for (uint32_t i = b; i < b + 50 && i < NBINS; i++)
				n += hist[i];
			if (n)
				printf("HIST %.1f-%.1f ms %llu\n", b * BIN_US / 1000.0,
				       (b + 50) * BIN_US / 1000.0, (unsigned long long)n);
		}
	}
	fflush(stdout);
	open_ = 0;
}

static int bind_udp(const char *addr, int port)
{
	struct sockaddr_in sin;
	int one = 1, big = 32 << 20;
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);

	if (fd < 0)
		return -1;
	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, addr, &sin.sin_addr) != 1) {
		close(fd);
		return -1;
	}
	/* root (or CAP_NET_ADMIN) may pass net.core.rmem_max; else the cap */
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big) < 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
	setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
	setsockopt(fd, SOL_SOCKET, SO_RXQ_OVFL, &one, sizeof one);
	if (bind(fd, (struct sockaddr *)&sin, sizeof sin) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* read what is queued; returns the number of datagrams */
static int drain(int fd, int rtcp)
{
	static uint8_t bufs[BATCH][PKT];
	static char ctl[BATCH][256];
	static struct sockaddr_in from[BATCH];
	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];
	int total = 0;

	for (;;) {
		for (int i = 0; i < BATCH; i++) {
			iov[i].iov_base = bufs[i];
			iov[i].iov_len = PKT;
			memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
			msgs[i].msg_hdr.msg_iov = &iov[i];
			msgs[i].msg_hdr.msg_iovlen = 1;
			msgs[i].msg_hdr.msg_name = &from[i];
			msgs[i].msg_hdr.msg_namelen = sizeof from[i];
			msgs[i].msg_hdr.msg_control = ctl[i];
			msgs[i].msg_hdr.msg_controllen = sizeof ctl[i];
		}
		int n = recvmmsg(fd, msgs, BATCH, MSG_DONTWAIT, NULL);
		if (n <= 0)
			return total;
		for (int i = 0; i < n; i++) {
			uint64_t ns = 0;
			for (struct cmsghdr *c = CMSG_FIRSTHDR(&msgs[i].msg_hdr); c;
			     c = CMSG_NXTHDR(&msgs[i].msg_hdr, c)) {
				if (c->cmsg_level != SOL_SOCKET)
					continue;
				if (c->cmsg_type == SCM_TIMESTAMPNS) {
					struct timespec ts;
					memcpy(&ts, CMSG_DATA(c), sizeof ts);
					ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
				} else if (c->cmsg_type == SO_RXQ_OVFL && !rtcp) {
					uint32_t d;
					memcpy(&d, CMSG_DATA(c), sizeof d);
					drops_now = d;
				}
			}
			if (!ns)
				ns = realtime_ns();
			if (rtcp) {
				if (open_ && ns >= w_start && ns < w_end)
					w_rtcp++;
			} else {
				packet(bufs[i], msgs[i].msg_len, &from[i], ns);
			}
		}
		total += n;
	}
}

int main(int argc, char **argv)
{
	const char *addr = argc > 2 ? argv[2] : "127.0.0.1";
	int port = argc > 1 ? atoi(argv[1]) : 0;
	struct sigaction sa;
	struct { int fd; } pfd[2];

	if (port <= 0 || port > 65534) {
		fprintf(stderr, "usage: media_rx PORT [ADDR]\n");
		return 2;
	}
	streams = calloc(HCAP, sizeof *streams);
	hist = calloc(NBINS, sizeof *hist);
	if (!streams || !hist)
		return 1;
	pfd[0].fd = bind_udp(addr, port);
	pfd[1].fd = bind_udp(addr, port + 1);
	if (pfd[0].fd < 0 || pfd[1].fd < 0) {
		fprintf(stderr, "media_rx: cannot bind %s:%d and %d: %s\n", addr, port, port + 1,
		        strerror(errno));
		return 1;
	}
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_sig;
	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGUSR2, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	printf("READY %d\n", port);
	fflush(stdout);
	while (!want_quit) {
		if (want_open) {
			want_open = 0;
			open_window();
		}
		if (want_close) {
			want_close = 0;
			if (open_) {
				w_end = realtime_ns();
				/* what was queued before the close is in the window */
				drain(pfd[0].fd, 0);
				drain(pfd[1].fd, 1);
				close_window();
			}
		}
		/* no poll: a receiver asleep on the socket is woken by every
		 * datagram, and on loopback that wake-up is done and paid for
		 * in the sender's sendto() (a fifth of its CPU at 1000 streams);
		 * the buffer holds far more than a millisecond of packets */
		drain(pfd[0].fd, 0);
		drain(pfd[1].fd, 1);
		nanosleep(&(struct timespec){ .tv_sec = 0, .tv_nsec = 1000000 }, NULL);
	}
	return 0;
}
