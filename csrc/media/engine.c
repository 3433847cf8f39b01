/*
 * engine.c - the loop's media clock: one timer sends the next frame of
 * every session that plays, a quarter of them every 5 ms (each session
 * every 20 ms), and one RTCP schedule reports for all
 * sessions. A session that only listens is on neither's hot path: its
 * sockets wake it when something arrives.
 */
#include "media_int.h"

#include <errno.h>
#include <stdlib.h>

void media_io_start(struct media_engine *m, ev_io *w)
{
	if (m->loop && !ev_is_active(w)) {
		ev_io_start(m->loop, w);
		ev_unref(m->loop);
	}
}

void media_io_stop(struct media_engine *m, ev_io *w)
{
	if (m->loop && ev_is_active(w)) {
		ev_ref(m->loop);
		ev_io_stop(m->loop, w);
	}
}

/* timers here all repeat, so they stay active until stopped: the
 * reference given up at the start is taken back exactly once */
void media_timer_start(struct media_engine *m, ev_timer *w)
{
	if (m->loop && !ev_is_active(w)) {
		ev_timer_start(m->loop, w);
		ev_unref(m->loop);
	}
}

void media_timer_stop(struct media_engine *m, ev_timer *w)
{
	if (m->loop && ev_is_active(w)) {
		ev_ref(m->loop);
		ev_timer_stop(m->loop, w);
	}
}

/*
 * Phases are due every MEDIA_SLOT of `due`, in turn. A late tick sends
 * for the phases it owes, each at most twice (the frame it owes and one
 * more); further behind, the clock restarts from now instead of bursting
 * (the receiver sees one long gap, not a flood). An early or doubled
 * callback (libev re-arms a late repeating timer at once) finds nothing
 * due.
 */
static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct media_engine *m = w->data;
	double now = ev_now(loop);
	int slots = 0;

	(void)revents;
	while (slots < MEDIA_PHASES + 1 && m->due <= now + MEDIA_SLOT / 2) {
		struct media_session *s, *next;
		for (s = m->playing[m->phase]; s; s = next) {
			next = s->pnext;        /* s may leave the list */
			media_session_tick(s, now);
		}
		m->phase = (m->phase + 1) % MEDIA_PHASES;
		m->due += MEDIA_SLOT;
		slots++;
	}
	if (now - m->due > MEDIA_TICK)
		m->due = now + MEDIA_SLOT;
	if (!m->nplaying)
		media_timer_stop(m, &m->tick);
}

void media_engine_play_add(struct media_engine *m, struct media_session *s)
{
	int p = 0;

	if (s->on_tick)
		return;
	if (m->loop && !ev_is_active(&m->tick)) {
		/* the first frame goes out on the next loop turn */
		ev_now_update(m->loop);
		m->due = ev_now(m->loop);
		ev_timer_set(&m->tick, 0., MEDIA_SLOT);
		media_timer_start(m, &m->tick);
		p = m->phase;
	} else {
		/* the lightest phase keeps the bursts even */
		for (int i = 1; i < MEDIA_PHASES; i++)
			if (m->nphase[i] < m->nphase[p])
				p = i;
	}
	s->on_tick = 1;
	s->phase = p;
	s->pprev = NULL;
	s->pnext = m->playing[p];
	if (s->pnext)
		s->pnext->pprev = s;
	m->playing[p] = s;
	m->nphase[p]++;
	m->nplaying++;
}

void media_engine_play_remove(struct media_engine *m, struct media_session *s)
{
	if (!s->on_tick)
		return;
	if (s->pprev)
		s->pprev->pnext = s->pnext;
	else
		m->playing[s->phase] = s->pnext;
	if (s->pnext)
		s->pnext->pprev = s->pprev;
	s->pnext = s->pprev = NULL;
	s->on_tick = 0;
	m->nphase[s->phase]--;
	m->nplaying--;
	/* the tick stops itself once the list is empty */
}

static void rtcp_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct media_engine *m = w->data;
	double now = ev_now(loop);

	(void)revents;
	/* every interval is the same, so the list stays in time order */
	while (m->rhead && m->rhead->rtcp_due <= now) {
		struct media_session *s = m->rhead;
		media_engine_rtcp_remove(m, s);
		media_session_report(s, now, 0);
		media_engine_rtcp_add(m, s);
	}
}

void media_engine_rtcp_add(struct media_engine *m, struct media_session *s)
{
	s->rtcp_due = (m->loop ? ev_now(m->loop) : 0) + MEDIA_RTCP_INTERVAL;
	s->rnext = NULL;
	s->rprev = m->rtail;
	if (m->rtail)
		m->rtail->rnext = s;
	else
		m->rhead = s;
	m->rtail = s;
}

void media_engine_rtcp_remove(struct media_engine *m, struct media_session *s)
{
	if (s->rprev)
		s->rprev->rnext = s->rnext;
	else if (m->rhead == s)
		m->rhead = s->rnext;
	else
		return;         /* not in the list */
	if (s->rnext)
		s->rnext->rprev = s->rprev;
	else
		m->rtail = s->rprev;
	s->rnext = s->rprev = NULL;
}

int media_engine_new(struct media_engine **out, struct ev_loop *loop)
{
	struct media_engine *m = calloc(1, sizeof *m);

	*out = NULL;
	if (!m)
		return -ENOMEM;
	m->loop = loop;
	media_g711_init(&m->law);
	ev_timer_init(&m->tick, tick_cb, 0., MEDIA_TICK);
	m->tick.data = m;
	/* reports are due at whole multiples of the interval after a
	 * session starts; checking twice a second is close enough */
	ev_timer_init(&m->rtcp_w, rtcp_cb, 0.5, 0.5);
	m->rtcp_w.data = m;
	*out = m;
	return 0;
}

void media_engine_detach(struct media_engine *m)
{
	m->loop = NULL;
}

int media_engine_sessions(const struct media_engine *m)
{
	return m->nsessions;
}

void media_engine_free(struct media_engine *m)
{
	if (!m)
		return;
	media_timer_stop(m, &m->tick);
	media_timer_stop(m, &m->rtcp_w);
	prompt_cache_free(&m->prompts);
	free(m);
}
