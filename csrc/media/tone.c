/*
 * tone.c - tones through spandsp's tone generator (tone_gen): a
 * descriptor made once per tone, the generator state kept until it ends.
 */
#include "tone.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <spandsp/telephony.h>
#include <spandsp/tone_generate.h>

#define RATE 8000
#define DEFAULT_LEVEL (-13)     /* dBm0 per frequency: two make about -10 */

struct tone {
	tone_gen_state_t *gen;
	long left;              /* samples still to give; < 0: no end */
};

struct named {
	const char *name;
	struct tone_spec spec;
};

static const struct named tones[] = {
	{ "ring", { 440, 480, DEFAULT_LEVEL, 2000, 4000, 0 } },
	{ "busy", { 480, 620, DEFAULT_LEVEL, 500, 500, 0 } },
	{ "dial", { 350, 440, DEFAULT_LEVEL, 1000, 0, 0 } },
	{ "beep", { 1000, 0, DEFAULT_LEVEL, 250, 0, 0.25 } },
};

int tone_named(const char *name, struct tone_spec *t)
{
	for (size_t i = 0; i < sizeof tones / sizeof tones[0]; i++) {
		if (!strcmp(tones[i].name, name)) {
			*t = tones[i].spec;
			return 0;
		}
	}
	return -1;
}

int tone_open(struct tone **out, const struct tone_spec *t)
{
	tone_gen_descriptor_t *d;
	struct tone *tn;
	int on = t->on_ms > 0 ? t->on_ms : 1000;

	*out = NULL;
	/* below Nyquist; a cadence section of at most a minute */
	if (t->f1 <= 0 || t->f1 >= RATE / 2 || t->f2 < 0 || t->f2 >= RATE / 2 ||
	    on > 60000 || t->off_ms < 0 || t->off_ms > 60000 || t->level > 3 || t->level < -60)
		return -EINVAL;
	tn = calloc(1, sizeof *tn);
	if (!tn)
		return -ENOMEM;
	/* a steady tone is an on-section repeated without an off-section */
	d = tone_gen_descriptor_init(NULL, t->f1, t->level, t->f2, t->f2 ? t->level : 0,
	                             on, t->off_ms, 0, 0, 1);
	tn->gen = d ? tone_gen_init(NULL, d) : NULL;
	if (d)
		tone_gen_descriptor_free(d);       /* tone_gen_init copied it */
	if (!tn->gen) {
		free(tn);
		return -ENOMEM;
	}
	tn->left = t->duration > 0 ? (long)(t->duration * RATE + 0.5) : -1;
	*out = tn;
	return 0;
}

int tone_read(struct tone *t, int16_t *out, int n)
{
	int got;

	if (t->left >= 0 && n > t->left)
		n = (int)t->left;
	if (n <= 0)
		return 0;
	got = tone_gen(t->gen, out, n);
	/* a repeating cadence never runs dry; keep the frame whole anyway */
	if (got < n)
		memset(out + got, 0, (size_t)(n - got) * sizeof *out);
	if (t->left >= 0)
		t->left -= n;
	return n;
}

void tone_free(struct tone *t)
{
	if (!t)
		return;
	tone_gen_free(t->gen);
	free(t);
}
