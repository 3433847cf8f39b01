/*
 * fuzz_g711.c - the G.711 tables (csrc/media/g711.c) against spandsp's
 * own functions: every 16-bit sample and every code once at start-up,
 * then whatever buffers the fuzzer makes, through the same inline
 * encode/decode loops the sessions and the recorder use.
 */
#include "g711.h"

#include <spandsp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct media_g711 t;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	media_g711_init(&t);
	for (int x = -32768; x <= 32767; x++) {
		int16_t s = (int16_t)x;
		uint8_t u, a;
		media_g711_encode(&t, 0, &u, &s, 1);
		media_g711_encode(&t, 1, &a, &s, 1);
		if (u != linear_to_ulaw(s) || a != linear_to_alaw(s))
			abort();
	}
	for (int i = 0; i < 256; i++) {
		uint8_t c = (uint8_t)i;
		int16_t d;
		media_g711_decode(&t, 0, &d, &c, 1);
		if (d != ulaw_to_linear(c))
			abort();
		media_g711_decode(&t, 1, &d, &c, 1);
		if (d != alaw_to_linear(c))
			abort();
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int16_t pcm[480], back[960];
	uint8_t enc[480];
	int n = (int)(size / 2 > 480 ? 480 : size / 2);
	int alaw = size & 1;

	memcpy(pcm, data, (size_t)n * 2);
	media_g711_encode(&t, alaw, enc, pcm, n);
	for (int i = 0; i < n; i++)
		if (enc[i] != (alaw ? linear_to_alaw(pcm[i]) : linear_to_ulaw(pcm[i])))
			abort();
	n = (int)(size > 960 ? 960 : size);
	media_g711_decode(&t, alaw, back, data, n);
	for (int i = 0; i < n; i++)
		if (back[i] != (alaw ? alaw_to_linear(data[i]) : ulaw_to_linear(data[i])))
			abort();
	return 0;
}
