/*
 * sip_core.h - shared types of the luasip SIP engine.
 *
 * The engine lives in csrc/core/ and never includes lua.h: it is a plain C
 * library driven by one libev loop. Functions return 0 or a negative errno
 * value; objects are handed back through pointer-to-pointer arguments.
 */
#ifndef SIP_CORE_H
#define SIP_CORE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <netinet/in.h>

struct ev_loop;

enum sip_log_level { SIP_LOG_ERROR = 0, SIP_LOG_WARN, SIP_LOG_INFO, SIP_LOG_DEBUG };

typedef void (*sip_log_fn)(void *arg, int level, const char *msg);

/* One environment per Lua state: the loop and the log sink. Every UA points
 * at its environment; nothing here is process-global. */
struct sip_env {
	struct ev_loop *loop;
	int log_level;
	sip_log_fn log_fn;
	void *log_arg;
	/* trace sink: every message sent and received (dir 'in'/'out');
	 * local is the socket's own address (NULL when unknown) */
	void (*trace_fn)(void *arg, int out, int proto, const struct sockaddr *peer,
	                 const struct sockaddr *local, const char *buf, size_t len);
	void *trace_arg;
	/* CSPRNG output drawn in blocks: one RAND_bytes call per many tags */
	unsigned char rnd[4096];
	size_t rnd_left;
};

void sip_log(const struct sip_env *env, int level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#define SIP_LOGD(env, ...) do { if ((env)->log_level >= SIP_LOG_DEBUG) sip_log((env), SIP_LOG_DEBUG, __VA_ARGS__); } while (0)

enum sip_proto { SIP_UDP = 0, SIP_TCP = 1, SIP_TLS = 2 };

const char *sip_proto_name(int proto);      /* "UDP", "TCP", "TLS" */

/* IPv4 or IPv6 in 28 bytes rather than sockaddr_storage's 128: one is
 * kept in every transaction, message and dialog. ss_family overlays the
 * family field the three share at offset 0. */
union sip_sockaddr {
	sa_family_t ss_family;
	struct sockaddr sa;
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;
};

struct sip_addr {
	union sip_sockaddr ss;
	socklen_t len;
};

/* "udp:127.0.0.1:5060", "tcp:[::1]:0", "tls:localhost:0" -> proto + address;
 * a name resolves to its first address (a blocking lookup: set-up only).
 * -EINVAL for bad text, -EHOSTUNREACH for a name that does not resolve */
int sip_addr_parse_listen(const char *spec, int *proto, struct sip_addr *a);
/* numeric or name host + port -> address (name lookups block: set-up
 * only; requests go through dns.c) */
int sip_addr_resolve(const char *host, int port, struct sip_addr *a);
/* a numeric host ("1.2.3.4", "::1", "[::1]") + port -> address, without
 * any lookup; -EINVAL for a name */
int sip_addr_numeric(const char *host, int port, struct sip_addr *a);
int sip_addr_port(const struct sip_addr *a);
void sip_addr_set_port(struct sip_addr *a, int port);
/* text of the host part, IPv6 without brackets */
void sip_addr_host(const struct sip_addr *a, char *buf, size_t n);
/* "1.2.3.4:5060" or "[::1]:5060" */
void sip_addr_str(const struct sockaddr *sa, char *buf, size_t n);
int sip_addr_eq(const struct sip_addr *a, const struct sip_addr *b);
uint32_t sip_addr_hash(const struct sip_addr *a);
int sip_addr_is_any(const struct sip_addr *a);

/* "transport: connection refused" for an errno value (either sign) */
void sip_transport_error(char *buf, size_t n, int err);

/* CSPRNG tokens (OpenSSL RAND_bytes), url-safe alphabet */
int sip_random_token(char *buf, size_t nchars);
/* the same from the environment's pool (hot paths: branches, tags) */
int sip_env_token(struct sip_env *env, char *buf, size_t nchars);

/* a growable byte buffer for building messages */
struct sip_buf {
	char *p;
	size_t len, cap;
	int oom;
	int ext;                /* p is the caller's memory until it grows */
};
void sip_buf_init(struct sip_buf *b, size_t hint);
/* start in the caller's memory (a stack array): no allocation unless
 * the text outgrows it */
void sip_buf_init_on(struct sip_buf *b, char *mem, size_t cap);
void sip_buf_add(struct sip_buf *b, const char *s, size_t n);
void sip_buf_adds(struct sip_buf *b, const char *s);
void sip_buf_printf(struct sip_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sip_buf_free(struct sip_buf *b);
/* the text in an allocation of its exact size, for texts kept long (a
 * lingering transaction's response); NULL when out of memory. The
 * buffer is spent. */
char *sip_buf_take(struct sip_buf *b);
/* hot-path helpers without printf: "Name: value\r\n", a decimal number */
void sip_buf_header(struct sip_buf *b, const char *name, const char *v, size_t n);
void sip_buf_addu(struct sip_buf *b, unsigned long v);

/* string-keyed chained hash table with intrusive nodes */
struct sip_hnode {
	struct sip_hnode *next;
	uint32_t hash;
	const char *key;
};
struct sip_htab {
	struct sip_hnode **b;
	size_t nb, count;
};
int sip_htab_init(struct sip_htab *h, size_t nb);
void sip_htab_free(struct sip_htab *h);
uint32_t sip_hash_str(const char *s);
void sip_htab_insert(struct sip_htab *h, struct sip_hnode *n);
struct sip_hnode *sip_htab_find(const struct sip_htab *h, const char *key);
void sip_htab_remove(struct sip_htab *h, struct sip_hnode *n);

#endif
