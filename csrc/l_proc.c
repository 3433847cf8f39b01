/***
 * sip.core.proc - child processes and signals on the loop, for the
 * worker supervisor of bin/luasip (`luasip -w N`): start a process, learn
 * when one ends, forward signals. No threads: SIGCHLD and the forwarded
 * signals are libev signal watchers of the one loop, and what they learn
 * reaches Lua through the scheduler's queue, never inside libev.
 * @module sip.core.proc
 */
#define _POSIX_C_SOURCE 200809L
#include "lsip.h"

#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define PROC_KEY "sip.core.proc"
#define NSIG_WATCHED 4

static const char *const sig_names[] = { "INT", "TERM", "HUP", "QUIT", NULL };
static const int sig_nums[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT };

/* one per Lua state, kept in the registry: the watchers and the Lua
 * functions they call */
struct lproc {
	struct lsip_env *e;
	ev_signal child;                /* SIGCHLD: reap, report each exit */
	int exit_ref;                   /* fn(pid, status) */
	ev_signal sigs[NSIG_WATCHED];
	int sig_ref;                    /* fn(name, number) */
	int started;
};

/* queue fn(a, b) for the scheduler (dispatch(fn, a, b) runs it plainly) */
static void dispatch2(struct lsip_env *e, int fn_ref, lua_Integer b, const char *a_str,
                      lua_Integer a_int)
{
	lua_State *L = e->L;

	if (!L || fn_ref == LUA_NOREF)
		return;
	lsip_queued(e);
	lua_rawgeti(L, LUA_REGISTRYINDEX, e->dispatch_ref);
	lua_rawgeti(L, LUA_REGISTRYINDEX, fn_ref);
	if (a_str)
		lua_pushstring(L, a_str);
	else
		lua_pushinteger(L, a_int);
	lua_pushinteger(L, b);
	lsip_call(e, L, 3);
}

static void child_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct lproc *p = w->data;
	pid_t pid;
	int st;

	(void)loop; (void)revents;
	/* one SIGCHLD may stand for several exits */
	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		/* the exit code, or minus the signal that killed it */
		lua_Integer code = WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? -WTERMSIG(st) : -1;
		dispatch2(p->e, p->exit_ref, code, NULL, pid);
	}
}

static void sig_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct lproc *p = w->data;
	int i;

	(void)loop; (void)revents;
	for (i = 0; i < NSIG_WATCHED; i++)
		if (sig_nums[i] == w->signum)
			dispatch2(p->e, p->sig_ref, sig_nums[i], sig_names[i], 0);
}

static int proc_gc(lua_State *L)
{
	struct lproc *p = lua_touserdata(L, 1);
	int i;

	if (!p->started)
		return 0;
	p->started = 0;
	if (!p->e->closed) {
		ev_signal_stop(p->e->env.loop, &p->child);
		for (i = 0; i < NSIG_WATCHED; i++)
			ev_signal_stop(p->e->env.loop, &p->sigs[i]);
	}
	return 0;
}

static struct lproc *get_proc(lua_State *L)
{
	struct lproc *p;

	lua_getfield(L, LUA_REGISTRYINDEX, PROC_KEY);
	p = lua_touserdata(L, -1);
	lua_pop(L, 1);
	if (p)
		return p;
	p = lua_newuserdatauv(L, sizeof *p, 0);
	memset(p, 0, sizeof *p);
	p->exit_ref = p->sig_ref = LUA_NOREF;
	lua_newtable(L);
	lua_pushcfunction(L, proc_gc);
	lua_setfield(L, -2, "__gc");
	lua_setmetatable(L, -2);
	lua_setfield(L, LUA_REGISTRYINDEX, PROC_KEY);
	p->e = lsip_env(L);
	return p;
}

/***
 * Watch processes and signals: `on_exit(pid, status)` for each child
 * that ends (status: the exit code, or minus the signal that killed it);
 * `on_signal(name, number)` for SIGINT, SIGTERM, SIGHUP and SIGQUIT,
 * which then no longer end the process by themselves. The watchers keep
 * the loop alive.
 * @function watch
 */
static int l_watch(lua_State *L)
{
	struct lproc *p;
	int i;

	luaL_checktype(L, 1, LUA_TFUNCTION);
	luaL_checktype(L, 2, LUA_TFUNCTION);
	p = get_proc(L);
	if (p->started)
		return luaL_error(L, "sip.core.proc.watch: already watching");
	lua_pushvalue(L, 1);
	p->exit_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_pushvalue(L, 2);
	p->sig_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	ev_signal_init(&p->child, child_cb, SIGCHLD);
	p->child.data = p;
	ev_signal_start(p->e->env.loop, &p->child);
	for (i = 0; i < NSIG_WATCHED; i++) {
		ev_signal_init(&p->sigs[i], sig_cb, sig_nums[i]);
		p->sigs[i].data = p;
		ev_signal_start(p->e->env.loop, &p->sigs[i]);
	}
	p->started = 1;
	return 0;
}

/***
 * Start a program: `spawn(argv, env)` with argv a list of strings (the
 * program looked up in PATH) and env a table of variables added to this
 * process's environment.
 * @function spawn
 * @treturn integer the child's pid
 * @return[2] fail, message
 */
static int l_spawn(lua_State *L)
{
	size_t argc, nenv = 0, nextra = 0, i, k;
	char **argv, **envp;
	pid_t pid;
	int rc;

	luaL_checktype(L, 1, LUA_TTABLE);
	if (!lua_isnoneornil(L, 2))
		luaL_checktype(L, 2, LUA_TTABLE);
	lua_settop(L, 2);
	argc = (size_t)luaL_len(L, 1);
	luaL_argcheck(L, argc > 0 && argc < 1000, 1, "argv must hold 1 to 999 strings");
	for (i = 0; environ[i]; i++)
		nenv++;
	if (!lua_isnil(L, 2)) {
		lua_pushnil(L);
		while (lua_next(L, 2)) {
			lua_pop(L, 1);
			nextra++;
		}
	}
	luaL_argcheck(L, nextra < 1000, 2, "too many variables");
	argv = lua_newuserdatauv(L, (argc + 1) * sizeof *argv, 0);
	envp = lua_newuserdatauv(L, (nenv + nextra + 1) * sizeof *envp, 0);
	/* each string stays on the stack, anchored, until the spawn is done */
	luaL_checkstack(L, (int)(argc + 2 * nextra + 4), "sip.core.proc.spawn");
	for (i = 0; i < argc; i++) {
		lua_geti(L, 1, (lua_Integer)i + 1);
		if (lua_type(L, -1) != LUA_TSTRING)
			return luaL_argerror(L, 1, "argv must hold strings");
		argv[i] = (char *)lua_tostring(L, -1);
	}
	argv[argc] = NULL;
	k = 0;
	if (!lua_isnil(L, 2)) {
		lua_pushnil(L);
		while (lua_next(L, 2)) {
			if (lua_type(L, -2) != LUA_TSTRING)
				return luaL_argerror(L, 2, "variable names must be strings");
			luaL_tolstring(L, -1, NULL);                    /* key value vstr */
			lua_pushfstring(L, "%s=%s", lua_tostring(L, -3), lua_tostring(L, -1));
			envp[k++] = (char *)lua_tostring(L, -1);
			lua_insert(L, -4);      /* "name=value" stays below, anchored */
			lua_pop(L, 2);          /* the key stays for lua_next */
		}
	}
	for (i = 0; i < nenv; i++) {
		size_t j, n = strcspn(environ[i], "=");
		int overridden = 0;
		for (j = 0; j < k && !overridden; j++)
			overridden = !strncmp(envp[j], environ[i], n) && envp[j][n] == '=';
		if (!overridden)
			envp[k++] = environ[i];
	}
	envp[k] = NULL;
	{
		/* the child starts with no signal blocked and the watched ones
		 * back at their default action */
		posix_spawnattr_t attr;
		sigset_t none, dflt;
		int j;
		sigemptyset(&none);
		sigemptyset(&dflt);
		for (j = 0; j < NSIG_WATCHED; j++)
			sigaddset(&dflt, sig_nums[j]);
		sigaddset(&dflt, SIGCHLD);
		posix_spawnattr_init(&attr);
		posix_spawnattr_setsigmask(&attr, &none);
		posix_spawnattr_setsigdefault(&attr, &dflt);
		posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
		rc = posix_spawnp(&pid, argv[0], NULL, &attr, argv, envp);
		posix_spawnattr_destroy(&attr);
	}
	if (rc) {
		lua_pushnil(L);
		lua_pushfstring(L, "spawn %s: %s", argv[0], strerror(rc));
		return 2;
	}
	lua_pushinteger(L, pid);
	return 1;
}

/***
 * Send a signal ("INT", "TERM", "HUP", "QUIT" or "KILL") to a process.
 * @function kill
 * @treturn boolean true, or fail and a message
 */
static int l_kill(lua_State *L)
{
	static const char *const names[] = { "INT", "TERM", "HUP", "QUIT", "KILL", NULL };
	static const int nums[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGKILL };
	pid_t pid = (pid_t)luaL_checkinteger(L, 1);
	int sig = nums[luaL_checkoption(L, 2, "TERM", names)];

	luaL_argcheck(L, pid > 0, 1, "a process id expected");
	if (kill(pid, sig) < 0) {
		lua_pushnil(L);
		lua_pushstring(L, strerror(errno));
		return 2;
	}
	lua_pushboolean(L, 1);
	return 1;
}

static int l_getpid(lua_State *L)
{
	lua_pushinteger(L, getpid());
	return 1;
}

int lsip_open_proc(lua_State *L)
{
	static const luaL_Reg funcs[] = {
		{ "watch", l_watch },
		{ "spawn", l_spawn },
		{ "kill", l_kill },
		{ "getpid", l_getpid },
		{ NULL, NULL }
	};

	luaL_newlib(L, funcs);
	return 1;
}
