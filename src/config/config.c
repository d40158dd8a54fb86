/*
 * config.c - the option table and everything that reads it: defaults, the command line, ini
 * files, validation, and the generated --help text and docs/config.md.
 *
 * Each option is one row of opts[]. A value, whatever it came from (a default, argv, an ini
 * line), goes through opt_apply(), so one row means one parser and one help line. Ini files
 * are read with the pure reader in ini.c; this file adds the file I/O, uWSGI's magic variables
 * (%d, %n, ... %(key), $(ENV)) and the [uwsgi] compatibility rules. Called once, by main().
 * See docs/config-files.md for the user's view.
 */
#include "config/config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/ini.h"
#include "http/forwarded.h"
#include "util/buf.h"
#include "util/xalloc.h"

enum opt_type {
    OPT_BOOL,   /* bool field; a bare flag means true */
    OPT_INT,    /* int field, within [min, max] */
    OPT_LLONG,  /* long long field, within [min, max] */
    OPT_STR,    /* char * field; a later value replaces an earlier one */
    OPT_LIST,   /* struct strlist field; every value is appended */
    OPT_MODE,   /* char * field holding an octal mode; a bare flag means "666" */
    OPT_INI,    /* --ini: read a file now (and record it in the strlist field) */
    OPT_ACTION, /* --help, --version: print something and stop */
};

enum opt_flags {
    OPT_F_CLI = 1 << 0,    /* command line only: an error in an ini file */
    OPT_F_HIDDEN = 1 << 1, /* left out of --help and docs/config.md */
    OPT_F_KEYVAL = 1 << 2, /* the value must be KEY=VALUE with a non-empty KEY */
    OPT_F_SIZE = 1 << 3,   /* a byte count: K, M and G suffixes (powers of 1024) accepted */
};

/* One option. A one-letter alias is the short command-line form ("-p 4"), nothing else. */
struct opt {
    const char *name;          /* the canonical name, as uWSGI spells it where shared */
    const char *aliases[5];    /* other accepted names, NULL-terminated */
    enum opt_type type;        /* how the value is parsed and stored */
    size_t off;                /* offsetof(struct config, field) */
    const char *def;           /* default, written as a user would; NULL: none */
    long long min, max;        /* OPT_INT, OPT_LLONG: the accepted range */
    unsigned flags;            /* enum opt_flags */
    const char *group;         /* heading in --help and docs/config.md */
    const char *arg;           /* placeholder for the value in --help ("ADDR", "N") */
    const char *help;          /* one line, no '|' (it lands in a Markdown table) */
    enum config_action action; /* OPT_ACTION: what it does */
};

#define F(field) offsetof(struct config, field)

/* The upper bound of the long long byte counts: 1 TiB, far beyond any real limit. (A #define:
 * an enum cannot hold it and a const variable is not a constant expression in C11.) */
#define CONFIG_BYTES_MAX (1LL << 40)

/* One option per row reads better than one field per line, so the table is laid out by hand. */
/* clang-format off */
static const struct opt opts[] = {
    {.name = "http", .aliases = {"http-socket"}, .type = OPT_LIST, .off = F(http),
     .group = "Listeners", .arg = "ADDR",
     .help = "serve HTTP on ADDR: \"host:port\", \":port\" (all interfaces) or a UNIX socket path"},
    {.name = "socket", .aliases = {"uwsgi-socket"}, .type = OPT_LIST, .off = F(socket),
     .group = "Listeners", .arg = "ADDR",
     .help = "speak the uwsgi protocol (nginx's uwsgi_pass) on ADDR; same forms as --http"},
    {.name = "listen", .type = OPT_INT, .off = F(listen), .def = "1024", .min = 1, .max = 65535,
     .group = "Listeners", .arg = "N",
     .help = "accept backlog of each listening socket (net.core.somaxconn caps it: warned)"},
    {.name = "chmod-socket", .type = OPT_MODE, .off = F(chmod_socket),
     .group = "Listeners", .arg = "MODE",
     .help = "chmod UNIX sockets to this octal mode; given without a value: 666"},
    {.name = "vacuum", .type = OPT_BOOL, .off = F(vacuum), .def = "false",
     .group = "Listeners",
     .help = "remove UNIX socket files and the pidfile on exit"},

    {.name = "module", .type = OPT_STR, .off = F(module),
     .group = "Application", .arg = "MOD",
     .help = "import the WSGI app: \"pkg.mod:callable\", or \"pkg.mod\" with --callable"},
    {.name = "wsgi-file", .aliases = {"file"}, .type = OPT_STR, .off = F(wsgi_file),
     .group = "Application", .arg = "FILE",
     .help = "load the WSGI app from a Python file"},
    {.name = "callable", .type = OPT_STR, .off = F(callable), .def = "application",
     .group = "Application", .arg = "NAME",
     .help = "name of the WSGI callable in the module or file"},
    {.name = "chdir", .type = OPT_STR, .off = F(chdir),
     .group = "Application", .arg = "DIR",
     .help = "change to DIR before loading the app"},
    {.name = "pythonpath", .aliases = {"python-path", "pp"}, .type = OPT_LIST,
     .off = F(pythonpath), .group = "Application", .arg = "DIR",
     .help = "prepend DIR to sys.path (several: kept in the order given)"},
    {.name = "venv", .aliases = {"home", "virtualenv", "pyhome"}, .type = OPT_STR, .off = F(venv),
     .group = "Application", .arg = "DIR",
     .help = "use the virtualenv whose root is DIR"},
    {.name = "env", .type = OPT_LIST, .off = F(env), .flags = OPT_F_KEYVAL,
     .group = "Application", .arg = "KEY=VALUE",
     .help = "set an environment variable before the app is loaded"},
    {.name = "lazy-apps", .aliases = {"lazy"}, .type = OPT_BOOL, .off = F(lazy_apps),
     .def = "false", .group = "Application",
     .help = "load the app in each worker after fork, not once in the master"},

    {.name = "processes", .aliases = {"workers", "p"}, .type = OPT_INT, .off = F(processes),
     .def = "1", .min = 1, .max = 1024,
     .group = "Processes", .arg = "N",
     .help = "number of worker processes"},
    {.name = "threads", .type = OPT_INT, .off = F(threads), .def = "1", .min = 1, .max = 256,
     .group = "Processes", .arg = "N",
     .help = "Python threads per worker"},
    {.name = "cpu-affinity", .type = OPT_INT, .off = F(cpu_affinity), .def = "-1", .min = -1,
     .max = 1024, .group = "Processes", .arg = "N",
     .help = "each worker keeps to N CPUs (round-robin); 0: none; -1: 1 when threads > 1"},
    {.name = "enable-threads", .type = OPT_BOOL, .off = F(enable_threads), .def = "false",
     .group = "Processes",
     .help = "accepted for uWSGI compatibility; no effect (threads always work)"},
    {.name = "thread-queue", .type = OPT_INT, .off = F(thread_queue), .def = "0", .min = 0,
     .max = 1024, .group = "Processes", .arg = "N",
     .help = "when all workers are busy, stop taking connections at N queued requests (0: never)"},

    {.name = "buffer-size", .aliases = {"b"}, .type = OPT_INT, .off = F(buffer_size),
     .def = "16384", .min = 1024, .max = 1048576, .flags = OPT_F_SIZE,
     .group = "Requests", .arg = "BYTES",
     .help = "largest request head (request line and headers) accepted"},
    {.name = "limit-post", .type = OPT_LLONG, .off = F(limit_post),
     .def = "100M", .min = 0, .max = CONFIG_BYTES_MAX, .flags = OPT_F_SIZE,
     .group = "Requests", .arg = "BYTES",
     .help = "largest request body accepted (413 beyond); 0: no limit"},
    {.name = "post-buffering", .type = OPT_LLONG, .off = F(post_buffering),
     .def = "1048576", .min = 0, .max = CONFIG_BYTES_MAX, .flags = OPT_F_SIZE,
     .group = "Requests", .arg = "BYTES",
     .help = "request bodies larger than this go to a temporary file"},
    {.name = "spool-dir", .type = OPT_STR, .off = F(spool_dir), .group = "Requests",
     .arg = "DIR", .help = "where bodies above --post-buffering are spooled ($TMPDIR or /tmp)"},
    {.name = "spool-max", .type = OPT_LLONG, .off = F(spool_max),
     .def = "1G", .min = 0, .max = CONFIG_BYTES_MAX, .flags = OPT_F_SIZE,
     .group = "Requests", .arg = "BYTES",
     .help = "spooled body bytes a worker holds at once (503 beyond); 0: no limit"},
    {.name = "http-timeout", .type = OPT_INT, .off = F(http_timeout),
     .def = "60", .min = 1, .max = 86400,
     .group = "Requests", .arg = "SECONDS",
     .help = "time allowed to receive a request head or body"},
    {.name = "http-keepalive-timeout", .aliases = {"keepalive-timeout"}, .type = OPT_INT,
     .off = F(keepalive_timeout), .def = "15", .min = 1, .max = 86400,
     .group = "Requests", .arg = "SECONDS",
     .help = "idle time allowed between requests on a connection"},
    {.name = "response-buffer", .type = OPT_INT, .off = F(response_buffer),
     .def = "262144", .min = 4096, .max = 1 << 30, .flags = OPT_F_SIZE,
     .group = "Requests", .arg = "BYTES",
     .help = "response bytes buffered per connection; a thread waits on a slower client beyond"},
    {.name = "forwarded-allow-ips", .type = OPT_STR, .off = F(forwarded_allow_ips),
     .def = "127.0.0.1", .group = "Requests", .arg = "LIST",
     .help = "HTTP peers (addresses, CIDR networks, or *) whose X-Forwarded-For, "
             "X-Forwarded-Proto and Forwarded headers set REMOTE_ADDR and wsgi.url_scheme"},

    {.name = "graceful-timeout", .type = OPT_INT, .off = F(graceful_timeout),
     .def = "30", .min = 0, .max = 86400,
     .group = "Master", .arg = "SECONDS",
     .help = "time in-flight requests get to finish on stop or reload"},
    {.name = "master", .type = OPT_BOOL, .off = F(master), .def = "false",
     .group = "Master",
     .help = "accepted for uWSGI compatibility; corral always runs a master"},
    {.name = "die-on-term", .type = OPT_BOOL, .off = F(die_on_term), .def = "false",
     .group = "Master",
     .help = "accepted for uWSGI compatibility; SIGTERM always stops corral"},

    {.name = "harakiri", .type = OPT_INT, .off = F(harakiri), .def = "0", .min = 0,
     .max = 86400, .group = "Supervision", .arg = "SECONDS",
     .help = "a request running longer gets an exception in its thread (504), its traceback logged"},
    {.name = "harakiri-grace", .type = OPT_INT, .off = F(harakiri_grace), .def = "5", .min = 0,
     .max = 86400, .group = "Supervision", .arg = "SECONDS",
     .help = "then, if its thread has not come back (stuck in C), the worker is killed and replaced"},
    {.name = "max-requests", .type = OPT_INT, .off = F(max_requests), .def = "0", .min = 0,
     .max = 1000000000, .group = "Supervision", .arg = "N",
     .help = "recycle a worker after N requests (its replacement starts first); 0: never"},
    {.name = "max-requests-jitter", .type = OPT_INT, .off = F(max_requests_jitter), .def = "0",
     .min = 0, .max = 1000000000, .group = "Supervision", .arg = "N",
     .help = "add a random 0..N to each worker's max-requests so they do not recycle together"},
    {.name = "reload-on-rss", .type = OPT_INT, .off = F(reload_on_rss), .def = "0", .min = 0,
     .max = 1048576, .group = "Supervision", .arg = "MIB",
     .help = "recycle a worker whose resident memory exceeds MIB megabytes; 0: never"},
    {.name = "max-worker-lifetime", .type = OPT_INT, .off = F(max_worker_lifetime), .def = "0",
     .min = 0, .max = 31536000, .group = "Supervision", .arg = "SECONDS",
     .help = "recycle a worker after it has run this long; 0: never"},
    {.name = "touch-reload", .type = OPT_LIST, .off = F(touch_reload),
     .group = "Supervision", .arg = "FILE",
     .help = "reload gracefully (as SIGHUP) when FILE is touched"},
    {.name = "touch-chain-reload", .type = OPT_LIST, .off = F(touch_chain_reload),
     .group = "Supervision", .arg = "FILE",
     .help = "chain reload (one worker at a time; needs --lazy-apps) when FILE is touched"},
    {.name = "cheaper", .type = OPT_INT, .off = F(cheaper), .def = "0", .min = 0, .max = 1024,
     .group = "Supervision", .arg = "N",
     .help = "adaptive workers: run at least N, up to --processes, more while all are busy"},
    {.name = "cheaper-idle", .type = OPT_INT, .off = F(cheaper_idle), .def = "10", .min = 1,
     .max = 86400, .group = "Supervision", .arg = "SECONDS",
     .help = "an extra worker (above --cheaper) idle this long is retired"},
    {.name = "uid", .type = OPT_STR, .off = F(uid),
     .group = "Supervision", .arg = "USER",
     .help = "run as this user (name or number) once the sockets are bound"},
    {.name = "gid", .type = OPT_STR, .off = F(gid),
     .group = "Supervision", .arg = "GROUP",
     .help = "run as this group (name or number) once the sockets are bound"},

    {.name = "pidfile", .type = OPT_STR, .off = F(pidfile),
     .group = "Files and logging", .arg = "FILE",
     .help = "write the master's pid to FILE"},
    {.name = "log-file", .aliases = {"logto"}, .type = OPT_STR, .off = F(log_file),
     .group = "Files and logging", .arg = "FILE",
     .help = "append log lines to FILE instead of stderr"},
    {.name = "disable-logging", .type = OPT_BOOL, .off = F(disable_logging), .def = "false",
     .group = "Files and logging",
     .help = "no per-request log lines (errors are still logged)"},

    {.name = "ini", .type = OPT_INI, .off = F(ini), .flags = OPT_F_CLI,
     .group = "Command line", .arg = "FILE",
     .help = "read the [corral] and [uwsgi] sections of FILE at this point"},
    {.name = "help", .aliases = {"h"}, .type = OPT_ACTION, .action = CONFIG_HELP,
     .flags = OPT_F_CLI, .group = "Command line",
     .help = "print this help and exit"},
    {.name = "version", .type = OPT_ACTION, .action = CONFIG_VERSION,
     .flags = OPT_F_CLI, .group = "Command line",
     .help = "print the version and exit"},
    {.name = "help-markdown", .type = OPT_ACTION, .action = CONFIG_HELP,
     .flags = OPT_F_CLI | OPT_F_HIDDEN, .group = "Command line",
     .help = "print docs/config.md and exit"},
};
/* clang-format on */

#undef F

/* The largest ini file read: far beyond any real one, small enough to hold in memory. */
enum { CONFIG_INI_MAX = 1 << 20 };

/* ---- small helpers ---------------------------------------------------------------------- */

/* Writes a one-line message into err (control characters become '?') and returns -1. */
static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (!errlen) return -1;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    for (char *p = err; *p; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
    }
    return -1;
}

static void *field(struct config *cfg, const struct opt *o)
{
    return (char *)cfg + o->off;
}

static void strlist_add(struct strlist *l, const char *s)
{
    l->v = xrealloc(l->v, sizeof(*l->v) * (size_t)(l->n + 1));
    l->v[l->n++] = xstrdup(s);
}

static void strlist_free(struct strlist *l)
{
    for (int i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

static void set_string(char **dst, const char *s)
{
    free(*dst);
    *dst = xstrdup(s);
}

static bool is_short(const char *alias)
{
    return alias[0] && !alias[1];
}

/* Does the option answer to name[0, len)? Short aliases match only when 'short_form'. */
static bool opt_matches(const struct opt *o, const char *name, size_t len, bool short_form)
{
    if (!short_form && strlen(o->name) == len && !memcmp(o->name, name, len)) return true;
    for (const char *const *a = o->aliases; *a; a++) {
        if (is_short(*a) != short_form) continue;
        if (strlen(*a) == len && !memcmp(*a, name, len)) return true;
    }
    return false;
}

static const struct opt *opt_find(const char *name, size_t len, bool short_form)
{
    for (size_t i = 0; i < ARRAY_SIZE(opts); i++) {
        if (opt_matches(&opts[i], name, len, short_form)) return &opts[i];
    }
    return NULL;
}

/* ---- values ----------------------------------------------------------------------------- */

/* uWSGI's words (compared without case), plus "" for a bare flag. Returns false if v is none. */
static bool parse_bool(const char *v, bool *out)
{
    static const char *const yes[] = {"", "true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};
    for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
        if (strcasecmp(v, yes[i]) != 0) continue;
        *out = true;
        return true;
    }
    for (size_t i = 0; i < ARRAY_SIZE(no); i++) {
        if (strcasecmp(v, no[i]) != 0) continue;
        *out = false;
        return true;
    }
    return false;
}

/* A K, M or G suffix (any case) as a power of 1024; 1 for none; 0 for anything else. */
static long long size_suffix(const char *s)
{
    if (!s[0]) return 1;
    if (s[1]) return 0;
    switch (toupper((unsigned char)s[0])) {
    case 'K':
        return 1LL << 10;
    case 'M':
        return 1LL << 20;
    case 'G':
        return 1LL << 30;
    }
    return 0;
}

/*
 * Parses a decimal integer (with a size suffix when 'size'). Returns 0, -EINVAL when v is not
 * a number, or -ERANGE when it does not fit in a long long.
 */
static int parse_number(const char *v, bool size, long long *out)
{
    char *end;
    long long mult = 1;

    if (!(*v >= '0' && *v <= '9') && !((*v == '-' || *v == '+') && v[1] >= '0' && v[1] <= '9'))
        return -EINVAL;
    errno = 0;
    *out = strtoll(v, &end, 10);
    if (errno == ERANGE) return -ERANGE;
    if (size) mult = size_suffix(end);
    if (!mult || (!size && *end)) return -EINVAL;
    if (*out > LLONG_MAX / mult || *out < LLONG_MIN / mult) return -ERANGE;
    *out *= mult;
    return 0;
}

static int set_number(struct config *cfg, const struct opt *o, const char *v, char *why,
                      size_t whylen)
{
    long long n;
    int rc = parse_number(v, o->flags & OPT_F_SIZE, &n);
    if (rc == -EINVAL) return fail(why, whylen, "'%s' is not a number", v);
    if (rc < 0 || n < o->min || n > o->max)
        return fail(why, whylen, "'%s' is out of range %lld..%lld", v, o->min, o->max);
    if (o->type == OPT_INT)
        *(int *)field(cfg, o) = (int)n;
    else
        *(long long *)field(cfg, o) = n;
    return 0;
}

/* 1 to 4 octal digits, as chmod(1) takes them. */
static bool is_octal_mode(const char *v)
{
    size_t n = strspn(v, "01234567");
    return n >= 1 && n <= 4 && !v[n];
}

/*
 * Applies one value to one option. 'v' is NULL when the option was given without a value (a
 * bare "--vacuum" or "vacuum" line); an empty value is treated the same way. Returns 0, or -1
 * with the reason (without the option's name) in 'why'.
 */
static int opt_apply(struct config *cfg, const struct opt *o, const char *v, char *why,
                     size_t whylen)
{
    bool b;

    if (!v) v = "";
    if (!*v && o->type != OPT_BOOL && o->type != OPT_MODE)
        return fail(why, whylen, "needs a value");
    switch (o->type) {
    case OPT_BOOL:
        if (!parse_bool(v, &b)) return fail(why, whylen, "'%s' is not a boolean", v);
        *(bool *)field(cfg, o) = b;
        return 0;
    case OPT_INT:
    case OPT_LLONG:
        return set_number(cfg, o, v, why, whylen);
    case OPT_MODE:
        if (!*v) v = "666";
        if (!is_octal_mode(v)) return fail(why, whylen, "'%s' is not an octal mode", v);
        set_string(field(cfg, o), v);
        return 0;
    case OPT_LIST:
        if ((o->flags & OPT_F_KEYVAL) && (v[0] == '=' || !strchr(v, '=')))
            return fail(why, whylen, "'%s' is not KEY=VALUE", v);
        strlist_add(field(cfg, o), v);
        return 0;
    case OPT_STR:
        set_string(field(cfg, o), v);
        return 0;
    case OPT_INI:
    case OPT_ACTION:
        break;
    }
    return fail(why, whylen, "cannot be set here");
}

/* ---- ini files: reading ----------------------------------------------------------------- */

/* Reads fd to its end, at most CONFIG_INI_MAX bytes. Returns 0 or -errno (-EFBIG: too big). */
static int read_all(int fd, char **data, size_t *len)
{
    size_t cap = 4096;
    size_t n = 0;
    char *p = xmalloc(cap);

    for (;;) {
        if (n == cap) p = xrealloc(p, cap *= 2);
        ssize_t r = read(fd, p + n, cap - n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int rc = r < 0 ? -errno : 0;
            if (rc) free(p);
            *data = rc ? NULL : p;
            *len = n;
            return rc;
        }
        n += (size_t)r;
        if (n > CONFIG_INI_MAX) {
            free(p);
            return -EFBIG;
        }
    }
}

/* Reads a whole file (not a directory: read(2) would say EISDIR only on some filesystems). */
static int read_file(const char *path, char **data, size_t *len)
{
    struct stat st;
    int rc;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0) return -errno;
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode))
        rc = -EISDIR;
    else
        rc = read_all(fd, data, len);
    close(fd);
    return rc;
}

/* One key of a [corral] or [uwsgi] section, in file order. */
struct entry {
    const struct opt *o; /* the option it names, NULL if corral has none */
    char *key;           /* as written */
    char *value;         /* as written, NULL for a bare key */
    char *expanded;      /* the value after magic expansion, NULL until done (or ignored) */
    bool uwsgi;          /* from [uwsgi] (else [corral]) */
    unsigned line;       /* 1-based */
};

/* uWSGI's magic variables for one file, computed when the file is opened. */
struct magic {
    const char *given; /* %o: the path as given */
    char *abs;         /* %p: absolute path (cwd joined, "." and "//" removed, links kept) */
    char *dir;         /* %d: absolute directory, with a trailing '/' */
    char *dirname;     /* %c: the last component of %d */
    char *name;        /* %s: the file name */
    char *stem;        /* %n: the file name without its extension */
    char *ext;         /* %e: the extension without the '.', "" if none */
    char host[256];    /* %h: the hostname */
};

/* An ini file being applied. */
struct ini_file {
    const char *path; /* as given, for messages */
    struct entry *v;  /* the keys of [corral] and [uwsgi], in file order */
    int n;            /* how many */
    bool has_section; /* a [corral] or [uwsgi] header was seen */
    struct magic m;   /* magic variables */
};

/* Appends path's components to b, dropping empty and "." ones ("a//./b" -> "a/b"). */
static void append_clean(struct buf *b, const char *path)
{
    while (*path) {
        size_t n = strcspn(path, "/");
        if (n && !(n == 1 && path[0] == '.')) {
            if (!b->len || b->data[b->len - 1] != '/') buf_append(b, "/", 1);
            buf_append(b, path, n);
        }
        path += n + (path[n] == '/');
    }
}

static int magic_init(struct magic *m, const char *path)
{
    struct buf b;
    char cwd[PATH_MAX];

    buf_init(&b);
    if (path[0] != '/') {
        if (!getcwd(cwd, sizeof(cwd))) return -errno;
        append_clean(&b, cwd);
    }
    append_clean(&b, path);
    if (!b.len) buf_append(&b, "/", 1);
    buf_append(&b, "", 1);
    m->given = path;
    m->abs = b.data;
    const char *slash = strrchr(m->abs, '/');
    m->dir = xstrndup(m->abs, (size_t)(slash - m->abs + 1));
    m->name = xstrdup(slash + 1);
    const char *dot = strrchr(m->name, '.');
    m->stem = dot ? xstrndup(m->name, (size_t)(dot - m->name)) : xstrdup(m->name);
    m->ext = xstrdup(dot ? dot + 1 : "");
    const char *up = memrchr(m->abs, '/', (size_t)(slash - m->abs));
    m->dirname = up ? xstrndup(up + 1, (size_t)(slash - up - 1)) : xstrdup("");
    if (gethostname(m->host, sizeof(m->host)) < 0) m->host[0] = '\0';
    m->host[sizeof(m->host) - 1] = '\0';
    return 0;
}

static void magic_free(struct magic *m)
{
    free(m->abs);
    free(m->dir);
    free(m->dirname);
    free(m->name);
    free(m->stem);
    free(m->ext);
}

static void ini_file_free(struct ini_file *f)
{
    for (int i = 0; i < f->n; i++) {
        free(f->v[i].key);
        free(f->v[i].value);
        free(f->v[i].expanded);
    }
    free(f->v);
    magic_free(&f->m);
}

static bool str_is(struct ini_str s, const char *lit)
{
    return s.len == strlen(lit) && !memcmp(s.p, lit, s.len);
}

static void add_entry(struct ini_file *f, const struct ini_item *it, bool uwsgi)
{
    f->v = xrealloc(f->v, sizeof(*f->v) * (size_t)(f->n + 1));
    struct entry *e = &f->v[f->n++];
    *e = (struct entry){.uwsgi = uwsgi, .line = it->line};
    e->key = xstrndup(it->key.p, it->key.len);
    e->value = it->has_value ? xstrndup(it->value.p, it->value.len) : NULL;
    e->o = opt_find(it->key.p, it->key.len, false);
}

/* Keeps the keys of [corral] and [uwsgi]; other sections are skipped, as uWSGI does. */
static int collect(struct ini_file *f, const char *data, size_t len, char *err, size_t errlen)
{
    struct ini_reader r;
    struct ini_item it;
    enum ini_error ie;
    int rc;

    if (len >= 3 && !memcmp(data, "\xef\xbb\xbf", 3)) {
        data += 3; /* a UTF-8 byte order mark, as some editors write */
        len -= 3;
    }
    ini_reader_init(&r, data, len);
    while ((rc = ini_next(&r, &it, &ie)) > 0) {
        bool corral = str_is(it.section, "corral");
        bool uwsgi = str_is(it.section, "uwsgi");
        if (it.kind == INI_SECTION) f->has_section |= corral || uwsgi;
        if (it.kind == INI_PAIR && (corral || uwsgi)) add_entry(f, &it, uwsgi);
    }
    if (rc < 0) return fail(err, errlen, "%s:%u: %s", f->path, r.line, ini_strerror(ie));
    return 0;
}

/* ---- ini files: magic variables --------------------------------------------------------- */

/* Is "%(key)" written in any value of the file? */
static bool is_referenced(const struct ini_file *f, const char *key)
{
    size_t klen = strlen(key);
    for (int i = 0; i < f->n; i++) {
        const char *p = f->v[i].value;
        while (p && (p = strstr(p, "%(")) != NULL) {
            p += 2;
            if (!strncmp(p, key, klen) && p[klen] == ')') return true;
        }
    }
    return false;
}

/* The latest value before entry 'upto' set under 'name' or under a name of the same option. */
static const char *placeholder(const struct ini_file *f, int upto, const char *name)
{
    const struct opt *o = opt_find(name, strlen(name), false);
    for (int i = upto - 1; i >= 0; i--) {
        const struct entry *e = &f->v[i];
        if (!e->expanded) continue;
        if (!strcmp(e->key, name) || (o && e->o == o)) return e->expanded;
    }
    return NULL;
}

static const char *magic_value(const struct magic *m, char c)
{
    switch (c) {
    case 'd':
        return m->dir;
    case 'p':
        return m->abs;
    case 's':
        return m->name;
    case 'n':
        return m->stem;
    case 'e':
        return m->ext;
    case 'c':
        return m->dirname;
    case 'o':
        return m->given;
    case 'h':
        return m->host;
    case '%':
        return "%";
    }
    return NULL;
}

/*
 * Expands the "%(name)" or "$(NAME)" starting at *pp (which points at the '%' or '$') into b
 * and moves *pp past the ')'. Returns 0 or -1 with the reason in 'why'.
 */
static int expand_ref(const struct ini_file *f, int upto, const char **pp, struct buf *b, char *why,
                      size_t whylen)
{
    char sigil = **pp;
    const char *name = *pp + 2;
    const char *close = strchr(name, ')');
    if (!close) return fail(why, whylen, "'%c(' has no closing ')'", sigil);
    char *key = xstrndup(name, (size_t)(close - name));
    const char *v = sigil == '$' ? getenv(key) : placeholder(f, upto, key);
    int rc = 0;
    if (v)
        buf_append_str(b, v);
    else if (sigil == '$')
        rc = fail(why, whylen, "environment variable '%s' is not set", key);
    else
        rc = fail(why, whylen, "'%%(%s)' is not set earlier in this file", key);
    free(key);
    *pp = close + 1;
    return rc;
}

/* Expands one '%' sequence at *pp into b and moves *pp past it. */
static int expand_percent(const struct ini_file *f, int upto, const char **pp, struct buf *b,
                          char *why, size_t whylen)
{
    const char *p = *pp;
    const char *v;
    if (p[1] == '(') return expand_ref(f, upto, pp, b, why, whylen);
    if (!p[1]) {
        buf_append(b, "%", 1); /* a '%' at the very end stays, as in uWSGI */
        *pp = p + 1;
        return 0;
    }
    v = magic_value(&f->m, p[1]);
    if (!v) return fail(why, whylen, "magic variable '%%%c' is not supported by corral", p[1]);
    buf_append_str(b, v);
    *pp = p + 2;
    return 0;
}

/* Expands entry i's value; on success e->expanded owns the result. */
static int expand(struct ini_file *f, int i, char *why, size_t whylen)
{
    struct buf b;
    const char *p = f->v[i].value ? f->v[i].value : "";
    int rc = 0;

    buf_init(&b);
    while (*p && rc == 0) {
        size_t n = strcspn(p, "%$@");
        buf_append(&b, p, n);
        p += n;
        if (!*p) break;
        if (*p == '%')
            rc = expand_percent(f, i, &p, &b, why, whylen);
        else if (p[1] != '(')
            buf_append(&b, p++, 1); /* a lone '$' or '@' */
        else if (*p == '$')
            rc = expand_ref(f, i, &p, &b, why, whylen);
        else
            rc = fail(why, whylen, "'@(file)' is not supported by corral");
    }
    buf_append(&b, "", 1);
    if (rc == 0) f->v[i].expanded = b.data;
    if (rc != 0) buf_destroy(&b);
    return rc;
}

/* ---- ini files: applying ---------------------------------------------------------------- */

/* Has an earlier key of the file the same unknown name (so it was warned about already)? */
static bool warned_before(const struct ini_file *f, int i)
{
    for (int j = 0; j < i; j++) {
        if (!f->v[j].o && !strcmp(f->v[j].key, f->v[i].key)) return true;
    }
    return false;
}

/* A key corral has no option for: a placeholder, a uWSGI option to skip, or a mistake. */
static int apply_unknown(struct ini_file *f, int i, char *err, size_t errlen)
{
    struct entry *e = &f->v[i];
    char why[CONFIG_ERR_MAX];

    if (is_referenced(f, e->key)) {
        if (expand(f, i, why, sizeof(why)) == 0) return 0;
        return fail(err, errlen, "%s:%u: %s: %s", f->path, e->line, e->key, why);
    }
    if (!e->uwsgi) return fail(err, errlen, "%s:%u: %s: unknown option", f->path, e->line, e->key);
    if (!warned_before(f, i)) {
        fprintf(stderr,
                "corral: warning: %s:%u: uwsgi option '%s' is not supported by corral; ignored\n",
                f->path, e->line, e->key);
    }
    return 0;
}

static int apply_entry(struct config *cfg, struct ini_file *f, int i, char *err, size_t errlen)
{
    struct entry *e = &f->v[i];
    char why[CONFIG_ERR_MAX];

    if (!e->o) return apply_unknown(f, i, err, errlen);
    if (e->o->flags & OPT_F_CLI) {
        return fail(err, errlen, "%s:%u: %s: only valid on the command line", f->path, e->line,
                    e->key);
    }
    if (expand(f, i, why, sizeof(why)) < 0 ||
        opt_apply(cfg, e->o, e->value ? e->expanded : NULL, why, sizeof(why)) < 0)
        return fail(err, errlen, "%s:%u: %s: %s", f->path, e->line, e->key, why);
    return 0;
}

/* Reads 'path' and applies its [corral] and [uwsgi] keys in file order. */
static int load_ini(struct config *cfg, const char *path, char *err, size_t errlen)
{
    struct ini_file f = {.path = path};
    char *data = NULL;
    size_t len = 0;
    int rc = read_file(path, &data, &len);

    if (rc < 0) return fail(err, errlen, "%s: cannot read: %s", path, strerror(-rc));
    rc = magic_init(&f.m, path);
    if (rc < 0) rc = fail(err, errlen, "%s: cannot resolve path: %s", path, strerror(-rc));
    if (rc == 0) rc = collect(&f, data, len, err, errlen);
    free(data);
    if (rc == 0 && !f.has_section)
        fprintf(stderr, "corral: warning: %s: no [corral] or [uwsgi] section; nothing read\n",
                path);
    for (int i = 0; rc == 0 && i < f.n; i++)
        rc = apply_entry(cfg, &f, i, err, errlen);
    ini_file_free(&f);
    return rc;
}

/* ---- the command line ------------------------------------------------------------------- */

/* An option as found in argv[i]. */
struct cli_arg {
    const struct opt *o;
    char spelled[64];     /* "--processes", "-p": for messages */
    const char *inline_v; /* the part after '=' (or after "-p"), NULL if none */
};

/* Splits argv[i] into name and inline value and finds its row. */
static int cli_split(const char *a, struct cli_arg *c, char *err, size_t errlen)
{
    bool is_long = a[1] == '-';
    const char *name = a + (is_long ? 2 : 1);
    size_t len = is_long ? strcspn(name, "=") : 1;

    if (a[0] != '-' || !a[1]) return fail(err, errlen, "%s: unexpected argument", a);
    snprintf(c->spelled, sizeof(c->spelled), "%.*s", (int)(len + (is_long ? 2 : 1)), a);
    c->inline_v = NULL;
    if (is_long && name[len] == '=') c->inline_v = name + len + 1;
    if (!is_long && name[1]) c->inline_v = name + 1;
    c->o = opt_find(name, len, !is_long);
    if (!c->o) return fail(err, errlen, "%s: unknown option", c->spelled);
    return 0;
}

/* May argv's next word be this flag's value? (Flags take one only if it fits.) */
static bool takes_next(const struct opt *o, const char *next)
{
    bool b;
    if (!next) return false;
    if (o->type == OPT_BOOL) return parse_bool(next, &b) && *next;
    if (o->type == OPT_MODE) return is_octal_mode(next);
    return o->type != OPT_ACTION && strncmp(next, "--", 2) != 0;
}

static int run_action(const struct opt *o, enum config_action *action)
{
    *action = o->action;
    if (o->action == CONFIG_VERSION)
        printf("corral %s\n", CONFIG_VERSION_STRING);
    else
        config_print_help(!strcmp(o->name, "help-markdown"));
    fflush(stdout);
    return 0;
}

/* Handles argv[*i] (and its value, advancing *i). Sets *action for --help and --version. */
static int cli_one(struct config *cfg, int argc, char **argv, int *i, enum config_action *action,
                   char *err, size_t errlen)
{
    struct cli_arg c;
    char why[CONFIG_ERR_MAX];
    const char *next = *i + 1 < argc ? argv[*i + 1] : NULL;
    const char *v;

    if (cli_split(argv[*i], &c, err, errlen) < 0) return -1;
    v = c.inline_v;
    if (!v && takes_next(c.o, next)) {
        v = next;
        ++*i;
    }
    if (c.o->type == OPT_ACTION) {
        if (v) return fail(err, errlen, "%s: takes no value", c.spelled);
        return run_action(c.o, action);
    }
    if (c.o->type == OPT_INI) {
        if (!v || !*v) return fail(err, errlen, "%s: needs a value", c.spelled);
        strlist_add(&cfg->ini, v);
        return load_ini(cfg, v, err, errlen);
    }
    if (opt_apply(cfg, c.o, v, why, sizeof(why)) < 0)
        return fail(err, errlen, "%s: %s", c.spelled, why);
    return 0;
}

/* ---- loading ---------------------------------------------------------------------------- */

static void apply_defaults(struct config *cfg)
{
    char why[CONFIG_ERR_MAX];
    for (size_t i = 0; i < ARRAY_SIZE(opts); i++) {
        if (!opts[i].def) continue;
        if (opt_apply(cfg, &opts[i], opts[i].def, why, sizeof(why)) < 0) {
            fprintf(stderr, "corral: bad default for %s: %s\n", opts[i].name, why);
            abort(); /* a broken table row: a bug, caught by the unit tests */
        }
    }
}

static int validate(const struct config *cfg, char *err, size_t errlen)
{
    struct forwarded_allow allow;
    char why[CONFIG_ERR_MAX / 2];

    if (!cfg->module && !cfg->wsgi_file)
        return fail(err, errlen, "no app: give --module or --wsgi-file");
    if (cfg->module && cfg->wsgi_file)
        return fail(err, errlen, "--module and --wsgi-file are both set: give only one");
    if (!cfg->http.n && !cfg->socket.n)
        return fail(err, errlen, "no listener: give --http or --socket");
    if (forwarded_allow_parse(cfg->forwarded_allow_ips, &allow, why, sizeof(why)) < 0)
        return fail(err, errlen, "--forwarded-allow-ips: %s", why);
    if (cfg->spool_dir) {
        struct stat st;
        if (stat(cfg->spool_dir, &st) < 0)
            return fail(err, errlen, "--spool-dir %s: %s", cfg->spool_dir, strerror(errno));
        if (!S_ISDIR(st.st_mode))
            return fail(err, errlen, "--spool-dir %s: not a directory", cfg->spool_dir);
    }
    return 0; /* --env values were checked for '=' as they came in (OPT_F_KEYVAL) */
}

/* The kernel silently caps listen(2)'s backlog at net.core.somaxconn: say so once. */
static void warn_somaxconn(const struct config *cfg)
{
    FILE *fp = fopen("/proc/sys/net/core/somaxconn", "re");
    long max = 0;
    if (!fp) return;
    if (fscanf(fp, "%ld", &max) == 1 && max > 0 && cfg->listen > max) {
        fprintf(stderr,
                "corral: warning: listen %d is above net.core.somaxconn (%ld); the kernel "
                "caps the backlog at %ld\n",
                cfg->listen, max, max);
    }
    fclose(fp);
}

int config_load(struct config *cfg, int argc, char **argv, enum config_action *action, char *err,
                size_t errlen)
{
    int rc = 0;

    memset(cfg, 0, sizeof(*cfg));
    *action = CONFIG_SERVE;
    if (errlen) err[0] = '\0';
    apply_defaults(cfg);
    for (int i = 1; rc == 0 && i < argc && *action == CONFIG_SERVE; i++)
        rc = cli_one(cfg, argc, argv, &i, action, err, errlen);
    if (rc == 0 && *action == CONFIG_SERVE) rc = validate(cfg, err, errlen);
    if (rc < 0) {
        config_free(cfg);
        return -1;
    }
    if (*action == CONFIG_SERVE) warn_somaxconn(cfg);
    return 0;
}

void config_free(struct config *cfg)
{
    if (!cfg) return;
    for (size_t i = 0; i < ARRAY_SIZE(opts); i++) {
        const struct opt *o = &opts[i];
        if (o->type == OPT_STR || o->type == OPT_MODE) {
            free(*(char **)field(cfg, o));
            *(char **)field(cfg, o) = NULL;
        }
        if (o->type == OPT_LIST || o->type == OPT_INI) strlist_free(field(cfg, o));
    }
}

const char *config_callable(const struct config *cfg)
{
    return cfg->callable && *cfg->callable ? cfg->callable : "application";
}

/* ---- help and docs/config.md ------------------------------------------------------------ */

static const char *type_name(const struct opt *o)
{
    switch (o->type) {
    case OPT_BOOL:
        return "bool";
    case OPT_INT:
    case OPT_LLONG:
        return o->flags & OPT_F_SIZE ? "bytes" : "integer";
    case OPT_STR:
        return "string";
    case OPT_LIST:
        return "string, repeatable";
    case OPT_MODE:
        return "octal mode";
    case OPT_INI:
        return "file, repeatable";
    case OPT_ACTION:
        break;
    }
    return "flag";
}

/* "--name ARG" (or "--name [MODE]" when the value is optional). */
static void usage_of(const struct opt *o, char *out, size_t len)
{
    if (!o->arg)
        snprintf(out, len, "--%s", o->name);
    else if (o->type == OPT_MODE)
        snprintf(out, len, "--%s[=%s]", o->name, o->arg);
    else
        snprintf(out, len, "--%s %s", o->name, o->arg);
}

/* "--workers, -p" (Markdown: each in backquotes); "" when there are none. */
static void aliases_of(const struct opt *o, bool md, char *out, size_t len)
{
    size_t used = 0;
    out[0] = '\0';
    for (const char *const *a = o->aliases; *a && used < len; a++) {
        used += (size_t)snprintf(out + used, len - used, "%s%s%s%s%s", used ? ", " : "",
                                 md ? "`" : "", is_short(*a) ? "-" : "--", *a, md ? "`" : "");
    }
}

/* "1..1024", or "" when the type has no range. */
static void range_of(const struct opt *o, char *out, size_t len)
{
    out[0] = '\0';
    if (o->type == OPT_INT || o->type == OPT_LLONG)
        snprintf(out, len, "%lld..%lld", o->min, o->max);
}

/* Appends "; note" (or just "note" first) to out. */
static void add_note(char *out, size_t len, const char *prefix, const char *note)
{
    size_t used = strlen(out);
    if (*note && used < len)
        snprintf(out + used, len - used, "%s%s%s", used ? "; " : "", prefix, note);
}

/*
 * Prints "  LEFT  text" with text word-wrapped to 100 columns; continuation lines, and the
 * first one when LEFT is too wide, start at column 31.
 */
static void print_wrapped(const char *left, const char *text)
{
    enum { INDENT = 31, WIDTH = 100 };
    int col = printf("  %-28s", left);

    text += strspn(text, " ");
    while (*text) {
        size_t word = strcspn(text, " ");
        if (col >= INDENT && col + 1 + (int)word > WIDTH) col = printf("\n%*s", INDENT - 1, "") - 1;
        col += printf(" %.*s", (int)word, text);
        text += word;
        text += strspn(text, " ");
    }
    printf("\n");
}

static void print_text_row(const struct opt *o)
{
    char use[64], al[128], range[64], notes[256] = "", text[512];

    usage_of(o, use, sizeof(use));
    aliases_of(o, false, al, sizeof(al));
    range_of(o, range, sizeof(range));
    if (o->type != OPT_BOOL) add_note(notes, sizeof(notes), "default ", o->def ? o->def : "");
    add_note(notes, sizeof(notes), "", range);
    add_note(notes, sizeof(notes), "also ", al);
    add_note(notes, sizeof(notes), "", o->type == OPT_LIST ? "repeatable" : "");
    snprintf(text, sizeof(text), "%s%s%s%s", o->help, *notes ? " (" : "", notes, *notes ? ")" : "");
    print_wrapped(use, text);
}

static void print_text(void)
{
    const char *group = NULL;

    printf("usage: corral [options]\n\n"
           "Serves a Python WSGI app. Give the app (--module or --wsgi-file) and at least one\n"
           "listener (--http or --socket), on the command line or in an ini file (--ini): the\n"
           "same names, as \"name = value\" in a [corral] or [uwsgi] section. Options are read\n"
           "left to right: a later value wins, repeatable options add up. Booleans take\n"
           "true/false, yes/no, on/off or 1/0 (--vacuum alone means true); byte sizes take a\n"
           "K, M or G suffix.\n");
    for (size_t i = 0; i < ARRAY_SIZE(opts); i++) {
        if (opts[i].flags & OPT_F_HIDDEN) continue;
        if (!group || strcmp(group, opts[i].group) != 0) printf("\n%s:\n", opts[i].group);
        group = opts[i].group;
        print_text_row(&opts[i]);
    }
}

static void print_md_row(const struct opt *o)
{
    char use[64], al[160], range[64];

    usage_of(o, use, sizeof(use));
    aliases_of(o, true, al, sizeof(al));
    range_of(o, range, sizeof(range));
    printf("| `%s` | %s | %s%s%s | %s%s%s | %s%s |\n", use, *al ? al : "", type_name(o),
           *range ? ", " : "", range, o->def ? "`" : "", o->def ? o->def : "", o->def ? "`" : "",
           o->help, (o->flags & OPT_F_CLI) ? " (command line only)" : "");
}

static void print_markdown(void)
{
    const char *group = NULL;

    printf("# Configuration reference\n\n"
           "<!-- Generated by `corral --help-markdown` from the option table in "
           "src/config/config.c; do not edit by hand. -->\n\n"
           "Every option can be given on the command line, as `--name value` or "
           "`--name=value`, or in an ini file, as `name = value` in a `[corral]` or `[uwsgi]` "
           "section (see [config-files.md](config-files.md)). Options are applied in the "
           "order given: for a repeatable option every value counts, for the others the last "
           "one wins.\n\n"
           "- **bool**: `--name` or a bare `name` line means true; values `true`/`false`, "
           "`yes`/`no`, `on`/`off`, `1`/`0` (any case).\n"
           "- **bytes**: a plain number of bytes, or with a `K`, `M` or `G` suffix (powers of "
           "1024).\n"
           "- **octal mode**: 1 to 4 octal digits, as for chmod(1).\n"
           "- One-letter aliases are short command-line forms: `-p 4`, `-p4`.\n");
    for (size_t i = 0; i < ARRAY_SIZE(opts); i++) {
        if (opts[i].flags & OPT_F_HIDDEN) continue;
        if (!group || strcmp(group, opts[i].group) != 0) {
            printf("\n## %s\n\n| Option | Aliases | Type | Default | Description |\n"
                   "| --- | --- | --- | --- | --- |\n",
                   opts[i].group);
        }
        group = opts[i].group;
        print_md_row(&opts[i]);
    }
}

void config_print_help(int markdown)
{
    if (markdown)
        print_markdown();
    else
        print_text();
}
