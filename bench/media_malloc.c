/*
 * bench/media_malloc.c: an LD_PRELOAD allocation counter for the media
 * benchmark (bench/run.lua, section 6). Counts the calls to malloc,
 * calloc, realloc, the aligned allocators and free in the process it is
 * loaded into, in four 64-bit counters kept in a file mapped shared
 * (MALLOC_COUNT_FILE), so that the harness reads them at any time
 * without stopping the process:
 *
 *   offset 0  allocations (malloc, calloc, realloc with a NULL pointer or
 *             a new size, posix_memalign, aligned_alloc, memalign, valloc)
 *   offset 8  frees (free, and realloc to size 0)
 *   offset 16 bytes asked for by the allocations
 *   offset 24 the counter's own start, 1 once mapped
 *
 * The allocations are passed on to glibc's own (__libc_malloc ...).
 *
 *   cc -O2 -shared -fPIC -o media_malloc.so bench/media_malloc.c
 *   MALLOC_COUNT_FILE=/tmp/n LD_PRELOAD=./media_malloc.so program
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

static volatile uint64_t *counts;

__attribute__((constructor)) static void start(void)
{
	const char *path = getenv("MALLOC_COUNT_FILE");
	int fd;
	void *p;

	if (!path || !*path)
		return;
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	if (ftruncate(fd, 4 * sizeof(uint64_t)) < 0) {
		close(fd);
		return;
	}
	p = mmap(NULL, 4 * sizeof(uint64_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (p == MAP_FAILED)
		return;
	counts = p;
	counts[3] = 1;
}

static inline void count_alloc(size_t n)
{
	if (counts) {
		__atomic_fetch_add(&counts[0], 1, __ATOMIC_RELAXED);
		__atomic_fetch_add(&counts[2], n, __ATOMIC_RELAXED);
	}
}

static inline void count_free(void *p)
{
	if (counts && p)
		__atomic_fetch_add(&counts[1], 1, __ATOMIC_RELAXED);
}

void *malloc(size_t n)
{
	count_alloc(n);
	return __libc_malloc(n);
}

void *calloc(size_t k, size_t n)
{
	count_alloc(k * n);
	return __libc_calloc(k, n);
}

void *realloc(void *p, size_t n)
{
	if (!p)
		count_alloc(n);
	else if (n == 0)
		count_free(p);
	else
		count_alloc(n);         /* a resize may move: counted as an allocation */
	return __libc_realloc(p, n);
}

void free(void *p)
{
	count_free(p);
	__libc_free(p);
}

void *memalign(size_t a, size_t n)
{
	count_alloc(n);
	return __libc_memalign(a, n);
}

void *aligned_alloc(size_t a, size_t n)
{
	count_alloc(n);
	return __libc_memalign(a, n);
}

void *valloc(size_t n)
{
	count_alloc(n);
	return __libc_memalign((size_t)sysconf(_SC_PAGESIZE), n);
}

int posix_memalign(void **out, size_t a, size_t n)
{
	void *p;

	if (a < sizeof(void *) || (a & (a - 1)))
		return EINVAL;
	count_alloc(n);
	p = __libc_memalign(a, n);
	if (!p)
		return ENOMEM;
	*out = p;
	return 0;
}
