/*
 * guard.h - place test input just before a PROT_NONE page (the picohttpparser trick), so a
 * parser that reads one byte past the end of its input crashes the test instead of passing.
 */
#ifndef CORRAL_TEST_GUARD_H
#define CORRAL_TEST_GUARD_H

#include <assert.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

struct guard {
    char *map;   /* the whole mapping */
    size_t size; /* its length */
};

/* Returns a pointer to a copy of p[0, len) that ends exactly at a PROT_NONE page. */
static inline char *guard_copy(struct guard *g, const void *p, size_t len)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t data_pages = (len + page - 1) / page;
    g->size = (data_pages + 1) * page;
    g->map = mmap(NULL, g->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert(g->map != MAP_FAILED);
    char *guard_page = g->map + data_pages * page;
    int rc = mprotect(guard_page, page, PROT_NONE);
    assert(rc == 0);
    (void)rc;
    char *dst = guard_page - len;
    if (len) memcpy(dst, p, len);
    return dst;
}

static inline void guard_free(struct guard *g)
{
    munmap(g->map, g->size);
}

#endif
