/*
 * dtmf_in.c - the digits a session hears: RFC 4733 telephone events
 * (dtmf.c counts each event once) and, for a session with inband on,
 * spandsp's DTMF receiver on the decoded G.711 audio. Each key press goes
 * to the digit callback once, then ends a play started with barge. A
 * session with inband off decodes nothing and has no detector.
 */
#include "media_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define DEDUP 0.3       /* s: the same key by the other method within this is the same press */
#define DECODE_CHUNK 160

int media_dtmf_inband_on(const struct media_session *s)
{
	return s->din.inband < 0 ? s->te_pt < 0 : s->din.inband;
}

static void digit_in(struct media_session *s, char digit, int source)
{
	s->st.dtmf_received++;
	/* the digit is queued for its reader before the barge wakes the
	 * play's: a collect after the play finds it */
	if (s->digit && s->digit(s->arg, digit, source) != 0)
		s->st.dtmf_dropped++;
	media_session_barge(s, digit);
}

void media_dtmf_event_in(struct media_session *s, const struct rtp_packet *p, double now)
{
	struct dtmf_event ev;
	int rc;

	if (!s->din.rfc4733)
		return;
	rc = dtmf_event_parse(p->payload, p->payload_len, &ev);
	if (rc == 0)
		rc = dtmf_track_packet(&s->din.track, p->ssrc, p->ts, (int)p->marker, now, &ev);
	if (rc < 0) {
		s->st.dtmf_invalid++;
		return;
	}
	if (rc != DTMF_NEW)
		return;
	/* a peer that sends the tones too: the press was heard inband */
	if (media_dtmf_inband_on(s) && s->din.last_inband == (int)ev.event &&
	    now - s->din.last_inband_at < DEDUP)
		return;
	digit_in(s, dtmf_digit(ev.event), MEDIA_DTMF_RFC4733);
}

/* spandsp reports a digit as soon as its tone is confirmed (two blocks of
 * about 13 ms agree), not at its end */
static void inband_digits(void *user, const char *digits, int len)
{
	struct media_session *s = user;

	for (int i = 0; i < len; i++) {
		int code = dtmf_code(digits[i]);
		if (code < 0)
			continue;
		s->din.last_inband = code;
		s->din.last_inband_at = s->din.now;
		if (s->din.rfc4733 && dtmf_track_recent(&s->din.track, s->din.now, DEDUP) == code)
			continue;
		digit_in(s, digits[i], MEDIA_DTMF_INBAND);
	}
}

void media_dtmf_audio_in(struct media_session *s, const struct rtp_packet *p, double now)
{
	int16_t pcm[DECODE_CHUNK];
	size_t off;

	if (!media_dtmf_inband_on(s))
		return;
	if (!s->din.det) {
		/* once per session, on the first audio it hears */
		s->din.det = dtmf_rx_init(NULL, inband_digits, s);
		if (!s->din.det)
			return;
	}
	s->din.now = now;
	for (off = 0; off < p->payload_len; off += DECODE_CHUNK) {
		size_t n = p->payload_len - off;
		if (n > DECODE_CHUNK)
			n = DECODE_CHUNK;
		media_g711_decode(&s->m->law, p->pt == MEDIA_PCMA, pcm, p->payload + off, (int)n);
		dtmf_rx(s->din.det, pcm, (int)n);
	}
}

void media_session_dtmf_config(struct media_session *s, int rfc4733, int inband)
{
	if (rfc4733 >= 0)
		s->din.rfc4733 = rfc4733 != 0;
	if (inband >= 0)
		s->din.inband = inband != 0;
}

void media_session_dtmf_state(const struct media_session *s, int *rfc4733, int *inband)
{
	*rfc4733 = s->din.rfc4733;
	*inband = media_dtmf_inband_on(s);
}

int media_session_set_local_te_pt(struct media_session *s, int pt, char *err, size_t errlen)
{
	if (pt > 127 || pt == MEDIA_PCMU || pt == MEDIA_PCMA || (pt >= 0 && pt == s->pt)) {
		snprintf(err, errlen, "telephone-event payload type %d: not 0..127, or an audio one", pt);
		return -EINVAL;
	}
	s->din.local_te_pt = pt < 0 ? -1 : pt;
	return 0;
}

int media_session_dtmf_pt(const struct media_session *s)
{
	return s->te_pt;
}
