/*
 * recorder.c - the reorder buffer and the WAV writer (libsndfile).
 *
 * Slots are indexed by sequence number modulo SLOTS. A packet is written
 * when every earlier one has been written or given up: the buffer holds
 * at most DEPTH packets behind a missing one (80 ms at 20 ms a packet),
 * then declares it lost. The file's timeline follows RTP timestamps, so a
 * lost packet or a suppressed silence becomes silence of the right length
 * without counting packets. Samples are written in blocks, not per packet.
 */
#define _POSIX_C_SOURCE 200809L
#include "recorder.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sndfile.h>
#include <spandsp/telephony.h>
#include "g711.h"

#define RATE 8000
#define SLOTS 16
#define DEPTH 4
#define SLOT_BYTES 960                  /* 120 ms of G.711 */
#define MAX_FILL (10 * RATE)            /* a longer timestamp jump is a resync, not a gap */
#define MISORDER 100                    /* further back is a restart (RFC 3550 A.1) */
#define OUT_CAP 4000                    /* samples written to the file at a time */

struct slot {
	int used;
	uint16_t seq;
	uint8_t pt;
	uint16_t len;
	uint32_t ts;
	uint8_t data[SLOT_BYTES];
};

struct recorder {
	SNDFILE *sf;
	int started;
	uint32_t ssrc;
	uint16_t next_seq;              /* the next packet to write */
	uint16_t hi_seq;                /* the highest sequence number held */
	uint32_t next_ts;               /* where the file's timeline is */
	int held;
	uint64_t max_samples;           /* 0: no limit */
	int threshold;
	double last_voice;
	int full;
	int failed;
	struct recorder_stats st;
	const struct media_g711 *law;
	int16_t pcm[SLOT_BYTES];
	int16_t out[OUT_CAP];
	int out_len;
	struct slot slot[SLOTS];
};

int recorder_open(struct recorder **out, const char *path, const struct recorder_opts *o,
                  char *err, size_t errlen)
{
	struct recorder *r;
	SF_INFO info;

	*out = NULL;
	r = calloc(1, sizeof *r);
	if (!r) {
		snprintf(err, errlen, "file: out of memory");
		return -ENOMEM;
	}
	r->law = o->law;
	memset(&info, 0, sizeof info);
	info.samplerate = RATE;
	info.channels = 1;
	info.format = SF_FORMAT_WAV | (o->format == REC_ULAW ? SF_FORMAT_ULAW :
	                               o->format == REC_ALAW ? SF_FORMAT_ALAW : SF_FORMAT_PCM_16);
	r->sf = sf_open(path, SFM_WRITE, &info);
	if (!r->sf) {
		snprintf(err, errlen, "file: %s: %s", path, sf_strerror(NULL));
		recorder_close(r);
		return -EIO;
	}
	r->max_samples = o->max > 0 ? (uint64_t)(o->max * RATE + 0.5) : 0;
	r->threshold = o->threshold;
	*out = r;
	return 0;
}

void recorder_set_start(struct recorder *r, double now)
{
	r->last_voice = now;
}

static void flush_out(struct recorder *r)
{
	if (r->out_len > 0 && r->sf && sf_write_short(r->sf, r->out, r->out_len) != r->out_len)
		r->failed = 1;
	r->out_len = 0;
}

/* n samples (NULL: silence) into the file, up to the maximum length */
static void put(struct recorder *r, const int16_t *s, uint64_t n)
{
	if (r->max_samples && r->st.written + n >= r->max_samples) {
		n = r->max_samples - r->st.written;
		r->full = 1;
	}
	while (n > 0) {
		int k = OUT_CAP - r->out_len;
		if ((uint64_t)k > n)
			k = (int)n;
		if (s) {
			memcpy(r->out + r->out_len, s, (size_t)k * sizeof *s);
			s += k;
		} else {
			memset(r->out + r->out_len, 0, (size_t)k * sizeof *r->out);
		}
		r->out_len += k;
		r->st.written += (uint64_t)k;
		n -= (uint64_t)k;
		if (r->out_len == OUT_CAP)
			flush_out(r);
	}
}

static void write_slot(struct recorder *r, struct slot *sl, double now)
{
	int32_t gap = (int32_t)(sl->ts - r->next_ts);
	int n;
	long sum = 0;

	if (gap > 0 && gap <= MAX_FILL) {
		put(r, NULL, (uint64_t)gap);
		r->st.gaps++;
	}
	n = (int)sl->len;
	media_g711_decode(r->law, sl->pt != 0, r->pcm, sl->data, n);
	for (int i = 0; i < n; i++)
		sum += r->pcm[i] < 0 ? -r->pcm[i] : r->pcm[i];
	if (n > 0 && sum / n >= r->threshold)
		r->last_voice = now;
	if (!r->full)
		put(r, r->pcm, (uint64_t)n);
	r->next_ts = sl->ts + (uint32_t)n;
	sl->used = 0;
	r->held--;
}

/* write what is in order; with `all`, also past every gap */
static void drain(struct recorder *r, int all, double now)
{
	for (;;) {
		struct slot *sl = &r->slot[r->next_seq % SLOTS];
		if (sl->used && sl->seq == r->next_seq) {
			write_slot(r, sl, now);
			r->next_seq++;
			continue;
		}
		if (r->held == 0 || (!all && r->held <= DEPTH))
			return;
		/* the packet at next_seq is given up: on to the next one held */
		r->next_seq++;
	}
}

int recorder_packet(struct recorder *r, uint16_t seq, uint32_t ts, uint32_t ssrc, int pt,
                    const uint8_t *payload, size_t len, double now)
{
	int16_t d;
	struct slot *sl;

	if (r->full)
		return 1;
	if (len == 0 || len > SLOT_BYTES || (pt != 0 && pt != 8))
		return 0;
	if (!r->started || ssrc != r->ssrc) {
		/* a new stream: what the old one left is written first, and
		 * the timeline goes on from where it was */
		if (r->started)
			drain(r, 1, now);
		r->started = 1;
		r->ssrc = ssrc;
		r->next_seq = seq;
		r->next_ts = ts;
	}
	d = (int16_t)(seq - r->next_seq);
	if (d < 0 && d >= -MISORDER) {
		r->st.late++;
		return r->full;
	}
	if (d >= SLOTS || d < 0) {
		/* far ahead (a burst of loss), or far behind (the sender
		 * restarted its numbers): write what is held and go on from
		 * this packet; its timestamp says how much silence, unless
		 * the jump is too long to be a gap */
		drain(r, 1, now);
		if ((uint32_t)(ts - r->next_ts) > MAX_FILL)
			r->next_ts = ts;
		r->next_seq = seq;
		d = 0;
	}
	sl = &r->slot[seq % SLOTS];
	if (sl->used) {
		r->st.duplicates++;
		return r->full;
	}
	if (r->held > 0 && (int16_t)(seq - r->hi_seq) < 0)
		r->st.reordered++;         /* a later packet is already held */
	else
		r->hi_seq = seq;
	sl->used = 1;
	sl->seq = seq;
	sl->ts = ts;
	sl->pt = (uint8_t)pt;
	sl->len = (uint16_t)len;
	memcpy(sl->data, payload, len);
	r->held++;
	drain(r, 0, now);
	return r->full;
}

double recorder_last_voice(const struct recorder *r)
{
	return r->last_voice;
}

double recorder_duration(const struct recorder *r)
{
	return (double)r->st.written / RATE;
}

void recorder_get_stats(const struct recorder *r, struct recorder_stats *st)
{
	*st = r->st;
}

double recorder_close(struct recorder *r)
{
	double dur;

	if (!r)
		return 0;
	if (r->sf) {
		if (r->started && !r->full)
			drain(r, 1, r->last_voice);
		flush_out(r);
		if (sf_close(r->sf) != 0)
			r->failed = 1;
	}
	dur = r->failed ? -1 : recorder_duration(r);
	free(r);
	return dur;
}
