/*
 * xalloc.h - allocation for small internal structures: abort with a message instead of
 * returning NULL (Redis's zmalloc rule). Sizes that come from client input are checked against
 * limits *before* they reach these functions; exceeding a limit fails the request, not the process.
 */
#ifndef CORRAL_XALLOC_H
#define CORRAL_XALLOC_H

#include <stddef.h>

void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t n);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define UNUSED(x) ((void)(x))
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

#endif
