/*
 * g711.h - G.711 through tables built from spandsp's codec.
 *
 * spandsp's g711_encode runs its branchy per-sample conversion behind a
 * call per buffer: about 25 instructions a sample, most of the CPU of a
 * playing stream (callgrind). The tables are spandsp's own results for
 * every 16-bit sample and every code, computed once per media engine
 * (128 KiB): encoding and decoding are one load a sample, no branch.
 */
#ifndef MEDIA_G711_H
#define MEDIA_G711_H

#include <stdint.h>

struct media_g711 {
	uint8_t ulaw[1 << 16];          /* by the sample's 16 bits */
	uint8_t alaw[1 << 16];
	int16_t ulaw_dec[256];
	int16_t alaw_dec[256];
};

void media_g711_init(struct media_g711 *t);

static inline void media_g711_encode(const struct media_g711 *t, int alaw, uint8_t *dst,
                                     const int16_t *src, int n)
{
	const uint8_t *e = alaw ? t->alaw : t->ulaw;

	for (int i = 0; i < n; i++)
		dst[i] = e[(uint16_t)src[i]];
}

static inline void media_g711_decode(const struct media_g711 *t, int alaw, int16_t *dst,
                                     const uint8_t *src, int n)
{
	const int16_t *d = alaw ? t->alaw_dec : t->ulaw_dec;

	for (int i = 0; i < n; i++)
		dst[i] = d[src[i]];
}

#endif
