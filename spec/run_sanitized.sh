#!/bin/sh
# Run busted specs against a sanitized luasip (issue 8).
#
#   spec/run_sanitized.sh asan     [busted args]   default: the whole suite
#   spec/run_sanitized.sh valgrind [busted args]   default: spec/interop
#
# asan: a copy of the tree (git-tracked files) under $LUASIP_SAN_DIR
# (default build-sanitize/, outside spec/ so busted does not find the
# copies) gets a sip/core.so built with
# -fsanitize=address,undefined, and a `lua5.4` interpreter built with the
# same runtimes goes first in PATH. So busted, and every bin/luasip script a
# spec starts (#!/usr/bin/env lua5.4), run instrumented, while SIPp,
# Kamailio and the shell tools stay as they are (no LD_PRELOAD leaking
# into them). Every ASan/UBSan/LSan report goes to a log file; the run
# fails when the specs fail or when any report was written, and prints
# the reports.
#
# valgrind: the same copy with a normal build; the `lua5.4` first in PATH
# runs the real interpreter under memcheck (busted and every bin/luasip
# child). The run fails when the specs fail, or when memcheck found a
# memory error anywhere or a definite leak whose stack goes through
# luasip's own code (sip/core.so, csrc/); the libraries' own leaks are
# only counted (memcheck's exit code is left alone for them).
#
# Environment: LUASIP_SAN_DIR, SAN_CC (gcc), LUA (lua5.4), BUSTED_BIN
# (/usr/bin/busted), ASAN_OPTIONS/UBSAN_OPTIONS/LSAN_OPTIONS (added to ours),
# VALGRIND_ARGS (extra memcheck options).
set -eu

mode=${1:-}
case "$mode" in
  asan|valgrind) shift ;;
  *) echo "usage: $0 asan|valgrind [busted args...]" >&2; exit 2 ;;
esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SAN=${LUASIP_SAN_DIR:-$ROOT/build-sanitize}/$mode
TREE=$SAN/tree
LOGS=$SAN/logs
CC=${SAN_CC:-gcc}
LUA_REAL=$(command -v "${LUA:-lua5.4}")
BUSTED_BIN=${BUSTED_BIN:-/usr/bin/busted}
mkdir -p "$TREE" "$SAN/bin"
rm -rf "$LOGS"
mkdir -p "$LOGS"

# --- the copy of the tree: tar keeps the mtimes, so make rebuilds only
# what changed since the last run
if git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1; then
  (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | \
     tar --null -T - -cf -) | tar -xf - -C "$TREE"
else
  (cd "$ROOT" && tar --exclude=./spec/tmp --exclude=./fuzz/build --exclude='*.o' \
     --exclude='*.so' -cf - .) | tar -xf - -C "$TREE"
fi

start=$(date +%s)
if [ "$mode" = asan ]; then
  SANFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer"
  echo "== building sip/core.so with $SANFLAGS ($CC)"
  make -s -C "$TREE" build CC="$CC" CFLAGS="-O1 -g $SANFLAGS" LDFLAGS="$SANFLAGS"

  # a lua5.4 interpreter linked with the sanitizer runtimes (Debian's
  # liblua5.4 is not instrumented; the runtimes come first, no LD_PRELOAD)
  cat >"$SAN/lua.c" <<'EOF'
/* A minimal stand-in for lua5.4: lua [-e stat] [-l mod] [script [args]] */
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <lua.h>
#include <lualib.h>
#include <lauxlib.h>

/* Lua unloads C modules at lua_close: keep them, so that LSan can name
 * the frames of a leak inside sip/core.so at exit */
int dlclose(void *handle);
int dlclose(void *handle)
{
	(void)handle;
	return 0;
}

static int traceback(lua_State *L)
{
	const char *msg = lua_tostring(L, 1);
	if (!msg) {
		if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
			return 1;
		msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
	}
	luaL_traceback(L, L, msg, 1);
	return 1;
}

static int report(lua_State *L, const char *prog, int status)
{
	if (status != LUA_OK) {
		fprintf(stderr, "%s: %s\n", prog, lua_tostring(L, -1));
		fflush(stderr);
		lua_pop(L, 1);
	}
	return status;
}

static int docall(lua_State *L, int narg, int nres)
{
	int base = lua_gettop(L) - narg, status;
	lua_pushcfunction(L, traceback);
	lua_insert(L, base);
	status = lua_pcall(L, narg, nres, base);
	lua_remove(L, base);
	return status;
}

int main(int argc, char **argv)
{
	lua_State *L = luaL_newstate();
	const char *prog = argv[0];
	int i, script = 0, status = LUA_OK, ran = 0;

	if (!L)
		return 1;
	luaL_openlibs(L);
	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-e") || !strcmp(argv[i], "-l")) {
			i++;
			continue;
		}
		if (argv[i][0] == '-' && argv[i][1] && strcmp(argv[i], "--"))
			continue;
		if (!strcmp(argv[i], "--"))
			i++;
		script = i < argc ? i : 0;
		break;
	}
	/* arg, as lua.c builds it */
	lua_createtable(L, argc, script + 1);
	for (i = 0; i < argc; i++) {
		lua_pushstring(L, argv[i]);
		lua_rawseti(L, -2, i - script);
	}
	lua_setglobal(L, "arg");
	for (i = 1; i < argc && (!script || i < script); i++) {
		if (!strcmp(argv[i], "-e") && i + 1 < argc) {
			status = luaL_loadbuffer(L, argv[i + 1], strlen(argv[i + 1]), "=(command line)");
			if (status == LUA_OK)
				status = docall(L, 0, 0);
			if (report(L, prog, status) != LUA_OK)
				goto out;
			ran = 1;
			i++;
		} else if (!strcmp(argv[i], "-l") && i + 1 < argc) {
			lua_getglobal(L, "require");
			lua_pushstring(L, argv[i + 1]);
			status = docall(L, 1, 1);
			if (report(L, prog, status) != LUA_OK)
				goto out;
			lua_setglobal(L, argv[i + 1]);
			i++;
		}
	}
	if (script || !ran) {
		int n;
		const char *fname = script && strcmp(argv[script], "-") ? argv[script] : NULL;
		status = luaL_loadfile(L, fname);
		if (status == LUA_OK) {
			for (n = script + 1; script && n < argc; n++)
				lua_pushstring(L, argv[n]);
			status = docall(L, script ? argc - script - 1 : 0, LUA_MULTRET);
		}
		report(L, prog, status);
	}
out:
	lua_close(L);
	return status == LUA_OK ? EXIT_SUCCESS : EXIT_FAILURE;
}
EOF
  LUAFLAGS=$(pkg-config --cflags --libs lua5.4 2>/dev/null || echo "-I/usr/include/lua5.4 -llua5.4")
  # Debian's lua5.4 is linked with GNU readline, whose readline/history
  # symbols then take precedence over libedit's in sip/core.so: link it
  # the same way, or the REPL would behave differently here
  RL=
  for d in $(gcc -print-search-dirs 2>/dev/null | sed -n 's/^libraries: =//p' | tr : ' ') \
           /lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu /lib /usr/lib; do
    if [ -e "$d/libreadline.so.8" ]; then RL="-Wl,--no-as-needed -l:libreadline.so.8"; break; fi
  done
  if ldd "$LUA_REAL" 2>/dev/null | grep -q libreadline && [ -z "$RL" ]; then
    echo "warning: $LUA_REAL uses readline but libreadline.so.8 was not found" >&2
  fi
  # shellcheck disable=SC2086
  $CC -O1 -g $SANFLAGS -o "$SAN/bin/lua5.4" "$SAN/lua.c" $LUAFLAGS $RL
  ln -sf lua5.4 "$SAN/bin/lua"

  # leaks that are not ours: the Lua interpreter's and the libraries'
  # own caches, never freed by design
  cat >"$SAN/lsan.supp" <<'EOF'
leak:libcrypto.so
leak:libssl.so
leak:libedit.so
leak:libtinfo.so
EOF
  ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:log_path=$LOGS/asan:strict_string_checks=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$LOGS/ubsan${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
  LSAN_OPTIONS="suppressions=$SAN/lsan.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
  export ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS
  [ $# -gt 0 ] || set -- spec
else
  echo "== building sip/core.so (-O1 -g) for valgrind"
  make -s -C "$TREE" build CFLAGS="-O1 -g"
  cat >"$SAN/bin/lua5.4" <<EOF
#!/bin/sh
exec valgrind --tool=memcheck --leak-check=full --errors-for-leak-kinds=definite \\
  --show-leak-kinds=definite --num-callers=30 \\
  --log-file="$LOGS/vg.%p" ${VALGRIND_ARGS:-} "$LUA_REAL" "\$@"
EOF
  chmod +x "$SAN/bin/lua5.4"
  ln -sf lua5.4 "$SAN/bin/lua"
  [ $# -gt 0 ] || set -- spec/interop
fi
echo "== built in $(( $(date +%s) - start )) s"

# the torture corpus lives beside the checkout, not beside the copy
if [ -z "${LUASIP_RFC4475_DIR:-}" ] && [ -d "$ROOT/../shared/testdata/rfc4475" ]; then
  LUASIP_RFC4475_DIR=$(cd "$ROOT/../shared/testdata/rfc4475" && pwd)
  export LUASIP_RFC4475_DIR
fi

PATH=$SAN/bin:$PATH
LUA=$SAN/bin/lua5.4
export PATH LUA BUSTED_BIN
start=$(date +%s)
rc=0
(cd "$TREE" && "$SAN/bin/lua5.4" "$BUSTED_BIN" "$@") || rc=$?
echo "== specs: exit $rc in $(( $(date +%s) - start )) s ($mode)"

bad=0
if [ "$mode" = asan ]; then
  for f in "$LOGS"/*; do
    # an empty log: a process killed (a spec stopping its peer) before it
    # had anything to report
    [ -s "$f" ] || continue
    bad=1
    echo "=================== $f"
    cat "$f"
  done
  [ $bad = 0 ] && echo "== no ASan/UBSan/LSan report"
else
  # memory errors anywhere, and definite leaks through our code
  for f in "$LOGS"/vg.*; do
    [ -s "$f" ] || continue
    ours=$(awk '
      /^==[0-9]+== [^ ]/ && !/^==[0-9]+== +(at|by) / { if (rec != "") flush(); rec = $0 "\n"; next }
      /^==[0-9]+== +(at|by) / { rec = rec $0 "\n"; next }
      /^==[0-9]+== *$/ { flush(); next }
      function flush() {
        if (rec ~ /definitely lost/) { if (rec ~ /core\.so|csrc\//) printf "%s\n", rec }
        else if (rec ~ /(Invalid|uninitialised|Mismatched|overlap|Syscall param|free\(\))/) printf "%s\n", rec
        rec = ""
      }
      END { flush() }' "$f")
    if [ -n "$ours" ]; then
      bad=1
      echo "=================== $f"
      echo "$ours"
    fi
  done
  [ $bad = 0 ] && echo "== no memory error and no definite leak from luasip's code"
  n=$(ls "$LOGS" | wc -l)
  lost=$(cat "$LOGS"/vg.* 2>/dev/null | sed -n 's/.*definitely lost: \([0-9,]*\) bytes.*/\1/p' | \
         tr -d , | awk '{ s += $1 } END { print s + 0 }')
  echo "== $n Lua processes under memcheck; $lost bytes definitely lost in all (every library)"
  echo "== valgrind logs: $LOGS (full leak records of the libraries too)"
fi
[ $rc = 0 ] && [ $bad = 0 ]
