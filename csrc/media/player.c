/*
 * player.c - files to 8 kHz mono samples through libsndfile and the
 * speexdsp resampler. Only one block of a file is in memory at a time (a
 * ten-minute prompt costs the same as a short one), and every buffer is
 * allocated when the player opens, none per frame.
 */
#define _POSIX_C_SOURCE 200809L
#include "player.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sndfile.h>
#include <speex/speex_resampler.h>

#define RATE 8000
#define BLOCK 1024              /* frames read from the file at a time */
/* room for a whole read's output on top of what a frame may still need
 * (a block at 8 kHz gives BLOCK samples; the resampler's tail a few more) */
#define FIFO_CAP (4 * BLOCK + PLAYER_MAX_READ)

struct player {
	char **files;
	int nfiles, cur, loop;
	SNDFILE *sf;
	int channels, rate;
	SpeexResamplerState *rs;
	int rs_rate;                    /* the input rate rs was made for */
	int produced;                   /* samples since the list (re)started */
	int done;
	int16_t in[BLOCK * 2];          /* interleaved, at most stereo */
	int16_t mono[BLOCK];
	int16_t fifo[FIFO_CAP];
	int fifo_off, fifo_len;         /* the samples waiting: fifo[off .. off+len) */
};

static int fail(char *err, size_t errlen, int rc, const char *fmt, const char *path,
                const char *why)
{
	snprintf(err, errlen, fmt, path, why);
	return rc;
}

/* the encodings a telephone prompt comes in; libsndfile turns each into
 * 16-bit samples */
static int supported_subtype(int format)
{
	switch (format & SF_FORMAT_SUBMASK) {
	case SF_FORMAT_PCM_S8: case SF_FORMAT_PCM_U8: case SF_FORMAT_PCM_16:
	case SF_FORMAT_PCM_24: case SF_FORMAT_PCM_32: case SF_FORMAT_FLOAT:
	case SF_FORMAT_DOUBLE: case SF_FORMAT_ULAW: case SF_FORMAT_ALAW:
		return 1;
	default:
		return 0;
	}
}

/* open and check one file; *sf is left open on success */
static int open_one(const char *path, SNDFILE **sf, SF_INFO *info, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");

	/* the system's reason for a missing or unreadable file, which
	 * libsndfile words less plainly */
	if (!f)
		return fail(err, errlen, -errno, "file: %s: %s", path, strerror(errno));
	fclose(f);
	memset(info, 0, sizeof *info);
	*sf = sf_open(path, SFM_READ, info);
	if (!*sf)
		return fail(err, errlen, -EINVAL, "file: %s: not a sound file (%s)", path,
		            sf_strerror(NULL));
	if (!supported_subtype(info->format) || info->channels < 1 || info->channels > 2 ||
	    info->samplerate < 4000 || info->samplerate > 192000) {
		char why[96];
		snprintf(why, sizeof why, "unsupported format (%d channels at %d Hz, encoding 0x%x)",
		         info->channels, info->samplerate, (unsigned)(info->format & SF_FORMAT_SUBMASK));
		sf_close(*sf);
		*sf = NULL;
		return fail(err, errlen, -ENOTSUP, "file: %s: %s", path, why);
	}
	if (info->frames <= 0) {
		sf_close(*sf);
		*sf = NULL;
		return fail(err, errlen, -ENODATA, "file: %s: %s", path, "no audio in it");
	}
	return 0;
}

static int start_file(struct player *p, char *err, size_t errlen)
{
	SF_INFO info;
	int rc;

	if (p->sf) {
		sf_close(p->sf);
		p->sf = NULL;
	}
	rc = open_one(p->files[p->cur], &p->sf, &info, err, errlen);
	if (rc)
		return rc;
	p->channels = info.channels;
	p->rate = info.samplerate;
	if (p->rate != RATE && p->rate != p->rs_rate) {
		if (p->rs)
			speex_resampler_destroy(p->rs);
		p->rs = speex_resampler_init(1, (spx_uint32_t)p->rate, RATE,
		                             SPEEX_RESAMPLER_QUALITY_VOIP, &rc);
		if (!p->rs) {
			p->rs_rate = 0;
			snprintf(err, errlen, "file: %s: resampler: %s", p->files[p->cur],
			         speex_resampler_strerror(rc));
			return -ENOMEM;
		}
		p->rs_rate = p->rate;
		/* no leading silence of the filter's length */
		speex_resampler_skip_zeros(p->rs);
	} else if (p->rs && p->rate != RATE) {
		speex_resampler_reset_mem(p->rs);
		speex_resampler_skip_zeros(p->rs);
	}
	return 0;
}

int player_open(struct player **out, const char *const *files, int nfiles, int loop,
                char *err, size_t errlen)
{
	struct player *p;
	size_t bytes = 0;
	char *s;
	int i, rc;

	*out = NULL;
	if (nfiles < 1)
		return fail(err, errlen, -EINVAL, "file: %s%s", "no file given", "");
	for (i = 0; i < nfiles; i++) {
		SNDFILE *sf;
		SF_INFO info;
		rc = open_one(files[i], &sf, &info, err, errlen);
		if (rc)
			return rc;
		sf_close(sf);
		bytes += strlen(files[i]) + 1;
	}
	p = calloc(1, sizeof *p);
	if (!p || !(p->files = malloc((size_t)nfiles * sizeof *p->files + bytes))) {
		free(p);
		return fail(err, errlen, -ENOMEM, "file: %s%s", "out of memory", "");
	}
	/* the names after the pointers, in the same allocation */
	s = (char *)(p->files + nfiles);
	for (i = 0; i < nfiles; i++) {
		size_t n = strlen(files[i]) + 1;
		memcpy(s, files[i], n);
		p->files[i] = s;
		s += n;
	}
	p->nfiles = nfiles;
	p->loop = loop;
	rc = start_file(p, err, errlen);
	if (rc) {
		player_free(p);
		return rc;
	}
	*out = p;
	return 0;
}

/* what still waits goes to the front before more is added: a move of
 * less than a frame once a block, not of the whole FIFO every frame */
static void compact(struct player *p)
{
	if (p->fifo_off) {
		memmove(p->fifo, p->fifo + p->fifo_off, (size_t)p->fifo_len * sizeof *p->fifo);
		p->fifo_off = 0;
	}
}

/* one block of the current file into the FIFO; 0 at its end */
static int fill_block(struct player *p)
{
	sf_count_t got = sf_readf_short(p->sf, p->in, BLOCK);
	int16_t *mono = p->in;

	if (got <= 0)
		return 0;
	compact(p);
	if (p->channels == 2) {
		for (sf_count_t i = 0; i < got; i++)
			p->mono[i] = (int16_t)(((int)p->in[2 * i] + p->in[2 * i + 1]) / 2);
		mono = p->mono;
	}
	if (p->rate == RATE) {
		memcpy(p->fifo + p->fifo_len, mono, (size_t)got * sizeof *mono);
		p->fifo_len += (int)got;
	} else {
		spx_uint32_t in_len = (spx_uint32_t)got;
		spx_uint32_t out_len = (spx_uint32_t)(FIFO_CAP - p->fifo_len);
		speex_resampler_process_int(p->rs, 0, mono, &in_len, p->fifo + p->fifo_len, &out_len);
		p->fifo_len += (int)out_len;
	}
	return 1;
}

/* the resampler's last samples, held back by its filter */
static void drain_resampler(struct player *p)
{
	int lat;

	if (p->rate == RATE || !p->rs)
		return;
	lat = speex_resampler_get_input_latency(p->rs);
	compact(p);
	memset(p->mono, 0, sizeof p->mono);
	while (lat > 0) {
		spx_uint32_t in_len = (spx_uint32_t)(lat < BLOCK ? lat : BLOCK);
		spx_uint32_t out_len = (spx_uint32_t)(FIFO_CAP - p->fifo_len);
		speex_resampler_process_int(p->rs, 0, p->mono, &in_len, p->fifo + p->fifo_len, &out_len);
		p->fifo_len += (int)out_len;
		if (in_len == 0)
			break;
		lat -= (int)in_len;
	}
}

int player_read(struct player *p, int16_t *out, int n, char *err, size_t errlen)
{
	int got;

	if (n > PLAYER_MAX_READ)
		n = PLAYER_MAX_READ;
	while (p->fifo_len < n && !p->done) {
		int before = p->fifo_len;
		if (fill_block(p)) {
			p->produced += p->fifo_len - before;
			continue;
		}
		drain_resampler(p);
		p->produced += p->fifo_len - before;
		if (p->cur + 1 < p->nfiles) {
			p->cur++;
		} else if (p->loop && p->produced > 0) {
			p->cur = 0;
			p->produced = 0;
			/* one file again: rewind it rather than open it anew (a
			 * looping prompt costs no allocation and no open per loop) */
			if (p->nfiles == 1 && sf_seek(p->sf, 0, SEEK_SET) == 0) {
				if (p->rs && p->rate != RATE) {
					speex_resampler_reset_mem(p->rs);
					speex_resampler_skip_zeros(p->rs);
				}
				continue;
			}
		} else {
			p->done = 1;
			break;
		}
		if (start_file(p, err, errlen)) {
			p->done = 1;
			return -1;
		}
	}
	got = p->fifo_len < n ? p->fifo_len : n;
	memcpy(out, p->fifo + p->fifo_off, (size_t)got * sizeof *out);
	p->fifo_len -= got;
	p->fifo_off = p->fifo_len ? p->fifo_off + got : 0;
	return got;
}

void player_free(struct player *p)
{
	if (!p)
		return;
	if (p->sf)
		sf_close(p->sf);
	if (p->rs)
		speex_resampler_destroy(p->rs);
	free(p->files);
	free(p);
}
