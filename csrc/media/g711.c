/*
 * g711.c - the G.711 tables of g711.h, filled from spandsp's functions.
 */
#include "g711.h"

#include <spandsp.h>

void media_g711_init(struct media_g711 *t)
{
	for (int i = 0; i < (1 << 16); i++) {
		t->ulaw[i] = linear_to_ulaw((int16_t)(uint16_t)i);
		t->alaw[i] = linear_to_alaw((int16_t)(uint16_t)i);
	}
	for (int i = 0; i < 256; i++) {
		t->ulaw_dec[i] = ulaw_to_linear((uint8_t)i);
		t->alaw_dec[i] = alaw_to_linear((uint8_t)i);
	}
}
