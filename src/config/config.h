/*
 * config.h - corral's configuration: one struct, filled once and then read-only.
 *
 * The options live in one table in config.c ({name, aliases, type, offsetof(struct config, f),
 * default, min, max, flags, help}). The command line and ini files ([corral] and [uwsgi] sections)
 * are read through that same table, so every option has exactly one name, one parser and one help
 * line; `corral --help` and docs/config.md are generated from it. Names and meanings follow
 * uWSGI's for the options we share.
 *
 * Order: defaults, then the command line from left to right, each --ini file being read at the
 * point where it appears (a later scalar wins; repeatable options accumulate across files and
 * the command line). docs/config-files.md has the ini dialect and uWSGI's magic variables.
 * config_load() is called once by main() in the master before anything is bound; afterwards the
 * struct is passed around as `const struct config *` and never changes.
 */
#ifndef CORRAL_CONFIG_H
#define CORRAL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

/* A repeatable string option (--env, --pythonpath, --http, ...), in the order given. */
struct strlist {
    char **v; /* n heap strings, owned by the config */
    int n;
};

/* What the command line asked for besides serving. */
enum config_action {
    CONFIG_SERVE,   /* run the server */
    CONFIG_HELP,    /* --help (or --help-markdown) was given: its text printed to stdout */
    CONFIG_VERSION, /* --version was given: version printed to stdout */
};

struct config {
    /* listeners */
    struct strlist http;   /* --http / http-socket: "host:port", ":port" or a UNIX path */
    struct strlist socket; /* --socket / uwsgi-socket: uwsgi-protocol listeners */
    int listen;            /* --listen: accept backlog (1024) */
    char *chmod_socket;    /* --chmod-socket: octal mode for UNIX sockets, NULL = leave as is;
                              "--chmod-socket" with no value in uWSGI means 666 */
    bool vacuum;           /* --vacuum: remove UNIX socket files and the pidfile on exit */

    /* the app */
    char *module;              /* --module "pkg.mod:app" (or "pkg.mod", callable from --callable) */
    char *wsgi_file;           /* --wsgi-file path.py */
    char *callable;            /* --callable: default "application", "app" accepted as fallback */
    char *chdir;               /* --chdir DIR: before loading the app */
    struct strlist pythonpath; /* --pythonpath DIR: prepended to sys.path, in order */
    char *venv;                /* --venv / home / virtualenv: a virtualenv's root directory */
    struct strlist env;        /* --env KEY=VALUE: set in the process environment before loading */
    bool lazy_apps;            /* --lazy-apps: each worker imports the app after fork */

    /* processes and threads */
    int processes;       /* --processes / workers (1) */
    int threads;         /* --threads (1): Python threads per worker */
    int cpu_affinity;    /* --cpu-affinity: CPUs each worker keeps to, round-robin; 0: no
                            pinning; -1 (default): 1 for pooled workers, else 0 */
    bool enable_threads; /* --enable-threads: accepted for uWSGI compatibility; no effect
                            (Python 3.7+ always has the GIL and thread support set up) */
    int thread_queue;    /* --thread-queue: when every worker is busy, a worker stops taking
                            connections once this many requests wait for its threads; 0: no
                            limit (they wait in the loop, in order) */

    /* HTTP and request limits */
    int buffer_size;          /* --buffer-size: max request head bytes (16384) */
    long long limit_post;     /* --limit-post: max request body bytes, 0 = unlimited (100M) */
    long long post_buffering; /* --post-buffering: bodies above this many bytes spill to a
                                 temporary file instead of memory (1 MiB) */
    char *spool_dir;          /* --spool-dir: where spilled bodies go; NULL: $TMPDIR or /tmp */
    long long spool_max;      /* --spool-max: spilled body bytes a worker holds at once, 0 = no
                                 limit (1G) */
    int http_timeout;         /* --http-timeout: seconds to receive a request head or body (60) */
    int keepalive_timeout;    /* --http-keepalive-timeout: idle seconds between requests (15) */
    int response_buffer;      /* --response-buffer: response bytes a connection holds before
                                 the app is asked for more (256 KiB) */

    /* proxies in front of an HTTP listener */
    char *forwarded_allow_ips; /* --forwarded-allow-ips: peers whose X-Forwarded-For,
                                  X-Forwarded-Proto and Forwarded headers are believed
                                  (comma list of addresses and CIDR networks, or "*";
                                  "127.0.0.1"); checked by config_load, parsed by
                                  forwarded_allow_parse() (http/forwarded.h) */

    /* master */
    int graceful_timeout; /* --graceful-timeout: seconds in-flight requests get on stop (30) */
    bool master;          /* --master: accepted for uWSGI compatibility; corral always has one */
    bool die_on_term;     /* --die-on-term: accepted; SIGTERM always stops corral */

    /* supervision */
    int harakiri;            /* --harakiri: seconds a request may run; 0 = no limit */
    int harakiri_grace;      /* --harakiri-grace: seconds after the in-thread exception before
                                the master kills the worker (5) */
    int max_requests;        /* --max-requests: recycle a worker after this many; 0 = never */
    int max_requests_jitter; /* --max-requests-jitter: up to this many more, per worker */
    int reload_on_rss;       /* --reload-on-rss: recycle a worker above this RSS in MiB; 0 off */
    int max_worker_lifetime; /* --max-worker-lifetime: recycle after this many seconds; 0 off */
    struct strlist touch_reload;       /* --touch-reload FILE: reload when its mtime changes */
    struct strlist touch_chain_reload; /* --touch-chain-reload FILE: chain reload likewise */
    int cheaper;      /* --cheaper: adaptive workers: keep at least this many; 0 = off */
    int cheaper_idle; /* --cheaper-idle: seconds before an idle extra worker retires */
    char *uid;        /* --uid: user (name or number) to run as after binding */
    char *gid;        /* --gid: group (name or number) to run as after binding */

    /* files and logging */
    char *pidfile;        /* --pidfile */
    char *log_file;       /* --log-file / logto */
    bool disable_logging; /* --disable-logging: no per-request lines (errors still log) */

    /* the ini files read, for messages */
    struct strlist ini; /* --ini FILE (repeatable) */
};

/* What --version prints after "corral ". */
#define CONFIG_VERSION_STRING "0.1.0"

/* Size of the caller's error buffer; messages are "file:line: key: reason" or "--key: reason". */
enum { CONFIG_ERR_MAX = 512 };

/*
 * Fills 'cfg' from defaults, argv and any --ini files. Returns 0, or -1 with a one-line message
 * in 'err' (nothing printed; 'cfg' already freed). Warnings (a uWSGI option corral does not
 * have, a backlog above net.core.somaxconn) are printed to stderr as they are found. '*action'
 * says whether to serve or whether --help/--version already printed their text; in that case
 * the rest of argv was not read and nothing was validated. After a 0 return (any action),
 * release 'cfg' with config_free().
 */
int config_load(struct config *cfg, int argc, char **argv, enum config_action *action, char *err,
                size_t errlen);
/* Frees everything config_load() allocated; safe twice, and on a zeroed or NULL struct. */
void config_free(struct config *cfg);
/* Writes the generated option reference: Markdown (docs/config.md) or --help text. */
void config_print_help(int markdown);
/* The effective callable name. */
const char *config_callable(const struct config *cfg);

#endif
