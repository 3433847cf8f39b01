/*
 * rtp.h - RTP and RTCP packets (RFC 3550): parse and build, nothing else.
 *
 * The parsers never read past `len` and never allocate: a parsed packet
 * points into the caller's buffer. They return 0 or a negative RTP_E*
 * code naming why a packet was dropped, so the session can count drops
 * by reason.
 */
#ifndef MEDIA_RTP_H
#define MEDIA_RTP_H

#include <stddef.h>
#include <stdint.h>

#define RTP_VERSION 2
#define RTP_HDR_LEN 12

enum rtp_error {
	RTP_ESHORT = -1,        /* shorter than its fixed header */
	RTP_EVERSION = -2,      /* version is not 2 */
	RTP_ECSRC = -3,         /* the CSRC list runs past the end */
	RTP_EEXT = -4,          /* the header extension runs past the end */
	RTP_EPADDING = -5,      /* a padding count of 0 or past the payload */
	RTP_ELENGTH = -6,       /* RTCP: a length field that does not add up */
	RTP_EFIRST = -7,        /* RTCP: a compound packet not led by SR or RR */
	RTP_EBLOCKS = -8,       /* RTCP: more report blocks than the packet holds */
};

/* a short text for a drop reason ("short", "version", ...) */
const char *rtp_strerror(int rc);

struct rtp_packet {
	unsigned marker;        /* 0 or 1 */
	unsigned pt;            /* payload type, 0..127 */
	uint16_t seq;
	uint32_t ts;
	uint32_t ssrc;
	unsigned cc;            /* CSRC count (the list itself is skipped) */
	const uint8_t *payload; /* inside the parsed buffer; padding removed */
	size_t payload_len;
};

int rtp_parse(const uint8_t *buf, size_t len, struct rtp_packet *p);
/* writes the 12-byte fixed header (no CSRC, no extension) */
void rtp_write_header(uint8_t *buf, const struct rtp_packet *p);

enum rtcp_type { RTCP_SR = 200, RTCP_RR = 201, RTCP_SDES = 202, RTCP_BYE = 203, RTCP_APP = 204 };

struct rtcp_block {
	uint32_t ssrc;          /* the source this block reports on */
	uint8_t fraction;       /* fraction lost, /256 */
	int32_t lost;           /* cumulative lost (24-bit, signed) */
	uint32_t ext_max_seq;
	uint32_t jitter;        /* timestamp units */
	uint32_t lsr, dlsr;     /* last SR (middle NTP bits), delay since (1/65536 s) */
};

#define RTCP_MAX_BLOCKS 4       /* blocks kept from one packet; more are skipped */

/* what a compound RTCP packet said */
struct rtcp_info {
	uint32_t ssrc;          /* sender of the leading SR/RR */
	int has_sr;
	uint32_t ntp_sec, ntp_frac, rtp_ts, sender_packets, sender_octets;
	int nblocks;
	struct rtcp_block blocks[RTCP_MAX_BLOCKS];
	int bye;                /* a BYE was in it */
	int npackets;           /* packets in the compound */
};

int rtcp_parse(const uint8_t *buf, size_t len, struct rtcp_info *info);

/* a compound packet to send: SR (sender) or RR, SDES CNAME, optional BYE */
struct rtcp_out {
	uint32_t ssrc;
	int sender;
	uint32_t ntp_sec, ntp_frac, rtp_ts, packets, octets;
	int has_block;
	struct rtcp_block block;
	const char *cname;      /* at most 255 bytes are used */
	int bye;
};

/* the packet's length, or 0 when cap is too small */
size_t rtcp_build(uint8_t *buf, size_t cap, const struct rtcp_out *o);

#endif
