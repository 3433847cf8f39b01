/*
 * bench/media_pacer.c: the floor of the media benchmark (bench/run.lua,
 * section 6). N RTP streams of 160-byte PCMU frames to 127.0.0.1:PORT,
 * each from a UDP socket of its own (as luasip's sessions), all sent in
 * one burst every 20 ms, nothing else: no file, no codec, no SIP. What is
 * left is the system calls and the timer, so its CPU per stream is what
 * sendto() on loopback costs, and its intervals what the machine's
 * scheduling allows a single-threaded burst sender.
 *
 *   media_pacer PORT N sleep   clock_nanosleep to absolute 20 ms deadlines
 *   media_pacer PORT N ev      a libev timer repeating every 20 ms, as
 *                              luasip's media engine (csrc/media/engine.c)
 *
 * Runs until killed. Prints "READY" once its sockets are open.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ev.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int n, *fds;
static struct sockaddr_in to;
static uint8_t pkt[12 + 160];
static uint16_t seq;
static uint32_t ts;

static void burst(void)
{
	pkt[2] = (uint8_t)(seq >> 8);
	pkt[3] = (uint8_t)seq;
	pkt[4] = (uint8_t)(ts >> 24);
	pkt[5] = (uint8_t)(ts >> 16);
	pkt[6] = (uint8_t)(ts >> 8);
	pkt[7] = (uint8_t)ts;
	for (int i = 0; i < n; i++) {
		/* the stream's SSRC: its index */
		pkt[8] = (uint8_t)(i >> 24);
		pkt[9] = (uint8_t)(i >> 16);
		pkt[10] = (uint8_t)(i >> 8);
		pkt[11] = (uint8_t)i;
		sendto(fds[i], pkt, sizeof pkt, 0, (struct sockaddr *)&to, sizeof to);
	}
	seq++;
	ts += 160;
}

static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	burst();
}

int main(int argc, char **argv)
{
	int port = argc > 3 ? atoi(argv[1]) : 0;

	n = argc > 3 ? atoi(argv[2]) : 0;
	if (port <= 0 || port > 65535 || n <= 0 ||
	    (strcmp(argv[3], "sleep") != 0 && strcmp(argv[3], "ev") != 0)) {
		fprintf(stderr, "usage: media_pacer PORT N sleep|ev\n");
		return 2;
	}
	fds = calloc((size_t)n, sizeof *fds);
	if (!fds)
		return 1;
	to.sin_family = AF_INET;
	to.sin_port = htons((uint16_t)port);
	inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
	for (int i = 0; i < n; i++) {
		fds[i] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
		if (fds[i] < 0) {
			perror("media_pacer: socket");
			return 1;
		}
	}
	pkt[0] = 0x80;          /* version 2 */
	pkt[1] = 0;             /* PCMU */
	memset(pkt + 12, 0xff, 160);
	printf("READY\n");
	fflush(stdout);
	if (strcmp(argv[3], "ev") == 0) {
		struct ev_loop *loop = ev_default_loop(0);
		ev_timer t;
		ev_timer_init(&t, tick_cb, 0., 0.020);
		ev_timer_start(loop, &t);
		ev_run(loop, 0);
		return 0;
	}
	struct timespec due;
	clock_gettime(CLOCK_MONOTONIC, &due);
	for (;;) {
		burst();
		due.tv_nsec += 20000000;
		if (due.tv_nsec >= 1000000000) {
			due.tv_nsec -= 1000000000;
			due.tv_sec++;
		}
		clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &due, NULL);
	}
}
