/*
 * fuzz_rtp.c - RTP and RTCP datagrams as a media session reads them
 * (csrc/media/rtp.c): rtp_parse and rtcp_parse on whatever arrives on
 * the media ports, every byte they point at read, and what they accept
 * built again and parsed back (it must parse).
 */
#include "rtp.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile unsigned sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rtp_packet p;
	struct rtcp_info info;
	/* a copy of exactly `size` bytes: ASan sees any read past the end */
	uint8_t *buf = malloc(size ? size : 1);

	if (!buf)
		return 0;
	if (size)
		memcpy(buf, data, size);
	if (rtp_parse(buf, size, &p) == 0) {
		uint8_t out[RTP_HDR_LEN + 64];
		struct rtp_packet q;
		size_t n = p.payload_len < 64 ? p.payload_len : 64;

		for (size_t i = 0; i < p.payload_len; i++)
			sink += p.payload[i];
		rtp_write_header(out, &p);
		memcpy(out + RTP_HDR_LEN, p.payload, n);
		if (rtp_parse(out, RTP_HDR_LEN + n, &q) != 0 || q.seq != p.seq || q.ts != p.ts ||
		    q.ssrc != p.ssrc || q.pt != p.pt || q.marker != p.marker || q.payload_len != n)
			abort();
	}
	if (rtcp_parse(buf, size, &info) == 0) {
		uint8_t out[512];
		struct rtcp_out o;
		struct rtcp_info back;
		size_t n;

		memset(&o, 0, sizeof o);
		o.ssrc = info.ssrc;
		o.sender = info.has_sr;
		o.rtp_ts = info.rtp_ts;
		o.has_block = info.nblocks > 0;
		if (o.has_block)
			o.block = info.blocks[0];
		o.cname = "fuzz@example.invalid";
		o.bye = info.bye;
		n = rtcp_build(out, sizeof out, &o);
		if (n == 0 || rtcp_parse(out, n, &back) != 0 || back.ssrc != info.ssrc ||
		    back.bye != info.bye || back.nblocks != (o.has_block ? 1 : 0) ||
		    (o.has_block && back.blocks[0].lost != info.blocks[0].lost))
			abort();
	}
	free(buf);
	return 0;
}
