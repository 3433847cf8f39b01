rockspec_format = "3.0"
package = "luasip"
version = "scm-1"

source = {
  url = "git+https://example.invalid/luasip.git",
}

description = {
  summary = "SIP user agents for Lua 5.4: call flows as plain coroutines over a C core",
  detailed = [[
luasip is a SIP library for Lua 5.4. A C core (libosip2 for parsing,
libev for the one event loop, OpenSSL) owns the sockets, the RFC 3261
transactions and their timers; Lua owns the call flow. Every operation
that waits on the network yields the calling coroutine, so a call flow
reads top to bottom. Comes with the `luasip` runner for scripts.
]],
  labels = { "sip", "voip", "telephony", "network" },
}

dependencies = {
  "lua >= 5.4, < 5.5",
}

external_dependencies = {
  OSIP2 = {
    header = "osipparser2/osip_parser.h",
    library = "osipparser2",
  },
  LIBEV = {
    header = "ev.h",
    library = "ev",
  },
  OPENSSL = {
    header = "openssl/ssl.h",
    library = "ssl",
  },
  LIBEDIT = {
    header = "editline/readline.h",
    library = "edit",
  },
  -- sip.trace{ pcap = } writes through libpcap's dump writer
  LIBPCAP = {
    header = "pcap/pcap.h",
    library = "pcap",
  },
  -- RFC 3263 (NAPTR, SRV, A/AAAA) lookups on the loop
  CARES = {
    header = "ares.h",
    library = "cares",
  },
}

build = {
  type = "make",
  build_variables = {
    CFLAGS = "$(CFLAGS)",
    LIBFLAG = "$(LIBFLAG)",
    LUA_INCDIR = "$(LUA_INCDIR)",
    OSIP2_INCDIR = "$(OSIP2_INCDIR)",
    OSIP2_LIBDIR = "$(OSIP2_LIBDIR)",
    LIBEV_INCDIR = "$(LIBEV_INCDIR)",
    LIBEV_LIBDIR = "$(LIBEV_LIBDIR)",
    OPENSSL_INCDIR = "$(OPENSSL_INCDIR)",
    OPENSSL_LIBDIR = "$(OPENSSL_LIBDIR)",
    LIBEDIT_INCDIR = "$(LIBEDIT_INCDIR)",
    LIBEDIT_LIBDIR = "$(LIBEDIT_LIBDIR)",
  },
  install_variables = {
    CFLAGS = "$(CFLAGS)",
    LIBFLAG = "$(LIBFLAG)",
    LUA_INCDIR = "$(LUA_INCDIR)",
    OSIP2_INCDIR = "$(OSIP2_INCDIR)",
    OSIP2_LIBDIR = "$(OSIP2_LIBDIR)",
    LIBEV_INCDIR = "$(LIBEV_INCDIR)",
    LIBEV_LIBDIR = "$(LIBEV_LIBDIR)",
    OPENSSL_INCDIR = "$(OPENSSL_INCDIR)",
    OPENSSL_LIBDIR = "$(OPENSSL_LIBDIR)",
    LIBEDIT_INCDIR = "$(LIBEDIT_INCDIR)",
    LIBEDIT_LIBDIR = "$(LIBEDIT_LIBDIR)",
    LIBDIR = "$(LIBDIR)",
    LUADIR = "$(LUADIR)",
    BINDIR = "$(BINDIR)",
  },
  copy_directories = { "examples" },
}
