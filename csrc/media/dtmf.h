/*
 * dtmf.h - DTMF as RFC 4733 telephone events: the 4-byte payload parsed
 * and built, the digits and their event codes, and the receiver's
 * tracking of events across packets (one digit per event, whatever the
 * retransmissions). No sockets, no spandsp, no allocation: the fuzz
 * target links this file alone.
 */
#ifndef MEDIA_DTMF_H
#define MEDIA_DTMF_H

#include <stddef.h>
#include <stdint.h>

#define DTMF_EVENT_LEN 4        /* event, E|R|volume, duration */
#define DTMF_MAX_EVENT 15       /* 0-9 * # A-D; flash (16) and the rest are not digits */
#define DTMF_MAX_DURATION 0xffff

enum dtmf_error {
	DTMF_ESHORT = -1,       /* fewer than 4 bytes */
	DTMF_EEVENT = -2,       /* an event code above 15 */
	DTMF_EBACKWARDS = -3,   /* the duration went down within one event */
	DTMF_ECHANGED = -4,     /* another code on the timestamp of an event still running */
};

/* a short text for a drop reason ("short", "event", ...) */
const char *dtmf_strerror(int rc);

struct dtmf_event {
	unsigned event;         /* 0..15 once parsed */
	unsigned end;           /* the E bit */
	unsigned volume;        /* 0..63: -dBm0 */
	unsigned duration;      /* timestamp units since the event began */
};

/* The first event of a payload (more, packed after it, are not read).
 * 0 or DTMF_ESHORT / DTMF_EEVENT; never reads past len. */
int dtmf_event_parse(const uint8_t *p, size_t len, struct dtmf_event *ev);
/* writes DTMF_EVENT_LEN bytes */
void dtmf_event_write(uint8_t *p, const struct dtmf_event *ev);

/* '0'..'9', '*', '#', 'A'..'D' for events 0..15, else 0 */
char dtmf_digit(unsigned event);
/* the event code of a digit (upper case only), or -1 */
int dtmf_code(char digit);

#define DTMF_TRACK_HISTORY 4    /* events remembered: late packets of these are not new */
#define DTMF_GAP 0.3            /* seconds without a packet that end an event */

struct dtmf_seen {
	int used;
	uint32_t ts;            /* the event's identity (its start) */
	unsigned event, duration;
	int ended;              /* E seen, or ended by a later event */
	double last;            /* when its last packet came */
};

struct dtmf_track {
	int have_ssrc;
	uint32_t ssrc;
	int cur;                /* the latest event in seen[], -1: none */
	struct dtmf_seen seen[DTMF_TRACK_HISTORY];
};

enum { DTMF_SAME = 0, DTMF_NEW = 1 };

void dtmf_track_reset(struct dtmf_track *t);

/*
 * One parsed telephone-event packet (RTP ssrc, timestamp, marker, arrival
 * time in seconds). DTMF_NEW for the first packet of an event (its digit
 * is counted), DTMF_SAME for a later packet or a retransmission of one,
 * or DTMF_EBACKWARDS / DTMF_ECHANGED for a packet to drop. An event is
 * its timestamp: a new timestamp starts a new event and ends the one
 * before (its end packets may all be lost); the same timestamp starts a
 * new event only after DTMF_GAP seconds of nothing, or with the marker
 * once the event ended, and only when the packet looks like a start (a
 * shorter duration, or no E bit after the end). A segment of an event
 * longer than DTMF_MAX_DURATION (RFC 4733's long-duration events)
 * continues it.
 */
int dtmf_track_packet(struct dtmf_track *t, uint32_t ssrc, uint32_t ts, int marker,
                      double now, const struct dtmf_event *ev);

/* the code of the latest event if a packet of it came within `window`
 * seconds of now, else -1 */
int dtmf_track_recent(const struct dtmf_track *t, double now, double window);

#endif
