/*
 * prompt.c - prompts decoded once per engine and shared (prompt.h).
 */
#define _POSIX_C_SOURCE 200809L
#include "prompt.h"
#include "g711.h"
#include "player.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sndfile.h>

#define PROMPT_MAX_SAMPLES (60 * 8000)          /* longer files stream */
#define PROMPT_CACHE_BYTES (32u * 1024 * 1024)  /* kept while unused */

struct media_prompt {
	struct media_prompt *next;
	char *path;
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
	int refs;
	int stale;                      /* the file changed: freed at its last release */
	size_t n;                       /* samples */
	uint8_t *law[2];                /* PCMU, PCMA payload; one allocation */
};

struct prompt_play {
	int n, cur, loop, done;
	size_t off;                     /* in the current prompt */
	size_t produced;                /* bytes since the list (re)started */
	struct media_prompt *p[];
};

static void prompt_free(struct media_prompt *p)
{
	free(p->law[0]);
	free(p->path);
	free(p);
}

static void unlink_prompt(struct prompt_cache *c, struct media_prompt *p)
{
	struct media_prompt **pp;

	for (pp = &c->head; *pp; pp = &(*pp)->next)
		if (*pp == p) {
			*pp = p->next;
			c->bytes -= 2 * p->n;
			return;
		}
}

/* the least recently used unused ones go while over the budget */
static void trim(struct prompt_cache *c)
{
	while (c->bytes > PROMPT_CACHE_BYTES) {
		struct media_prompt **victim = NULL, **q, *p;
		for (q = &c->head; *q; q = &(*q)->next)
			if ((*q)->refs == 0)
				victim = q;     /* the last such: the least recent */
		if (!victim)
			return;
		p = *victim;
		*victim = p->next;
		c->bytes -= 2 * p->n;
		prompt_free(p);
	}
}

/* decode the whole file through a player (the same samples it would
 * stream: resampled, stereo folded, the resampler's tail drained) */
static struct media_prompt *load(const char *path, const struct stat *st,
                                 const struct media_g711 *law)
{
	struct media_prompt *p;
	struct player *pl;
	SF_INFO info;
	SNDFILE *sf;
	int16_t buf[PLAYER_MAX_READ];
	const char *one[1] = { path };
	size_t cap, n = 0;
	char err[256];
	int got;

	memset(&info, 0, sizeof info);
	if (!(sf = sf_open(path, SFM_READ, &info)))
		return NULL;
	sf_close(sf);
	if (info.frames <= 0 || info.samplerate <= 0 ||
	    (double)info.frames * 8000. / info.samplerate > PROMPT_MAX_SAMPLES)
		return NULL;
	/* the resampler may give a few samples more than the ratio */
	cap = (size_t)((double)info.frames * 8000. / info.samplerate) + 2 * PLAYER_MAX_READ;
	if (player_open(&pl, one, 1, 0, err, sizeof err))
		return NULL;
	p = calloc(1, sizeof *p);
	if (p) {
		p->law[0] = malloc(2 * cap);
		p->path = strdup(path);
	}
	if (!p || !p->law[0] || !p->path) {
		if (p)
			prompt_free(p);
		player_free(pl);
		return NULL;
	}
	p->law[1] = p->law[0] + cap;
	while ((got = player_read(pl, buf, PLAYER_MAX_READ, err, sizeof err)) > 0) {
		if (n + (size_t)got > cap) {
			got = (int)(cap - n);
			if (got <= 0)
				break;
		}
		media_g711_encode(law, 0, p->law[0] + n, buf, got);
		media_g711_encode(law, 1, p->law[1] + n, buf, got);
		n += (size_t)got;
	}
	player_free(pl);
	if (got < 0 || n == 0) {
		prompt_free(p);
		return NULL;
	}
	p->n = n;
	p->dev = st->st_dev;
	p->ino = st->st_ino;
	p->size = st->st_size;
	p->mtime = st->st_mtim;
	return p;
}

static struct media_prompt *get(struct prompt_cache *c, const struct media_g711 *law,
                                const char *path)
{
	struct media_prompt **pp, *p;
	struct stat st;

	if (stat(path, &st) != 0)
		return NULL;
	for (pp = &c->head; (p = *pp); pp = &p->next) {
		if (p->stale || strcmp(p->path, path))
			continue;
		if (p->dev == st.st_dev && p->ino == st.st_ino && p->size == st.st_size &&
		    p->mtime.tv_sec == st.st_mtim.tv_sec && p->mtime.tv_nsec == st.st_mtim.tv_nsec) {
			/* to the front: the most recently used */
			*pp = p->next;
			p->next = c->head;
			c->head = p;
			p->refs++;
			return p;
		}
		/* the file changed since: a new copy; this one goes when unused */
		unlink_prompt(c, p);
		if (p->refs)
			p->stale = 1;
		else
			prompt_free(p);
		break;
	}
	if (!(p = load(path, &st, law)))
		return NULL;
	p->next = c->head;
	c->head = p;
	c->bytes += 2 * p->n;
	p->refs = 1;
	trim(c);
	return p;
}

static void put(struct prompt_cache *c, struct media_prompt *p)
{
	if (--p->refs > 0)
		return;
	if (p->stale)
		prompt_free(p);
	else
		trim(c);
}

int prompt_play_open(struct prompt_cache *c, const struct media_g711 *law,
                     struct prompt_play **out, const char *const *files, int nfiles, int loop)
{
	struct prompt_play *pp;
	int i;

	*out = NULL;
	if (nfiles < 1)
		return -EINVAL;
	pp = calloc(1, sizeof *pp + (size_t)nfiles * sizeof pp->p[0]);
	if (!pp)
		return -ENOMEM;
	for (i = 0; i < nfiles; i++) {
		if (!(pp->p[i] = get(c, law, files[i]))) {
			pp->n = i;
			prompt_play_free(c, pp);
			return -EAGAIN;
		}
	}
	pp->n = nfiles;
	pp->loop = loop;
	*out = pp;
	return 0;
}

int prompt_play_read(struct prompt_play *pp, int alaw, uint8_t *out, int n)
{
	int got = 0;

	while (got < n && !pp->done) {
		struct media_prompt *p = pp->p[pp->cur];
		size_t k = p->n - pp->off;
		if (k > (size_t)(n - got))
			k = (size_t)(n - got);
		memcpy(out + got, p->law[alaw ? 1 : 0] + pp->off, k);
		got += (int)k;
		pp->off += k;
		pp->produced += k;
		if (pp->off < p->n)
			continue;
		pp->off = 0;
		if (pp->cur + 1 < pp->n) {
			pp->cur++;
		} else if (pp->loop && pp->produced > 0) {
			pp->cur = 0;
			pp->produced = 0;
		} else {
			pp->done = 1;
		}
	}
	return got;
}

void prompt_play_free(struct prompt_cache *c, struct prompt_play *pp)
{
	if (!pp)
		return;
	for (int i = 0; i < pp->n; i++)
		put(c, pp->p[i]);
	free(pp);
}

void prompt_cache_free(struct prompt_cache *c)
{
	while (c->head) {
		struct media_prompt *p = c->head;
		c->head = p->next;
		/* a prompt still played is freed by its last release */
		if (p->refs)
			p->stale = 1;
		else
			prompt_free(p);
	}
	c->bytes = 0;
}
