/*
 * lsip.h - shared by the Lua bindings (csrc/l_*.c). The engine knows
 * nothing of Lua; these files give its objects to Lua and carry outcomes
 * back to waiting coroutines through the scheduler's wake function.
 */
#ifndef LSIP_H
#define LSIP_H

#include <lua.h>
#include <lauxlib.h>
#include <ev.h>
#include "core/ua.h"

/* one per Lua state: the loop, and the Lua functions the core calls */
struct lsip_env {
	struct sip_env env;
	lua_State *L;           /* the state running the loop, set by run/step */
	int wake_ref;           /* scheduler: wake(co, ...) */
	int dispatch_ref;       /* scheduler: dispatch(ua, req) */
	int log_ref;            /* optional log function(level, msg) */
	int trace_ref;          /* optional trace function(dir, proto, peer, text) */
	int flush_ref;          /* scheduler: flush() runs what wake/dispatch queued */
	ev_prepare flush_w;     /* runs the queue outside every engine callback */
	int queued;             /* work is queued: the loop holds a reference */
	int held;               /* a coroutine waits: the loop holds a reference */
	int closed;
	struct lua_ua *uas;     /* open user agents, for the drain at exit */
};

struct pending;
struct lcall;
struct ldialog;
struct sip_dialog;

struct lua_ua {
	struct sip_ua *ua;
	struct lsip_env *e;
	int self_ref;           /* pins the UA while it is open */
	int serving;            /* holds a loop reference while it serves */
	struct pending *pendings;       /* client requests coroutines wait on */
	struct lcall *calls;            /* calls that may still call back */
	struct ldialog *dialogs;        /* dialogs of the other usages (l_dialog.c) */
	int subscribing;                /* our SUBSCRIBEs that wait for a first NOTIFY */
	struct lua_ua *next, *prev;     /* e->uas */
};

/* a client request a coroutine waits on (l_ua.c) */
struct pending {
	struct pending *next, *prev;
	struct lua_ua *lu;
	int co_ref;
	int prov_ref;           /* on_provisional function, or LUA_NOREF */
	ev_timer tmo;
	struct sip_txn *ct;
	struct sip_dns_lookup *q;       /* ua:_resolve: the lookup, while it runs */
	struct lresolve_sync *sync;     /* ... answered before _resolve returned */
};
/* the coroutine at co_idx will wait; opts at opts_idx may hold timeout
 * and on_provisional. Link p->ct once the transaction exists. */
struct pending *lsip_pending_new(lua_State *L, struct lua_ua *lu, int co_idx, int opts_idx);
void lsip_pending_cb(void *arg, struct sip_txn *ct, struct sip_msg *res, const char *err);
/* the request could not start: forget p without waking anyone */
void lsip_pending_drop(lua_State *L, struct pending *p);

/* l_call.c */
int lsip_open_call(lua_State *L);
int lsip_open_sdp(lua_State *L);
int lsip_open_auth(lua_State *L);
int lsip_open_media(lua_State *L);       /* l_media.c: sip.core.media */
int lsip_open_pcap(lua_State *L);        /* l_pcap.c: sip.core.pcap */
int lsip_open_socket(lua_State *L);      /* l_sock.c: sip.core.socket */
int lsip_open_proc(lua_State *L);        /* l_proc.c: sip.core.proc */
void lsip_call_incoming(struct lua_ua *lu, struct sip_txn *ist, struct sip_msg *req);
/* the calls register their methods (INVITE, CANCEL) in the UA's chain */
void lsip_calls_listen(struct lua_ua *lu);
int lsip_call_cancelled(struct sip_txn *ist);
void lsip_calls_close(lua_State *L, struct lua_ua *lu, int from_gc);
int lsip_ua_invite(lua_State *L);
int lsip_calls_count(const struct lua_ua *lu);
int lsip_ua_find_call(lua_State *L);
/* l_dialog.c: dialogs for the usages other than calls (sip.core.dialog
 * on the core table at the top of the stack) */
int lsip_open_dialog(lua_State *L);
void lsip_dialogs_listen(struct lua_ua *lu);
void lsip_dialogs_close(lua_State *L, struct lua_ua *lu, int from_gc);
int lsip_ua_subscribing(lua_State *L);
/* a request within d, for call:_request and dialog:request (args 2..5:
 * method, opts, co, headers_text); d NULL answers "no dialog" */
int lsip_dialog_send(lua_State *L, struct lua_ua *lu, struct sip_dialog *d);
/* queue dispatch(obj, name, msg) for the Lua side */
void lsip_event(struct lsip_env *e, int obj_ref, const char *name, struct sip_msg *m, struct sip_txn *st);

#define LSIP_ENV_KEY "sip.core.env"

struct lsip_env *lsip_env(lua_State *L);
/* Lua work was queued: make sure the loop runs the queue soon */
void lsip_queued(struct lsip_env *e);
/* push wake(co) and the coroutine held by ref (which is released) */
lua_State *lsip_wake_begin(struct lsip_env *e, int co_ref);
void lsip_call(struct lsip_env *e, lua_State *L, int nargs);

/* Start a one-shot timer `seconds` from now, not from when the loop last
 * woke: a script that ran a while without waiting (a long computation, a
 * blocking io.popen) would otherwise see its timeout expire at once. */
static inline void lsip_timer_in(struct ev_loop *loop, ev_timer *w, double seconds)
{
	ev_now_update(loop);
	ev_timer_set(w, seconds, 0.);
	ev_timer_start(loop, w);
}

/* What sip/core.so lends the modules built beside it (sip/edit.so,
 * which links libedit so that the core does not): a constant table of
 * functions, a light userdata in the registry under LSIP_API. */
#define LSIP_API "sip.core.api"
struct lsip_api {
	struct lsip_env *(*env)(lua_State *L);
	void (*call)(struct lsip_env *e, lua_State *L, int nargs);
	void (*log)(const struct sip_env *env, int level, const char *fmt, ...);
};

void lsip_push_msg(lua_State *L, struct sip_msg *m, struct sip_txn *st);
struct sip_msg *lsip_check_msg(lua_State *L, int idx);
/* the server transaction of a received request, NULL once it went */
struct sip_txn *lsip_msg_txn(lua_State *L, int idx);
/* pushes the "Name: value\r\n" lines of a table of headers at idx */
void lsip_headers_text(lua_State *L, int idx, const char *what);
/* raises "bad argument #argn to 'fname' (unknown option 'x')" for a key
 * of the table at t not in names (NULL-terminated) */
void lsip_check_opts(lua_State *L, int t, const char *fname, int argn, const char *const names[]);
const char *lsip_opt_string(lua_State *L, int t, const char *field, const char *what);
double lsip_opt_number(lua_State *L, int t, const char *field, double dflt, const char *what);

int lsip_open_msg(lua_State *L);
int lsip_parse(lua_State *L);
/* sip.core.name_addrs(value) -> { { display, uri, params }, ... } | nil, why */
int lsip_name_addrs(lua_State *L);
int lsip_open_ua(lua_State *L);

#endif
