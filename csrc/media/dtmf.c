/*
 * dtmf.c - RFC 4733 telephone events: the payload (section 2.3), the
 * digits of events 0-15 (section 3.2), and what a receiver keeps to
 * count each event once (section 2.5.2): its timestamp is its identity,
 * its end packets come three times, its start or its end may be lost.
 */
#include "dtmf.h"

#include <string.h>

#define LONG_SLACK 2400         /* timestamp units a long event's segments may miss by */

static const char digits[] = "0123456789*#ABCD";

const char *dtmf_strerror(int rc)
{
	switch (rc) {
	case DTMF_ESHORT: return "short";
	case DTMF_EEVENT: return "event out of range";
	case DTMF_EBACKWARDS: return "duration went backwards";
	case DTMF_ECHANGED: return "event changed within an event";
	default: return "ok";
	}
}

int dtmf_event_parse(const uint8_t *p, size_t len, struct dtmf_event *ev)
{
	if (len < DTMF_EVENT_LEN)
		return DTMF_ESHORT;
	ev->event = p[0];
	ev->end = p[1] >> 7;
	ev->volume = p[1] & 0x3f;      /* the R bit (0x40) is reserved: ignored */
	ev->duration = (unsigned)p[2] << 8 | p[3];
	if (ev->event > DTMF_MAX_EVENT)
		return DTMF_EEVENT;
	return 0;
}

void dtmf_event_write(uint8_t *p, const struct dtmf_event *ev)
{
	p[0] = (uint8_t)ev->event;
	p[1] = (uint8_t)((ev->end ? 0x80 : 0) | (ev->volume & 0x3f));
	p[2] = (uint8_t)(ev->duration >> 8);
	p[3] = (uint8_t)ev->duration;
}

char dtmf_digit(unsigned event)
{
	return event <= DTMF_MAX_EVENT ? digits[event] : 0;
}

int dtmf_code(char digit)
{
	const char *p;

	if (!digit)
		return -1;
	p = strchr(digits, digit);
	return p ? (int)(p - digits) : -1;
}

void dtmf_track_reset(struct dtmf_track *t)
{
	memset(t, 0, sizeof *t);
	t->cur = -1;
}

/* slot i holds the latest event from now on; the one before has ended
 * (its end packets may all have been lost) */
static void take(struct dtmf_track *t, int i, uint32_t ts, double now, const struct dtmf_event *ev)
{
	struct dtmf_seen *s = &t->seen[i];

	if (t->cur >= 0)
		t->seen[t->cur].ended = 1;
	s->used = 1;
	s->ts = ts;
	s->event = ev->event;
	s->duration = ev->duration;
	s->ended = ev->end != 0;
	s->last = now;
	t->cur = i;
}

static int next_slot(const struct dtmf_track *t)
{
	return t->cur < 0 ? 0 : (t->cur + 1) % DTMF_TRACK_HISTORY;
}

int dtmf_track_packet(struct dtmf_track *t, uint32_t ssrc, uint32_t ts, int marker,
                      double now, const struct dtmf_event *ev)
{
	struct dtmf_seen *cur;
	int i;

	if (!t->have_ssrc || t->ssrc != ssrc) {
		/* another source: nothing it sent before is known */
		dtmf_track_reset(t);
		t->have_ssrc = 1;
		t->ssrc = ssrc;
	}
	for (i = 0; i < DTMF_TRACK_HISTORY; i++) {
		struct dtmf_seen *h = &t->seen[i];
		int idle, startlike;

		if (!h->used || h->ts != ts)
			continue;
		idle = now - h->last > DTMF_GAP;
		if (h->event != ev->event) {
			/* a sender that reuses its timestamp for the next digit,
			 * once the one before is over; else a malformed event */
			if (!h->ended && !idle)
				return DTMF_ECHANGED;
			take(t, i, ts, now, ev);
			return DTMF_NEW;
		}
		startlike = ev->duration < h->duration || (h->ended && !ev->end);
		if (startlike && (idle || (h->ended && marker && !ev->end))) {
			take(t, i, ts, now, ev);
			return DTMF_NEW;
		}
		if (ev->duration < h->duration)
			return DTMF_EBACKWARDS;
		h->duration = ev->duration;
		h->last = now;
		if (ev->end)
			h->ended = 1;
		return DTMF_SAME;
	}
	cur = t->cur >= 0 ? &t->seen[t->cur] : NULL;
	if (cur && !cur->ended && cur->event == ev->event && now - cur->last <= DTMF_GAP &&
	    cur->duration + LONG_SLACK >= DTMF_MAX_DURATION) {
		/* the next segment of an event longer than the duration field
		 * holds starts where the last one reached: the same key still */
		uint32_t d = ts - cur->ts;
		if (d + LONG_SLACK >= DTMF_MAX_DURATION && d <= DTMF_MAX_DURATION + LONG_SLACK) {
			take(t, next_slot(t), ts, now, ev);
			return DTMF_SAME;
		}
	}
	take(t, next_slot(t), ts, now, ev);
	return DTMF_NEW;
}

int dtmf_track_recent(const struct dtmf_track *t, double now, double window)
{
	const struct dtmf_seen *cur;

	if (t->cur < 0)
		return -1;
	cur = &t->seen[t->cur];
	return now - cur->last <= window ? (int)cur->event : -1;
}
