/***
 * sip.Call - an INVITE session, as UAS (given to ua:on("INVITE", fn)) or
 * UAC (returned by ua:invite). The C half: dialog and transaction
 * plumbing, and events queued for lua/sip/call.lua ("ack", "no_ack",
 * "bye", "cancel", "request", "failed", "closed"; for 100rel "early",
 * "prack", "no_prack"), which adds the blocking methods; the class is
 * documented there.
 * @module sip
 */
#include "lsip.h"
#include "core/core.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct lcall {
	struct lcall *next, *prev;      /* lu->calls */
	struct lua_ua *lu;
	struct sip_dialog *d;
	struct sip_txn *ist;            /* UAS: the INVITE until its final */
	struct sip_txn *ict;            /* UAC: our INVITE */
	struct sip_msg *invite;
	int uas;
	int self_ref;                   /* pinned while the core may call back */
	int co_ref;                     /* UAC: the coroutine in ua:invite */
	int prov_ref;
	ev_timer tmo;                   /* UAC: no answer in time: CANCEL */
	int gave_up;                    /* UAC: timeout or hangup before answer */
	struct sip_msg *late_2xx;       /* UAC: a 2xx offer the ACK must answer */
	struct sip_msg *offer_1xx;      /* UAC: a reliable 1xx offer the PRACK must answer */
	unsigned rel : 1;               /* UAC: our INVITE named 100rel (RFC 3262) */
	unsigned early_answered : 1;    /* UAC: a PRACK carried our answer */
	/* UAC: the To tags of forked 2xx we ACKed and BYEd: their copies get
	 * the ACK again, not another BYE */
	char byed[4][32];
	unsigned nbyed;
};

/*
 * A call is a plain Lua table (metatable sip.Call) holding its C half, a
 * userdata (sip.CallHandle, which has the __gc), under a private key: the
 * fields scripts and call.lua read most (state, ua, invite...) are then
 * plain table reads, and only methods and the computed fields go through
 * __index.
 */
static const char handle_key = 'h';

static struct lcall *check_call(lua_State *L, int idx)
{
	struct lcall *c = NULL;

	if (lua_type(L, idx) == LUA_TTABLE) {
		lua_rawgetp(L, idx, &handle_key);
		c = lua_touserdata(L, -1);
		lua_pop(L, 1);
	}
	if (!c)
		luaL_typeerror(L, idx, "sip.Call");
	return c;
}

void lsip_event(struct lsip_env *e, int obj_ref, const char *name, struct sip_msg *m,
                struct sip_txn *st)
{
	lua_State *L = e->L;

	if (!L || obj_ref == LUA_NOREF)
		return;
	lsip_queued(e);
	lua_rawgeti(L, LUA_REGISTRYINDEX, e->dispatch_ref);
	lua_rawgeti(L, LUA_REGISTRYINDEX, obj_ref);
	lua_pushstring(L, name);
	if (m)
		lsip_push_msg(L, m, st);
	else
		lua_pushnil(L);
	lsip_call(e, L, 3);
}

static void call_link(struct lcall *c)
{
	struct lua_ua *lu = c->lu;

	c->prev = NULL;
	c->next = lu->calls;
	if (c->next)
		c->next->prev = c;
	lu->calls = c;
}

static void call_unlink(struct lcall *c)
{
	if (!c->lu)
		return;
	if (c->prev)
		c->prev->next = c->next;
	else if (c->lu->calls == c)
		c->lu->calls = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->next = c->prev = NULL;
}

static void ist_gone(void *arg, struct sip_txn *st)
{
	struct lcall *c = arg;

	(void)st;
	c->ist = NULL;
}

static void call_release(lua_State *L, struct lcall *c);

/* UAC: the early dialog of a reliable 1xx ends with the INVITE's
 * failure, or with a 2xx of another fork */
static void early_drop(struct lcall *c)
{
	if (c->uas || !c->d || sip_dialog_state(c->d) != SIP_DLG_EARLY)
		return;
	sip_dialog_free(c->d);
	c->d = NULL;
	if (c->offer_1xx) {
		sip_msg_unref(c->offer_1xx);
		c->offer_1xx = NULL;
	}
}

static void ict_gone(void *arg, struct sip_txn *ct)
{
	struct lcall *c = arg;

	(void)ct;
	c->ict = NULL;
	early_drop(c);
	/* a call that never got a dialog is over once its INVITE
	 * transaction is (late 2xx were ACKed and BYEd until then) */
	if (!c->d && c->co_ref == LUA_NOREF && c->lu && c->lu->e->L)
		call_release(c->lu->e->L, c);
}

static void dialog_cb(void *arg, struct sip_dialog *d, int ev, struct sip_txn *st, struct sip_msg *m)
{
	struct lcall *c = arg;
	struct lsip_env *e = c->lu->e;

	(void)d;
	switch (ev) {
	case SIP_DLG_ACK:
		/* an ACK matters to a script only with an answer in it */
		lsip_event(e, c->self_ref, "ack", m && m->body_len ? m : NULL, NULL);
		break;
	case SIP_DLG_NO_ACK:
		lsip_event(e, c->self_ref, "no_ack", NULL, NULL);
		break;
	case SIP_DLG_PRACK:
		lsip_event(e, c->self_ref, "prack", m, st);
		break;
	case SIP_DLG_NO_PRACK:
		/* RFC 3262 3: no PRACK for our reliable 1xx in 64*T1: 5xx */
		if (c->ist && c->lu && c->lu->ua) {
			struct sip_reply r = { .status = 500, .reason = "No PRACK Received" };
			sip_txn_reply(c->ist, &r);
			sip_txn_set_owner(c->ist, NULL, NULL);
			c->ist = NULL;
		}
		lsip_event(e, c->self_ref, "no_prack", NULL, NULL);
		break;
	default:
		if (!strcmp(sip_msg_method(m), "BYE")) {
			/* a BYE in our early dialog: the INVITE ends 487 (15.1.2) */
			if (c->ist && c->lu && c->lu->ua && !sip_txn_final_sent(c->ist)) {
				struct sip_reply r = { .status = 487 };
				sip_txn_reply(c->ist, &r);
				sip_txn_set_owner(c->ist, NULL, NULL);
				c->ist = NULL;
			}
			lsip_event(e, c->self_ref, "bye", NULL, NULL);      /* nobody reads it */
		} else {
			lsip_event(e, c->self_ref, "request", m, st);
		}
		break;
	}
}

/* Release everything the core could call back into; idempotent. */
static void call_release(lua_State *L, struct lcall *c)
{
	if (c->ist) {
		if (!sip_txn_final_sent(c->ist) && c->lu && c->lu->ua) {
			struct sip_reply r = { .status = 480 };
			sip_txn_reply(c->ist, &r);
		}
		sip_txn_set_owner(c->ist, NULL, NULL);
		c->ist = NULL;
	}
	if (c->ict) {
		sip_txn_detach(c->ict);
		sip_txn_set_owner(c->ict, NULL, NULL);
		c->ict = NULL;
	}
	if (c->d) {
		sip_dialog_free(c->d);
		c->d = NULL;
	}
	if (c->lu && !c->lu->e->closed)
		ev_timer_stop(c->lu->e->env.loop, &c->tmo);   /* active or pending */
	if (c->co_ref != LUA_NOREF) {
		luaL_unref(L, LUA_REGISTRYINDEX, c->co_ref);
		c->co_ref = LUA_NOREF;
	}
	if (c->late_2xx) {
		sip_msg_unref(c->late_2xx);
		c->late_2xx = NULL;
	}
	if (c->offer_1xx) {
		sip_msg_unref(c->offer_1xx);
		c->offer_1xx = NULL;
	}
	if (c->prov_ref != LUA_NOREF) {
		luaL_unref(L, LUA_REGISTRYINDEX, c->prov_ref);
		c->prov_ref = LUA_NOREF;
	}
	call_unlink(c);
	if (c->self_ref != LUA_NOREF) {
		luaL_unref(L, LUA_REGISTRYINDEX, c->self_ref);
		c->self_ref = LUA_NOREF;
	}
}

static int call_gc(lua_State *L)
{
	struct lcall *c = luaL_checkudata(L, 1, "sip.CallHandle");

	call_release(L, c);
	if (c->invite) {
		sip_msg_unref(c->invite);
		c->invite = NULL;
	}
	c->lu = NULL;
	return 0;
}

/* the UA closes: its engine frees transactions and dialogs (BYE sent) */
static void call_wake(struct lcall *c, int ok, const char *err, struct sip_msg *res);

/* The UA closes: open calls get a BYE (sent once, now), and coroutines
 * waiting on a call learn that it is over, except from __gc where no
 * coroutine may be resumed. */
void lsip_calls_close(lua_State *L, struct lua_ua *lu, int from_gc)
{
	while (lu->calls) {
		struct lcall *c = lu->calls;
		if (c->d && sip_dialog_state(c->d) == SIP_DLG_CONFIRMED) {
			struct sip_dialog_req r = { .method = "BYE" };
			struct sip_txn *bye;
			char err[128];
			sip_dialog_request(c->d, &r, NULL, NULL, &bye, err, sizeof err);
		}
		if (!from_gc) {
			call_wake(c, 0, "closed", NULL);
			lsip_event(lu->e, c->self_ref, "closed", NULL, NULL);
		}
		call_release(L, c);
	}
}

static struct lcall *call_new(lua_State *L, struct lua_ua *lu, int uas)
{
	struct lcall *c;

	lua_createtable(L, 0, 8);       /* the call: fields the Lua side keeps */
	luaL_setmetatable(L, "sip.Call");
	c = lua_newuserdatauv(L, sizeof *c, 0);
	memset(c, 0, sizeof *c);
	c->self_ref = c->co_ref = c->prov_ref = LUA_NOREF;
	luaL_setmetatable(L, "sip.CallHandle");
	lua_rawsetp(L, -2, &handle_key);
	c->lu = lu;
	c->uas = uas;
	lua_pushvalue(L, -1);
	c->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	call_link(c);
	return c;
}

void lsip_call_incoming(struct lua_ua *lu, struct sip_txn *ist, struct sip_msg *req)
{
	struct lsip_env *e = lu->e;
	lua_State *L = e->L;
	struct lcall *c;

	lsip_queued(e);
	lua_rawgeti(L, LUA_REGISTRYINDEX, e->dispatch_ref);
	lua_rawgeti(L, LUA_REGISTRYINDEX, lu->self_ref);
	c = call_new(L, lu, 1);
	c->ist = ist;
	c->invite = sip_msg_ref(req);
	sip_txn_set_owner(ist, ist_gone, c);
	lsip_call(e, L, 2);
}

int lsip_call_cancelled(struct sip_txn *ist)
{
	struct lcall *c;
	struct sip_reply r = { .status = 487 };

	if (ist->gone != ist_gone)
		return 0;
	c = ist->gone_arg;
	sip_txn_reply(ist, &r);
	lsip_event(c->lu->e, c->self_ref, "cancel", NULL, NULL);
	return 1;
}

/* the handler chain's INVITE and CANCEL: an incoming call, and the end
 * of one with 487 (9.2) */
static void on_invite(void *arg, struct sip_ua *ua, struct sip_txn *ist, struct sip_msg *req)
{
	struct lua_ua *lu = arg;

	(void)ua;
	if (lu->e->L)
		lsip_call_incoming(lu, ist, req);
}

static void on_cancel(void *arg, struct sip_ua *ua, struct sip_txn *ist, struct sip_msg *req)
{
	struct lua_ua *lu = arg;

	(void)ua; (void)req;
	if (lu->e->L && !lsip_call_cancelled(ist)) {
		struct sip_reply r = { .status = 487 };
		sip_txn_reply(ist, &r);
	}
}

void lsip_calls_listen(struct lua_ua *lu)
{
	sip_ua_handler(lu->ua, "INVITE", on_invite, lu);
	sip_ua_handler(lu->ua, "CANCEL", on_cancel, lu);
}

/* ---- UAS ---- */

/* "require", "supported" or nil: what the INVITE says of 100rel */
static const char *peer_100rel(const struct lcall *c)
{
	if (!c->invite)
		return NULL;
	if (sip_msg_option(c->invite, "Require", "100rel"))
		return "require";
	return sip_msg_option(c->invite, "Supported", "100rel") ? "supported" : NULL;
}

/* call:_peer_100rel() -> "require" | "supported" | nil */
static int call_peer_100rel(lua_State *L)
{
	const char *v = peer_100rel(check_call(L, 1));

	if (v)
		lua_pushstring(L, v);
	else
		lua_pushnil(L);
	return 1;
}

/* a reliable 1xx (RFC 3262) in the early dialog it makes: true, or
 * nil, err pushed */
static int reply_reliable(lua_State *L, struct lcall *c, const struct sip_reply *r)
{
	int rc;

	if (r->status <= 100 || r->status >= 200)
		return luaL_argerror(L, 2, "only a 101..199 response is sent reliably");
	if (!peer_100rel(c)) {
		lua_pushnil(L);
		lua_pushstring(L, "the caller does not support 100rel");
		return 2;
	}
	if (!c->d) {
		if (sip_dialog_new_uas(c->ist, &c->d)) {
			lua_pushnil(L);
			lua_pushstring(L, "cannot create the dialog (no Contact in the INVITE?)");
			return 2;
		}
		sip_dialog_set_tu(c->d, dialog_cb, c);
	}
	rc = sip_dialog_reliable(c->d, c->ist, r);
	if (rc) {
		lua_pushnil(L);
		lua_pushstring(L, rc == -EBUSY ? "a reliable provisional response waits for its PRACK"
		                  : rc == -EALREADY ? "already answered" : "transport: send failed");
		return 2;
	}
	lua_pushboolean(L, 1);
	return 1;
}

/* call:_reply(status, reason, headers_text, body, content_type, reliable) */
static int call_reply(lua_State *L)
{
	struct lcall *c = check_call(L, 1);
	struct sip_reply r = { 0 };
	size_t blen = 0;
	int rc;

	r.status = (int)luaL_checkinteger(L, 2);
	luaL_argcheck(L, r.status > 100 && r.status <= 699, 2, "status must be 101..699");
	r.reason = luaL_optstring(L, 3, NULL);
	if (r.reason)
		luaL_argcheck(L, !sip_header_value_bad(r.reason, strlen(r.reason)), 3, "reason contains CR or LF");
	r.headers = luaL_optstring(L, 4, NULL);
	r.body = luaL_optlstring(L, 5, NULL, &blen);
	r.body_len = blen;
	r.content_type = luaL_optstring(L, 6, NULL);
	if (!c->ist || !c->lu || !c->lu->ua) {
		lua_pushnil(L);
		lua_pushstring(L, "call is not awaiting an answer");
		return 2;
	}
	if (lua_toboolean(L, 7))
		return reply_reliable(L, c, &r);
	if (r.status >= 200 && r.status < 300) {
		if (!c->d) {
			rc = sip_dialog_new_uas(c->ist, &c->d);
			if (rc) {
				lua_pushnil(L);
				lua_pushstring(L, "cannot create the dialog (no Contact in the INVITE?)");
				return 2;
			}
			sip_dialog_set_tu(c->d, dialog_cb, c);
		}
		sip_dialog_answered(c->d, c->ist);
	}
	rc = sip_txn_reply(c->ist, &r);
	if (rc) {
		lua_pushnil(L);
		lua_pushstring(L, rc == -EALREADY ? "already answered" : "transport: send failed");
		return 2;
	}
	if (r.status >= 200) {
		sip_txn_set_owner(c->ist, NULL, NULL);
		c->ist = NULL;
	}
	lua_pushboolean(L, 1);
	return 1;
}

/* ---- UAC ---- */

static void call_wake(struct lcall *c, int ok, const char *err, struct sip_msg *res)
{
	struct lsip_env *e = c->lu->e;
	lua_State *L;

	if (c->co_ref == LUA_NOREF)
		return;
	ev_timer_stop(e->env.loop, &c->tmo);
	L = lsip_wake_begin(e, c->co_ref);
	c->co_ref = LUA_NOREF;
	lua_pushboolean(L, ok);
	if (err)
		lua_pushstring(L, err);
	else
		lua_pushnil(L);
	if (res)
		lsip_push_msg(L, res, NULL);
	else
		lua_pushnil(L);
	lsip_call(e, L, 4);
}

/* a 2xx nobody wants (forked, or after we gave up): ACK it, then BYE;
 * a copy of one we BYEd already is only ACKed again (13.2.2.4) */
static void ack_and_bye(struct lcall *c, struct sip_txn *ct, struct sip_msg *res)
{
	struct sip_dialog *d;
	struct sip_dialog_req r = { .method = "BYE" };
	struct sip_txn *bye;
	const char *tag = res->to_tag ? res->to_tag : "";
	char err[128];
	unsigned i, seen = 0;

	for (i = 0; i < c->nbyed && i < 4 && !seen; i++)
		seen = !strcmp(c->byed[i], tag);
	if (sip_dialog_new_uac(ct, res, &d))
		return;
	sip_dialog_ack(d, res, NULL, 0, NULL);
	if (!seen) {
		sip_dialog_request(d, &r, NULL, NULL, &bye, err, sizeof err);
		/* a tag too long to keep, or a fifth fork, may be BYEd again:
		 * harmless (481), and bounded by the peer's retransmissions */
		if (strlen(tag) < sizeof c->byed[0])
			snprintf(c->byed[c->nbyed++ % 4], sizeof c->byed[0], "%s", tag);
	}
	sip_dialog_free(d);
}

/* A reliable 1xx (RFC 3262 4): the early dialog of its To tag, and a
 * PRACK in it. 0 for one to ignore altogether: a copy, or one out of
 * order. When our INVITE had no offer and this 1xx has one, the PRACK
 * carries our answer, which the script writes first (call:_prack). */
static int early_1xx(struct lcall *c, struct sip_txn *ct, struct sip_msg *res)
{
	struct sip_dialog *d = c->d;
	int fork = 0;

	if (d && strcmp(sip_dialog_remote_tag(d), res->to_tag)) {
		/* another fork: a dialog of its own for this PRACK only (a copy
		 * of its 1xx is PRACKed again: 481 or 200, harmless) */
		if (sip_dialog_new_uac(ct, res, &d))
			return 1;
		fork = 1;
	} else if (!d) {
		if (sip_dialog_new_uac(ct, res, &c->d))
			return 1;       /* no dialog (a bad Record-Route): as unreliable */
		d = c->d;
		sip_dialog_set_tu(d, dialog_cb, c);
	}
	if (!sip_dialog_rseq_next(d, res)) {
		if (fork)
			sip_dialog_free(d);
		return 0;
	}
	if (!fork && c->invite && c->invite->body_len == 0 && res->body_len > 0 && !c->early_answered &&
	    !c->offer_1xx)
		c->offer_1xx = sip_msg_ref(res);
	else
		sip_dialog_prack(d, res, NULL, 0, NULL);
	if (fork)
		sip_dialog_free(d);
	else
		lsip_event(c->lu->e, c->self_ref, "early", res, NULL);
	return 1;
}

/* the 2xx that answered the call: its dialog is c->d */
static void answered(struct lcall *c, struct sip_msg *res)
{
	if (c->offer_1xx) {
		/* the 1xx's offer was never answered: the 2xx's is */
		sip_msg_unref(c->offer_1xx);
		c->offer_1xx = NULL;
	}
	sip_dialog_set_tu(c->d, dialog_cb, c);
	if (c->invite && c->invite->body_len == 0 && res->body_len > 0 && !c->early_answered) {
		/* we sent no offer, the 2xx did: the ACK carries our answer,
		 * which ua:invite writes (call:_ack) before anything else */
		c->late_2xx = sip_msg_ref(res);
	} else {
		sip_dialog_ack(c->d, res, NULL, 0, NULL);
	}
	call_wake(c, 1, NULL, res);
}

static void invite_cb(void *arg, struct sip_txn *ct, struct sip_msg *res, const char *err)
{
	struct lcall *c = arg;
	struct lsip_env *e = c->lu->e;
	int status = res ? sip_msg_status(res) : 0;

	if (!res) {
		early_drop(c);
		call_wake(c, 0, err, NULL);
		lsip_event(e, c->self_ref, "failed", NULL, NULL);
		return;
	}
	if (status < 200) {
		if (c->rel && !c->gave_up && res->to_tag && sip_msg_reliable(res) && !early_1xx(c, ct, res))
			return;         /* ignored: a copy, or out of order */
		if (c->prov_ref != LUA_NOREF && !c->gave_up) {
			lua_State *L = e->L;
			lsip_queued(e);
			lua_rawgeti(L, LUA_REGISTRYINDEX, e->dispatch_ref);
			lua_rawgeti(L, LUA_REGISTRYINDEX, c->prov_ref);
			lsip_push_msg(L, res, NULL);
			lsip_call(e, L, 2);
		}
		return;
	}
	if (status >= 300) {
		char why[128];
		snprintf(why, sizeof why, "%d %s", status,
		         res->reason && res->reason[0] ? res->reason : sip_reason_phrase(status));
		early_drop(c);
		call_wake(c, 0, c->gave_up ? NULL : why, res);
		lsip_event(e, c->self_ref, "failed", res, NULL);
		return;
	}
	/* 2xx: the first confirms the call; the same again is a
	 * retransmission to ACK again; another tag is a fork to end */
	if (c->d && sip_dialog_state(c->d) == SIP_DLG_EARLY) {
		if (!c->gave_up && !strcmp(sip_dialog_remote_tag(c->d), res->to_tag ? res->to_tag : "")) {
			/* the early dialog of a reliable 1xx is confirmed (13.2.2.4) */
			sip_dialog_confirm(c->d, res);
			answered(c, res);
			return;
		}
		early_drop(c);
	}
	if (c->d && !strcmp(sip_dialog_remote_tag(c->d), res->to_tag ? res->to_tag : "")) {
		/* a retransmission: ACK again, unless the script is still
		 * writing the answer the ACK must carry */
		if (!c->late_2xx)
			sip_dialog_ack(c->d, res, NULL, 0, NULL);
		return;
	}
	if (c->d || c->gave_up) {
		ack_and_bye(c, ct, res);
		return;
	}
	if (sip_dialog_new_uac(ct, res, &c->d)) {
		ack_and_bye(c, ct, res);
		call_wake(c, 0, "bad 2xx response", res);
		return;
	}
	answered(c, res);
}

/* call:_prack(sdp) -> true when the PRACK went: the PRACK of a reliable
 * 1xx with the answer to its offer (nil: no answer could be made) */
static int call_prack(lua_State *L)
{
	struct lcall *c = check_call(L, 1);
	size_t n = 0;
	const char *body = luaL_optlstring(L, 2, NULL, &n);

	if (!c->offer_1xx || !c->d || !c->lu || !c->lu->ua) {
		lua_pushboolean(L, 0);
		return 1;
	}
	sip_dialog_prack(c->d, c->offer_1xx, body, n, body ? "application/sdp" : NULL);
	sip_msg_unref(c->offer_1xx);
	c->offer_1xx = NULL;
	c->early_answered = body != NULL;
	lua_pushboolean(L, 1);
	return 1;
}

/* call:_ack(sdp): the ACK with the answer to the 2xx's offer */
static int call_ack(lua_State *L)
{
	struct lcall *c = check_call(L, 1);
	size_t n = 0;
	const char *body = luaL_optlstring(L, 2, NULL, &n);

	if (!c->late_2xx || !c->d || !c->lu || !c->lu->ua)
		return 0;
	sip_dialog_ack(c->d, c->late_2xx, body, n, body ? "application/sdp" : NULL);
	sip_msg_unref(c->late_2xx);
	c->late_2xx = NULL;
	return 0;
}

static void invite_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct lcall *c = w->data;

	(void)loop; (void)revents;
	c->gave_up = 1;
	if (c->ict)
		sip_txn_cancel(c->ict);
	call_wake(c, 0, "timeout", NULL);
}

/* ua:_invite(uri, opts, co, proxy, headers_text) -> call | nil, err */
int lsip_ua_invite(lua_State *L)
{
	struct lua_ua *lu = luaL_checkudata(L, 1, "sip.UA");
	struct sip_request rq = { 0 };
	struct lcall *c;
	char err[200];
	size_t blen = 0;
	double timeout;
	int rc;

	if (!lu->ua)
		return luaL_argerror(L, 1, "user agent is closed");
	rq.method = "INVITE";
	rq.uri = luaL_checkstring(L, 2);
	luaL_checktype(L, 3, LUA_TTABLE);
	luaL_checktype(L, 4, LUA_TTHREAD);
	rq.proxy = luaL_optstring(L, 5, NULL);
	rq.headers = luaL_optstring(L, 6, NULL);
	lua_settop(L, 6);
	lua_getfield(L, 3, "sdp");                              /* 7 */
	if (!lua_isnil(L, 7)) {
		rq.body = luaL_checklstring(L, 7, &blen);
		rq.body_len = blen;
		rq.content_type = "application/sdp";
	}
	rq.from = lsip_opt_string(L, 3, "from", "opts");
	rq.to = lsip_opt_string(L, 3, "to", "opts");
	rq.call_id = lsip_opt_string(L, 3, "call_id", "opts");
	rq.cseq = (unsigned)lsip_opt_number(L, 3, "cseq", 0, "opts");
	rq.contact = lsip_opt_string(L, 3, "contact", "opts");
	if ((rq.contact && sip_header_value_bad(rq.contact, strlen(rq.contact))) ||
	    (rq.from && sip_header_value_bad(rq.from, strlen(rq.from))) ||
	    (rq.to && sip_header_value_bad(rq.to, strlen(rq.to))) ||
	    (rq.call_id && sip_header_value_bad(rq.call_id, strlen(rq.call_id))))
		return luaL_error(L, "opts.from, opts.to, opts.call_id and opts.contact must not contain CR or LF");
	timeout = lsip_opt_number(L, 3, "timeout", 0, "opts");
	if (sip_header_value_bad(rq.uri, strlen(rq.uri)) || strchr(rq.uri, ' '))
		return luaL_argerror(L, 2, "URI contains spaces or line breaks");
	c = call_new(L, lu, 0);                                  /* 8 */
	lua_getfield(L, 3, "on_provisional");
	if (lua_isfunction(L, -1))
		c->prov_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	else
		lua_pop(L, 1);
	rc = sip_ua_request(lu->ua, &rq, invite_cb, c, &c->ict, err, sizeof err);
	if (rc) {
		call_release(L, c);
		lua_pushnil(L);
		lua_pushstring(L, err);
		return 2;
	}
	sip_txn_set_owner(c->ict, ict_gone, c);
	c->invite = sip_msg_ref(sip_txn_request(c->ict));
	/* a reliable 1xx is PRACKed when we said we take them (RFC 3262 4) */
	c->rel = sip_msg_option(c->invite, "Supported", "100rel") || sip_msg_option(c->invite, "Require", "100rel");
	lua_pushvalue(L, 4);
	c->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	ev_init(&c->tmo, invite_timeout);
	c->tmo.data = c;
	if (timeout > 0)
		lsip_timer_in(lu->e->env.loop, &c->tmo, timeout);
	lua_pushvalue(L, 8);
	return 1;
}

/* call:_cancel([reason]): before an answer, CANCEL; the coroutine in
 * ua:invite is woken with reason (default "cancelled") */
static int call_cancel(lua_State *L)
{
	struct lcall *c = check_call(L, 1);
	const char *why = luaL_optstring(L, 2, "cancelled");

	if (c->uas || (c->d && sip_dialog_state(c->d) != SIP_DLG_EARLY) || !c->ict || c->gave_up) {
		lua_pushboolean(L, 0);
		return 1;
	}
	c->gave_up = 1;
	sip_txn_cancel(c->ict);
	call_wake(c, 0, why, NULL);
	lua_pushboolean(L, 1);
	return 1;
}

/* call:_request(method, opts, co, headers_text) -> true | nil, err */
static int call_request(lua_State *L)
{
	struct lcall *c = check_call(L, 1);

	return lsip_dialog_send(L, c->lu, c->d && c->lu && c->lu->ua ? c->d : NULL);
}

/* call:_end(): the dialog is over (BYE done either way) */
static int call_end(lua_State *L)
{
	struct lcall *c = check_call(L, 1);

	if (c->d && c->lu && c->lu->ua)
		sip_dialog_terminate(c->d);
	call_release(L, c);
	return 0;
}

static int push_s(lua_State *L, const char *s)
{
	if (s)
		lua_pushstring(L, s);
	else
		lua_pushnil(L);
	return 1;
}

/* the fields computed from the C side, read-only; ids for call_index */
enum { F_CALL_ID = 1, F_UAS, F_LOCAL_TAG, F_REMOTE_TAG, F_REMOTE_TARGET, F_ROUTES, F_LOCAL,
       F_REMOTE, F_INVITE, F_FROM, F_TO };
static const char *const builtin[] = { "call_id", "uas", "local_tag", "remote_tag",
	"remote_target", "routes", "local", "remote", "invite", "from", "to", NULL };

/* upvalues: 1 methods, 2 lazy fields, 3 builtin name -> F_*. A key
 * missing from the table comes here (a script's own fields too, while
 * unset): each is one table lookup, no string compares */
static int call_index(lua_State *L)
{
	struct lcall *c;
	int live, f;

	lua_pushvalue(L, 2);
	if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL)
		return 1;
	lua_pushvalue(L, 2);
	lua_rawget(L, lua_upvalueindex(3));
	f = (int)lua_tointeger(L, -1);     /* 0 when nil */
	if (!f) {
		/* fields computed on first use (remote_sdp is parsed only when
		 * a script looks at it) */
		lua_pushvalue(L, 2);
		if (lua_rawget(L, lua_upvalueindex(2)) == LUA_TFUNCTION) {
			lua_pushvalue(L, 1);
			lua_call(L, 1, 1);
			return 1;
		}
		lua_pushnil(L);
		return 1;
	}
	c = check_call(L, 1);
	live = c->d && c->lu && c->lu->ua;
	switch (f) {
	case F_CALL_ID:
		return push_s(L, c->invite ? c->invite->call_id : NULL);
	case F_UAS:
		lua_pushboolean(L, c->uas);
		return 1;
	case F_LOCAL_TAG:
		return push_s(L, live ? sip_dialog_local_tag(c->d) : NULL);
	case F_REMOTE_TAG:
		return push_s(L, live ? sip_dialog_remote_tag(c->d) : NULL);
	case F_REMOTE_TARGET:
		return push_s(L, live ? sip_dialog_remote_target(c->d) : NULL);
	case F_ROUTES:
		return push_s(L, live ? sip_dialog_routes(c->d) : NULL);
	case F_LOCAL:
		return push_s(L, live ? sip_dialog_local_uri(c->d) : NULL);
	case F_REMOTE:
		return push_s(L, live ? sip_dialog_remote_uri(c->d) : NULL);
	case F_INVITE:
		/* "invite", not "request": call:request(method) is the
		 * in-dialog request method */
		if (!c->invite)
			return push_s(L, NULL);
		/* one message object per call: kept in the table */
		lsip_push_msg(L, c->invite, NULL);
		lua_pushliteral(L, "invite");
		lua_pushvalue(L, -2);
		lua_rawset(L, 1);
		return 1;
	default: {      /* F_FROM, F_TO */
		size_t n;
		const char *v = c->invite ? sip_msg_hdr(c->invite, f == F_FROM ? SIP_H_FROM : SIP_H_TO, 0, &n)
		                          : NULL;
		if (!v)
			return push_s(L, NULL);
		lua_pushlstring(L, v, n);
		return 1;
	}
	}
}

/* upvalue 1: builtin name -> F_* (those are read-only) */
static int call_newindex(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_settop(L, 3);
	lua_pushvalue(L, 2);
	if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL)
		return luaL_error(L, "sip.Call field '%s' is read-only", lua_tostring(L, 2));
	lua_pop(L, 1);
	lua_rawset(L, 1);
	return 0;
}

static int call_tostring(lua_State *L)
{
	struct lcall *c = check_call(L, 1);
	const char *state;

	lua_getfield(L, 1, "state");
	state = lua_tostring(L, -1);
	lua_pushfstring(L, "sip.Call: %s %s (call-id %s)", c->uas ? "incoming" : "outgoing",
	                state ? state : "?",
	                c->invite && c->invite->call_id ? c->invite->call_id : "?");
	return 1;
}

static const luaL_Reg call_methods[] = {
	{ "_reply", call_reply },
	{ "_cancel", call_cancel },
	{ "_request", call_request },
	{ "_end", call_end },
	{ "_ack", call_ack },
	{ "_prack", call_prack },
	{ "_peer_100rel", call_peer_100rel },
	{ NULL, NULL }
};

int lsip_open_call(lua_State *L)
{
	int i;

	luaL_newmetatable(L, "sip.Call");
	luaL_newlib(L, call_methods);
	lua_pushvalue(L, -1);
	lua_setfield(L, -3, "methods");
	lua_newtable(L);
	lua_pushvalue(L, -1);
	lua_setfield(L, -4, "lazy");
	lua_createtable(L, 0, sizeof builtin / sizeof builtin[0]);
	for (i = 0; builtin[i]; i++) {
		lua_pushinteger(L, i + 1);
		lua_setfield(L, -2, builtin[i]);
	}
	lua_pushvalue(L, -1);
	lua_insert(L, -4);      /* kept below for __newindex */
	lua_pushcclosure(L, call_index, 3);
	lua_setfield(L, -3, "__index");
	lua_pushcclosure(L, call_newindex, 1);
	lua_setfield(L, -2, "__newindex");
	lua_pushcfunction(L, call_tostring);
	lua_setfield(L, -2, "__tostring");
	luaL_newmetatable(L, "sip.CallHandle");
	lua_pushcfunction(L, call_gc);
	lua_setfield(L, -2, "__gc");
	lua_pop(L, 1);
	return 1;
}

/* ua:_find_call(call_id, local_tag, remote_tag) -> the confirmed call
 * whose dialog these name (an INVITE with Replaces), or nil */
int lsip_ua_find_call(lua_State *L)
{
	struct lua_ua *lu = luaL_checkudata(L, 1, "sip.UA");
	const char *cid = luaL_checkstring(L, 2), *lt = luaL_checkstring(L, 3), *rt = luaL_checkstring(L, 4);
	struct sip_dialog *d = lu->ua ? sip_dialog_find(lu->ua, cid, lt, rt) : NULL;
	struct lcall *c = d ? sip_dialog_tu(d, dialog_cb) : NULL;

	if (!c || c->self_ref == LUA_NOREF || sip_dialog_state(d) != SIP_DLG_CONFIRMED) {
		lua_pushnil(L);
		return 1;
	}
	lua_rawgeti(L, LUA_REGISTRYINDEX, c->self_ref);
	return 1;
}

int lsip_calls_count(const struct lua_ua *lu)
{
	int n = 0;
	const struct lcall *c;

	for (c = lu->calls; c; c = c->next)
		n++;
	return n;
}
