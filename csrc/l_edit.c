/***
 * sip.edit - line input for the REPL, on the loop that runs SIP.
 *
 * A module of its own, sip/edit.so, so that sip/core.so does not link
 * libedit: it borrows the core's loop and its way of calling Lua (the
 * constant struct lsip_api that sip.core leaves in the registry).
 *
 * On a terminal, libedit's readline-compatible callback interface edits
 * the line (history, completion); anywhere else (a pipe, a file) lines
 * are read as they are. Either way stdin is a libev io watcher on the
 * engine's loop, so requests are served and timers run while a prompt
 * waits, and SIGINT is a libev signal watcher: Ctrl-C never kills the
 * process while a reader is open.
 *
 * A reader asks for one line at a time: reader:read(prompt) shows the
 * prompt and, once a line is complete, stops reading and calls the
 * line handler. Nothing is read while the line runs, so lines piped in
 * run one after the other and a line typed meanwhile waits in the
 * terminal until the next prompt.
 *
 * A line that runs Lua code without waiting never lets the loop run:
 * for it, SIGINT also sets a hook on the line's coroutine (registered
 * with reader:guard(co)) that raises "interrupted!", as lua.c does.
 *
 * Handlers (Lua functions, called from the loop with lua_pcall):
 * line(text), eof(), interrupt() and complete(word, line, start, stop)
 * which returns a list of candidates that replace word.
 * @module sip.edit
 */
#define _GNU_SOURCE     /* strdup, sigaction SA_RESTART */
#include "lsip.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <editline/readline.h>

#define READER_MT "sip.Edit"
#define PLAIN_MAX (16 * 1024 * 1024)   /* longest line read from a pipe */

struct reader {
	ev_io in;               /* first: the watcher leads to the reader */
	ev_signal intr;
	ev_idle more;           /* gives a line already read, from the loop */
	struct lsip_env *e;
	const struct lsip_api *api;     /* sip.core's functions */
	int self_ref;           /* pins the reader while it is open */
	int fd;
	int tty;                /* libedit edits the line */
	int reading;            /* a line was asked for and not yet given */
	int open;
	/* terminal: what libedit handed to the line function */
	char *line;
	int got;                /* 0 nothing, 1 a line, 2 end of input */
	/* plain input */
	char *buf;
	size_t len, cap;
	int eof;
};

/* libedit's readline emulation and SIGINT are one per process: so is
 * the reader */
static struct reader *edit_owner;       /* the open reader */
static volatile sig_atomic_t sigints;   /* SIGINTs not yet handled */
static lua_State *volatile guarded;     /* the running line's coroutine */
static struct sigaction ev_sigint;      /* libev's handler, which ours calls */
static int chained;

/* completion candidates handed from Lua to rl_completion_matches */
static char **cand;
static size_t ncand, icand;

static struct reader *check_reader(lua_State *L, int idx)
{
	struct reader *r = luaL_checkudata(L, idx, READER_MT);

	if (!r->open)
		luaL_argerror(L, idx, "reader is closed");
	return r;
}

/*
 * Push the reader (an anchor for the duration of the call) and its
 * handler `name`. Returns 0 and pushes nothing when there is no Lua
 * state to call into or no such handler.
 */
static int push_handler(struct reader *r, lua_State *L, const char *name)
{
	if (!L || r->self_ref == LUA_NOREF)
		return 0;
	lua_checkstack(L, 8);
	lua_rawgeti(L, LUA_REGISTRYINDEX, r->self_ref);
	lua_getiuservalue(L, -1, 1);
	lua_getfield(L, -1, name);
	lua_remove(L, -2);
	if (!lua_isfunction(L, -1)) {
		lua_pop(L, 2);
		return 0;
	}
	return 1;
}

static void stop_reading(struct reader *r)
{
	struct ev_loop *loop = r->e->env.loop;

	if (r->tty && r->reading)
		rl_callback_handler_remove();
	r->reading = 0;
	if (r->e->closed)
		return;
	ev_io_stop(loop, &r->in);
	ev_idle_stop(loop, &r->more);
}

/* give a line (text != NULL) or the end of input to Lua */
static void deliver(struct reader *r, const char *text, size_t len)
{
	struct lsip_env *e = r->e;
	lua_State *L = e->L;

	stop_reading(r);
	if (!push_handler(r, L, text ? "line" : "eof"))
		return;
	if (text)
		lua_pushlstring(L, text, len);
	r->api->call(e, L, text ? 1 : 0);
	lua_pop(L, 1);          /* the reader */
}

/* ---------------------------------------------------------------------
 * Terminal: libedit */

static void line_func(char *line)
{
	struct reader *r = edit_owner;

	if (!r) {
		free(line);
		return;
	}
	free(r->line);
	r->line = line;
	r->got = line ? 1 : 2;
}

static char *cand_next(const char *text, int state)
{
	(void)text;
	if (state == 0)
		icand = 0;
	if (icand < ncand)
		return strdup(cand[icand++]);
	return NULL;
}

static void cand_free(void)
{
	size_t i;

	for (i = 0; i < ncand; i++)
		free(cand[i]);
	free(cand);
	cand = NULL;
	ncand = icand = 0;
}

/* rl_attempted_completion_function: ask Lua, never fall back to files */
static char **complete(const char *text, int start, int end)
{
	struct reader *r = edit_owner;
	lua_State *L = r ? r->e->L : NULL;
	char **matches = NULL;
	lua_Integer i, n;

	rl_attempted_completion_over = 1;
	/* nothing after a completed name ("ua:request", then "(" is typed);
	 * readline resets this before each completion, so set it here */
	rl_completion_append_character = '\0';
	if (!r || !push_handler(r, L, "complete"))
		return NULL;
	lua_pushstring(L, text);
	lua_pushstring(L, rl_line_buffer ? rl_line_buffer : "");
	lua_pushinteger(L, start);
	lua_pushinteger(L, end);
	if (lua_pcall(L, 4, 1, 0) != LUA_OK || !lua_istable(L, -1)) {
		lua_pop(L, 2);
		return NULL;
	}
	cand_free();
	n = luaL_len(L, -1);
	if (n > 0 && n < 100000)
		cand = calloc((size_t)n, sizeof *cand);
	for (i = 1; cand && i <= n; i++) {
		const char *s;

		lua_geti(L, -1, i);
		s = lua_tostring(L, -1);
		if (s && (cand[ncand] = strdup(s)))
			ncand++;
		lua_pop(L, 1);
	}
	lua_pop(L, 2);
	if (ncand)
		matches = rl_completion_matches(text, cand_next);
	cand_free();
	return matches;
}

static void tty_input(struct reader *r)
{
	struct pollfd pfd = { .fd = r->fd, .events = POLLIN };

	r->got = 0;
	rl_callback_read_char();
	if (r->got == 1) {
		char *line = r->line;

		/* libedit has drawn the prompt again below the line (its
		 * UNBUFFERED mode is set once more before the line function
		 * runs): erase it, the line's output goes there */
		fputs("\r\033[K", stdout);
		fflush(stdout);
		r->line = NULL;
		deliver(r, line, strlen(line));
		free(line);
		return;
	}
	if (r->got == 2) {
		/* at Ctrl-D libedit draws the prompt once more, and a new
		 * line as the handler goes: erase that prompt */
		stop_reading(r);
		fputs("\033[A\r\033[K", stdout);
		fflush(stdout);
		deliver(r, NULL, 0);
		return;
	}
	/* libedit says nothing when the terminal goes away: without this
	 * check a hung-up terminal would wake the loop forever */
	if (poll(&pfd, 1, 0) == 1 && (pfd.revents & (POLLHUP | POLLERR | POLLNVAL)))
		deliver(r, NULL, 0);
}

/* ---------------------------------------------------------------------
 * Plain input: lines as they come, no echo, no prompt */

/* a complete line (or the end of input) is waiting in the buffer */
static int plain_ready(const struct reader *r)
{
	return r->eof || (r->len && memchr(r->buf, '\n', r->len));
}

static void plain_input(struct reader *r)
{
	char *nl = r->len ? memchr(r->buf, '\n', r->len) : NULL;
	size_t n;

	if (!nl && !r->eof) {
		ssize_t got;

		if (r->len == r->cap) {
			size_t cap = r->cap ? r->cap * 2 : 4096;
			char *b = cap <= PLAIN_MAX ? realloc(r->buf, cap) : NULL;

			if (!b) {
				r->api->log(&r->e->env, SIP_LOG_ERROR, "repl: input line too long");
				r->eof = 1;
				r->len = 0;
				deliver(r, NULL, 0);
				return;
			}
			r->buf = b;
			r->cap = cap;
		}
		got = read(r->fd, r->buf + r->len, r->cap - r->len);
		if (got < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (got <= 0)
			r->eof = 1;
		else
			r->len += (size_t)got;
		nl = r->len ? memchr(r->buf, '\n', r->len) : NULL;
	}
	if (nl) {
		char *line;

		n = (size_t)(nl - r->buf);
		line = malloc(n + 1);
		if (!line) {
			r->api->log(&r->e->env, SIP_LOG_ERROR, "repl: out of memory");
			return;
		}
		memcpy(line, r->buf, n);
		line[n] = '\0';
		r->len -= n + 1;
		memmove(r->buf, nl + 1, r->len);
		if (n && line[n - 1] == '\r')
			n--;
		deliver(r, line, n);
		free(line);
	} else if (r->eof && r->len) {
		/* the last line had no newline */
		char *line = r->buf;

		n = r->len;
		r->buf = NULL;
		r->len = r->cap = 0;
		deliver(r, line, n);
		free(line);
	} else if (r->eof) {
		deliver(r, NULL, 0);
	}
}

/* ---------------------------------------------------------------------
 * SIGINT */

static void stop_hook(lua_State *L, lua_Debug *ar)
{
	(void)ar;
	lua_sethook(L, NULL, 0, 0);
	sigints = 0;            /* handled here: the watcher has nothing to do */
	lua_pushliteral(L, "interrupted!");
	lua_error(L);
}

/* runs before libev's own handler: lua_sethook is safe in a signal handler */
static void on_sigint(int sig)
{
	lua_State *L = guarded;

	sigints = sigints + 1;
	if (L)
		lua_sethook(L, stop_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE | LUA_MASKCOUNT, 1);
	if (ev_sigint.sa_handler != SIG_DFL && ev_sigint.sa_handler != SIG_IGN)
		ev_sigint.sa_handler(sig);
}

static void unguard(void)
{
	lua_State *L = guarded;

	guarded = NULL;
	if (L && lua_gethook(L) == stop_hook)
		lua_sethook(L, NULL, 0, 0);
}

/* ---------------------------------------------------------------------
 * Watchers */

static void in_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct reader *r = (struct reader *)w;

	(void)loop; (void)revents;
	if (!r->reading)
		return;
	if (r->tty)
		tty_input(r);
	else
		plain_input(r);
}

static void more_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
	struct reader *r = w->data;

	(void)revents;
	ev_idle_stop(loop, w);
	if (r->reading && !r->tty)
		plain_input(r);
}

static void intr_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct reader *r = w->data;
	lua_State *L = r->e->L;

	(void)loop; (void)revents;
	if (!sigints)
		return;         /* the line's hook took it */
	sigints = 0;
	if (!push_handler(r, L, "interrupt"))
		return;
	r->api->call(r->e, L, 0);
	lua_pop(L, 1);
}

/***
 * Ask for one line: show `prompt` (on a terminal) and call the line
 * handler once a line is complete, or the eof handler at the end of the
 * input. Asking again while a line is being typed discards it and
 * starts over with the new prompt.
 * @function read
 * @string[opt] prompt
 */
static int r_read(lua_State *L)
{
	struct reader *r = check_reader(L, 1);
	const char *prompt = luaL_optstring(L, 2, "");
	struct ev_loop *loop = r->e->env.loop;

	if (r->tty) {
		if (r->reading)
			rl_callback_handler_remove();
		fflush(stdout);
		rl_callback_handler_install(prompt, line_func);
	}
	r->reading = 1;
	if (!ev_is_active(&r->in))
		ev_io_start(loop, &r->in);
	/* a line already read is given from the loop's next iteration,
	 * never from here: after sip.stop(), none is */
	if (!r->tty && plain_ready(r))
		ev_idle_start(loop, &r->more);
	return 0;
}

/***
 * Stop reading (the line being typed is dropped).
 * @function pause
 */
static int r_pause(lua_State *L)
{
	stop_reading(check_reader(L, 1));
	return 0;
}

/***
 * Make room for output while a prompt is shown: clear the prompt's line.
 * Call show() once the output is written.
 * @function hide
 */
static int r_hide(lua_State *L)
{
	struct reader *r = check_reader(L, 1);

	if (r->tty && r->reading) {
		fputs("\r\033[K", stdout);
		fflush(stdout);
	}
	return 0;
}

/***
 * Draw the prompt and the line being typed again, after hide().
 * @function show
 */
static int r_show(lua_State *L)
{
	struct reader *r = check_reader(L, 1);

	if (r->tty && r->reading) {
		fflush(stdout);
		rl_forced_update_display();
		fflush(stdout);
	}
	return 0;
}

/***
 * The coroutine running the current line (or nil): a SIGINT while it
 * runs Lua code raises "interrupted!" in it.
 * @function guard
 * @tparam[opt] thread co
 */
static int r_guard(lua_State *L)
{
	lua_State *co = NULL;

	check_reader(L, 1);
	if (!lua_isnoneornil(L, 2)) {
		luaL_checktype(L, 2, LUA_TTHREAD);
		co = lua_tothread(L, 2);
	}
	unguard();
	lua_settop(L, 2);
	lua_setiuservalue(L, 1, 2);     /* anchors the coroutine */
	guarded = co;
	return 0;
}

/***
 * Whether lines are edited (stdin is a terminal).
 * @function tty
 * @treturn boolean
 */
static int r_tty(lua_State *L)
{
	lua_pushboolean(L, check_reader(L, 1)->tty);
	return 1;
}

/***
 * Add a line to the history (terminal only).
 * @function history_add
 * @string line
 */
static int r_history_add(lua_State *L)
{
	struct reader *r = check_reader(L, 1);
	const char *line = luaL_checkstring(L, 2);

	if (r->tty)
		add_history(line);
	return 0;
}

/***
 * Load the history from a file (terminal only).
 * @function history_load
 * @string path
 * @return true, or fail and a message
 */
static int r_history_load(lua_State *L)
{
	struct reader *r = check_reader(L, 1);
	const char *path = luaL_checkstring(L, 2);
	int err;

	if (!r->tty) {
		lua_pushboolean(L, 1);
		return 1;
	}
	err = read_history(path);
	if (err) {
		luaL_pushfail(L);
		lua_pushfstring(L, "%s: %s", path, strerror(err > 0 ? err : EINVAL));
		return 2;
	}
	lua_pushboolean(L, 1);
	return 1;
}

/***
 * Save the history to a file, keeping at most `max` lines (terminal only).
 * @function history_save
 * @string path
 * @int[opt=1000] max
 * @return true, or fail and a message
 */
static int r_history_save(lua_State *L)
{
	struct reader *r = check_reader(L, 1);
	const char *path = luaL_checkstring(L, 2);
	lua_Integer max = luaL_optinteger(L, 3, 1000);
	int err;

	luaL_argcheck(L, max > 0 && max <= 1000000, 3, "1..1000000 expected");
	if (!r->tty) {
		lua_pushboolean(L, 1);
		return 1;
	}
	stifle_history((int)max);
	err = write_history(path);
	if (err) {
		luaL_pushfail(L);
		lua_pushfstring(L, "%s: %s", path, strerror(err > 0 ? err : EINVAL));
		return 2;
	}
	lua_pushboolean(L, 1);
	return 1;
}

/* __gc, __close and close: stop everything, give the terminal back */
static int r_close(lua_State *L)
{
	struct reader *r = luaL_checkudata(L, 1, READER_MT);

	if (!r->open)
		return 0;
	r->open = 0;
	stop_reading(r);
	unguard();
	if (chained) {
		sigaction(SIGINT, &ev_sigint, NULL);
		chained = 0;
	}
	if (!r->e->closed && ev_is_active(&r->intr))
		ev_signal_stop(r->e->env.loop, &r->intr);
	if (r->tty) {
		rl_attempted_completion_function = NULL;
		fflush(stdout);
	}
	edit_owner = NULL;
	free(r->line);
	r->line = NULL;
	free(r->buf);
	r->buf = NULL;
	r->len = r->cap = 0;
	if (r->self_ref != LUA_NOREF) {
		luaL_unref(L, LUA_REGISTRYINDEX, r->self_ref);
		r->self_ref = LUA_NOREF;
	}
	return 0;
}

/***
 * Open the reader on stdin. Only one reader may be open at a time.
 * @function open
 * @tab handlers line, eof, interrupt, complete (functions)
 * @tab[opt] opts tty (false: plain lines even on a terminal)
 * @return the reader
 */
static int l_open(lua_State *L)
{
	const struct lsip_api *api = lua_touserdata(L, lua_upvalueindex(1));
	struct lsip_env *e = api->env(L);
	struct reader *r;
	int tty;

	luaL_checktype(L, 1, LUA_TTABLE);
	if (!lua_isnoneornil(L, 2))
		luaL_checktype(L, 2, LUA_TTABLE);
	tty = isatty(STDIN_FILENO);
	if (!lua_isnoneornil(L, 2)) {
		lua_getfield(L, 2, "tty");
		if (lua_isboolean(L, -1) && !lua_toboolean(L, -1))
			tty = 0;
		lua_pop(L, 1);
	}
	if (edit_owner)
		return luaL_error(L, "sip.edit: a reader is already open");

	/* closed and consistent before anything is acquired */
	r = lua_newuserdatauv(L, sizeof *r, 2);
	memset(r, 0, sizeof *r);
	r->self_ref = LUA_NOREF;
	luaL_setmetatable(L, READER_MT);
	lua_pushvalue(L, 1);
	lua_setiuservalue(L, -2, 1);

	r->e = e;
	r->api = api;
	r->fd = STDIN_FILENO;
	r->tty = tty;
	ev_io_init(&r->in, in_cb, r->fd, EV_READ);
	ev_signal_init(&r->intr, intr_cb, SIGINT);
	r->intr.data = r;
	ev_idle_init(&r->more, more_cb);
	r->more.data = r;
	if (tty) {
		/* libedit must not install signal handlers of its own: SIGINT
		 * belongs to the loop's watcher */
		rl_catch_signals = 0;
		rl_readline_name = "luasip";
		rl_instream = stdin;
		rl_outstream = stdout;
		if (rl_initialize() != 0)
			return luaL_error(L, "sip.edit: cannot initialise libedit");
		using_history();
		/* '.' and ':' stay in the word: "ua:req" completes as a whole */
		rl_basic_word_break_characters = " \t\n\"\\'`@$><=;|&{}()[],+-*/%^~#";
		rl_attempted_completion_function = complete;
	}
	edit_owner = r;
	sigints = 0;
	ev_signal_start(e->env.loop, &r->intr);
	{
		struct sigaction sa;

		memset(&sa, 0, sizeof sa);
		sa.sa_handler = on_sigint;
		sigfillset(&sa.sa_mask);
		sa.sa_flags = SA_RESTART;
		/* only over a plain handler (libev's is one) can ours chain */
		chained = sigaction(SIGINT, NULL, &ev_sigint) == 0 &&
		          !(ev_sigint.sa_flags & SA_SIGINFO) &&
		          sigaction(SIGINT, &sa, NULL) == 0;
	}
	r->open = 1;
	lua_pushvalue(L, -1);
	r->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	return 1;
}

static const luaL_Reg reader_methods[] = {
	{ "read", r_read },
	{ "pause", r_pause },
	{ "hide", r_hide },
	{ "show", r_show },
	{ "tty", r_tty },
	{ "guard", r_guard },
	{ "history_add", r_history_add },
	{ "history_load", r_history_load },
	{ "history_save", r_history_save },
	{ "close", r_close },
	{ NULL, NULL }
};

__attribute__((visibility("default"))) int luaopen_sip_edit(lua_State *L);

int luaopen_sip_edit(lua_State *L)
{
	const struct lsip_api *api;

	/* the core first: its loop, and the functions it lends */
	lua_getglobal(L, "require");
	lua_pushliteral(L, "sip.core");
	lua_call(L, 1, 0);
	lua_getfield(L, LUA_REGISTRYINDEX, LSIP_API);
	api = lua_touserdata(L, -1);
	lua_pop(L, 1);
	if (!api)
		return luaL_error(L, "sip.edit: sip.core did not load");
	luaL_newmetatable(L, READER_MT);
	luaL_newlib(L, reader_methods);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, r_close);
	lua_setfield(L, -2, "__gc");
	lua_pushcfunction(L, r_close);
	lua_setfield(L, -2, "__close");
	lua_pop(L, 1);

	lua_createtable(L, 0, 1);
	lua_pushlightuserdata(L, (void *)api);
	lua_pushcclosure(L, l_open, 1);
	lua_setfield(L, -2, "open");
	return 1;
}
