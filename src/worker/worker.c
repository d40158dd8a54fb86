/*
 * worker.c - a worker process's life: signals, the app (lazily), the loop (see worker.h).
 *
 * With one thread per worker (the default), the loop thread holds the GIL except while it
 * waits in epoll, and calls the app itself when a request is complete: no hand-off, no
 * context switch. Signals are blocked except inside epoll_pwait, so a handler only ever
 * interrupts the wait and its flag is seen right after.
 */
#include "worker/worker.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <sys/prctl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "http/http_response.h"
#include "net/loop.h"
#include "python/py.h"
#include "python/wsgi.h"
#include "util/log.h"
#include "util/xalloc.h"
#include "worker/conn.h"

static volatile sig_atomic_t stop_graceful; /* SIGTERM (also: the master died) */
static volatile sig_atomic_t stop_now;      /* SIGQUIT */
static pid_t master_pid;                    /* our parent; anyone else means it died */
static uint64_t orphan_deadline;            /* loop ms when an orphan stops waiting */

static void on_signal(int sig)
{
    if (sig == SIGTERM)
        stop_graceful = 1;
    else
        stop_now = 1;
}

/*
 * The master is gone (killed, OOM): nobody supervises this worker any more, and nobody will
 * stop it. It stops by itself, gracefully: in-flight requests get --graceful-timeout.
 */
static void check_orphan(struct conn_ctx *x)
{
    if (orphan_deadline || getppid() == master_pid) return;
    log_warn("the master (pid %d) is gone: stopping; in-flight requests get %d s", (int)master_pid,
             x->cfg->graceful_timeout);
    orphan_deadline = loop_now(x->loop) + (uint64_t)x->cfg->graceful_timeout * 1000;
    stop_graceful = 1;
}

static void start_draining(struct conn_ctx *x)
{
    if (x->draining) return;
    x->draining = true;
    atomic_store(&x->sbw->stopping, 1);
    conn_listen(x, false);
    log_info("stopping gracefully: %d connection(s) to finish", x->count);
}

/* Runs after every epoll batch: deferred frees, then the stop flags. */
static void after_batch(struct loop *l, void *arg)
{
    struct conn_ctx *x = arg;

    if (x->pool) {
        int again = pool_collect(x->pool);
        if (again >= 0) loop_wait_at_most(l, again);
    }
    conn_reap(x);
    if (conn_balance(x)) loop_wait_at_most(l, CONN_BALANCE_POLL_MS);
    if (stop_now || (stop_graceful && !x->draining) || (x->draining && x->count == 0)) loop_stop(l);
}

/* Resident memory in MiB, from /proc/self/statm. */
static long rss_mib(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "re");
    if (!f) return 0;
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    fclose(f);
    return resident * (sysconf(_SC_PAGESIZE) / 1024) / 1024;
}

static void on_tick(struct loop *l, void *arg)
{
    struct conn_ctx *x = arg;
    const struct config *cfg = x->cfg;

    check_orphan(x);
    if (orphan_deadline && loop_now(l) >= orphan_deadline) {
        log_warn("graceful timeout (%d s) without a master: exiting with %d connection(s)",
                 cfg->graceful_timeout, x->count);
        _exit(WORKER_EXIT_OK); /* threads may be inside the app: no atexit, no finalizing */
    }
    conn_sweep(x);
    if (cfg->reload_on_rss && rss_mib() > cfg->reload_on_rss)
        scoreboard_ask_recycle(x->sbw, SB_RECYCLE_RSS);
    if (cfg->max_worker_lifetime &&
        loop_now(l) - atomic_load(&x->sbw->started_ms) > (uint64_t)cfg->max_worker_lifetime * 1000)
        scoreboard_ask_recycle(x->sbw, SB_RECYCLE_LIFETIME);
}

/*
 * Harakiri, step one, for every thread of this worker: a request past --harakiri gets an
 * exception raised in its own thread (the other threads' requests go on). Step two, killing
 * the worker when that does not bring the thread back, is the master's.
 */
static void *watchdog(void *arg)
{
    const struct worker_args *a = arg;
    int threads = a->cfg->threads;
    uint64_t *raised = xcalloc((size_t)threads, sizeof(*raised));
    uint64_t limit = (uint64_t)a->cfg->harakiri * 1000;

    for (;;) {
        struct timespec ts;
        usleep(200 * 1000);
        clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
        uint64_t now = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
        for (int t = 0; t < threads; t++) {
            struct sb_slot *s = scoreboard_slot(a->sb, a->id, t);
            uint64_t started = atomic_load(&s->started_ms);
            if (!started || started == raised[t] || now - started < limit) continue;
            raised[t] = started;
            char line[4 * SB_LINE_MAX];
            scoreboard_line(s, line, sizeof(line));
            wsgi_harakiri(atomic_load(&s->thread), line, a->cfg->harakiri);
        }
    }
    return NULL;
}

static void setup_signals(sigset_t *waitmask)
{
    struct sigaction sa = {.sa_handler = on_signal};
    sigset_t block;

    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGQUIT, &sa, NULL);
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGCHLD, SIG_DFL);
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGQUIT);
    pthread_sigmask(SIG_BLOCK, &block, waitmask);
    sigdelset(waitmask, SIGTERM);
    sigdelset(waitmask, SIGQUIT);
}

/*
 * --cpu-affinity: worker k keeps to CPUs [k*N, k*N+N) modulo the CPUs it may use. By default a
 * pooled worker keeps to one CPU: its loop and its Python threads hand requests to each other
 * all the time, and on one core that costs a context switch, not a cache line and an IPI
 * bouncing between cores.
 */
static void pin_cpus(const struct config *cfg, int number)
{
    int n = cfg->cpu_affinity < 0 ? (cfg->threads > 1 ? 1 : 0) : cfg->cpu_affinity;
    cpu_set_t allowed, set;
    int cpus[CPU_SETSIZE], ncpus = 0;

    if (n <= 0 || sched_getaffinity(0, sizeof(allowed), &allowed) < 0) return;
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &allowed)) cpus[ncpus++] = c;
    if (ncpus <= 1) return;
    CPU_ZERO(&set);
    for (int i = 0; i < n && i < ncpus; i++)
        CPU_SET(cpus[((number - 1) * n + i) % ncpus], &set);
    if (sched_setaffinity(0, sizeof(set), &set) < 0) log_warn("cpu-affinity: %s", strerror(errno));
}

static int start_app(const struct config *cfg)
{
    if (cfg->lazy_apps && py_load_app(cfg) < 0) return WORKER_EXIT_APP_LOAD;
    if (wsgi_init(cfg) < 0) return WORKER_EXIT_ERROR;
    return 0;
}

_Noreturn void worker_main(const struct worker_args *a)
{
    const struct config *cfg = a->cfg;
    struct conn_ctx x = {0};
    sigset_t waitmask;
    char role[32];
    int rc;

    snprintf(role, sizeof(role), "worker %d", a->number);
    log_set_role(role);
    setup_signals(&waitmask);
    /* SIGTERM when the master dies; if it died before this line, the first tick sees it */
    master_pid = a->master_pid;
    if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0) log_warn("PR_SET_PDEATHSIG: %s", strerror(errno));
    py_enable_faulthandler(log_fd());
    rc = start_app(cfg);
    if (rc) exit(rc);
    conn_watch_forks();

    x.cfg = cfg;
    x.limits = (struct http_limits){.max_head = (size_t)cfg->buffer_size,
                                    .max_headers = CONN_MAX_HEADERS,
                                    .max_body = (uint64_t)cfg->limit_post};
    char why[128];
    if (forwarded_allow_parse(cfg->forwarded_allow_ips, &x.proxies, why, sizeof(why)) < 0) {
        log_error("--forwarded-allow-ips: %s", why); /* validated at start-up: not reached */
        exit(WORKER_EXIT_ERROR);
    }
    x.timeouts = (struct conn_timeouts){.request_ms = (uint32_t)cfg->http_timeout * 1000,
                                        .keepalive_ms = (uint32_t)cfg->keepalive_timeout * 1000,
                                        .linger_ms = CONN_LINGER_MS};
    x.sbw = scoreboard_worker(a->sb, a->id);
    x.sb = a->sb;
    x.sb_index = a->id;
    x.ls = a->ls;
    x.nls = a->nls;
    x.loop = loop_new();
    if (!x.loop || conn_listen(&x, true) < 0) exit(WORKER_EXIT_ERROR);
    loop_set_hooks(x.loop, on_tick, after_batch, &x);
    http_date_update(time(NULL));
    pin_cpus(cfg, a->number);
    if (cfg->threads > 1) {
        /*
         * SCHED_BATCH (inherited by the pool's threads): a woken thread does not preempt the
         * one running, so the loop hands over a whole epoll batch and the Python thread
         * returns a whole batch of responses: two context switches per batch, not per request.
         */
        struct sched_param sp = {0};
        if (sched_setscheduler(0, SCHED_BATCH, &sp) < 0)
            log_warn("SCHED_BATCH: %s (hand-offs will cost more)", strerror(errno));
        /* The loop never runs Python from here on: the threads take the GIL. */
        py_release_gil();
        x.pool = pool_new(cfg->threads, x.loop, conn_run_task, conn_task_done, &x);
        if (!x.pool) exit(WORKER_EXIT_ERROR);
    }
    x.max_requests = (uint64_t)cfg->max_requests;
    if (cfg->max_requests && cfg->max_requests_jitter)
        x.max_requests +=
            (uint64_t)(rand_r(&(unsigned){(unsigned)getpid()}) % (cfg->max_requests_jitter + 1));
    atomic_store(&x.sbw->started_ms, loop_now(x.loop));
    if (cfg->harakiri) {
        pthread_t tid;
        if (pthread_create(&tid, NULL, watchdog, (void *)a) == 0)
            pthread_detach(tid);
        else
            log_error("cannot start the harakiri watchdog");
    }
    atomic_store(&x.sbw->ready, 1);

    while (!stop_now) {
        rc = loop_run(x.loop, &waitmask, x.pool ? NULL : py_release_gil,
                      x.pool ? NULL : py_acquire_gil);
        if (rc < 0) {
            log_error("event loop: %s", strerror(-rc));
            exit(WORKER_EXIT_ERROR);
        }
        if (stop_now || (x.draining && x.count == 0)) break;
        if (stop_graceful) start_draining(&x);
        if (x.draining && x.count == 0) break; /* nothing in flight: no need to wait a tick */
    }
    if (!x.pool) conn_close_all(&x); /* with threads, exit() ends them and their requests */
    exit(WORKER_EXIT_OK);
}
