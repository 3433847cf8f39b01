/*
 * tone.h - call progress tones and beeps as 8 kHz samples, through
 * spandsp's cadenced tone generator.
 */
#ifndef MEDIA_TONE_H
#define MEDIA_TONE_H

#include <stdint.h>

struct tone_spec {
	int f1, f2;             /* Hz; f2 0 for a single frequency */
	int level;              /* dBm0 of each frequency */
	int on_ms, off_ms;      /* cadence; off 0: steady */
	double duration;        /* seconds; <= 0: until stopped */
};

/* "ring", "busy", "dial", "beep" (North American values); -1 if unknown */
int tone_named(const char *name, struct tone_spec *t);

struct tone;

/* 0 or a negative errno value (-EINVAL for frequencies or a cadence out
 * of range, -ENOMEM) */
int tone_open(struct tone **out, const struct tone_spec *t);
/* up to n samples; fewer only at the end of its duration */
int tone_read(struct tone *t, int16_t *out, int n);
void tone_free(struct tone *t);

#endif
