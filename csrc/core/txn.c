/*
 * txn.c - the four transaction state machines of RFC 3261 section 17 with
 * the RFC 6026 changes (Accepted states, 2xx handled above the INVITE
 * transactions).
 *
 * Our own FSMs drive them, not libosip2's: osip's FSMs are reached through
 * global lists (osip_find_transaction, osip_timers_*_execute) that walk
 * every live transaction on each message and timer tick. Here a
 * transaction is found through one hash table keyed by branch (RFC 2543
 * fallback key otherwise) and every timer is a libev timer armed and
 * disarmed by the transaction that owns it; no scans, so the cost of a
 * message does not grow with the number of live transactions.
 *
 * Timer ownership: a client transaction's timers keep sip.run alive while
 * a transaction user waits on it; all other timers are weak (ev_unref) so
 * lingering Timer J/K/D never delay a script's exit.
 */
#define _GNU_SOURCE
#include "core.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define T1(t) ((t)->ua->cfg.t1)
#define T2(t) ((t)->ua->cfg.t2)
#define T4(t) ((t)->ua->cfg.t4)
#define RELIABLE(t) ((t)->proto != SIP_UDP)

static int failover(struct sip_txn *t, struct sip_msg *res, const char *why, double blacklist);
static double retry_after(struct sip_msg *res);
static void build_ack(struct sip_txn *t, struct sip_msg *res);

static void timer_stop(struct sip_txn *t, ev_timer *w, unsigned weak)
{
	struct ev_loop *loop = t->ua->env->loop;

	/* an expired timer whose callback has not run yet is pending, not
	 * active: clear it too, or libev calls back into freed memory */
	if (!ev_is_active(w) && !ev_is_pending(w))
		return;
	if (weak)
		ev_ref(loop);
	ev_timer_stop(loop, w);
}

static void retx_stop(struct sip_txn *t)
{
	timer_stop(t, &t->tretx, t->retx_weak);
}

static void linger_unlink(struct sip_txn *t)
{
	struct sip_ua *ua = t->ua;

	if (t->lprev)
		t->lprev->lnext = t->lnext;
	else
		ua->lhead = t->lnext;
	if (t->lnext)
		t->lnext->lprev = t->lprev;
	else
		ua->ltail = t->lprev;
	t->lnext = t->lprev = NULL;
	t->in_linger = 0;
}

static void life_stop(struct sip_txn *t)
{
	if (t->in_linger) {
		/* the list's timer may fire for nothing: it re-arms itself */
		linger_unlink(t);
		return;
	}
	timer_stop(t, &t->tlife, t->life_weak);
}

/* a list's timer for its head, due at `due`; weak, like every timer in
 * the linger and tomb lists */
static void list_timer_arm(struct sip_ua *ua, ev_timer *w, double due)
{
	struct ev_loop *loop = ua->env->loop;
	double after;

	if (ev_is_active(w))
		return;
	after = due - ev_now(loop);
	ev_timer_set(w, after > 0. ? after : 0., 0.);
	ev_timer_start(loop, w);
	ev_unref(loop);
}

static void linger_arm(struct sip_ua *ua)
{
	if (ua->lhead)
		list_timer_arm(ua, &ua->linger_w, ua->lhead->ldue);
}

/* a timer is strong only while a client TU waits for the outcome */
static int txn_weak(const struct sip_txn *t)
{
	return !t->cb || (t->kind != TXN_ICT && t->kind != TXN_NICT) ||
	       t->state >= TS_COMPLETED;
}

static void retx_arm(struct sip_txn *t, double after)
{
	struct ev_loop *loop = t->ua->env->loop;

	retx_stop(t);
	ev_timer_set(&t->tretx, after, 0.);
	ev_timer_start(loop, &t->tretx);
	t->retx_weak = (unsigned)txn_weak(t);
	if (t->retx_weak)
		ev_unref(loop);
}

static void life_arm(struct sip_txn *t, double after)
{
	struct ev_loop *loop = t->ua->env->loop;
	struct sip_ua *ua = t->ua;

	life_stop(t);
	if (after > 0. && after == 64 * T1(t) && txn_weak(t) &&
	    (!ua->ltail || ua->ltail->ldue <= ev_now(loop) + after)) {
		t->ldue = ev_now(loop) + after;
		t->in_linger = 1;
		t->lprev = ua->ltail;
		t->lnext = NULL;
		if (ua->ltail)
			ua->ltail->lnext = t;
		else
			ua->lhead = t;
		ua->ltail = t;
		linger_arm(ua);
		return;
	}
	ev_timer_set(&t->tlife, after, 0.);
	ev_timer_start(loop, &t->tlife);
	t->life_weak = (unsigned)txn_weak(t);
	if (t->life_weak)
		ev_unref(loop);
}

static void conn_unlink(struct sip_txn *t)
{
	if (!t->conn)
		return;
	if (t->cprev)
		t->cprev->cnext = t->cnext;
	else
		t->conn->txns = t->cnext;
	if (t->cnext)
		t->cnext->cprev = t->cprev;
	t->conn = NULL;
	t->cnext = t->cprev = NULL;
}

static void conn_link(struct sip_txn *t, struct sip_conn *c)
{
	conn_unlink(t);
	t->conn = c;
	t->cprev = NULL;
	t->cnext = c->txns;
	if (c->txns)
		c->txns->cprev = t;
	c->txns = t;
}

/* ---- retired server transactions ---- */

/*
 * Once a server transaction only absorbs retransmissions (an INVITE's
 * after the ACK of its 2xx, until Timer L; a non-INVITE's over UDP after
 * its final response, until Timer J), a transaction is far more than it
 * needs: about 500 bytes with timers, owners and links, for thousands of
 * them lingering 32 s. It is retired into a tomb that keeps the key, the
 * final response to resend and where to. Tombs all live 64*T1, so they
 * expire in the order they were made: a list and one timer.
 */
struct sip_tomb {
	struct sip_hnode hn;            /* in ua->tombs, by the transaction's key */
	struct sip_tomb *next;          /* ua->thead .. ttail, in order of expiry */
	struct sip_tomb_chunk *chunk;   /* where it was carved, or NULL: malloc */
	double due;
	struct sip_listener *lst;       /* UDP: where the response goes again */
	struct sip_addr dst;
	uint32_t outlen;
	char data[];                    /* the key, its NUL, the response */
};

/*
 * Tombs are carved in order from chunks of their own and expire in that
 * same order, so a chunk goes back whole once its last tomb has gone.
 * In malloc's heap, hundreds of thousands of tombs (20,000 calls a
 * second, 32 s each) sat between the short-lived blocks of messages and
 * buffers: the holes those left fragmented its bins, and the Lua UAS
 * spent a quarter of its CPU time more than without tombs.
 */
#define TOMB_CHUNK 65536

struct sip_tomb_chunk {
	size_t used, live;
	_Alignas(max_align_t) char mem[];
};

/* larger tombs (a large response) get a block of their own */
#ifdef __SANITIZE_ADDRESS__
#define TOMB_CARVE_MAX 0        /* all of them: ASan sees a use after expiry */
#else
#define TOMB_CARVE_MAX (TOMB_CHUNK - sizeof(struct sip_tomb_chunk))
#endif

static struct sip_tomb *tomb_alloc(struct sip_ua *ua, size_t size)
{
	struct sip_tomb_chunk *c = ua->tchunk;
	struct sip_tomb *tb;

	size = (size + _Alignof(max_align_t) - 1) & ~(size_t)(_Alignof(max_align_t) - 1);
	if (size > TOMB_CARVE_MAX) {
		tb = malloc(size);
		if (tb)
			tb->chunk = NULL;
		return tb;
	}
	if (!c || c->used + size > TOMB_CHUNK - sizeof *c) {
		if (c && !c->live) {
			c->used = 0;    /* every tomb in it has gone: start again */
		} else {
			c = ua->tspare ? ua->tspare : malloc(TOMB_CHUNK);
			ua->tspare = NULL;
			if (!c)
				return NULL;
			c->used = c->live = 0;
			ua->tchunk = c;
		}
	}
	tb = (struct sip_tomb *)(void *)(c->mem + c->used);
	c->used += size;
	c->live++;
	tb->chunk = c;
	return tb;
}

static void tomb_release(struct sip_ua *ua, struct sip_tomb *tb)
{
	struct sip_tomb_chunk *c = tb->chunk;

	if (!c) {
		free(tb);
		return;
	}
	if (--c->live || c == ua->tchunk)
		return;
	/* one spare spares a malloc and a free per chunk */
	if (!ua->tspare)
		ua->tspare = c;
	else
		free(c);
}

static void tomb_arm(struct sip_ua *ua)
{
	if (ua->thead)
		list_timer_arm(ua, &ua->tomb_w, ua->thead->due);
}

static void tomb_pop(struct sip_ua *ua)
{
	struct sip_tomb *tb = ua->thead;

	ua->thead = tb->next;
	if (!ua->thead)
		ua->ttail = NULL;
	sip_htab_remove(&ua->tombs, &tb->hn);
	ua->ntombs--;
	tomb_release(ua, tb);
}

static void tomb_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct sip_ua *ua = w->data;
	double now = ev_now(loop);

	(void)revents;
	ev_ref(loop);           /* the fired timer dropped the loop's count */
	while (ua->thead && ua->thead->due <= now + 1e-6)
		tomb_pop(ua);
	tomb_arm(ua);
}

static void txn_free(struct sip_txn *t);

static void retire(struct sip_txn *t)
{
	struct sip_ua *ua = t->ua;
	int nist = t->kind == TXN_NIST;
	size_t kl = strlen(t->key), ol;
	struct sip_tomb *tb;

	/* only one that merely absorbs retransmissions now, and that no
	 * dialog waits on; anything else stays a transaction */
	if (!t->in_linger || t->dlg)
		return;
	if (nist ? t->state != TS_COMPLETED || t->proto != SIP_UDP || !t->out
	         : t->kind != TXN_IST || t->state != TS_ACCEPTED || t->out)
		return;
	ol = nist ? t->outlen : 0;
	tb = tomb_alloc(ua, sizeof *tb + kl + 1 + ol);
	if (!tb)
		return;
	memcpy(tb->data, t->key, kl + 1);
	if (ol)
		memcpy(tb->data + kl + 1, t->out, ol);
	tb->outlen = (uint32_t)ol;
	tb->lst = t->lst;
	tb->dst = t->dst;
	/* the transaction's own deadline, or the last tomb's when later: the
	 * list stays in order, and absorbing a little longer does no harm */
	tb->due = t->ldue;
	if (ua->ttail && ua->ttail->due > tb->due)
		tb->due = ua->ttail->due;
	tb->next = NULL;
	if (ua->ttail)
		ua->ttail->next = tb;
	else
		ua->thead = tb;
	ua->ttail = tb;
	tb->hn.key = tb->data;
	sip_htab_insert(&ua->tombs, &tb->hn);
	ua->ntombs++;
	tomb_arm(ua);
	t->state = TS_TERMINATED;
	txn_free(t);
}

void sip_txn_retire_pending(struct sip_ua *ua)
{
	while (ua->retiring) {
		struct sip_txn *t = ua->retiring;
		sip_txn_retire_done(t);
		retire(t);
	}
}

/* a retired transaction with this key: its response is sent again (a
 * retransmitted request; never for an ACK) */
static int tomb_absorb(struct sip_ua *ua, const char *key, const char *method)
{
	struct sip_tomb *tb = (struct sip_tomb *)sip_htab_find(&ua->tombs, key);

	if (!tb)
		return 0;
	if (tb->outlen && tb->lst && strcmp(method, "ACK")) {
		ua->retransmits++;
		sip_udp_send(tb->lst, &tb->dst, tb->data + strlen(tb->data) + 1, tb->outlen);
	}
	return 1;
}

static void txn_free(struct sip_txn *t)
{
	struct sip_ua *ua = t->ua;

	retx_stop(t);
	life_stop(t);
	conn_unlink(t);
	sip_txn_trying_done(t);
	sip_txn_retire_done(t);
	if (t->dlg)
		ua->dl->txn_gone(t->dlg, t);
	sip_htab_remove(&ua->txns, &t->hn);
	if (t->kind == TXN_ICT || t->kind == TXN_NICT)
		ua->nclient--;
	else
		ua->nserver--;
	if (t->gone)
		t->gone(t->gone_arg, t);
	sip_msg_unref(t->req);
	free(t->out);
	free(t->ack);
	free(t->tls_name);
	sip_loc_free(t->loc);
	free(t);
}

/* After the final response a transaction only needs its key, its last
 * message text and its timers: the parsed request goes, which keeps the
 * thousands of transactions lingering in Timer J/K/L/D small. */
static void drop_request(struct sip_txn *t)
{
	sip_msg_unref(t->req);
	t->req = NULL;
}

static void terminate(struct sip_txn *t)
{
	t->state = TS_TERMINATED;
	txn_free(t);
}

/* Tell the client TU; returns 0 when the transaction may be touched after */
static void notify(struct sip_txn *t, struct sip_msg *res, const char *err, int last)
{
	sip_response_cb cb = t->cb;
	void *arg = t->cb_arg;

	if (!cb)
		return;
	if (last) {
		t->cb = NULL;
		t->cb_arg = NULL;
	}
	cb(arg, t, res, err);
}

int sip_txn_send(struct sip_txn *t, const char *buf, size_t len)
{
	struct sip_ua *ua = t->ua;
	int rc;

	if (t->proto == SIP_UDP) {
		if (!t->lst)
			return -ENOTCONN;
		return sip_udp_send(t->lst, &t->dst, buf, len);
	}
	if (!t->conn) {
		struct sip_conn *c;
		rc = sip_conn_get(ua, t->proto, &t->dst, t->tls_name, &c);
		if (rc)
			return rc;
		conn_link(t, c);
	}
	return sip_conn_send(t->conn, buf, len);
}

static void send_or_fail(struct sip_txn *t, const char *buf, size_t len)
{
	int rc = sip_txn_send(t, buf, len);

	if (rc == -EXDEV) {
		char why[300];
		snprintf(why, sizeof why, "tls: name mismatch: %s", t->tls_name ? t->tls_name : "");
		sip_txn_transport_error(t, why);
	} else if (rc) {
		char why[96];
		sip_transport_error(why, sizeof why, -rc);
		sip_txn_transport_error(t, why);
	}
}

/* ---- timers ---- */

static void retx_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct sip_txn *t = w->data;
	double next;

	(void)loop;
	(void)revents;
	/* libev stopped the fired one-shot timer, which drops the loop's
	 * reference count again: give back the one we took at arm time */
	if (t->retx_weak) {
		ev_ref(loop);
		t->retx_weak = 0;
	}
	switch (t->kind) {
	case TXN_ICT:           /* Timer A: doubling, no cap */
		if (t->state != TS_CALLING)
			return;
		t->interval *= 2;
		next = t->interval;
		break;
	case TXN_NICT:          /* Timer E: doubling up to T2; T2 once proceeding */
		if (t->state != TS_TRYING && t->state != TS_PROCEEDING)
			return;
		t->interval = t->state == TS_PROCEEDING ? T2(t) : t->interval * 2;
		if (t->interval > T2(t))
			t->interval = T2(t);
		next = t->interval;
		break;
	case TXN_IST:           /* Timer G (non-2xx) and 2xx resends in Accepted */
		if (t->state != TS_COMPLETED && t->state != TS_ACCEPTED)
			return;
		t->interval *= 2;
		if (t->interval > T2(t))
			t->interval = T2(t);
		next = t->interval;
		break;
	default:
		return;
	}
	retx_arm(t, next);
	t->ua->retransmits++;
	if (t->out)
		send_or_fail(t, t->out, t->outlen);     /* may free t: last */
}

static void life_expired(struct sip_txn *t);

static void life_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct sip_txn *t = w->data;

	(void)revents;
	if (t->life_weak) {
		ev_ref(loop);
		t->life_weak = 0;
	}
	life_expired(t);
}

/* the linger list's head is due: expire every transaction due by now */
static void linger_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct sip_ua *ua = w->data;
	double now = ev_now(loop);

	(void)revents;
	ev_ref(loop);           /* the fired timer dropped the loop's count */
	while (ua->lhead && ua->lhead->ldue <= now + 1e-6) {
		struct sip_txn *t = ua->lhead;
		linger_unlink(t);
		life_expired(t);        /* frees t */
	}
	linger_arm(ua);
}

void sip_txn_linger_init(struct sip_ua *ua)
{
	ev_init(&ua->linger_w, linger_cb);
	ua->linger_w.data = ua;
	ev_init(&ua->tomb_w, tomb_cb);
	ua->tomb_w.data = ua;
}

void sip_txn_linger_stop(struct sip_ua *ua)
{
	struct ev_loop *loop = ua->env->loop;

	if (ev_is_active(&ua->linger_w) || ev_is_pending(&ua->linger_w)) {
		ev_ref(loop);
		ev_timer_stop(loop, &ua->linger_w);
	}
	if (ev_is_active(&ua->tomb_w) || ev_is_pending(&ua->tomb_w)) {
		ev_ref(loop);
		ev_timer_stop(loop, &ua->tomb_w);
	}
}

static void life_expired(struct sip_txn *t)
{
	switch (t->state) {
	case TS_CALLING:        /* Timer B */
	case TS_TRYING:         /* Timer F */
	case TS_PROCEEDING:
		if (t->kind == TXN_ICT || t->kind == TXN_NICT) {
			if (failover(t, NULL, "timeout", -1))
				return;
			notify(t, NULL, "timeout", 1);
			terminate(t);
			return;
		}
		break;
	case TS_COMPLETED:
		if (t->kind == TXN_IST) {
			/* Timer H: no ACK for our non-2xx final */
			SIP_LOGD(t->ua->env, "no ACK for %d (Timer H)", t->last_status);
		}
		break;
	case TS_ACCEPTED:
		if (t->kind == TXN_IST && t->gone) {
			/* Timer L with the 2xx never ACKed: the owner (dialog)
			 * learns through gone(), with last_status still 2xx */
		}
		break;
	default:
		break;
	}
	terminate(t);           /* Timers D, I, J, K, L, M */
}

/* ---- the 100 Trying owed and the transactions to retire ---- */

/* The two lists of server transactions the prepare watcher below serves
 * (linked by tnext/tprev; a transaction is in one at most): INVITEs owed
 * a 100, and answered transactions to retire. */
static void tlist_push(struct sip_txn **head, struct sip_txn *st)
{
	struct sip_ua *ua = st->ua;

	st->tprev = NULL;
	st->tnext = *head;
	if (*head)
		(*head)->tprev = st;
	*head = st;
	if (!ev_is_active(&ua->trying_w))
		ev_prepare_start(ua->env->loop, &ua->trying_w);
}

static void tlist_unlink(struct sip_txn **head, struct sip_txn *st)
{
	if (st->tprev)
		st->tprev->tnext = st->tnext;
	else
		*head = st->tnext;
	if (st->tnext)
		st->tnext->tprev = st->tprev;
	st->tnext = st->tprev = NULL;
}

void sip_txn_trying_done(struct sip_txn *st)
{
	if (!st->trying)
		return;
	st->trying = 0;
	tlist_unlink(&st->ua->trying, st);
}

void sip_txn_trying_owed(struct sip_txn *st)
{
	if (st->trying)
		return;
	st->trying = 1;
	tlist_push(&st->ua->trying, st);
}

void sip_txn_retire(struct sip_txn *st)
{
	if (st->retiring || st->trying)
		return;
	st->retiring = 1;
	tlist_push(&st->ua->retiring, st);
}

void sip_txn_retire_done(struct sip_txn *st)
{
	if (!st->retiring)
		return;
	st->retiring = 0;
	tlist_unlink(&st->ua->retiring, st);
}

/* The loop is about to wait: every INVITE not answered by now (the Lua
 * handlers ran first, at a higher priority) gets its 100. A handler that
 * rings or answers at once saves the datagram; one that waits for
 * something first still stops the caller's retransmissions in time. */
static void trying_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
	struct sip_ua *ua = w->data;

	(void)revents;
	ev_prepare_stop(loop, w);
	while (ua->trying) {
		struct sip_txn *st = ua->trying;
		struct sip_reply r = { .status = 100 };
		char *text;
		size_t len;
		sip_txn_trying_done(st);
		if (st->state == TS_PROCEEDING && !st->out &&
		    !sip_response_build(ua, st->req, st->to_tag, &r, &text, &len))
			sip_txn_respond(st, 100, text, len);
	}
	sip_txn_retire_pending(ua);
}

void sip_txn_trying_init(struct sip_ua *ua)
{
	ev_prepare_init(&ua->trying_w, trying_cb);
	ev_set_priority(&ua->trying_w, EV_MINPRI);
	ua->trying_w.data = ua;
}

void sip_txn_trying_stop(struct sip_ua *ua)
{
	ev_prepare_stop(ua->env->loop, &ua->trying_w);
}

/* ---- keys and matching ---- */

static int is_rfc3261_branch(const char *b)
{
	return b && !strncmp(b, "z9hG4bK", 7);
}

/* key pieces joined without printf: this runs for every message */
static size_t key_join(char *buf, size_t n, const char *const *parts, size_t np)
{
	size_t i, w = 0;

	for (i = 0; i < np; i++) {
		const char *s = parts[i] ? parts[i] : "";
		size_t l = strlen(s);
		if (w + l >= n)
			return n;
		memcpy(buf + w, s, l);
		w += l;
	}
	buf[w] = '\0';
	return w;
}

int sip_txn_server_key(struct sip_msg *req, const char *method, char *buf, size_t n)
{
	const char *branch = req->branch;
	char cseq[24];

	if (!strcmp(method, "ACK"))
		method = "INVITE";
	if (is_rfc3261_branch(branch)) {
		const char *p[] = { "s", branch, ";", req->via_host, ":", req->via_port, ";", method };
		return key_join(buf, n, p, 8) >= n ? -ENAMETOOLONG : 0;
	} else {
		/* RFC 2543 peers: Request-URI, From tag, Call-ID, CSeq number
		 * and top Via identify the transaction (17.2.3) */
		const char *p[] = { "S", req->uri, ";", req->from_tag, ";", req->call_id, ";", cseq, ";",
		                    req->via_host, ":", req->via_port, ";", method };
		snprintf(cseq, sizeof cseq, "%lu", req->cseq);
		return key_join(buf, n, p, 14) >= n ? -ENAMETOOLONG : 0;
	}
}

struct sip_txn *sip_txn_find_key(struct sip_ua *ua, const char *key)
{
	return (struct sip_txn *)sip_htab_find(&ua->txns, key);
}

struct sip_txn *sip_txn_match_server(struct sip_ua *ua, struct sip_msg *req, const char *method,
                                     int *retired)
{
	char key[512];
	struct sip_txn *st;

	if (retired)
		*retired = 0;
	if (sip_txn_server_key(req, method, key, sizeof key))
		return NULL;
	st = sip_txn_find_key(ua, key);
	if (!st && retired && ua->ntombs)
		*retired = tomb_absorb(ua, key, req->method);
	return st;
}

struct sip_txn *sip_txn_match_client(struct sip_ua *ua, struct sip_msg *res)
{
	char key[300];
	const char *branch = sip_msg_branch(res);
	const char *method = sip_msg_method(res);
	const char *p[] = { "c", branch, ";", method };

	if (!branch || !method)
		return NULL;
	if (key_join(key, sizeof key, p, 4) >= sizeof key)
		return NULL;
	return sip_txn_find_key(ua, key);
}

static struct sip_txn *txn_alloc(struct sip_ua *ua, int kind, const char *key)
{
	size_t kl = strlen(key);
	struct sip_txn *t = calloc(1, sizeof *t + kl + 1);

	if (!t)
		return NULL;
	memcpy(t->key, key, kl + 1);
	t->ua = ua;
	t->kind = kind;
	t->hn.key = t->key;
	ev_init(&t->tretx, retx_cb);
	ev_init(&t->tlife, life_cb);
	t->tretx.data = t->tlife.data = t;
	sip_htab_insert(&ua->txns, &t->hn);
	if (kind == TXN_ICT || kind == TXN_NICT)
		ua->nclient++;
	else
		ua->nserver++;
	return t;
}

/* ---- server transactions ---- */

int sip_txn_new_server(struct sip_ua *ua, struct sip_msg *req, int proto, struct sip_listener *l,
                       struct sip_conn *c, struct sip_txn **out)
{
	char key[512];
	struct sip_txn *t;
	int is_invite = !strcmp(req->method, "INVITE");

	if (sip_txn_server_key(req, req->method, key, sizeof key))
		return -ENAMETOOLONG;
	t = txn_alloc(ua, is_invite ? TXN_IST : TXN_NIST, key);
	if (!t)
		return -ENOMEM;
	t->req = sip_msg_ref(req);
	t->cseq = (unsigned)req->cseq;
	t->proto = proto;
	t->lst = l;
	t->state = is_invite ? TS_PROCEEDING : TS_TRYING;
	if (c)
		conn_link(t, c);
	/* 18.2.2: responses go to the source address; the port is the
	 * source port with rport, else the sent-by port */
	t->dst = req->src;
	if (!req->via_rport && proto == SIP_UDP)
		sip_addr_set_port(&t->dst, req->via_port ? atoi(req->via_port) : 5060);
	/* our To tag is drawn when a response first needs it */
	*out = t;
	return 0;
}

void sip_txn_server_retransmit(struct sip_txn *st, struct sip_msg *req)
{
	(void)req;
	switch (st->state) {
	case TS_PROCEEDING:
	case TS_COMPLETED:
	case TS_ACCEPTED:
		/* the last response answers a retransmitted request; 2xx
		 * resends in Accepted are paced by our own timer instead */
		if (st->out && st->state != TS_ACCEPTED) {
			st->ua->retransmits++;
			sip_txn_send(st, st->out, st->outlen);
		}
		break;
	default:
		break;          /* Trying: the TU has not answered yet */
	}
}

int sip_txn_respond(struct sip_txn *st, int status, char *text, size_t len)
{
	int rc;

	/* the loop's time may be old (a long handler, a script's start): the
	 * timers armed now count from now */
	ev_now_update(st->ua->env->loop);
	if (st->state != TS_TRYING && st->state != TS_PROCEEDING) {
		free(text);
		return -EALREADY;
	}
	free(st->out);
	st->out = text;
	st->outlen = len;
	st->last_status = status;
	sip_txn_trying_done(st);
	rc = sip_txn_send(st, text, len);
	if (status < 200) {
		st->state = TS_PROCEEDING;
		return rc;
	}
	drop_request(st);
	if (st->kind == TXN_NIST) {
		st->state = TS_COMPLETED;
		life_arm(st, RELIABLE(st) ? 0. : 64 * T1(st));      /* Timer J */
		if (!RELIABLE(st))
			sip_txn_retire(st);
	} else if (status >= 300) {
		st->state = TS_COMPLETED;
		st->interval = T1(st);
		if (!RELIABLE(st))
			retx_arm(st, st->interval);                 /* Timer G */
		life_arm(st, 64 * T1(st));                          /* Timer H */
	} else {
		/* RFC 6026 Accepted: absorb INVITE retransmissions and resend
		 * the 2xx until the dialog sees the ACK (Timer L bounds it);
		 * over streams too, for the hops after the next (13.3.1.4) */
		st->state = TS_ACCEPTED;
		st->interval = T1(st);
		retx_arm(st, st->interval);
		life_arm(st, 64 * T1(st));
	}
	return rc;
}

void sip_txn_ack_seen(struct sip_txn *st)
{
	if (st->kind != TXN_IST)
		return;
	if (st->state == TS_COMPLETED) {
		/* ACK for a non-2xx final: Confirmed, Timer I */
		st->state = TS_CONFIRMED;
		retx_stop(st);
		life_arm(st, RELIABLE(st) ? 0. : T4(st));
	} else if (st->state == TS_ACCEPTED) {
		st->last_status = 0;    /* tells gone(): the ACK came */
		retx_stop(st);
		/* Timer L only absorbs INVITE retransmissions now: the 2xx text
		 * is not needed any more (most of a lingering transaction) */
		free(st->out);
		st->out = NULL;
	}
}

int sip_txn_final_sent(const struct sip_txn *st)
{
	return st->state != TS_TRYING && st->state != TS_PROCEEDING;
}

struct sip_msg *sip_txn_request(const struct sip_txn *st)
{
	return st->req;
}

void sip_txn_set_owner(struct sip_txn *st, sip_txn_gone_cb gone, void *arg)
{
	st->gone = gone;
	st->gone_arg = arg;
}

/* ---- client transactions ---- */

/* a client transaction for req and its text, not sent yet: in the table,
 * in Calling/Trying, with its TU. NULL when out of memory (req and text
 * are freed then) */
static struct sip_txn *client_init(struct sip_ua *ua, struct sip_msg *req, char *text, size_t len,
                                   sip_response_cb cb, void *arg)
{
	char key[300];
	const char *method = sip_msg_method(req);
	const char *p[] = { "c", sip_msg_branch(req), ";", method };
	struct sip_txn *t;

	key_join(key, sizeof key, p, 4);
	t = txn_alloc(ua, !strcmp(method, "INVITE") ? TXN_ICT : TXN_NICT, key);
	if (!t) {
		free(text);
		sip_msg_unref(req);
		return NULL;
	}
	t->req = req;
	t->cseq = (unsigned)req->cseq;
	t->out = text;
	t->outlen = len;
	t->cb = cb;
	t->cb_arg = arg;
	t->state = t->kind == TXN_ICT ? TS_CALLING : TS_TRYING;
	t->interval = T1(t);
	return t;
}

int sip_txn_new_client(struct sip_ua *ua, struct sip_msg *req, char *text, size_t len,
                       int proto, const struct sip_addr *dst, struct sip_listener *l,
                       const char *tls_name, sip_response_cb cb, void *arg, struct sip_txn **out)
{
	struct sip_txn *t;
	int rc;

	/* a request sent after a long pause of the loop must not find its
	 * Timer A/E already due */
	ev_now_update(ua->env->loop);
	*out = NULL;
	t = client_init(ua, req, text, len, cb, arg);
	if (!t)
		return -ENOMEM;
	t->proto = proto;
	t->dst = *dst;
	t->lst = l;
	if (proto == SIP_TLS && tls_name)
		t->tls_name = strdup(tls_name);
	rc = sip_txn_send(t, text, len);
	if (rc) {
		/* the caller learns of the failure from the return value and
		 * gets no callback (libuv's rule) */
		t->cb = NULL;
		terminate(t);
		return rc;
	}
	if (!RELIABLE(t))
		retx_arm(t, t->interval);                           /* A / E */
	life_arm(t, 64 * T1(t));                                    /* B / F */
	*out = t;
	return 0;
}

/* ---- client transactions to a host name (locate.c) ---- */

int sip_txn_new_waiting(struct sip_ua *ua, struct sip_msg *req, char *text, size_t len,
                        sip_response_cb cb, void *arg, struct sip_txn **out)
{
	/* the provisional request: what the caller sees of it until the
	 * first target takes it */
	*out = client_init(ua, req, text, len, cb, arg);
	return *out ? 0 : -ENOMEM;
}

int sip_txn_start_client(struct sip_txn *t, struct sip_msg *req, char *text, size_t len, int proto,
                         const struct sip_addr *dst, struct sip_listener *l, const char *tls_name)
{
	struct sip_ua *ua = t->ua;
	char key[300];
	const char *p[] = { "c", sip_msg_branch(req), ";", sip_msg_method(req) };
	int rc;

	/* the key lives in the transaction's allocation: a new branch of
	 * the same length takes its place */
	if (key_join(key, sizeof key, p, 4) != strlen(t->key)) {
		free(text);
		sip_msg_unref(req);
		return -EINVAL;
	}
	sip_htab_remove(&ua->txns, &t->hn);
	memcpy(t->key, key, strlen(key) + 1);
	sip_htab_insert(&ua->txns, &t->hn);
	sip_msg_unref(t->req);
	t->req = req;
	free(t->out);
	t->out = text;
	t->outlen = len;
	t->proto = proto;
	t->dst = *dst;
	t->lst = l;
	free(t->tls_name);
	t->tls_name = proto == SIP_TLS && tls_name ? strdup(tls_name) : NULL;
	t->state = t->kind == TXN_ICT ? TS_CALLING : TS_TRYING;
	t->interval = T1(t);
	t->last_status = 0;
	rc = sip_txn_send(t, text, len);
	if (rc) {
		conn_unlink(t);
		return rc;
	}
	if (!RELIABLE(t))
		retx_arm(t, t->interval);                           /* A / E */
	life_arm(t, 64 * T1(t));                                    /* B / F */
	return 0;
}

void sip_txn_abandon(struct sip_txn *t)
{
	t->cb = NULL;
	t->cb_arg = NULL;
	terminate(t);
}

void sip_txn_fail(struct sip_txn *t, const char *why)
{
	notify(t, NULL, why, 1);
	terminate(t);
}

/* Retry-After of a 503, in seconds; 0 without one (a 503 alone does
 * not blacklist: the server answers, it is only busy now) */
static double retry_after(struct sip_msg *res)
{
	size_t n;
	const char *v = sip_msg_header(res, "Retry-After", 0, &n);
	double s;

	if (!v || !n || v[0] < '0' || v[0] > '9')
		return 0.;
	s = strtod(v, NULL);
	return s > 3600. ? 3600. : s;
}

/* The attempt that got a 503 over UDP stays behind, detached: it ACKs
 * the retransmissions of that 503 until Timer D (17.1.1.2) */
static void ghost(struct sip_txn *t)
{
	struct sip_txn *g = txn_alloc(t->ua, t->kind, t->key);

	if (!g)
		return;
	g->state = TS_COMPLETED;
	g->proto = t->proto;
	g->dst = t->dst;
	g->lst = t->lst;
	g->cseq = t->cseq;
	g->ack = t->ack;
	g->acklen = t->acklen;
	t->ack = NULL;
	t->acklen = 0;
	life_arm(g, 64 * T1(g));                                    /* D */
}

/* RFC 3263 4.3: a transport error, a timeout or a 503 from one target of
 * a name sends the request to the next one, with a new branch. 1 when
 * the transaction went on there (or ended, its TU told): nothing else
 * to do; 0 without another target. blacklist: seconds (< 0: the UA's) */
static int failover(struct sip_txn *t, struct sip_msg *res, const char *why, double blacklist)
{
	if (!t->loc || t->cancel_pending || t->cancelled || !sip_loc_has_next(t->loc) ||
	    (!t->cb && sip_loc_tu(t->loc)))
		return 0;
	if (blacklist != 0.)
		sip_loc_blacklist(t->loc, blacklist);
	SIP_LOGD(t->ua->env, "%s: next target (%s)", t->key, res ? "503" : why);
	retx_stop(t);
	life_stop(t);
	if (res && t->kind == TXN_ICT) {
		build_ack(t, res);
		if (t->ack)
			sip_txn_send(t, t->ack, t->acklen);
		if (!RELIABLE(t))
			ghost(t);
	}
	conn_unlink(t);
	free(t->ack);
	t->ack = NULL;
	t->acklen = 0;
	if (sip_loc_next(t->loc) == 0)
		return 1;
	notify(t, res, res ? NULL : sip_loc_error(t->loc), 1);
	terminate(t);
	return 1;
}

/* The text of a request that goes with our INVITE in its transaction
 * (ACK for a non-2xx, 17.1.1.3; CANCEL, 9.1): the INVITE's Request-URI,
 * top Via (same branch), Route, Max-Forwards, From, Call-ID and CSeq
 * number, the To of `to` (the response for an ACK). */
static int invite_sibling(struct sip_buf *b, struct sip_msg *rq, const char *method,
                          struct sip_msg *to)
{
	static const char *const copied[] = { "Route", "Max-Forwards", "From" };
	const char *v;
	size_t n, k;
	int i;
	sip_buf_init(b, 512);
	sip_buf_printf(b, "%s %s SIP/2.0\r\n", method, rq->uri);
	if ((v = sip_msg_hdr(rq, SIP_H_VIA, 0, &n))) {
		/* only the top Via value of a possibly comma-joined line */
		const char *comma = memchr(v, ',', n);
		sip_buf_header(b, "Via", v, comma ? (size_t)(comma - v) : n);
	}
	for (k = 0; k < sizeof copied / sizeof copied[0]; k++)
		for (i = 0; (v = sip_msg_header(rq, copied[k], i, &n)); i++)
			sip_buf_header(b, copied[k], v, n);
	if ((v = sip_msg_hdr(to, SIP_H_TO, 0, &n)))
		sip_buf_header(b, "To", v, n);
	sip_buf_printf(b, "Call-ID: %s\r\nCSeq: %lu %s\r\nContent-Length: 0\r\n\r\n",
	               rq->call_id, rq->cseq, method);
	if (b->oom) {
		sip_buf_free(b);
		return -ENOMEM;
	}
	return 0;
}

/* ACK for a non-2xx final: same branch, To from the response */
static void build_ack(struct sip_txn *t, struct sip_msg *res)
{
	struct sip_buf b;

	if (invite_sibling(&b, t->req, "ACK", res))
		return;
	free(t->ack);
	t->ack = b.p;
	t->acklen = b.len;
}

void sip_txn_client_response(struct sip_txn *ct, struct sip_msg *res)
{
	int status = sip_msg_status(res);

	switch (ct->state) {
	case TS_CALLING:
	case TS_TRYING:
	case TS_PROCEEDING:
		ct->last_status = status;
		if (status < 200) {
			if (ct->kind == TXN_ICT) {
				retx_stop(ct);
				life_stop(ct);
			}
			ct->state = TS_PROCEEDING;
			if (ct->cancel_pending) {
				ct->cancel_pending = 0;
				sip_txn_cancel(ct);
			}
			notify(ct, res, NULL, 0);
			return;
		}
		if (status == 503 && ct->loc && failover(ct, res, NULL, retry_after(res)))
			return;
		retx_stop(ct);
		if (ct->kind == TXN_ICT && status < 300) {
			/* RFC 6026 Accepted: Timer M keeps the transaction
			 * so retransmitted and forked 2xx reach the TU */
			ct->state = TS_ACCEPTED;
			life_arm(ct, 64 * T1(ct));
			notify(ct, res, NULL, 0);
			return;
		}
		ct->state = TS_COMPLETED;
		if (ct->kind == TXN_ICT) {
			build_ack(ct, res);
			if (ct->ack)
				sip_txn_send(ct, ct->ack, ct->acklen);
			life_arm(ct, RELIABLE(ct) ? 0. : 64 * T1(ct));  /* Timer D */
		} else {
			life_arm(ct, RELIABLE(ct) ? 0. : T4(ct));        /* Timer K */
		}
		drop_request(ct);
		free(ct->out);
		ct->out = NULL;
		notify(ct, res, NULL, 1);
		return;
	case TS_ACCEPTED:
		/* retransmitted or forked 2xx: the TU ACKs each */
		if (status >= 200 && status < 300)
			notify(ct, res, NULL, 0);
		return;
	case TS_COMPLETED:
		if (ct->kind == TXN_ICT && status >= 300 && ct->ack)
			sip_txn_send(ct, ct->ack, ct->acklen);
		return;
	default:
		return;
	}
}

void sip_txn_detach(struct sip_txn *ct)
{
	struct ev_loop *loop = ct->ua->env->loop;

	ct->cb = NULL;
	ct->cb_arg = NULL;
	/* nobody waits any more: the timers must not keep sip.run alive */
	if (ev_is_active(&ct->tretx) && !ct->retx_weak) {
		ev_unref(loop);
		ct->retx_weak = 1;
	}
	if (ev_is_active(&ct->tlife) && !ct->life_weak) {
		ev_unref(loop);
		ct->life_weak = 1;
	}
}

void sip_txn_transport_error(struct sip_txn *t, const char *why)
{
	if (t->kind == TXN_ICT || t->kind == TXN_NICT) {
		if (t->state == TS_CALLING || t->state == TS_TRYING || t->state == TS_PROCEEDING) {
			if (failover(t, NULL, why, -1))
				return;
			notify(t, NULL, why, 1);
			terminate(t);
			return;
		}
		return;
	}
	SIP_LOGD(t->ua->env, "server transaction: %s", why);
	terminate(t);
}

void sip_txn_conn_closed(struct sip_conn *c, const char *why)
{
	while (c->txns) {
		struct sip_txn *t = c->txns;
		conn_unlink(t);
		if ((t->kind == TXN_ICT || t->kind == TXN_NICT) &&
		    (t->state == TS_CALLING || t->state == TS_TRYING || t->state == TS_PROCEEDING)) {
			const char *w = !strncmp(why, "transport:", 10) || !strncmp(why, "tls:", 4) ? why
			                : "transport: connection closed";
			if (failover(t, NULL, w, -1))
				continue;
			notify(t, NULL, w, 1);
			terminate(t);
		}
		/* server transactions answer over a new connection (18.2.2) */
	}
}

int sip_ua_unfinished(struct sip_ua *ua)
{
	size_t i;
	int n = 0;

	for (i = 0; i < ua->txns.nb; i++) {
		const struct sip_hnode *h;
		for (h = ua->txns.b[i]; h; h = h->next) {
			const struct sip_txn *t = (const struct sip_txn *)h;
			if ((t->kind == TXN_ICT || t->kind == TXN_NICT) && t->state < TS_COMPLETED)
				n++;
		}
	}
	return n;
}

void sip_txn_free_all(struct sip_ua *ua)
{
	size_t i;

	for (i = 0; i < ua->txns.nb; i++) {
		while (ua->txns.b[i]) {
			struct sip_txn *t = (struct sip_txn *)ua->txns.b[i];
			t->cb = NULL;
			txn_free(t);
		}
	}
	while (ua->thead)
		tomb_pop(ua);
	free(ua->tchunk);
	free(ua->tspare);
	ua->tchunk = ua->tspare = NULL;
}

/* 9.1: CANCEL copies the INVITE's Request-URI, top Via (same branch),
 * Call-ID, From, To, Route and CSeq number; it has its own transaction.
 * Before any provisional response it waits (the INVITE may not have
 * reached anyone yet), and after a final one there is nothing to cancel. */
int sip_txn_cancel(struct sip_txn *ict)
{
	struct sip_msg *rq = ict->req, *m = NULL;
	struct sip_txn *ct;
	struct sip_buf b;
	const char *why;
	int rc;

	if (ict->kind != TXN_ICT || ict->cancelled)
		return -EALREADY;
	if (ict->state == TS_CALLING) {
		ict->cancel_pending = 1;
		return 0;
	}
	if (ict->state != TS_PROCEEDING)
		return -EALREADY;
	ict->cancelled = 1;
	if (invite_sibling(&b, rq, "CANCEL", rq))
		return -ENOMEM;
	rc = sip_msg_parse(b.p, b.len, &m, &why);
	if (rc) {
		sip_msg_unref(m);
		sip_buf_free(&b);
		return -EINVAL;
	}
	/* over a stream the CANCEL finds the INVITE's connection by address */
	return sip_txn_new_client(ict->ua, m, b.p, b.len, ict->proto, &ict->dst, ict->lst,
	                          ict->tls_name, NULL, NULL, &ct);
}
