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
	ev_idle flush_w;        /* runs the queue outside every engine callback */
	int closed;
};

struct lua_ua {
	struct sip_ua *ua;
	struct lsip_env *e;
	int self_ref;           /* pins the UA while it is open */
	int serving;            /* holds a loop reference while it serves */
};

#define LSIP_ENV_KEY "sip.core.env"

struct lsip_env *lsip_env(lua_State *L);
/* Lua work was queued: make sure the loop runs the queue soon */
void lsip_queued(struct lsip_env *e);
/* push wake(co) and the coroutine held by ref (which is released) */
lua_State *lsip_wake_begin(struct lsip_env *e, int co_ref);
void lsip_call(struct lsip_env *e, lua_State *L, int nargs);

void lsip_push_msg(lua_State *L, struct sip_msg *m, struct sip_txn *st);
struct sip_msg *lsip_check_msg(lua_State *L, int idx);
/* pushes the "Name: value\r\n" lines of a table of headers at idx */
void lsip_headers_text(lua_State *L, int idx, const char *what);
const char *lsip_opt_string(lua_State *L, int t, const char *field, const char *what);
double lsip_opt_number(lua_State *L, int t, const char *field, double dflt, const char *what);

int lsip_open_msg(lua_State *L);
int lsip_open_ua(lua_State *L);

#endif
