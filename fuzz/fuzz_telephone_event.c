/*
 * fuzz_telephone_event.c - RFC 4733 telephone events as a media session
 * reads them (csrc/media/dtmf.c). The input is first one payload:
 * dtmf_event_parse on exactly its bytes, and what it accepts built again
 * and parsed back (it must give the same event). Then the input is a
 * stream of packets for the receiver's tracker, each record
 *
 *   flags (bit 0 marker, bit 1 another SSRC), timestamp step (int32,
 *   big-endian), milliseconds since the last packet, payload length,
 *   the payload
 *
 * and the tracker must answer within its contract: a new event, the
 * same one, or a drop reason; the event it reports as latest is the
 * packet's; never more new events than valid packets.
 */
#include "dtmf.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void one_payload(const uint8_t *data, size_t size)
{
	struct dtmf_event ev, back;
	/* a copy of exactly `size` bytes: ASan sees any read past the end */
	uint8_t *buf = malloc(size ? size : 1), out[DTMF_EVENT_LEN];

	if (!buf)
		return;
	if (size)
		memcpy(buf, data, size);
	if (dtmf_event_parse(buf, size, &ev) == 0) {
		if (ev.event > DTMF_MAX_EVENT || ev.volume > 63 || ev.end > 1 ||
		    ev.duration > DTMF_MAX_DURATION || !dtmf_digit(ev.event) ||
		    dtmf_code(dtmf_digit(ev.event)) != (int)ev.event)
			abort();
		dtmf_event_write(out, &ev);
		if (dtmf_event_parse(out, sizeof out, &back) != 0 || back.event != ev.event ||
		    back.end != ev.end || back.volume != ev.volume || back.duration != ev.duration)
			abort();
	}
	free(buf);
}

static void packets(const uint8_t *data, size_t size)
{
	struct dtmf_track t;
	uint32_t ts = 1000, ssrc = 1;
	double now = 0;
	size_t off = 0;
	unsigned valid = 0, news = 0;

	dtmf_track_reset(&t);
	while (size - off >= 7) {
		unsigned flags = data[off];
		uint32_t step = (uint32_t)data[off + 1] << 24 | (uint32_t)data[off + 2] << 16 |
		                (uint32_t)data[off + 3] << 8 | data[off + 4];
		unsigned ms = data[off + 5];
		size_t len = data[off + 6], n;
		struct dtmf_event ev;
		uint8_t *pl;
		int rc;

		off += 7;
		n = len < size - off ? len : size - off;
		pl = malloc(n ? n : 1);
		if (!pl)
			return;
		if (n)
			memcpy(pl, data + off, n);
		off += n;
		ts += step;
		now += ms / 1000.;
		if (flags & 2)
			ssrc++;
		rc = dtmf_event_parse(pl, n, &ev);
		free(pl);
		if (rc != 0) {
			if (rc != DTMF_ESHORT && rc != DTMF_EEVENT)
				abort();
			continue;
		}
		valid++;
		rc = dtmf_track_packet(&t, ssrc, ts, (int)(flags & 1), now, &ev);
		switch (rc) {
		case DTMF_NEW:
			news++;
			/* fall through */
		case DTMF_SAME:
			if (t.cur < 0 || t.cur >= DTMF_TRACK_HISTORY || !t.seen[t.cur].used)
				abort();
			break;
		case DTMF_EBACKWARDS:
		case DTMF_ECHANGED:
			break;
		default:
			abort();
		}
		if (rc == DTMF_NEW && (t.seen[t.cur].ts != ts || t.seen[t.cur].event != ev.event ||
		                       dtmf_track_recent(&t, now, 0) != (int)ev.event))
			abort();
		rc = dtmf_track_recent(&t, now, 1.0);
		if (rc < -1 || rc > DTMF_MAX_EVENT)
			abort();
	}
	if (news > valid)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	one_payload(data, size);
	packets(data, size);
	return 0;
}
