/*
 * test_config.c - unit tests for the option table and config_load() (src/config/config.c).
 *
 * Each test runs in a fresh mkdtemp() directory (it is the cwd, so ini files are named as a
 * user would name them and messages read "site.ini:12: ..."). stdout and stderr are captured
 * around config_load(), so warnings and --help output are checked as exact text.
 */
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "config/config.h"

/* The directory a test runs in, and where the repository is (for docs/config.md). */
struct env {
    char dir[64];
    char repo[PATH_MAX];
};

/* One config_load() call and what it printed. */
struct run {
    struct config cfg;
    enum config_action action;
    int rc;
    char err[CONFIG_ERR_MAX];
    char out[65536]; /* stdout */
    char warn[8192]; /* stderr */
};

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    struct env *e = calloc(1, sizeof(*e));
    if (!e || !getcwd(e->repo, sizeof(e->repo))) return -1;
    strcpy(e->dir, "/tmp/corral-test-config-XXXXXX");
    if (!mkdtemp(e->dir) || chdir(e->dir) < 0) return -1;
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    struct env *e = *state;
    if (chdir(e->repo) < 0) return -1;
    nftw(e->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(e);
    return 0;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    assert_int_equal(fclose(f), 0);
}

/* Points 'fd' at a temporary file; returns the saved descriptor. */
static int capture_begin(int fd, FILE **tmp)
{
    fflush(stdout);
    fflush(stderr);
    *tmp = tmpfile();
    assert_non_null(*tmp);
    int saved = dup(fd);
    assert_true(saved >= 0);
    assert_true(dup2(fileno(*tmp), fd) >= 0);
    return saved;
}

static void capture_end(int fd, int saved, FILE *tmp, char *out, size_t cap)
{
    fflush(stdout);
    fflush(stderr);
    assert_true(dup2(saved, fd) >= 0);
    close(saved);
    rewind(tmp);
    size_t n = fread(out, 1, cap - 1, tmp);
    out[n] = '\0';
    fclose(tmp);
}

/* Runs config_load() on argv (NULL-terminated, argv[0] included), capturing its output. */
static int run(struct run *r, const char *const *argv)
{
    FILE *out;
    FILE *err;
    int argc = 0;

    while (argv[argc])
        argc++;
    memset(r, 0, sizeof(*r));
    int so = capture_begin(1, &out);
    int se = capture_begin(2, &err);
    r->rc = config_load(&r->cfg, argc, (char **)argv, &r->action, r->err, sizeof(r->err));
    capture_end(2, se, err, r->warn, sizeof(r->warn));
    capture_end(1, so, out, r->out, sizeof(r->out));
    return r->rc;
}

/* Expects config_load() to fail with exactly 'msg', printing nothing to stdout. */
static void expect_error(const char *const *argv, const char *msg)
{
    struct run r;
    assert_int_equal(run(&r, argv), -1);
    assert_string_equal(r.err, msg);
    assert_string_equal(r.out, "");
    config_free(&r.cfg); /* already freed by config_load: must be harmless */
}

/* The smallest valid command line, plus what the test adds. */
#define BASE "corral", "--http", ":8000", "--module", "app"

static void test_defaults(void **state)
{
    struct run r;
    (void)state;

    assert_int_equal(run(&r, (const char *[]){BASE, NULL}), 0);
    assert_int_equal(r.action, CONFIG_SERVE);
    assert_string_equal(r.err, "");
    assert_string_equal(r.warn, "");
    assert_int_equal(r.cfg.http.n, 1);
    assert_string_equal(r.cfg.http.v[0], ":8000");
    assert_int_equal(r.cfg.socket.n, 0);
    assert_int_equal(r.cfg.listen, 1024);
    assert_null(r.cfg.chmod_socket);
    assert_false(r.cfg.vacuum);
    assert_string_equal(r.cfg.module, "app");
    assert_null(r.cfg.wsgi_file);
    assert_string_equal(r.cfg.callable, "application");
    assert_string_equal(config_callable(&r.cfg), "application");
    assert_null(r.cfg.chdir);
    assert_int_equal(r.cfg.pythonpath.n, 0);
    assert_null(r.cfg.venv);
    assert_int_equal(r.cfg.env.n, 0);
    assert_false(r.cfg.lazy_apps);
    assert_int_equal(r.cfg.processes, 1);
    assert_int_equal(r.cfg.threads, 1);
    assert_false(r.cfg.enable_threads);
    assert_int_equal(r.cfg.buffer_size, 16384);
    assert_int_equal(r.cfg.limit_post, 100LL << 20);
    assert_null(r.cfg.spool_dir);
    assert_int_equal(r.cfg.spool_max, 1LL << 30);
    assert_int_equal(r.cfg.post_buffering, 1048576);
    assert_int_equal(r.cfg.http_timeout, 60);
    assert_int_equal(r.cfg.keepalive_timeout, 15);
    assert_int_equal(r.cfg.response_buffer, 262144);
    assert_int_equal(r.cfg.thread_queue, 0);
    assert_string_equal(r.cfg.forwarded_allow_ips, "127.0.0.1");
    assert_int_equal(r.cfg.graceful_timeout, 30);
    assert_false(r.cfg.master);
    assert_false(r.cfg.die_on_term);
    assert_null(r.cfg.pidfile);
    assert_null(r.cfg.log_file);
    assert_false(r.cfg.disable_logging);
    assert_int_equal(r.cfg.ini.n, 0);
    config_free(&r.cfg);
    config_free(&r.cfg);
}

static void test_cli_value_forms(void **state)
{
    struct run r;
    (void)state;

    assert_int_equal(run(&r, (const char *[]){BASE, "--processes", "4", "--threads=8", "--callable",
                                              "app", "--buffer-size=32k", "--limit-post", "10M",
                                              "--post-buffering=1g", "--listen", "+128", NULL}),
                     0);
    assert_int_equal(r.cfg.processes, 4);
    assert_int_equal(r.cfg.threads, 8);
    assert_string_equal(config_callable(&r.cfg), "app");
    assert_int_equal(r.cfg.buffer_size, 32768);
    assert_int_equal(r.cfg.limit_post, 10LL << 20);
    assert_int_equal(r.cfg.post_buffering, 1LL << 30);
    assert_int_equal(r.cfg.listen, 128);
    config_free(&r.cfg);

    assert_int_equal(run(&r, (const char *[]){BASE, "-p", "3", "-b", "4096", NULL}), 0);
    assert_int_equal(r.cfg.processes, 3);
    assert_int_equal(r.cfg.buffer_size, 4096);
    config_free(&r.cfg);

    assert_int_equal(run(&r, (const char *[]){BASE, "-p7", "-b2048", NULL}), 0);
    assert_int_equal(r.cfg.processes, 7);
    assert_int_equal(r.cfg.buffer_size, 2048);
    config_free(&r.cfg);

    /* a later scalar wins */
    assert_int_equal(
        run(&r, (const char *[]){BASE, "-p", "2", "--workers=5", "--module=other", NULL}), 0);
    assert_int_equal(r.cfg.processes, 5);
    assert_string_equal(r.cfg.module, "other");
    config_free(&r.cfg);
}

static void test_cli_booleans(void **state)
{
    struct run r;
    (void)state;

    assert_int_equal(run(&r, (const char *[]){BASE, "--vacuum", "--master=ON", "--lazy-apps", "yes",
                                              "--die-on-term=1", "--enable-threads", "true",
                                              "--disable-logging=", NULL}),
                     0);
    assert_true(r.cfg.vacuum);
    assert_true(r.cfg.master);
    assert_true(r.cfg.lazy_apps);
    assert_true(r.cfg.die_on_term);
    assert_true(r.cfg.enable_threads);
    assert_true(r.cfg.disable_logging);
    config_free(&r.cfg);

    assert_int_equal(run(&r, (const char *[]){BASE, "--vacuum", "--vacuum=false", "--master", "off",
                                              "--lazy", "No", "--die-on-term=0", NULL}),
                     0);
    assert_false(r.cfg.vacuum);
    assert_false(r.cfg.master);
    assert_false(r.cfg.lazy_apps);
    assert_false(r.cfg.die_on_term);
    config_free(&r.cfg);
}

static void test_cli_chmod_socket(void **state)
{
    struct run r;
    (void)state;

    assert_int_equal(run(&r, (const char *[]){BASE, "--chmod-socket", NULL}), 0);
    assert_string_equal(r.cfg.chmod_socket, "666");
    config_free(&r.cfg);
    assert_int_equal(run(&r, (const char *[]){BASE, "--chmod-socket", "--vacuum", NULL}), 0);
    assert_string_equal(r.cfg.chmod_socket, "666");
    assert_true(r.cfg.vacuum);
    config_free(&r.cfg);
    assert_int_equal(run(&r, (const char *[]){BASE, "--chmod-socket=660", NULL}), 0);
    assert_string_equal(r.cfg.chmod_socket, "660");
    config_free(&r.cfg);
    assert_int_equal(run(&r, (const char *[]){BASE, "--chmod-socket", "0640", NULL}), 0);
    assert_string_equal(r.cfg.chmod_socket, "0640");
    config_free(&r.cfg);
}

static void test_cli_repeatable(void **state)
{
    struct run r;
    (void)state;

    assert_int_equal(run(&r, (const char *[]){"corral",
                                              "--http",
                                              ":1",
                                              "--http-socket=:2",
                                              "--socket",
                                              "/run/a.sock",
                                              "--uwsgi-socket",
                                              ":3031",
                                              "--wsgi-file",
                                              "app.py",
                                              "--pythonpath",
                                              "a",
                                              "--python-path=b",
                                              "--pp",
                                              "c",
                                              "--env",
                                              "A=1",
                                              "--env=B==2",
                                              "--env",
                                              "C=",
                                              NULL}),
                     0);
    assert_int_equal(r.cfg.http.n, 2);
    assert_string_equal(r.cfg.http.v[0], ":1");
    assert_string_equal(r.cfg.http.v[1], ":2");
    assert_int_equal(r.cfg.socket.n, 2);
    assert_string_equal(r.cfg.socket.v[0], "/run/a.sock");
    assert_string_equal(r.cfg.socket.v[1], ":3031");
    assert_string_equal(r.cfg.wsgi_file, "app.py");
    assert_int_equal(r.cfg.pythonpath.n, 3);
    assert_string_equal(r.cfg.pythonpath.v[0], "a");
    assert_string_equal(r.cfg.pythonpath.v[1], "b");
    assert_string_equal(r.cfg.pythonpath.v[2], "c");
    assert_int_equal(r.cfg.env.n, 3);
    assert_string_equal(r.cfg.env.v[0], "A=1");
    assert_string_equal(r.cfg.env.v[1], "B==2");
    assert_string_equal(r.cfg.env.v[2], "C=");
    config_free(&r.cfg);
}

/* Every alias reaches its option, on the command line and in an ini file. */
static void test_aliases(void **state)
{
    struct run r;
    (void)state;

    assert_int_equal(run(&r, (const char *[]){"corral", "--socket", ":1", "--file", "a.py",
                                              "--home", "/v1", "--workers", "2", "--lazy",
                                              "--keepalive-timeout", "9", "--logto", "/l1", NULL}),
                     0);
    assert_string_equal(r.cfg.wsgi_file, "a.py");
    assert_string_equal(r.cfg.venv, "/v1");
    assert_int_equal(r.cfg.processes, 2);
    assert_true(r.cfg.lazy_apps);
    assert_int_equal(r.cfg.keepalive_timeout, 9);
    assert_string_equal(r.cfg.log_file, "/l1");
    config_free(&r.cfg);

    assert_int_equal(run(&r, (const char *[]){BASE, "--virtualenv", "/v2", NULL}), 0);
    assert_string_equal(r.cfg.venv, "/v2");
    config_free(&r.cfg);
    assert_int_equal(run(&r, (const char *[]){BASE, "--pyhome", "/v3", "--venv", "/v4", NULL}), 0);
    assert_string_equal(r.cfg.venv, "/v4");
    config_free(&r.cfg);

    write_file("a.ini", "[uwsgi]\nhttp-socket = :1\nuwsgi-socket = :2\nfile = x.py\n"
                        "python-path = p1\npp = p2\npyhome = /v\nworkers = 3\nlazy = true\n"
                        "keepalive-timeout = 7\nlogto = /log\nhttp-keepalive-timeout = 8\n");
    assert_int_equal(run(&r, (const char *[]){"corral", "--ini", "a.ini", NULL}), 0);
    assert_string_equal(r.warn, "");
    assert_string_equal(r.cfg.http.v[0], ":1");
    assert_string_equal(r.cfg.socket.v[0], ":2");
    assert_string_equal(r.cfg.wsgi_file, "x.py");
    assert_int_equal(r.cfg.pythonpath.n, 2);
    assert_string_equal(r.cfg.venv, "/v");
    assert_int_equal(r.cfg.processes, 3);
    assert_true(r.cfg.lazy_apps);
    assert_int_equal(r.cfg.keepalive_timeout, 8);
    assert_string_equal(r.cfg.log_file, "/log");
    config_free(&r.cfg);
}

static void test_actions(void **state)
{
    struct run r;
    (void)state;

    assert_int_equal(run(&r, (const char *[]){"corral", "--version", NULL}), 0);
    assert_int_equal(r.action, CONFIG_VERSION);
    assert_string_equal(r.out, "corral 0.1.0\n");
    config_free(&r.cfg);

    /* an action needs no app and stops reading: later mistakes are not looked at */
    assert_int_equal(run(&r, (const char *[]){"corral", "--help", "--bogus", NULL}), 0);
    assert_int_equal(r.action, CONFIG_HELP);
    assert_non_null(strstr(r.out, "usage: corral [options]\n"));
    assert_non_null(strstr(r.out, "\nListeners:\n  --http ADDR "));
    assert_null(strstr(r.out, "help-markdown"));
    config_free(&r.cfg);

    assert_int_equal(run(&r, (const char *[]){"corral", "-h", NULL}), 0);
    assert_int_equal(r.action, CONFIG_HELP);
    assert_non_null(strstr(r.out, "usage: corral"));
    config_free(&r.cfg);

    assert_int_equal(run(&r, (const char *[]){"corral", "--help-markdown", NULL}), 0);
    assert_int_equal(r.action, CONFIG_HELP);
    assert_memory_equal(r.out, "# Configuration reference\n", 26);
    config_free(&r.cfg);

    expect_error((const char *[]){"corral", "--bogus", "--help", NULL}, "--bogus: unknown option");
    expect_error((const char *[]){"corral", "--version=2", NULL}, "--version: takes no value");
    expect_error((const char *[]){"corral", "-hx", NULL}, "-h: takes no value");
}

/* Every command-line error, with its exact text. */
static void test_cli_errors(void **state)
{
    (void)state;
    expect_error((const char *[]){BASE, "--bogus", NULL}, "--bogus: unknown option");
    expect_error((const char *[]){BASE, "--bogus=1", NULL}, "--bogus: unknown option");
    expect_error((const char *[]){BASE, "-x", NULL}, "-x: unknown option");
    expect_error((const char *[]){BASE, "--", NULL}, "--: unknown option");
    expect_error((const char *[]){BASE, "--p", "4", NULL}, "--p: unknown option");
    expect_error((const char *[]){BASE, "app.py", NULL}, "app.py: unexpected argument");
    expect_error((const char *[]){BASE, "-", NULL}, "-: unexpected argument");
    expect_error((const char *[]){BASE, "--processes", "0", NULL},
                 "--processes: '0' is out of range 1..1024");
    expect_error((const char *[]){BASE, "--processes=1025", NULL},
                 "--processes: '1025' is out of range 1..1024");
    expect_error((const char *[]){BASE, "-p", "-1", NULL}, "-p: '-1' is out of range 1..1024");
    expect_error((const char *[]){BASE, "--processes", "abc", NULL},
                 "--processes: 'abc' is not a number");
    expect_error((const char *[]){BASE, "--processes", "4k", NULL},
                 "--processes: '4k' is not a number");
    expect_error((const char *[]){BASE, "--threads", " 4", NULL},
                 "--threads: ' 4' is not a number");
    expect_error((const char *[]){BASE, "--threads", "0x10", NULL},
                 "--threads: '0x10' is not a number");
    expect_error((const char *[]){BASE, "--listen", "99999999999999999999", NULL},
                 "--listen: '99999999999999999999' is out of range 1..65535");
    expect_error((const char *[]){BASE, "--buffer-size", "2M", NULL},
                 "--buffer-size: '2M' is out of range 1024..1048576");
    expect_error((const char *[]){BASE, "-b", "1x", NULL}, "-b: '1x' is not a number");
    expect_error((const char *[]){BASE, "--limit-post", "16E", NULL},
                 "--limit-post: '16E' is not a number");
    expect_error((const char *[]){BASE, "--limit-post", "2000G", NULL},
                 "--limit-post: '2000G' is out of range 0..1099511627776");
    expect_error((const char *[]){BASE, "--limit-post", "9223372036854775807K", NULL},
                 "--limit-post: '9223372036854775807K' is out of range 0..1099511627776");
    expect_error((const char *[]){BASE, "--processes", NULL}, "--processes: needs a value");
    expect_error((const char *[]){"corral", "--module", "--http", ":1", NULL},
                 "--module: needs a value");
    expect_error((const char *[]){BASE, "--module", "", NULL}, "--module: needs a value");
    expect_error((const char *[]){BASE, "--http=", NULL}, "--http: needs a value");
    expect_error((const char *[]){BASE, "--vacuum=maybe", NULL},
                 "--vacuum: 'maybe' is not a boolean");
    expect_error((const char *[]){BASE, "--chmod-socket=rw", NULL},
                 "--chmod-socket: 'rw' is not an octal mode");
    expect_error((const char *[]){BASE, "--chmod-socket=12345", NULL},
                 "--chmod-socket: '12345' is not an octal mode");
    expect_error((const char *[]){BASE, "--env", "FOO", NULL}, "--env: 'FOO' is not KEY=VALUE");
    expect_error((const char *[]){BASE, "--env", "=x", NULL}, "--env: '=x' is not KEY=VALUE");
    expect_error((const char *[]){BASE, "--ini", NULL}, "--ini: needs a value");
    expect_error((const char *[]){BASE, "--ini", "missing.ini", NULL},
                 "missing.ini: cannot read: No such file or directory");
    expect_error((const char *[]){BASE, "--ini", ".", NULL}, ".: cannot read: Is a directory");
    expect_error((const char *[]){BASE, "--bo\ngus", NULL}, "--bo?gus: unknown option");
}

static void test_validation(void **state)
{
    (void)state;
    expect_error((const char *[]){"corral", "--http", ":1", NULL},
                 "no app: give --module or --wsgi-file");
    expect_error(
        (const char *[]){"corral", "--http", ":1", "--module", "a", "--wsgi-file", "a.py", NULL},
        "--module and --wsgi-file are both set: give only one");
    expect_error((const char *[]){"corral", "--module", "a", NULL},
                 "no listener: give --http or --socket");
    expect_error((const char *[]){"corral", NULL}, "no app: give --module or --wsgi-file");
}

/* --ini is read where it appears: later options override it, earlier ones are overridden. */
static void test_ini_precedence(void **state)
{
    struct run r;
    (void)state;

    write_file("site.ini", "[corral]\nprocesses = 2\nhttp = :1\nmodule = from_ini\n");
    write_file("more.ini", "[uwsgi]\nprocesses = 6\nhttp = :9\n");
    assert_int_equal(run(&r, (const char *[]){"corral", "--processes", "4", "--http", ":0", "--ini",
                                              "site.ini", "--http", ":2", NULL}),
                     0);
    assert_int_equal(r.cfg.processes, 2);
    assert_string_equal(r.cfg.module, "from_ini");
    assert_int_equal(r.cfg.http.n, 3);
    assert_string_equal(r.cfg.http.v[0], ":0");
    assert_string_equal(r.cfg.http.v[1], ":1");
    assert_string_equal(r.cfg.http.v[2], ":2");
    assert_int_equal(r.cfg.ini.n, 1);
    assert_string_equal(r.cfg.ini.v[0], "site.ini");
    config_free(&r.cfg);

    assert_int_equal(run(&r, (const char *[]){"corral", "--ini", "site.ini", "--processes", "4",
                                              "--ini=more.ini", "--module", "cli", NULL}),
                     0);
    assert_int_equal(r.cfg.processes, 6);
    assert_string_equal(r.cfg.module, "cli");
    assert_int_equal(r.cfg.http.n, 2);
    assert_string_equal(r.cfg.http.v[1], ":9");
    assert_int_equal(r.cfg.ini.n, 2);
    assert_string_equal(r.cfg.ini.v[1], "more.ini");
    config_free(&r.cfg);
}

/* Both sections of one file are read, in file order; other sections are skipped. */
static void test_ini_sections(void **state)
{
    struct run r;
    (void)state;

    write_file("site.ini", "[app:main]\nuse = egg:thing\nprocesses = abc\n"
                           "[uwsgi]\nprocesses = 2\nhttp = :1\n"
                           "[corral]\nprocesses = 3\nmodule = app\n"
                           "[uwsgi]\nthreads = 4\n"
                           "[other]\nbogus = 1\n");
    assert_int_equal(run(&r, (const char *[]){"corral", "--ini", "site.ini", NULL}), 0);
    assert_string_equal(r.warn, "");
    assert_int_equal(r.cfg.processes, 3);
    assert_int_equal(r.cfg.threads, 4);
    config_free(&r.cfg);

    write_file("none.ini", "[app:main]\nuse = egg:thing\n");
    assert_int_equal(run(&r, (const char *[]){BASE, "--ini", "none.ini", NULL}), 0);
    assert_string_equal(
        r.warn, "corral: warning: none.ini: no [corral] or [uwsgi] section; nothing read\n");
    config_free(&r.cfg);

    write_file("empty.ini", "");
    assert_int_equal(run(&r, (const char *[]){BASE, "--ini", "empty.ini", NULL}), 0);
    assert_string_equal(
        r.warn, "corral: warning: empty.ini: no [corral] or [uwsgi] section; nothing read\n");
    config_free(&r.cfg);

    /* an empty section still counts as present */
    write_file("bare.ini", "[corral]\n");
    assert_int_equal(run(&r, (const char *[]){BASE, "--ini", "bare.ini", NULL}), 0);
    assert_string_equal(r.warn, "");
    config_free(&r.cfg);
}

/* Bare keys: true for booleans, 666 for chmod-socket, an error for anything else. */
static void test_ini_bare_keys(void **state)
{
    struct run r;
    (void)state;

    write_file("site.ini", "[uwsgi]\nvacuum\nmaster =\nchmod-socket\nlazy-apps = false\n");
    assert_int_equal(run(&r, (const char *[]){BASE, "--ini", "site.ini", NULL}), 0);
    assert_true(r.cfg.vacuum);
    assert_true(r.cfg.master);
    assert_string_equal(r.cfg.chmod_socket, "666");
    assert_false(r.cfg.lazy_apps);
    config_free(&r.cfg);

    write_file("empty.ini", "[uwsgi]\nchmod-socket =\n");
    assert_int_equal(run(&r, (const char *[]){BASE, "--ini", "empty.ini", NULL}), 0);
    assert_string_equal(r.cfg.chmod_socket, "666");
    config_free(&r.cfg);

    write_file("bad.ini", "[uwsgi]\nmodule\n");
    expect_error((const char *[]){BASE, "--ini", "bad.ini", NULL},
                 "bad.ini:2: module: needs a value");
    write_file("bad2.ini", "[corral]\n\nhttp =\n");
    expect_error((const char *[]){BASE, "--ini", "bad2.ini", NULL},
                 "bad2.ini:3: http: needs a value");
}

/* Every ini error, with file:line: key. */
static void test_ini_errors(void **state)
{
    (void)state;
    write_file("site.ini", "[corral]\n; comment\n\n\n\n\n\n\n\n\n\nprocesses = abc\n");
    expect_error((const char *[]){BASE, "--ini", "site.ini", NULL},
                 "site.ini:12: processes: 'abc' is not a number");
    write_file("a.ini", "[uwsgi]\nworkers = 0\n");
    expect_error((const char *[]){BASE, "--ini", "a.ini", NULL},
                 "a.ini:2: workers: '0' is out of range 1..1024");
    write_file("b.ini", "[corral]\nbogus = 1\n");
    expect_error((const char *[]){BASE, "--ini", "b.ini", NULL}, "b.ini:2: bogus: unknown option");
    write_file("c.ini", "[uwsgi]\nvacuum = sure\n");
    expect_error((const char *[]){BASE, "--ini", "c.ini", NULL},
                 "c.ini:2: vacuum: 'sure' is not a boolean");
    write_file("d.ini", "[uwsgi]\nenv = NOEQUALS\n");
    expect_error((const char *[]){BASE, "--ini", "d.ini", NULL},
                 "d.ini:2: env: 'NOEQUALS' is not KEY=VALUE");
    write_file("e.ini", "[uwsgi]\nchmod-socket = rw-rw-rw-\n");
    expect_error((const char *[]){BASE, "--ini", "e.ini", NULL},
                 "e.ini:2: chmod-socket: 'rw-rw-rw-' is not an octal mode");
    write_file("f.ini", "[uwsgi]\nini = other.ini\n");
    expect_error((const char *[]){BASE, "--ini", "f.ini", NULL},
                 "f.ini:2: ini: only valid on the command line");
    write_file("g.ini", "[corral]\nhelp\n");
    expect_error((const char *[]){BASE, "--ini", "g.ini", NULL},
                 "g.ini:2: help: only valid on the command line");
    /* a one-letter alias is a short command-line form only */
    write_file("h.ini", "[corral]\np = 4\n");
    expect_error((const char *[]){BASE, "--ini", "h.ini", NULL}, "h.ini:2: p: unknown option");
}

/* Broken lines are errors in any section, with their line number. */
static void test_ini_syntax_errors(void **state)
{
    (void)state;
    write_file("site.ini", "[uwsgi]\nhttp = :1\n\n[unterminated\nmodule = x\n");
    expect_error((const char *[]){BASE, "--ini", "site.ini", NULL},
                 "site.ini:4: section header has no closing ']'");
    write_file("a.ini", "[other]\n= 1\n");
    expect_error((const char *[]){BASE, "--ini", "a.ini", NULL}, "a.ini:2: no key before '='");
    write_file("b.ini", "[uwsgi] ; the main section\n");
    expect_error((const char *[]){BASE, "--ini", "b.ini", NULL},
                 "b.ini:1: text after ']' in a section header");
    write_file("c.ini", "[]\n");
    expect_error((const char *[]){BASE, "--ini", "c.ini", NULL}, "c.ini:1: empty section name");
    /* the second file's name is the one reported */
    write_file("ok.ini", "[uwsgi]\nprocesses = 2\n");
    expect_error((const char *[]){BASE, "--ini", "ok.ini", "--ini", "c.ini", NULL},
                 "c.ini:1: empty section name");
}

static void test_ini_file_errors(void **state)
{
    (void)state;
    expect_error((const char *[]){BASE, "--ini", "nope/site.ini", NULL},
                 "nope/site.ini: cannot read: No such file or directory");
    assert_int_equal(mkdir("sub", 0700), 0);
    expect_error((const char *[]){BASE, "--ini", "sub", NULL}, "sub: cannot read: Is a directory");

    /* larger than 1 MiB */
    FILE *f = fopen("big.ini", "w");
    assert_non_null(f);
    fputs("[uwsgi]\n", f);
    for (int i = 0; i < 70000; i++)
        fputs("; padding padding\n", f);
    fclose(f);
    expect_error((const char *[]){BASE, "--ini", "big.ini", NULL},
                 "big.ini: cannot read: File too large");

    if (geteuid() != 0) {
        write_file("secret.ini", "[uwsgi]\n");
        assert_int_equal(chmod("secret.ini", 0), 0);
        expect_error((const char *[]){BASE, "--ini", "secret.ini", NULL},
                     "secret.ini: cannot read: Permission denied");
    }
}

/* uWSGI option names corral lacks: one warning per key, none for placeholder keys. */
static void test_uwsgi_unknown_keys(void **state)
{
    struct run r;
    (void)state;

    write_file("site.ini",
               "[uwsgi]\nhttp = :1\nmodule = app\nmemory-report = true\noffload-threads = 30\n"
               "cheaper = 3\nmyport = 8001\nhttp = :%(myport)\np = 4\n");
    assert_int_equal(run(&r, (const char *[]){"corral", "--ini", "site.ini", NULL}), 0);
    assert_string_equal(
        r.warn, "corral: warning: site.ini:4: uwsgi option 'memory-report' is not supported by "
                "corral; ignored\n"
                "corral: warning: site.ini:5: uwsgi option 'offload-threads' is not supported by "
                "corral; ignored\n"
                "corral: warning: site.ini:9: uwsgi option 'p' is not supported by "
                "corral; ignored\n");
    assert_int_equal(r.cfg.http.n, 2);
    assert_string_equal(r.cfg.http.v[1], ":8001");
    config_free(&r.cfg);
}

/* A realistic uWSGI ini for a Django project loads as is, with warnings for what is missing. */
static void test_uwsgi_django_ini(void **state)
{
    struct run r;
    (void)state;

    write_file("django.ini", "# mysite_uwsgi.ini, as in the uWSGI Django tutorial\n"
                             "[uwsgi]\n"
                             "project = mysite\n"
                             "base = /srv/%(project)\n"
                             "\n"
                             "chdir = %(base)\n"
                             "module = %(project).wsgi:application\n"
                             "home = /srv/venvs/%(project)\n"
                             "\n"
                             "master = true\n"
                             "processes = 4\n"
                             "threads = 2\n"
                             "enable-threads = true\n"
                             "socket = /run/uwsgi/%n.sock\n"
                             "chmod-socket = 664\n"
                             "vacuum = true\n"
                             "die-on-term = true\n"
                             "\n"
                             "offload-threads = 30\n"
                             "thunder-lock = true\n"
                             "env = DJANGO_SETTINGS_MODULE=%(project).settings\n");
    assert_int_equal(run(&r, (const char *[]){"corral", "--ini", "django.ini", NULL}), 0);
    assert_string_equal(r.err, "");
    assert_string_equal(
        r.warn, "corral: warning: django.ini:19: uwsgi option 'offload-threads' is not supported "
                "by corral; ignored\n"
                "corral: warning: django.ini:20: uwsgi option 'thunder-lock' is not "
                "supported by corral; ignored\n");
    assert_string_equal(r.cfg.chdir, "/srv/mysite");
    assert_string_equal(r.cfg.module, "mysite.wsgi:application");
    assert_string_equal(r.cfg.venv, "/srv/venvs/mysite");
    assert_true(r.cfg.master);
    assert_int_equal(r.cfg.processes, 4);
    assert_int_equal(r.cfg.threads, 2);
    assert_true(r.cfg.enable_threads);
    assert_int_equal(r.cfg.socket.n, 1);
    assert_string_equal(r.cfg.socket.v[0], "/run/uwsgi/django.sock");
    assert_string_equal(r.cfg.chmod_socket, "664");
    assert_true(r.cfg.vacuum);
    assert_true(r.cfg.die_on_term);
    assert_int_equal(r.cfg.env.n, 1);
    assert_string_equal(r.cfg.env.v[0], "DJANGO_SETTINGS_MODULE=mysite.settings");
    config_free(&r.cfg);
}

/* %(name): the latest earlier value of that key, or of any name of the same option. */
static void test_placeholders(void **state)
{
    struct run r;
    (void)state;

    write_file("site.ini", "[corral]\nroot = /a\nroot = /b\nhome = /venv\nhttp = :1\n"
                           "[uwsgi]\nmodule = app\n"
                           "env = R=%(root)\nenv = V=%(venv)\nenv = H=%(home)\n"
                           "env = M=%(module)%(module)\nenv = L=%(http)\nenv = T=%(virtualenv)\n");
    assert_int_equal(run(&r, (const char *[]){"corral", "--ini", "site.ini", NULL}), 0);
    assert_string_equal(r.warn, "");
    assert_int_equal(r.cfg.env.n, 6);
    assert_string_equal(r.cfg.env.v[0], "R=/b");
    assert_string_equal(r.cfg.env.v[1], "V=/venv");
    assert_string_equal(r.cfg.env.v[2], "H=/venv");
    assert_string_equal(r.cfg.env.v[3], "M=appapp");
    assert_string_equal(r.cfg.env.v[4], "L=:1");
    assert_string_equal(r.cfg.env.v[5], "T=/venv");
    config_free(&r.cfg);

    /* only this file, and only earlier lines */
    write_file("late.ini", "[uwsgi]\nchdir = %(base)\nbase = /srv\n");
    expect_error((const char *[]){BASE, "--ini", "late.ini", NULL},
                 "late.ini:2: chdir: '%(base)' is not set earlier in this file");
    write_file("cli.ini", "[uwsgi]\nchdir = %(module)\n");
    expect_error((const char *[]){BASE, "--ini", "cli.ini", NULL},
                 "cli.ini:2: chdir: '%(module)' is not set earlier in this file");
    write_file("open.ini", "[uwsgi]\nchdir = %(base\n");
    expect_error((const char *[]){BASE, "--ini", "open.ini", NULL},
                 "open.ini:2: chdir: '%(' has no closing ')'");
    /* an error in a placeholder-only key is reported too */
    write_file("ph.ini", "[uwsgi]\nbase = %q\nchdir = %(base)\n");
    expect_error((const char *[]){BASE, "--ini", "ph.ini", NULL},
                 "ph.ini:2: base: magic variable '%q' is not supported by corral");
}

/* %d %p %s %n %e %c %o %h %% and $(ENV), relative to the file. */
static void test_magic_variables(void **state)
{
    struct run r;
    char cwd[PATH_MAX];
    char host[256] = "";
    char want[PATH_MAX + 64];
    (void)state;

    assert_non_null(getcwd(cwd, sizeof(cwd)));
    gethostname(host, sizeof(host));
    host[sizeof(host) - 1] = '\0';
    assert_int_equal(mkdir("proj", 0700), 0);
    write_file("proj/my.site.ini", "[uwsgi]\nenv = D=%d\nenv = P=%p\nenv = S=%s\nenv = N=%n\n"
                                   "env = E=%e\nenv = C=%c\nenv = O=%o\nenv = H=%h\n"
                                   "env = PCT=100%%\nenv = END=50%\nenv = LIT=a$b@c$\n"
                                   "env = ENV=$(CORRAL_TEST_VAR)/x\n");
    setenv("CORRAL_TEST_VAR", "val%d", 1);
    assert_int_equal(run(&r, (const char *[]){BASE, "--ini", "./proj//my.site.ini", NULL}), 0);
    assert_int_equal(r.cfg.env.n, 12);
    snprintf(want, sizeof(want), "D=%s/proj/", cwd);
    assert_string_equal(r.cfg.env.v[0], want);
    snprintf(want, sizeof(want), "P=%s/proj/my.site.ini", cwd);
    assert_string_equal(r.cfg.env.v[1], want);
    assert_string_equal(r.cfg.env.v[2], "S=my.site.ini");
    assert_string_equal(r.cfg.env.v[3], "N=my.site");
    assert_string_equal(r.cfg.env.v[4], "E=ini");
    assert_string_equal(r.cfg.env.v[5], "C=proj");
    assert_string_equal(r.cfg.env.v[6], "O=./proj//my.site.ini");
    snprintf(want, sizeof(want), "H=%s", host);
    assert_string_equal(r.cfg.env.v[7], want);
    assert_string_equal(r.cfg.env.v[8], "PCT=100%");
    assert_string_equal(r.cfg.env.v[9], "END=50%");
    assert_string_equal(r.cfg.env.v[10], "LIT=a$b@c$");
    /* substituted text is not expanded again */
    assert_string_equal(r.cfg.env.v[11], "ENV=val%d/x");
    config_free(&r.cfg);

    /* an absolute path, and a file with no extension */
    snprintf(want, sizeof(want), "%s/proj/noext", cwd);
    write_file("proj/noext", "[uwsgi]\nenv = N=%n\nenv = E=%e\nenv = D=%d\n");
    assert_int_equal(run(&r, (const char *[]){BASE, "--ini", want, NULL}), 0);
    assert_string_equal(r.cfg.env.v[0], "N=noext");
    assert_string_equal(r.cfg.env.v[1], "E=");
    snprintf(want, sizeof(want), "D=%s/proj/", cwd);
    assert_string_equal(r.cfg.env.v[2], want);
    config_free(&r.cfg);

    /* magic is an ini feature: the command line takes values literally */
    assert_int_equal(run(&r, (const char *[]){BASE, "--chdir", "%d$(HOME)", NULL}), 0);
    assert_string_equal(r.cfg.chdir, "%d$(HOME)");
    config_free(&r.cfg);
    unsetenv("CORRAL_TEST_VAR");
}

static void test_magic_errors(void **state)
{
    (void)state;
    unsetenv("CORRAL_TEST_UNSET");
    write_file("a.ini", "[uwsgi]\nchdir = $(CORRAL_TEST_UNSET)\n");
    expect_error((const char *[]){BASE, "--ini", "a.ini", NULL},
                 "a.ini:2: chdir: environment variable 'CORRAL_TEST_UNSET' is not set");
    write_file("b.ini", "[uwsgi]\nchdir = $(HOME\n");
    expect_error((const char *[]){BASE, "--ini", "b.ini", NULL},
                 "b.ini:2: chdir: '$(' has no closing ')'");
    write_file("c.ini", "[uwsgi]\nchdir = /srv/%k\n");
    expect_error((const char *[]){BASE, "--ini", "c.ini", NULL},
                 "c.ini:2: chdir: magic variable '%k' is not supported by corral");
    write_file("d.ini", "[uwsgi]\nchdir = @(/etc/hostname)\n");
    expect_error((const char *[]){BASE, "--ini", "d.ini", NULL},
                 "d.ini:2: chdir: '@(file)' is not supported by corral");
    /* values of ignored keys are not expanded, so they cannot fail */
    write_file("e.ini", "[uwsgi]\noffload-threads = %k$(CORRAL_TEST_UNSET)\n");
    struct run r;
    assert_int_equal(run(&r, (const char *[]){BASE, "--ini", "e.ini", NULL}), 0);
    config_free(&r.cfg);
}

/* CRLF line ends and a UTF-8 byte order mark, as Windows editors write. */
static void test_ini_crlf_bom(void **state)
{
    struct run r;
    (void)state;

    write_file("win.ini", "\xef\xbb\xbf[uwsgi]\r\nhttp = :1\r\nmodule = app \r\nvacuum\r\n");
    assert_int_equal(run(&r, (const char *[]){"corral", "--ini", "win.ini", NULL}), 0);
    assert_string_equal(r.warn, "");
    assert_string_equal(r.cfg.http.v[0], ":1");
    assert_string_equal(r.cfg.module, "app");
    assert_true(r.cfg.vacuum);
    config_free(&r.cfg);
}

/* A backlog above net.core.somaxconn is allowed, with one warning. */
static void test_somaxconn_warning(void **state)
{
    struct run r;
    long max = 0;
    char arg[32];
    char want[256];
    FILE *f = fopen("/proc/sys/net/core/somaxconn", "r");
    (void)state;

    if (!f) skip();
    assert_int_equal(fscanf(f, "%ld", &max), 1);
    fclose(f);
    if (max >= 65535) skip();
    snprintf(arg, sizeof(arg), "%ld", max + 1);
    assert_int_equal(run(&r, (const char *[]){BASE, "--listen", arg, NULL}), 0);
    assert_int_equal(r.cfg.listen, max + 1);
    snprintf(want, sizeof(want),
             "corral: warning: listen %ld is above net.core.somaxconn (%ld); the kernel caps the "
             "backlog at %ld\n",
             max + 1, max, max);
    assert_string_equal(r.warn, want);
    config_free(&r.cfg);

    snprintf(arg, sizeof(arg), "%ld", max);
    assert_int_equal(run(&r, (const char *[]){BASE, "--listen", arg, NULL}), 0);
    assert_string_equal(r.warn, "");
    config_free(&r.cfg);
}

/* --help and the Markdown list every visible option; docs/config.md is what the table prints. */
static void test_help_covers_table(void **state)
{
    struct env *e = *state;
    struct run r;
    static const char *const names[] = {
        "http",
        "socket",
        "listen",
        "chmod-socket",
        "vacuum",
        "module",
        "wsgi-file",
        "callable",
        "chdir",
        "pythonpath",
        "venv",
        "env",
        "lazy-apps",
        "processes",
        "threads",
        "enable-threads",
        "buffer-size",
        "limit-post",
        "post-buffering",
        "http-timeout",
        "http-keepalive-timeout",
        "response-buffer",
        "thread-queue",
        "forwarded-allow-ips",
        "graceful-timeout",
        "master",
        "die-on-term",
        "pidfile",
        "log-file",
        "disable-logging",
        "ini",
        "help",
        "version",
    };
    char needle[64];

    assert_int_equal(run(&r, (const char *[]){"corral", "--help", NULL}), 0);
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(needle, sizeof(needle), "  --%s", names[i]);
        if (!strstr(r.out, needle)) fail_msg("--help lacks %s", names[i]);
    }
    config_free(&r.cfg);

    assert_int_equal(run(&r, (const char *[]){"corral", "--help-markdown", NULL}), 0);
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(needle, sizeof(needle), "| `--%s", names[i]);
        if (!strstr(r.out, needle)) fail_msg("--help-markdown lacks %s", names[i]);
    }
    assert_null(strstr(r.out, "| `--help-markdown"));
    config_free(&r.cfg);

    char path[PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/docs/config.md", e->repo);
    FILE *f = fopen(path, "r");
    if (!f) skip(); /* not run from the repository root */
    static char doc[sizeof(r.out)];
    size_t n = fread(doc, 1, sizeof(doc) - 1, f);
    doc[n] = '\0';
    fclose(f);
    if (strcmp(doc, r.out) != 0)
        fail_msg("docs/config.md is stale: regenerate it with `corral --help-markdown`");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cli_value_forms, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cli_booleans, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cli_chmod_socket, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cli_repeatable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_aliases, setup, teardown),
        cmocka_unit_test_setup_teardown(test_actions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cli_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_validation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ini_precedence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ini_sections, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ini_bare_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ini_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ini_syntax_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ini_file_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_uwsgi_unknown_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_uwsgi_django_ini, setup, teardown),
        cmocka_unit_test_setup_teardown(test_placeholders, setup, teardown),
        cmocka_unit_test_setup_teardown(test_magic_variables, setup, teardown),
        cmocka_unit_test_setup_teardown(test_magic_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ini_crlf_bom, setup, teardown),
        cmocka_unit_test_setup_teardown(test_somaxconn_warning, setup, teardown),
        cmocka_unit_test_setup_teardown(test_help_covers_table, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
