/*
 * player.h - audio files as a stream of 8 kHz mono samples: WAV (and
 * whatever else libsndfile reads) in PCM or G.711, any common rate, mono
 * or stereo, read from disk one block at a time and resampled with
 * speexdsp. A list of files plays in order, optionally looping.
 */
#ifndef MEDIA_PLAYER_H
#define MEDIA_PLAYER_H

#include <stddef.h>
#include <stdint.h>

struct player;

/* Every file is opened and checked before this returns: a missing,
 * unreadable, non-audio or unsupported one fails with "file: ..." in err
 * and nothing is kept. 0 or a negative errno value. */
int player_open(struct player **out, const char *const *files, int nfiles, int loop,
                char *err, size_t errlen);

/* Up to n samples (n <= PLAYER_MAX_READ); fewer only when the list has
 * ended (0 then on). -1 with err when a file fails on the way (removed
 * after it was checked). */
#define PLAYER_MAX_READ 960
int player_read(struct player *p, int16_t *out, int n, char *err, size_t errlen);

void player_free(struct player *p);

#endif
