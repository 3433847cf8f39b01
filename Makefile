# luasip - build, test and demo. Every variable has a ?= default so the
# Makefile works as is, from a checkout and from `luarocks make`.

LUA ?= lua5.4
LUA_VERSION ?= 5.4
PKG_CONFIG ?= pkg-config
LUA_INCDIR ?= $(shell $(PKG_CONFIG) --variable=includedir lua$(LUA_VERSION) 2>/dev/null || echo /usr/include)/lua$(LUA_VERSION)
OSIP2_INCDIR ?= /usr/include
LIBEV_INCDIR ?= /usr/include
OPENSSL_INCDIR ?= /usr/include
OSIP2_LIBDIR ?= /usr/lib
LIBEV_LIBDIR ?= /usr/lib
OPENSSL_LIBDIR ?= /usr/lib
LIBEDIT_INCDIR ?= /usr/include
LIBEDIT_LIBDIR ?= /usr/lib

CC ?= cc
CFLAGS ?= -O2 -g
WARN = -std=c11 -Wall -Wextra -Werror -Wshadow -Wpointer-arith -Wstrict-prototypes \
       -Wmissing-prototypes -Wno-unused-parameter
ALL_CFLAGS = $(WARN) $(CFLAGS) -fPIC -fvisibility=hidden \
             -I$(LUA_INCDIR) -I$(OSIP2_INCDIR) -I$(LIBEV_INCDIR) -I$(OPENSSL_INCDIR) \
             -I$(LIBEDIT_INCDIR) -Icsrc/core -Icsrc
LIBFLAG ?= -shared
LIBS = -L$(OSIP2_LIBDIR) -L$(LIBEV_LIBDIR) -L$(OPENSSL_LIBDIR) \
       -losipparser2 -lev -lcrypto -lssl -lspandsp -lsndfile -lspeexdsp -lpcap -lcares
# the REPL's line editing is a module of its own: the core does not link libedit
EDIT_LIBS = -L$(LIBEV_LIBDIR) -L$(LIBEDIT_LIBDIR) -lev -ledit

CORE_SRC = $(wildcard csrc/core/*.c)
MEDIA_SRC = $(wildcard csrc/media/*.c)
EDIT_SRC = csrc/l_edit.c
BIND_SRC = $(filter-out $(EDIT_SRC),$(wildcard csrc/l_*.c))
OBJ = $(CORE_SRC:.c=.o) $(MEDIA_SRC:.c=.o) $(BIND_SRC:.c=.o)
HDR = $(wildcard csrc/core/*.h) $(wildcard csrc/media/*.h) $(wildcard csrc/*.h)
CORE_SO = sip/core.so
EDIT_SO = sip/edit.so

# installation (luarocks passes LIBDIR, LUADIR, BINDIR)
LIBDIR ?= /usr/local/lib/lua/$(LUA_VERSION)
LUADIR ?= /usr/local/share/lua/$(LUA_VERSION)
BINDIR ?= /usr/local/bin

DEB_PKGS = liblua5.4-dev lua5.4 libosip2-dev libev-dev libssl-dev luarocks lua-busted \
           lua-check lua-socket sip-tester kamailio kamailio-tls-modules kamailio-presence-modules pkg-config gcc make openssl \
           libedit-dev tmux clang libclang-rt-14-dev iproute2 util-linux valgrind nftables \
           libspandsp-dev libsndfile1-dev libspeexdsp-dev sox espeak-ng \
           libpcap-dev tshark sngrep lua-ldoc lua-markdown baresip \
           libc-ares-dev dnsmasq
BUSTED = $(LUA) /usr/bin/busted

FUZZ_TIME ?= 30
FUZZ_SMOKE_TIME ?= 15

.PHONY: all deps build check test lint demo sounds install clean bench bench-smoke fuzz fuzz-smoke \
        check-asan check-valgrind docs

all: build

# Installs what is missing from Debian, and nothing when all is there.
deps:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

build: $(CORE_SO) $(EDIT_SO)

$(CORE_SO): $(OBJ)
	@mkdir -p sip
	$(CC) $(LIBFLAG) -o $@ $(OBJ) $(LIBS) $(LDFLAGS)

$(EDIT_SO): $(EDIT_SRC:.c=.o)
	@mkdir -p sip
	$(CC) $(LIBFLAG) -o $@ $(EDIT_SRC:.c=.o) $(EDIT_LIBS) $(LDFLAGS)

%.o: %.c $(HDR)
	@echo "  CC $<"; $(CC) $(ALL_CFLAGS) -c -o $@ $<

lint:
	luacheck -q lua bin/luasip examples spec bench

test: build
	$(BUSTED) $(BUSTED_ARGS)

check: deps build
	$(BUSTED) $(BUSTED_ARGS)
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory bench-smoke
	$(MAKE) --no-print-directory fuzz-smoke
	$(MAKE) --no-print-directory check-asan
	$(MAKE) --no-print-directory check-valgrind

# every spec against an ASan+UBSan build of the core (a copy of the tree
# under build-sanitize/); fails on any sanitizer report
check-asan: deps
	sh spec/run_sanitized.sh asan $(ASAN_SPECS)

# the interop specs with the Lua processes under valgrind memcheck; fails
# on a memory error or a definite leak through luasip's own code
VALGRIND_SPECS ?= spec/interop
check-valgrind: deps
	sh spec/run_sanitized.sh valgrind $(VALGRIND_SPECS)

demo: deps build
	./bin/luasip examples/demo.lua

# The API reference in HTML, docs/api/index.html (not committed), from the
# `---` comments in lua/sip and the `/***` ones in csrc/l_*.c (config.ld).
# Any LDoc warning fails it. Debian's ldoc runs on lua5.1 (lua-check pulls
# it in) and formats with lua-markdown.
docs: deps
	ldoc --fatalwarnings --testing -q . >/dev/null
	@echo "docs/api/index.html"

# the IVR examples' prompts, spoken by espeak-ng (not shipped: made here)
SOUNDS_DIR = examples/sounds
SOUND_TEXTS = \
  welcome|Welcome to the lua sip voicemail. Please leave a message after the beep. \
  goodbye|Thank you. Goodbye. \
  menu|For the time, press 1. To leave a message, press 2. To enter your PIN, press 3. For an operator, press 0. \
  invalid|Sorry, that is not a choice. \
  time|The time is \
  message|Leave your message after the beep. Press hash when you are done. \
  pin|Please enter your four digit PIN. \
  pin-ok|Thank you. Your PIN is correct. \
  pin-bad|That PIN is not correct. \
  operator|All operators are busy. Please try again later. \
  0|zero 1|one 2|two 3|three 4|four 5|five 6|six 7|seven 8|eight 9|nine
sounds: $(SOUNDS_DIR)/menu.wav
$(SOUNDS_DIR)/menu.wav: Makefile
	@mkdir -p $(SOUNDS_DIR)
	@echo '$(SOUND_TEXTS)' | sed 's/ \([a-z0-9-]*\)|/\n\1|/g' | while IFS='|' read -r name text; do \
	  [ -n "$$name" ] && espeak-ng -w $(SOUNDS_DIR)/$$name.wav "$$text"; done; true

bench: deps build
	$(LUA) bench/run.lua

bench-smoke: build
	$(LUA) bench/run.lua --smoke

# libFuzzer targets over the C engine under ASan+UBSan (fuzz/Makefile)
fuzz: deps
	$(MAKE) -C fuzz run FUZZ_TIME=$(FUZZ_TIME)

fuzz-smoke:
	$(MAKE) -C fuzz run FUZZ_TIME=$(FUZZ_SMOKE_TIME)

install: build
	install -d $(DESTDIR)$(LIBDIR)/sip $(DESTDIR)$(LUADIR)/sip $(DESTDIR)$(BINDIR)
	install -m 755 $(CORE_SO) $(DESTDIR)$(LIBDIR)/sip/core.so
	install -m 755 $(EDIT_SO) $(DESTDIR)$(LIBDIR)/sip/edit.so
	install -m 644 lua/sip/*.lua $(DESTDIR)$(LUADIR)/sip/
	install -m 755 bin/luasip $(DESTDIR)$(BINDIR)/luasip

clean:
	rm -f $(OBJ) $(EDIT_SRC:.c=.o) $(CORE_SO) $(EDIT_SO)
	$(MAKE) -C fuzz clean
	rm -rf build-sanitize
