/*
 * rtp.c - RTP and RTCP packets (RFC 3550 section 5, 6 and appendix A.2).
 * Every length read from a packet is checked against what is left of it
 * before it is used.
 */
#include "rtp.h"

#include <string.h>

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

const char *rtp_strerror(int rc)
{
	switch (rc) {
	case 0: return "ok";
	case RTP_ESHORT: return "short";
	case RTP_EVERSION: return "version";
	case RTP_ECSRC: return "csrc past the end";
	case RTP_EEXT: return "extension past the end";
	case RTP_EPADDING: return "bad padding";
	case RTP_ELENGTH: return "bad length";
	case RTP_EFIRST: return "not led by SR or RR";
	case RTP_EBLOCKS: return "report blocks past the end";
	default: return "invalid";
	}
}

int rtp_parse(const uint8_t *buf, size_t len, struct rtp_packet *p)
{
	size_t off, end = len;

	if (len < RTP_HDR_LEN)
		return RTP_ESHORT;
	if (buf[0] >> 6 != RTP_VERSION)
		return RTP_EVERSION;
	p->cc = buf[0] & 0x0f;
	p->marker = buf[1] >> 7;
	p->pt = buf[1] & 0x7f;
	p->seq = get16(buf + 2);
	p->ts = get32(buf + 4);
	p->ssrc = get32(buf + 8);
	off = RTP_HDR_LEN + 4 * (size_t)p->cc;
	if (off > len)
		return RTP_ECSRC;
	if (buf[0] & 0x10) {
		size_t words;
		/* 16-bit profile id, 16-bit length in words, then the words */
		if (len - off < 4)
			return RTP_EEXT;
		words = get16(buf + off + 2);
		off += 4;
		if (words * 4 > len - off)
			return RTP_EEXT;
		off += words * 4;
	}
	if (buf[0] & 0x20) {
		/* the last octet counts the padding, itself included */
		size_t pad = buf[len - 1];
		if (pad == 0 || pad > len - off)
			return RTP_EPADDING;
		end = len - pad;
	}
	p->payload = buf + off;
	p->payload_len = end - off;
	return 0;
}

void rtp_write_header(uint8_t *buf, const struct rtp_packet *p)
{
	buf[0] = RTP_VERSION << 6;
	buf[1] = (uint8_t)((p->marker ? 0x80 : 0) | (p->pt & 0x7f));
	put16(buf + 2, p->seq);
	put32(buf + 4, p->ts);
	put32(buf + 8, p->ssrc);
}

static void read_blocks(struct rtcp_info *info, const uint8_t *b, unsigned n)
{
	for (unsigned i = 0; i < n && info->nblocks < RTCP_MAX_BLOCKS; i++, b += 24) {
		struct rtcp_block *k = &info->blocks[info->nblocks++];
		uint32_t lost = (uint32_t)b[5] << 16 | (uint32_t)b[6] << 8 | b[7];
		k->ssrc = get32(b);
		k->fraction = b[4];
		/* 24-bit two's complement */
		k->lost = (lost & 0x800000) ? (int32_t)lost - 0x1000000 : (int32_t)lost;
		k->ext_max_seq = get32(b + 8);
		k->jitter = get32(b + 12);
		k->lsr = get32(b + 16);
		k->dlsr = get32(b + 20);
	}
}

/*
 * A compound packet: every part version 2, the first one an SR or RR
 * without padding, and the length fields adding up to the datagram (A.2).
 * Parts of types we do not read (SDES, APP, feedback, XR) are skipped.
 */
int rtcp_parse(const uint8_t *buf, size_t len, struct rtcp_info *info)
{
	size_t off = 0;

	memset(info, 0, sizeof *info);
	if (len < 8)
		return RTP_ESHORT;
	if ((buf[1] != RTCP_SR && buf[1] != RTCP_RR) || (buf[0] & 0x20))
		return RTP_EFIRST;
	while (off < len) {
		const uint8_t *h = buf + off;
		size_t plen, body;
		unsigned count;

		if (len - off < 4)
			return RTP_ELENGTH;
		if (h[0] >> 6 != RTP_VERSION)
			return RTP_EVERSION;
		plen = ((size_t)get16(h + 2) + 1) * 4;
		if (plen > len - off)
			return RTP_ELENGTH;
		body = plen;
		if (h[0] & 0x20) {
			/* padding only in the last part of the compound */
			size_t pad = h[plen - 1];
			if (off + plen != len || pad == 0 || pad > plen - 4)
				return RTP_EPADDING;
			body = plen - pad;
		}
		count = h[0] & 0x1f;
		switch (h[1]) {
		case RTCP_SR:
			if (body < 28 || (body - 28) / 24 < count)
				return RTP_EBLOCKS;
			if (info->npackets == 0) {
				info->ssrc = get32(h + 4);
				info->has_sr = 1;
				info->ntp_sec = get32(h + 8);
				info->ntp_frac = get32(h + 12);
				info->rtp_ts = get32(h + 16);
				info->sender_packets = get32(h + 20);
				info->sender_octets = get32(h + 24);
				read_blocks(info, h + 28, count);
			}
			break;
		case RTCP_RR:
			if (body < 8 || (body - 8) / 24 < count)
				return RTP_EBLOCKS;
			if (info->npackets == 0) {
				info->ssrc = get32(h + 4);
				read_blocks(info, h + 8, count);
			}
			break;
		case RTCP_BYE:
			if ((body - 4) / 4 < count)
				return RTP_EBLOCKS;
			info->bye = 1;
			break;
		default:
			break;
		}
		info->npackets++;
		off += plen;
	}
	return 0;
}

size_t rtcp_build(uint8_t *buf, size_t cap, const struct rtcp_out *o)
{
	size_t cname_len = o->cname ? strlen(o->cname) : 0;
	size_t rlen = (o->sender ? 28 : 8) + (o->has_block ? 24 : 0);
	/* SDES: header, SSRC, CNAME item (type, length, text), an END octet,
	 * padded to a 32-bit boundary */
	size_t slen, blen = o->bye ? 8 : 0;
	uint8_t *p = buf;

	if (cname_len > 255)
		cname_len = 255;
	slen = (8 + 2 + cname_len + 1 + 3) & ~(size_t)3;
	if (cap < rlen + slen + blen)
		return 0;
	memset(buf, 0, rlen + slen + blen);
	p[0] = (uint8_t)(RTP_VERSION << 6 | (o->has_block ? 1 : 0));
	p[1] = o->sender ? RTCP_SR : RTCP_RR;
	put16(p + 2, (uint16_t)(rlen / 4 - 1));
	put32(p + 4, o->ssrc);
	p += 8;
	if (o->sender) {
		put32(p, o->ntp_sec);
		put32(p + 4, o->ntp_frac);
		put32(p + 8, o->rtp_ts);
		put32(p + 12, o->packets);
		put32(p + 16, o->octets);
		p += 20;
	}
	if (o->has_block) {
		const struct rtcp_block *k = &o->block;
		uint32_t lost = (uint32_t)k->lost & 0xffffff;
		/* a negative count (duplicates) clamps as RFC 3550 6.4.1 says */
		if (k->lost > 0x7fffff)
			lost = 0x7fffff;
		else if (k->lost < -0x800000)
			lost = 0x800000;
		put32(p, k->ssrc);
		p[4] = k->fraction;
		p[5] = (uint8_t)(lost >> 16);
		p[6] = (uint8_t)(lost >> 8);
		p[7] = (uint8_t)lost;
		put32(p + 8, k->ext_max_seq);
		put32(p + 12, k->jitter);
		put32(p + 16, k->lsr);
		put32(p + 20, k->dlsr);
		p += 24;
	}
	p[0] = RTP_VERSION << 6 | 1;
	p[1] = RTCP_SDES;
	put16(p + 2, (uint16_t)(slen / 4 - 1));
	put32(p + 4, o->ssrc);
	p[8] = 1;       /* CNAME */
	p[9] = (uint8_t)cname_len;
	if (cname_len)
		memcpy(p + 10, o->cname, cname_len);
	p += slen;      /* the END octet and the padding are the zeros */
	if (o->bye) {
		p[0] = RTP_VERSION << 6 | 1;
		p[1] = RTCP_BYE;
		put16(p + 2, 1);
		put32(p + 4, o->ssrc);
	}
	return rlen + slen + blen;
}
