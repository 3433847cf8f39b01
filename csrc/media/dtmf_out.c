/*
 * dtmf_out.c - digits a session sends, paced by the engine's 20 ms tick
 * (no timer of its own, nothing allocated per packet):
 *
 * RFC 4733 events: one event per digit on the negotiated payload type,
 * every packet of it with the timestamp of its start and the marker on
 * the first; the duration grows by 160 each tick until the digit's
 * duration, then three end packets (E bit) with the final duration, one
 * a tick, then the gap. Audio frames wait meanwhile (the prompt resumes
 * where it was, as a new talkspurt); the RTP clock runs on, so the
 * events and the audio after them sit where they were sent in time.
 *
 * Inband: spandsp's DTMF generator, each digit its duration of tone then
 * its gap of silence, sent as the session's audio frames in place of
 * what the output plays.
 */
#include "media_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define END_PACKETS 3

static uint32_t event_ts(const struct dtmf_out *o)
{
	return o->t0 + (uint32_t)o->ev_tick * MEDIA_TICK_SAMPLES;
}

static void send_event(struct media_session *s, unsigned duration, int end, int marker)
{
	struct dtmf_out *o = &s->dout;
	struct rtp_packet p;
	struct dtmf_event ev;

	if (!media_can_send(s) || s->te_pt < 0)
		return;         /* on hold: the clock runs, nothing goes out */
	memset(&p, 0, sizeof p);
	p.marker = (unsigned)marker;
	p.pt = (unsigned)s->te_pt;
	p.seq = s->seq;
	p.ts = event_ts(o);
	p.ssrc = s->ssrc;
	rtp_write_header(s->pkt, &p);
	ev.event = (unsigned)dtmf_code(o->digits[o->i]);
	ev.end = (unsigned)end;
	ev.volume = (unsigned)o->volume;
	ev.duration = duration;
	dtmf_event_write(s->pkt + RTP_HDR_LEN, &ev);
	media_send_packet(s, RTP_HDR_LEN + DTMF_EVENT_LEN, DTMF_EVENT_LEN);
}

void media_dtmf_events_tick(struct media_session *s, double now)
{
	struct dtmf_out *o = &s->dout;
	unsigned full = (unsigned)o->dur_ms * (MEDIA_RATE / 1000);

	(void)now;
	if (s->te_pt < 0) {
		/* a re-INVITE took telephone-event away */
		media_dtmf_finish(s, 0, "dtmf: no telephone-event negotiated");
		return;
	}
	if (o->i < o->n && o->tick >= o->ev_tick) {
		int k = o->tick - o->ev_tick;
		unsigned dur = (unsigned)(k + 1) * MEDIA_TICK_SAMPLES;
		int end = dur >= full;

		if (end)
			dur = full;
		send_event(s, dur, end, k == 0);
		if (end && ++o->ends == END_PACKETS) {
			/* the next event starts a gap after this one's end, and
			 * not before its end packets are out */
			int next = (o->dur_ms + o->gap_ms + MEDIA_TICK_MS - 1) / MEDIA_TICK_MS;
			if (next < k + 1)
				next = k + 1;
			o->ev_tick += next;
			o->ends = 0;
			o->i++;
			s->st.dtmf_sent++;
		}
	}
	o->tick++;
	if (o->i >= o->n && o->tick >= o->ev_tick)
		media_dtmf_finish(s, 1, NULL);
}

void media_dtmf_inband_frame(struct media_session *s, double now)
{
	struct dtmf_out *o = &s->dout;
	int n = s->frame, got = 0;

	/* one digit at a time into the generator, the next when it runs dry */
	while (got < n) {
		int k = dtmf_tx(o->gen, s->pcm + got, n - got);
		if (k > 0) {
			got += k;
			continue;
		}
		if (o->i >= o->n)
			break;
		dtmf_tx_put(o->gen, &o->digits[o->i++], 1);
	}
	o->samples += got;
	if (got > 0) {
		if (got < n)
			memset(s->pcm + got, 0, (size_t)(n - got) * sizeof *s->pcm);
		media_send_pcm(s, n, now);
	}
	if (got < n)
		media_dtmf_finish(s, 1, NULL);
}

void media_dtmf_finish(struct media_session *s, int ok, const char *reason)
{
	struct dtmf_out *o = &s->dout;
	struct media_result r;

	if (o->mode == DTMF_OUT_NONE)
		return;
	if (o->mode == DTMF_OUT_EVENTS) {
		double now = s->m->loop ? ev_now(s->m->loop) : 0;

		if (o->i < o->n && o->tick > o->ev_tick) {
			/* cut short in an event: it still ends, or the peer
			 * would hear the key held until its own timeout */
			unsigned full = (unsigned)o->dur_ms * (MEDIA_RATE / 1000);
			unsigned dur = (unsigned)(o->tick - o->ev_tick) * MEDIA_TICK_SAMPLES;
			if (dur > full)
				dur = full;
			for (; o->ends < END_PACKETS; o->ends++)
				send_event(s, dur, 1, 0);
		}
		/* the audio resumes where the clock is, as a new talkspurt,
		 * its first frame on the next tick */
		s->ts = o->t0 + (uint32_t)o->tick * MEDIA_TICK_SAMPLES;
		s->spurt = 1;
		s->last_sent = now + MEDIA_TICK - (double)s->frame / MEDIA_RATE;
		s->credit = s->ptime - MEDIA_TICK_MS;
	} else {
		long per = (long)(o->dur_ms + o->gap_ms) * (MEDIA_RATE / 1000);
		long done = ok ? o->n : (per > 0 ? o->samples / per : 0);
		s->st.dtmf_sent += (uint64_t)(done < o->n ? done : o->n);
	}
	o->mode = DTMF_OUT_NONE;
	media_tick_update(s);
	memset(&r, 0, sizeof r);
	r.op = MEDIA_DTMF;
	r.ok = ok;
	r.reason = reason;
	media_done(s, &r);
}

int media_session_send_dtmf(struct media_session *s, const char *digits, size_t n,
                            const struct media_dtmf_opts *opt, char *err, size_t errlen)
{
	struct dtmf_out *o = &s->dout;

	if (n < 1 || n > MEDIA_DTMF_MAX) {
		snprintf(err, errlen, "dtmf: 1 to %d digits", MEDIA_DTMF_MAX);
		return -EINVAL;
	}
	for (size_t i = 0; i < n; i++) {
		if (dtmf_code(digits[i]) < 0) {
			snprintf(err, errlen, "dtmf: '%c' is not a digit (0-9, *, #, A-D)", digits[i]);
			return -EINVAL;
		}
	}
	if (opt->duration < 20 || opt->duration > 8000 || opt->gap < 0 || opt->gap > 10000 ||
	    opt->volume < 0 || opt->volume > 63) {
		snprintf(err, errlen, "dtmf: duration 20..8000 ms, gap 0..10000 ms, volume 0..63");
		return -EINVAL;
	}
	if (!opt->inband && s->te_pt < 0) {
		snprintf(err, errlen, "dtmf: no telephone-event negotiated");
		return -ENOTSUP;
	}
	if (opt->inband && !o->gen) {
		o->gen = dtmf_tx_init(NULL);
		if (!o->gen) {
			snprintf(err, errlen, "dtmf: out of memory");
			return -ENOMEM;
		}
	}
	media_dtmf_finish(s, 0, "stopped");
	memcpy(o->digits, digits, n);
	o->n = (int)n;
	o->i = 0;
	o->dur_ms = opt->duration;
	o->gap_ms = opt->gap;
	o->volume = opt->volume;
	if (opt->inband) {
		/* what a send cut short left in the generator is gone */
		dtmf_tx_init(o->gen);
		dtmf_tx_set_level(o->gen, -opt->volume, 0);
		dtmf_tx_set_timing(o->gen, opt->duration, opt->gap);
		o->samples = 0;
		o->mode = DTMF_OUT_INBAND;
		media_tick_begin(s);
	} else {
		o->mode = DTMF_OUT_EVENTS;
		/* idle: the clock is brought up to now; playing: the events
		 * start where the next audio frame would */
		media_tick_begin(s);
		o->t0 = s->ts;
		o->tick = 0;
		o->ev_tick = 0;
		o->ends = 0;
	}
	return 0;
}
