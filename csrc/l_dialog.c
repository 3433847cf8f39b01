/***
 * sip.core.Dialog - a dialog for the usages other than calls: the
 * subscriptions of lua/sip/subscription.lua (SUBSCRIBE/NOTIFY, REFER's
 * implicit one). The engine's dialog (identity, route set, CSeq, remote
 * target, matching) is the same as a call's; this handle gives it to
 * one Lua owner, which gets the requests within it as events
 * ("request", msg), and "closed" when the UA closes. Also the sending
 * of requests within a dialog, shared with sip.Call.
 * @module sip
 * @local
 */
#include "lsip.h"
#include "core/core.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

struct ldialog {
	struct ldialog *next, *prev;    /* lu->dialogs */
	struct lua_ua *lu;
	struct sip_dialog *d;
	int owner_ref;                  /* the Lua object that gets the events */
};

/* a request within d: args (self, method, opts, co, headers_text) at 1..5;
 * d NULL: "no dialog". -> true | nil, err */
int lsip_dialog_send(lua_State *L, struct lua_ua *lu, struct sip_dialog *d)
{
	struct sip_dialog_req r = { 0 };
	struct pending *p;
	char err[160];
	size_t blen = 0;
	int rc;

	r.method = luaL_checkstring(L, 2);
	if (!lua_isnoneornil(L, 3))
		luaL_checktype(L, 3, LUA_TTABLE);
	luaL_checktype(L, 4, LUA_TTHREAD);
	r.headers = luaL_optstring(L, 5, NULL);
	lua_settop(L, 5);
	if (!d) {
		lua_pushnil(L);
		lua_pushstring(L, "no dialog");
		return 2;
	}
	if (!lua_isnil(L, 3)) {
		lua_getfield(L, 3, "body");
		if (!lua_isnil(L, -1)) {
			r.body = luaL_checklstring(L, -1, &blen);
			r.body_len = blen;
		}
		r.content_type = lsip_opt_string(L, 3, "content_type", "opts");
		if (r.body_len && !r.content_type)
			r.content_type = "text/plain";
		r.contact = lsip_opt_string(L, 3, "contact", "opts");
		if (r.contact && sip_header_value_bad(r.contact, strlen(r.contact)))
			return luaL_error(L, "opts.contact contains CR or LF");
	}
	p = lsip_pending_new(L, lu, 4, 3);
	rc = sip_dialog_request(d, &r, lsip_pending_cb, p, &p->ct, err, sizeof err);
	if (rc) {
		lsip_pending_drop(L, p);
		lua_pushnil(L);
		lua_pushstring(L, err);
		return 2;
	}
	lua_pushboolean(L, 1);
	return 1;
}

static struct ldialog *check_dialog(lua_State *L, int idx)
{
	return luaL_checkudata(L, idx, "sip.core.Dialog");
}

static struct sip_dialog *live(struct ldialog *h)
{
	return h->d && h->lu && h->lu->ua ? h->d : NULL;
}

static void dialog_cb(void *arg, struct sip_dialog *d, int ev, struct sip_txn *st, struct sip_msg *m)
{
	struct ldialog *h = arg;

	(void)d;
	if (ev == SIP_DLG_REQUEST)
		lsip_event(h->lu->e, h->owner_ref, "request", m, st);
}

static void dialog_release(lua_State *L, struct ldialog *h)
{
	if (h->d) {
		sip_dialog_free(h->d);
		h->d = NULL;
	}
	if (h->lu) {
		if (h->prev)
			h->prev->next = h->next;
		else if (h->lu->dialogs == h)
			h->lu->dialogs = h->next;
		if (h->next)
			h->next->prev = h->prev;
		h->next = h->prev = NULL;
		h->lu = NULL;
	}
	if (h->owner_ref != LUA_NOREF) {
		luaL_unref(L, LUA_REGISTRYINDEX, h->owner_ref);
		h->owner_ref = LUA_NOREF;
	}
}

/* sip.core.dialog(ua, req, owner[, cseq]) -> handle | nil, err: the
 * dialog a received request makes, before its 2xx is sent (a SUBSCRIBE,
 * a REFER), or the one of our SUBSCRIBE a NOTIFY makes (cseq: the
 * SUBSCRIBE's, which the next request of ours goes past) */
static int l_dialog_new(lua_State *L)
{
	struct lua_ua *lu = luaL_checkudata(L, 1, "sip.UA");
	struct sip_txn *st = lsip_msg_txn(L, 2);
	lua_Integer cseq = luaL_optinteger(L, 4, 0);
	struct ldialog *h;
	struct sip_dialog *d;

	luaL_checkany(L, 3);
	if (!lu->ua)
		return luaL_argerror(L, 1, "user agent is closed");
	if (!st || sip_txn_final_sent(st)) {
		lua_pushnil(L);
		lua_pushstring(L, "request already answered");
		return 2;
	}
	if (sip_dialog_new_uas(st, &d)) {
		lua_pushnil(L);
		lua_pushstring(L, "cannot create the dialog (no Contact in the request?)");
		return 2;
	}
	if (cseq > 0)
		sip_dialog_set_local_cseq(d, (unsigned)cseq);
	h = lua_newuserdatauv(L, sizeof *h, 0);
	memset(h, 0, sizeof *h);
	h->owner_ref = LUA_NOREF;
	luaL_setmetatable(L, "sip.core.Dialog");
	h->d = d;
	h->lu = lu;
	lua_pushvalue(L, 3);
	h->owner_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	h->next = lu->dialogs;
	if (h->next)
		h->next->prev = h;
	lu->dialogs = h;
	sip_dialog_set_tu(d, dialog_cb, h);
	return 1;
}

/* dialog:request(method, opts, co, headers_text) -> true | nil, err */
static int dialog_request(lua_State *L)
{
	struct ldialog *h = check_dialog(L, 1);

	return lsip_dialog_send(L, h->lu, live(h));
}

/* dialog:close(): later requests in it get 481; idempotent */
static int dialog_close(lua_State *L)
{
	dialog_release(L, check_dialog(L, 1));
	return 0;
}

/* dialog:set_cseq(n): our requests in it go past CSeq n */
static int dialog_set_cseq(lua_State *L)
{
	struct sip_dialog *d = live(check_dialog(L, 1));
	lua_Integer n = luaL_checkinteger(L, 2);

	if (d && n > 0 && n < 0x7fffffff)
		sip_dialog_set_local_cseq(d, (unsigned)n);
	return 0;
}

/* The UA closes: its dialogs go with it (the engine frees its side), and
 * their owners hear "closed" unless this is __gc, where no Lua may run. */
void lsip_dialogs_close(lua_State *L, struct lua_ua *lu, int from_gc)
{
	while (lu->dialogs) {
		struct ldialog *h = lu->dialogs;
		int ref = h->owner_ref;
		h->owner_ref = LUA_NOREF;
		dialog_release(L, h);
		if (!from_gc && ref != LUA_NOREF)
			lsip_event(lu->e, ref, "closed", NULL, NULL);
		if (ref != LUA_NOREF)
			luaL_unref(L, LUA_REGISTRYINDEX, ref);
	}
}

/* a NOTIFY no dialog matches goes to the UA's "orphan" event: the
 * subscription waiting for it makes the dialog, or it gets 481 */
static void on_orphan(void *arg, struct sip_ua *ua, struct sip_txn *st, struct sip_msg *req)
{
	struct lua_ua *lu = arg;

	(void)ua;
	if (lu->e->L && lu->subscribing > 0) {
		lsip_event(lu->e, lu->self_ref, "orphan", req, st);
	} else {
		struct sip_reply r = { .status = 481 };
		sip_txn_reply(st, &r);
	}
}

/* ua:_subscribing(delta): how many subscriptions of ours wait for a
 * NOTIFY that may come first; with none, orphans get 481 from C */
int lsip_ua_subscribing(lua_State *L)
{
	struct lua_ua *lu = luaL_checkudata(L, 1, "sip.UA");

	lu->subscribing += (int)luaL_checkinteger(L, 2);
	if (lu->subscribing < 0)
		lu->subscribing = 0;
	return 0;
}

void lsip_dialogs_listen(struct lua_ua *lu)
{
	sip_ua_orphans(lu->ua, on_orphan, lu);
}

static int dialog_gc(lua_State *L)
{
	dialog_release(L, check_dialog(L, 1));
	return 0;
}

static const luaL_Reg dialog_methods[] = {
	{ "request", dialog_request },
	{ "close", dialog_close },
	{ "set_cseq", dialog_set_cseq },
	{ NULL, NULL }
};

int lsip_open_dialog(lua_State *L)
{
	luaL_newmetatable(L, "sip.core.Dialog");
	luaL_newlib(L, dialog_methods);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, dialog_gc);
	lua_setfield(L, -2, "__gc");
	lua_pop(L, 1);
	/* on the core table below it: sip.core.dialog */
	lua_pushcfunction(L, l_dialog_new);
	lua_setfield(L, -2, "dialog");
	return 0;
}
