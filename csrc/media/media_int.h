/*
 * media_int.h - private to csrc/media: the engine and session structures
 * that engine.c (pacing, RTCP schedule) and session.c (sockets, codecs,
 * operations) share.
 */
#ifndef MEDIA_INT_H
#define MEDIA_INT_H

#include <ev.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <spandsp/telephony.h>
#include <spandsp/g711.h>
#include <spandsp/logging.h>
#include <spandsp/super_tone_rx.h>        /* tone_report_func_t, for dtmf.h */
#include <spandsp/dtmf.h>

#include "session.h"
#include "dtmf.h"
#include "rtp.h"
#include "player.h"
#include "tone.h"
#include "recorder.h"
#include "g711.h"
#include "prompt.h"

#define MEDIA_RATE 8000
#define MEDIA_TICK 0.020                /* the pacing period, seconds */
#define MEDIA_TICK_MS 20
/* The period is cut in phases, every session in one: the timer fires
 * every MEDIA_TICK / MEDIA_PHASES and sends for one phase's sessions, so
 * a thousand streams go out as four bursts of 250, 5 ms apart, and what
 * arrives meanwhile (a digit) waits for a quarter of the burst. */
#define MEDIA_PHASES 4
#define MEDIA_SLOT (MEDIA_TICK / MEDIA_PHASES)
#define MEDIA_MAX_PTIME 120
#define MEDIA_MAX_FRAME (MEDIA_MAX_PTIME * MEDIA_RATE / 1000)
#define MEDIA_RTCP_INTERVAL 5.0
#define MEDIA_RX_BUF 2048               /* larger datagrams are truncated, then dropped */

struct media_engine {
	struct ev_loop *loop;           /* NULL once detached */
	ev_timer tick;                  /* runs while a session plays */
	double due;                     /* when the next phase is due */
	int phase;                      /* the next phase to send for */
	struct media_session *playing[MEDIA_PHASES];    /* sessions the tick sends for */
	int nphase[MEDIA_PHASES];
	int nplaying;
	ev_timer rtcp_w;                /* runs while sessions exist */
	struct media_session *rhead, *rtail;    /* by report time: same interval, so FIFO */
	int nsessions;
	struct media_g711 law;          /* G.711 tables, shared by its sessions */
	struct prompt_cache prompts;    /* short files, decoded once for all sessions */
};

struct media_addr {
	union {
		struct sockaddr sa;
		struct sockaddr_in sin;
		struct sockaddr_in6 sin6;
	} u;
	socklen_t len;
};

/* what RFC 3550 A.1 (sequence numbers), A.3 (loss) and A.8 (jitter) keep
 * per source */
struct rx_state {
	int init;
	uint32_t ssrc;
	uint16_t max_seq;
	uint32_t cycles, base_seq, bad_seq;
	uint64_t received, expected_prior, received_prior;
	int have_transit;
	int32_t transit;
	double jitter;                  /* timestamp units */
	uint32_t lsr;                   /* the peer's last SR, middle NTP bits */
	double lsr_at;                  /* when it came (loop time) */
};

enum { OUT_NONE = 0, OUT_PLAY, OUT_TONE, OUT_BEEP };

#define MEDIA_TICK_SAMPLES (MEDIA_TICK_MS * MEDIA_RATE / 1000)

/* DTMF heard (dtmf_in.c) */
struct dtmf_in {
	int rfc4733;                    /* telephone events are read */
	int inband;                     /* 1, 0, or -1: on iff no telephone-event was negotiated */
	int local_te_pt;                /* the telephone-event pt of our own offer, -1 */
	struct dtmf_track track;
	dtmf_rx_state_t *det;           /* spandsp's detector, made when inband first hears audio */
	double now;                     /* when the audio being detected came */
	int last_inband;                /* the event code inband reported last, -1 */
	double last_inband_at;
};

/* DTMF sent (dtmf_out.c): RFC 4733 events on the 20 ms tick, or tones in
 * place of the audio frames */
enum { DTMF_OUT_NONE = 0, DTMF_OUT_EVENTS, DTMF_OUT_INBAND };

struct dtmf_out {
	int mode;
	char digits[MEDIA_DTMF_MAX];
	int n, i;                       /* digits, and the one being sent */
	int dur_ms, gap_ms, volume;
	uint32_t t0;                    /* the RTP clock when the send began */
	int tick;                       /* 20 ms ticks since */
	int ev_tick;                    /* the tick the current event began or begins */
	int ends;                       /* end packets sent for it */
	dtmf_tx_state_t *gen;           /* spandsp's generator, made at the first inband send */
	long samples;                   /* inband: samples generated */
};

struct media_session {
	struct media_engine *m;
	media_done_fn done;
	media_digit_fn digit;
	void *arg;
	int fd[2];                      /* RTP, RTCP */
	ev_io io[2];
	struct media_addr local;

	int have_remote;
	struct media_addr sdp_rtp, sdp_rtcp;    /* from the SDP */
	struct media_addr peer_rtp, peer_rtcp;  /* learned from what arrives */
	int learned_rtp, learned_rtcp;
	int codec, pt, ptime, frame, te_pt, dir;

	/* sending */
	uint32_t ssrc;
	uint16_t seq;
	uint32_t ts;                    /* of the next packet */
	int spurt;                      /* the next packet starts a talkspurt */
	double last_sent;               /* loop time of the last frame, 0: none yet */
	int credit;                     /* ms the ticks allowed, not yet sent */
	struct media_session *pnext, *pprev;
	int on_tick;
	int phase;                      /* its list on the tick, while on it */

	/* the output: a player or a tone (a beep before a recording) */
	int out;
	struct player *player;
	struct prompt_play *prompt;     /* instead of player: a short file, from memory */
	struct tone *tone;
	int barge;

	/* the recording */
	struct recorder *rec;
	int rec_running;                /* started (after its beep) */
	double rec_max, rec_silence, rec_start;
	ev_timer rec_w;

	/* RTCP */
	struct media_session *rnext, *rprev;
	double rtcp_due;
	uint64_t sent_at_report;
	char cname[48];

	struct dtmf_in din;
	struct dtmf_out dout;

	/* bridged: what arrives goes out of this other session (a B2BUA's
	 * relay), re-encoded only when the two legs use different laws */
	struct media_session *relay;

	struct rx_state rx;
	struct media_stats st;

	uint8_t pkt[RTP_HDR_LEN + MEDIA_MAX_FRAME];
	int16_t pcm[MEDIA_MAX_FRAME];
	uint8_t buf[MEDIA_RX_BUF];
};

/* engine.c */
void media_engine_play_add(struct media_engine *m, struct media_session *s);
void media_engine_play_remove(struct media_engine *m, struct media_session *s);
void media_engine_rtcp_add(struct media_engine *m, struct media_session *s);
void media_engine_rtcp_remove(struct media_engine *m, struct media_session *s);

/* watchers that do not keep the loop alive by themselves: whoever waits
 * on a session holds the loop (a session nobody waits on must not) */
void media_io_start(struct media_engine *m, ev_io *w);
void media_io_stop(struct media_engine *m, ev_io *w);
void media_timer_start(struct media_engine *m, ev_timer *w);
void media_timer_stop(struct media_engine *m, ev_timer *w);

/* session.c, called by the engine */
void media_session_tick(struct media_session *s, double now);
void media_session_report(struct media_session *s, double now, int bye);

/* session.c, for the DTMF files */
int media_can_send(const struct media_session *s);
int media_can_receive(const struct media_session *s);
/* s->pkt, its header written, `len` bytes in all, to the peer; counted */
void media_send_packet(struct media_session *s, size_t len, size_t payload_len);
/* n samples of s->pcm as the next audio packet (nothing on hold) */
void media_send_pcm(struct media_session *s, int n, double now);
/* on the tick list, the timestamp following the clock across a pause */
void media_tick_begin(struct media_session *s);
/* off the tick list once nothing sends */
void media_tick_update(struct media_session *s);
void media_done(struct media_session *s, const struct media_result *r);

/* dtmf_in.c */
void media_dtmf_event_in(struct media_session *s, const struct rtp_packet *p, double now);
void media_dtmf_audio_in(struct media_session *s, const struct rtp_packet *p, double now);
int media_dtmf_inband_on(const struct media_session *s);

/* dtmf_out.c */
void media_dtmf_events_tick(struct media_session *s, double now);
void media_dtmf_inband_frame(struct media_session *s, double now);
/* ends a send: ok, or stopped with reason; the done callback is called */
void media_dtmf_finish(struct media_session *s, int ok, const char *reason);

#endif
