/*
 * log.h - the one place corral writes log lines.
 *
 * Every line is "<timestamp> <role> (pid N) <message>\n", written with a single write(2) on an
 * O_APPEND descriptor, so lines from the master, its workers and their threads never interleave.
 * The level is checked at run time. Any process or thread may call these functions; log_open()
 * and log_set_role() are called once per process, before any thread starts.
 */
#ifndef CORRAL_LOG_H
#define CORRAL_LOG_H

#include <stdarg.h>

enum log_level {
    LOG_LEVEL_ERROR,
    LOG_LEVEL_WARN,
    LOG_LEVEL_INFO,
    LOG_LEVEL_DEBUG,
};

/* Sends log lines to 'path' (appending; NULL means stderr). Returns 0 or -errno. */
int log_open(const char *path);
/* The descriptor lines go to (stderr's, or the log file's): wsgi.errors and faulthandler use it. */
int log_fd(void);
void log_set_level(enum log_level level);
/* 'role' is copied: "master", "worker 3". */
void log_set_role(const char *role);
/* Request logging (one line per request) is off with --disable-logging; errors always log. */
void log_set_access(int enabled);
int log_access_enabled(void);

void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_vline(enum log_level level, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
/*
 * Copies src[0, n) into dst (NUL-terminated, at most cap - 1 bytes) with every control byte
 * and DEL written as \xNN, so bytes from the wire (a uwsgi var, a request target) cannot
 * forge log lines. Returns the length written.
 */
unsigned long log_escape(char *dst, unsigned long cap, const char *src, unsigned long n);
/* Writes 'len' raw bytes (already formatted, e.g. a traceback) as they are. */
void log_raw(const char *p, unsigned long len);

#endif
