/*
 * prompt.h - prompts decoded once and shared: the engine keeps each
 * short file (60 s at most) as its G.711 payload, in both laws, and every
 * session playing it reads the same bytes. A thousand callers hearing
 * one greeting cost one copy of it, no decoding, no resampling and no
 * encoding per packet: a packet's payload is a copy (as SIPp's
 * rtp_stream sends from memory). Longer files stream through player.c.
 */
#ifndef MEDIA_PROMPT_H
#define MEDIA_PROMPT_H

#include <stddef.h>
#include <stdint.h>

struct media_g711;
struct media_prompt;

/* the engine's prompts; unused ones are kept up to PROMPT_CACHE_BYTES */
struct prompt_cache {
	struct media_prompt *head;      /* most recently used first */
	size_t bytes;
};

/* a list of prompts played in order, optionally looping */
struct prompt_play;

/* Every file decoded (or found decoded and unchanged on disk): 0, or a
 * negative errno value when one cannot be (too long, unreadable, not
 * audio): the caller then streams the list through player.c, which says
 * why in its own words. */
int prompt_play_open(struct prompt_cache *c, const struct media_g711 *law,
                     struct prompt_play **out, const char *const *files, int nfiles, int loop);

/* up to n payload bytes of the law (alaw 1: PCMA); fewer only at the end */
int prompt_play_read(struct prompt_play *pp, int alaw, uint8_t *out, int n);

void prompt_play_free(struct prompt_cache *c, struct prompt_play *pp);
void prompt_cache_free(struct prompt_cache *c);

#endif
