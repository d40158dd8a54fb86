/*
 * log.c - timestamped, role-tagged log lines written atomically with one write(2).
 *
 * A line is formatted into a stack buffer and written whole, so concurrent writers (workers,
 * Python threads) never interleave within a line. Lines longer than the buffer are cut.
 */
#include "util/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int log_out = 2;                         /* stderr until log_open() */
static enum log_level log_max = LOG_LEVEL_INFO; /* lines above this level are dropped */
static char log_role[32] = "corral";            /* "master", "worker 3" */
static int log_access = 1;                      /* per-request lines on? */

int log_open(const char *path)
{
    int fd;

    if (!path) return 0;
    fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return -errno;
    if (log_out != 2) close(log_out);
    log_out = fd;
    return 0;
}

int log_fd(void)
{
    return log_out;
}

void log_set_level(enum log_level level)
{
    log_max = level;
}

void log_set_role(const char *role)
{
    snprintf(log_role, sizeof(log_role), "%s", role);
}

void log_set_access(int enabled)
{
    log_access = enabled;
}

int log_access_enabled(void)
{
    return log_access;
}

static void write_all(const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(log_out, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        p += n;
        len -= (size_t)n;
    }
}

void log_vline(enum log_level level, const char *fmt, va_list ap)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    char stack[4096];
    char *line = stack;
    size_t cap = sizeof(stack);
    struct timespec ts;
    struct tm tm;
    int saved = errno;
    size_t n;
    int k;
    va_list again;

    if (level > log_max) return;
    va_copy(again, ap);
    clock_gettime(CLOCK_REALTIME, &ts);
    /* UTC: an app may change TZ when it loads (Django does), local times would jump */
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(line, cap, "%Y-%m-%d %H:%M:%S", &tm);
    k = snprintf(line + n, cap - n, ".%03ldZ %s (pid %d) %s: ", ts.tv_nsec / 1000000, log_role,
                 (int)getpid(), names[level]);
    n += (size_t)k;
    k = vsnprintf(line + n, cap - n, fmt, ap);
    if (k > 0 && n + (size_t)k + 2 > cap && n + (size_t)k < 1024 * 1024) {
        /* a long message (a traceback): format it again into a buffer of its size */
        char *big = malloc(n + (size_t)k + 2);
        if (big) {
            memcpy(big, line, n);
            vsnprintf(big + n, (size_t)k + 1, fmt, again);
            line = big;
            cap = n + (size_t)k + 2;
        }
    }
    va_end(again);
    n = (k < 0) ? n : n + (size_t)k;
    if (n > cap - 2) n = cap - 2;
    line[n++] = '\n';
    write_all(line, n);
    if (line != stack) free(line);
    errno = saved;
}

void log_raw(const char *p, unsigned long len)
{
    write_all(p, len);
}

#define LOG_FN(name, level)                                                                        \
    void name(const char *fmt, ...)                                                                \
    {                                                                                              \
        va_list ap;                                                                                \
        va_start(ap, fmt);                                                                         \
        log_vline(level, fmt, ap);                                                                 \
        va_end(ap);                                                                                \
    }

LOG_FN(log_error, LOG_LEVEL_ERROR)
LOG_FN(log_warn, LOG_LEVEL_WARN)
LOG_FN(log_info, LOG_LEVEL_INFO)
LOG_FN(log_debug, LOG_LEVEL_DEBUG)

unsigned long log_escape(char *dst, unsigned long cap, const char *src, unsigned long n)
{
    static const char hex[] = "0123456789abcdef";
    unsigned long j = 0;

    if (cap == 0) return 0;
    for (unsigned long i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)src[i];
        if (ch >= 0x20 && ch != 0x7f) {
            if (j + 1 >= cap) break;
            dst[j++] = (char)ch;
        } else {
            if (j + 4 >= cap) break;
            dst[j++] = '\\';
            dst[j++] = 'x';
            dst[j++] = hex[ch >> 4];
            dst[j++] = hex[ch & 15];
        }
    }
    dst[j] = '\0';
    return j;
}
