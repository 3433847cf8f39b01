/*
 * recorder.h - received G.711 packets to a WAV file, through a small
 * reorder buffer keyed by RTP sequence number: packets that arrive out of
 * order are written in order, and a gap (lost packets, or silence the
 * sender suppressed) is written as silence of the length its timestamps
 * say. It also tells when the caller last spoke (mean amplitude of a
 * frame at or above a threshold), for a recording that ends on silence.
 */
#ifndef MEDIA_RECORDER_H
#define MEDIA_RECORDER_H

#include <stddef.h>
#include <stdint.h>

enum recorder_format { REC_PCM16 = 0, REC_ULAW, REC_ALAW };

struct media_g711;

struct recorder_opts {
	const struct media_g711 *law;   /* the engine's G.711 tables (decoding) */
	int format;
	double max;             /* seconds of audio at most; <= 0: no limit */
	int threshold;          /* mean absolute amplitude that counts as voice */
};

struct recorder_stats {
	uint64_t written;       /* samples in the file */
	uint64_t reordered;     /* packets that arrived before an earlier one */
	uint64_t late;          /* packets that came after their place was written (dropped) */
	uint64_t duplicates;
	uint64_t gaps;          /* gaps written as silence */
};

struct recorder;

/* Opens (creates or truncates) the file: "file: ..." in err on failure */
int recorder_open(struct recorder **out, const char *path, const struct recorder_opts *o,
                  char *err, size_t errlen);

/* One received packet (pt 0 PCMU or 8 PCMA). `now` is the loop's time
 * (for voice detection). Returns 1 once the recording has reached its
 * maximum length, else 0. */
int recorder_packet(struct recorder *r, uint16_t seq, uint32_t ts, uint32_t ssrc, int pt,
                    const uint8_t *payload, size_t len, double now);

/* the last time a frame held voice (the start time until then) */
double recorder_last_voice(const struct recorder *r);
void recorder_set_start(struct recorder *r, double now);
double recorder_duration(const struct recorder *r);
void recorder_get_stats(const struct recorder *r, struct recorder_stats *st);

/* What is held is written, the file closed. Returns the duration in
 * seconds (negative if the file could not be completed). */
double recorder_close(struct recorder *r);

#endif
