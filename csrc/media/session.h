/*
 * session.h - the media engine: RTP sessions on one libev loop.
 *
 * A media_engine belongs to one loop (its owner keeps one per loop). It
 * paces every session that plays with one 20 ms timer and sends their
 * RTCP reports from one schedule: no timer per session for either.
 *
 * A media_session is one RTP/RTCP socket pair with what it plays (a list
 * of files or a tone) and what it records. Each operation that runs over
 * time (play, tone, record) ends exactly once, through the `done`
 * callback given at creation, unless the session is freed first (freeing
 * calls nothing back). A function that returns an error never calls it.
 *
 * No SIP and no Lua here. Functions return 0 or a negative errno value,
 * with a short text in `err` where one is taken.
 */
#ifndef MEDIA_SESSION_H
#define MEDIA_SESSION_H

#include <stddef.h>
#include <stdint.h>

struct ev_loop;
struct media_engine;
struct media_session;

int media_engine_new(struct media_engine **out, struct ev_loop *loop);
/* the loop is gone (destroyed first at exit): watchers are no longer
 * touched, sockets are still closed when sessions are freed */
void media_engine_detach(struct media_engine *m);
/* every session must have been freed */
void media_engine_free(struct media_engine *m);
int media_engine_sessions(const struct media_engine *m);

enum media_dir { MEDIA_SENDRECV = 0, MEDIA_SENDONLY, MEDIA_RECVONLY, MEDIA_INACTIVE };
/* play and tone share the output; a DTMF send runs beside it (the audio
 * waits while events go out) */
enum media_op { MEDIA_OUTPUT = 0, MEDIA_RECORD = 1, MEDIA_DTMF = 2 };

struct media_result {
	int op;                 /* MEDIA_OUTPUT, MEDIA_RECORD or MEDIA_DTMF */
	int ok;                 /* output: played to its end; dtmf: every digit sent */
	const char *reason;     /* when not ok: "stopped", "digit", a given reason, "file: ..." */
	char digit;             /* reason "digit": the digit that barged in */
	double duration;        /* record: seconds in the file */
	const char *end;        /* record: "max", "silence", or the reason it was stopped */
};

typedef void (*media_done_fn)(void *arg, const struct media_result *r);

enum media_dtmf_source { MEDIA_DTMF_RFC4733 = 0, MEDIA_DTMF_INBAND = 1 };

/* A digit was heard ('0'..'9', '*', '#', 'A'..'D'), once per key press.
 * Nonzero when it could not be taken (it is counted in dtmf_dropped).
 * Called from the socket's callback: it must not free the session. */
typedef int (*media_digit_fn)(void *arg, char digit, int source);

struct media_session_cfg {
	const char *addr;       /* numeric local address to bind, IPv4 or IPv6 */
	int port_lo, port_hi;   /* RTP on an even port, RTCP on the next */
	media_done_fn done;
	media_digit_fn digit;   /* optional */
	void *arg;
};

int media_session_new(struct media_session **out, struct media_engine *m,
                      const struct media_session_cfg *cfg, char *err, size_t errlen);
/* Sends an RTCP BYE when the peer is known, closes the sockets and the
 * files; nothing is called back. */
void media_session_free(struct media_session *s);

int media_session_port(const struct media_session *s);
/* the bound address, without brackets */
void media_session_addr(const struct media_session *s, char *buf, size_t n);

enum media_codec { MEDIA_PCMU = 0, MEDIA_PCMA = 8 };

struct media_remote {
	const char *addr;       /* numeric; "0.0.0.0" or port 0: nothing is sent */
	int port;
	int rtcp_port;          /* 0: port + 1 */
	int codec;              /* MEDIA_PCMU or MEDIA_PCMA */
	int pt;                 /* payload type to send it with */
	int ptime;              /* ms, 10..120 in steps of 10 (20 if 0) */
	int te_pt;              /* telephone-event payload type, -1 if none */
};

/* Where to send, until the peer's own RTP shows where it comes from
 * (symmetric RTP). Moving the peer (a re-INVITE) forgets what was learned. */
int media_session_set_remote(struct media_session *s, const struct media_remote *r,
                             char *err, size_t errlen);
void media_session_direction(struct media_session *s, int dir);
int media_session_get_direction(const struct media_session *s);

struct media_play_opts {
	int loop;               /* start the list again at its end, until stopped */
	int barge;              /* media_session_barge may stop it */
};

/* Plays files in order (replacing what the output played, which ends
 * with "stopped"). Every file is checked first: "file: ..." in err. */
int media_session_play(struct media_session *s, const char *const *files, int nfiles,
                       const struct media_play_opts *o, char *err, size_t errlen);

struct tone_spec;
int media_session_tone(struct media_session *s, const struct tone_spec *t, char *err, size_t errlen);

struct media_record_opts {
	int format;             /* enum recorder_format */
	double max;             /* seconds; <= 0: until stopped */
	double silence;         /* seconds without voice that end it; <= 0: never */
	int threshold;          /* mean absolute amplitude counted as voice */
	int beep;               /* a beep first (the output's play ends "stopped") */
};

int media_session_record(struct media_session *s, const char *path,
                         const struct media_record_opts *o, char *err, size_t errlen);

/* Ends what runs: op MEDIA_OUTPUT, MEDIA_RECORD, MEDIA_DTMF or -1 for all, with
 * `reason` (the output's "nil, reason"; the recording's end). Returns how
 * many ended; each was called back. */
int media_session_stop(struct media_session *s, int op, const char *reason);

/* A digit arrived: a play started with barge ends with reason "digit".
 * Returns 1 if it did. */
int media_session_barge(struct media_session *s, char digit);

/* what runs: bit 0 the output, bit 1 a recording, bit 2 a DTMF send */
int media_session_busy(const struct media_session *s);

/*
 * DTMF in: RFC 4733 telephone events on the negotiated payload type (or
 * on our own offer's, see set_local_te_pt) and, when inband is on,
 * spandsp's detector on the decoded G.711 audio. Each key press reaches
 * the digit callback once, then barges a play started with barge. By
 * default events are read, and inband runs iff the peer negotiated no
 * telephone-event; an explicit setting stays. Each 1 or 0, negative to
 * leave it as it is.
 */
void media_session_dtmf_config(struct media_session *s, int rfc4733, int inband);
/* what is in effect now */
void media_session_dtmf_state(const struct media_session *s, int *rfc4733, int *inband);
/* the telephone-event payload type our own SDP offered (-1: none): a
 * peer may send events with it rather than with the one it answered */
int media_session_set_local_te_pt(struct media_session *s, int pt, char *err, size_t errlen);
/* the peer's telephone-event payload type, -1 if none was negotiated */
int media_session_dtmf_pt(const struct media_session *s);

#define MEDIA_DTMF_MAX 128      /* digits in one send */

struct media_dtmf_opts {
	int inband;             /* tones in place of the audio, else RFC 4733 events */
	int duration;           /* ms of each digit, 20..8000 */
	int gap;                /* ms after each digit, 0..10000 */
	int volume;             /* 0..63: -dBm0 */
};

/* Sends digits (0-9 * # A-D), paced by the tick, replacing a send that
 * runs (it ends "stopped"); ends through the done callback (MEDIA_DTMF).
 * RFC 4733: each digit one event (its first packet marked, one
 * timestamp, the duration growing each 20 ms, three end packets, then
 * the gap), audio frames held back meanwhile. Fails with "dtmf: no
 * telephone-event negotiated" when there is no payload type for them. */
int media_session_send_dtmf(struct media_session *s, const char *digits, size_t n,
                            const struct media_dtmf_opts *o, char *err, size_t errlen);

struct media_stats {
	uint64_t packets_sent, octets_sent;
	uint64_t packets_received, octets_received;
	int64_t lost;                   /* RFC 3550 A.3: expected - received */
	double jitter;                  /* interarrival jitter, seconds (A.8) */
	uint64_t invalid;               /* RTP that did not parse */
	uint64_t unexpected_source;     /* RTP from another address than the peer's */
	uint64_t unknown_pt;
	uint64_t rtcp_sent, rtcp_received, rtcp_invalid;
	uint64_t send_errors;
	int remote_bye;                 /* the peer's RTCP said BYE */
	int have_remote_report;
	double remote_fraction_lost;    /* from the peer's last report on us, 0..1 */
	int64_t remote_lost;
	double remote_jitter;           /* seconds */
	double rtt;                     /* seconds, < 0 if not known */
	uint64_t late, reordered;       /* of the current recording */
	uint64_t dtmf_received;         /* key presses heard (each source's once) */
	uint64_t dtmf_invalid;          /* telephone-event packets dropped as malformed */
	uint64_t dtmf_dropped;          /* digits heard that the digit callback refused */
	uint64_t dtmf_sent;             /* digits sent to their end */
	uint64_t relayed;               /* packets passed on to the bridged session */
	uint64_t relay_dropped;         /* ... that could not be (no address, no event type) */
	int codec, pt, ptime;
	int learned;                    /* the peer's RTP source is known */
	char remote[64];                /* where RTP goes: "1.2.3.4:5000", "" if nowhere */
};

void media_session_stats(const struct media_session *s, struct media_stats *st);

/* Bridge two sessions (a B2BUA anchoring media): the RTP each receives
 * is sent on by the other to its peer, as it came (SSRC, sequence,
 * timestamp), with the payload re-encoded between PCMU and PCMA when the
 * legs differ and telephone-events given the other leg's payload type.
 * Playing, recording and tones on either stop. other NULL unbridges. */
void media_session_relay(struct media_session *s, struct media_session *other);

#endif
