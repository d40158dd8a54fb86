/*
 * master.c - the master process (see master.h): everything the master does to the world.
 *
 * All it knows is one struct master: the config, the listeners, the scoreboard, the touch
 * files' mtimes, and the decision state (struct master_state, master/decide.h: the process
 * table, generations, reloads in progress and queued). What to do is decided by one pure
 * function, master_decide(); this file turns what happened into its events (a signal taken
 * with sigtimedwait, a child reaped, a touch file changed, a tick with what the scoreboard
 * shows) and performs the actions it returns: fork, kill, log, exec, notify systemd, exit.
 */
#include "master/master.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "master/decide.h"
#include "master/signals.h"
#include "net/sock.h"
#include "python/py.h"
#include "stats/scoreboard.h"
#include "util/log.h"
#include "util/xalloc.h"
#include "worker/worker.h"

/* The master process: its handles on the world, and what it knows (st). */
struct master {
    const struct config *cfg;
    char **argv;                /* for re-executing ourselves and the import check */
    struct listener *listeners; /* [nlisteners], bound before the first fork */
    int nlisteners;
    struct scoreboard *sb;    /* one entry per table row */
    time_t *touch_mtimes;     /* [touch_reload.n + touch_chain_reload.n] */
    struct master_seen *seen; /* [st.nprocs]: the scoreboard, as the last event saw it */
    struct master_plan plan;  /* the actions of the current event */
    struct master_plan reply; /* the log lines of a MEV_SPAWNED / MEV_CHECK_STARTED */
    struct master_state st;   /* the process table and everything decided */
    int exit_status;          /* set by MACT_EXIT */
};

/* Whom the workers run as (--uid/--gid), resolved before anything is bound. */
struct ids {
    bool has_uid;
    bool has_gid;
    uid_t uid;
    gid_t gid;
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void log_at(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void log_at(enum log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vline(level, fmt, ap);
    va_end(ap);
}

/* --- listeners and privileges ----------------------------------------------------------------- */

/*
 * Inherited listening sockets, in listener order: from a re-exec of ours
 * (CORRAL_LISTEN_FDS="fd,fd,..."), or from systemd socket activation (LISTEN_PID is us,
 * LISTEN_FDS=n: descriptors 3..3+n-1).
 */
static int inherited_fd(int i)
{
    const char *s = getenv("CORRAL_LISTEN_FDS");
    const char *pid = getenv("LISTEN_PID");
    const char *n = getenv("LISTEN_FDS");

    if (!s && pid && n && atoi(pid) == (int)getpid()) return i < atoi(n) ? 3 + i : -1;
    for (int k = 0; s && *s; k++) {
        if (k == i) return atoi(s);
        s = strchr(s, ',');
        if (s) s++;
    }
    return -1;
}

/* --uid/--gid as numbers: names are looked up, numbers taken as they are. */
static int resolve_ids(const struct config *cfg, struct ids *ids)
{
    char *end;

    memset(ids, 0, sizeof(*ids));
    if (cfg->gid) {
        struct group *g = getgrnam(cfg->gid);
        ids->gid = g ? g->gr_gid : (gid_t)strtoul(cfg->gid, &end, 10);
        if (!g && (*end || end == cfg->gid)) {
            log_error("gid %s: no such group", cfg->gid);
            return -1;
        }
        ids->has_gid = true;
    }
    if (cfg->uid) {
        struct passwd *pw = getpwnam(cfg->uid);
        ids->uid = pw ? pw->pw_uid : (uid_t)strtoul(cfg->uid, &end, 10);
        if (!pw && (*end || end == cfg->uid)) {
            log_error("uid %s: no such user", cfg->uid);
            return -1;
        }
        ids->has_uid = true;
        if (!cfg->gid && pw) { /* the user's own group, as before */
            ids->gid = pw->pw_gid;
            ids->has_gid = true;
        }
    }
    return 0;
}

/*
 * A UNIX socket file we created belongs to whoever the workers run as, so a front end running
 * as that user (nginx with the same --uid) can connect, and --vacuum can remove it later.
 * Done after bind, before privileges drop; inherited sockets are left as they are.
 */
static int own_socket(const struct listener *l, const struct ids *ids)
{
    if (!l->is_unix || (!ids->has_uid && !ids->has_gid)) return 0;
    if (chown(l->name, ids->has_uid ? ids->uid : (uid_t)-1, ids->has_gid ? ids->gid : (gid_t)-1) <
        0) {
        log_error("cannot give %s to uid %d, gid %d: %s", l->name,
                  ids->has_uid ? (int)ids->uid : -1, ids->has_gid ? (int)ids->gid : -1,
                  strerror(errno));
        return -1;
    }
    log_info("%s belongs to uid %d, gid %d", l->name, ids->has_uid ? (int)ids->uid : -1,
             ids->has_gid ? (int)ids->gid : -1);
    return 0;
}

static int bind_all(struct master *m, const struct ids *ids)
{
    const struct config *cfg = m->cfg;
    char err[256];
    int total = cfg->http.n + cfg->socket.n;

    m->listeners = xcalloc((size_t)total, sizeof(*m->listeners));
    for (int i = 0; i < total; i++) {
        bool http = i < cfg->http.n;
        const char *addr = http ? cfg->http.v[i] : cfg->socket.v[i - cfg->http.n];
        struct listener *l = &m->listeners[i];
        int inherited = inherited_fd(i);
        if (sock_listen(l, addr, http ? SOCK_PROTO_HTTP : SOCK_PROTO_UWSGI, cfg->listen,
                        cfg->chmod_socket, inherited, err, sizeof(err)) < 0) {
            log_error("cannot listen on %s", err);
            return -1;
        }
        m->nlisteners++;
        log_info("listening on %s (%s)%s", addr, http ? "http" : "uwsgi",
                 inherited >= 0 ? ", inherited" : "");
        if (inherited < 0 && own_socket(l, ids) < 0) return -1;
        if (!http && !sock_is_loopback(l))
            log_warn("uwsgi socket %s is not on loopback or a UNIX socket: whoever reaches it "
                     "can set any environ key (REMOTE_ADDR, HTTPS, ...); keep it away from "
                     "untrusted networks (docs/uwsgi-protocol.md)",
                     addr);
    }
    unsetenv("CORRAL_LISTEN_FDS");
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    return 0;
}

/* --uid/--gid: drop root once the sockets are bound, before the app is imported. */
static int drop_privileges(const struct config *cfg, const struct ids *ids)
{
    if (ids->has_gid) {
        if (setgroups(0, NULL) < 0 && errno != EPERM) return -1;
        if (setgid(ids->gid) < 0) {
            log_error("setgid %d: %s", (int)ids->gid, strerror(errno));
            return -1;
        }
    }
    if (ids->has_uid && setuid(ids->uid) < 0) {
        log_error("setuid %s: %s", cfg->uid, strerror(errno));
        return -1;
    }
    if (ids->has_uid || ids->has_gid)
        log_info("running as uid %d, gid %d", (int)getuid(), (int)getgid());
    return 0;
}

/* systemd Type=notify: one datagram to $NOTIFY_SOCKET, if there is one. */
static void sd_notify(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    size_t len;
    int fd;

    if (!path || !*path || (len = strlen(path)) >= sizeof(sun.sun_path)) return;
    memcpy(sun.sun_path, path, len);
    if (path[0] == '@') sun.sun_path[0] = '\0';
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return;
    if (sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sun,
               (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) < 0)
        log_warn("systemd notify: %s", strerror(errno));
    close(fd);
}

/* --vacuum: a file that cannot be removed is logged with the reason (one already gone is not). */
static void vacuum_file(const char *path)
{
    if (unlink(path) < 0 && errno != ENOENT)
        log_warn("vacuum: cannot remove %s: %s", path, strerror(errno));
}

static void vacuum(const struct master *m)
{
    if (!m->cfg->vacuum) return;
    for (int i = 0; i < m->nlisteners; i++)
        if (m->listeners[i].is_unix) vacuum_file(m->listeners[i].name);
    if (m->cfg->pidfile) vacuum_file(m->cfg->pidfile);
}

static int write_pidfile(const struct config *cfg)
{
    FILE *f;
    if (!cfg->pidfile) return 0;
    f = fopen(cfg->pidfile, "we");
    if (!f) {
        log_error("pidfile %s: %s", cfg->pidfile, strerror(errno));
        return -1;
    }
    fprintf(f, "%d\n", (int)getpid());
    fclose(f);
    return 0;
}

/* --- workers ---------------------------------------------------------------------------------- */

/* Forks worker 'number' into row i. Returns its pid, or -errno. */
static int spawn(struct master *m, int i, int number)
{
    struct sb_worker *w = scoreboard_worker(m->sb, i);
    struct worker_args a = {.cfg = m->cfg,
                            .ls = m->listeners,
                            .nls = m->nlisteners,
                            .sb = m->sb,
                            .id = i,
                            .number = number,
                            .master_pid = (int)getpid()};
    pid_t pid;
    int err;

    memset(w, 0, sizeof(*w));
    for (int t = 0; t < scoreboard_threads(m->sb); t++)
        scoreboard_end(scoreboard_slot(m->sb, i, t));
    py_acquire_gil();
    py_before_fork();
    pid = fork();
    if (pid == 0) {
        py_after_fork_child();
        signals_unblock();
        worker_main(&a);
    }
    err = errno;
    py_after_fork_parent();
    py_release_gil();
    if (pid < 0) return -err;
    atomic_store(&w->pid, (int)pid);
    log_info("spawned worker %d (pid %d)", number, (int)pid);
    return (int)pid;
}

/* The requests a dead worker was serving, for its obituary. */
static void describe_requests(const struct master *m, int i, char *out, size_t len)
{
    size_t n = 0;
    out[0] = '\0';
    for (int t = 0; t < scoreboard_threads(m->sb); t++) {
        struct sb_slot *s = scoreboard_slot(m->sb, i, t);
        char line[4 * SB_LINE_MAX];
        if (!atomic_load(&s->started_ms)) continue;
        scoreboard_line(s, line, sizeof(line));
        n += (size_t)snprintf(out + n, len - n, "%s%s", n ? ", " : "", line);
        if (n >= len) break;
    }
}

static void obituary(const struct master *m, int i, int status)
{
    const struct master_proc *p = &m->st.procs[i];
    char reqs[1024], sig[32];

    describe_requests(m, i, reqs, sizeof(reqs));
    if (WIFSIGNALED(status)) {
        log_error("worker %d (pid %d) killed by %s %s%s", p->number, p->pid,
                  signals_name(WTERMSIG(status), sig, sizeof(sig)),
                  reqs[0] ? "while serving " : "while idle", reqs);
    } else if (WEXITSTATUS(status) == WORKER_EXIT_APP_LOAD) {
        log_error("worker %d (pid %d) could not load the app (see the traceback above)", p->number,
                  p->pid);
    } else if (WEXITSTATUS(status) != 0 || p->state == MPROC_RUNNING) {
        log_error("worker %d (pid %d) exited with status %d%s%s", p->number, p->pid,
                  WEXITSTATUS(status), reqs[0] ? " while serving " : "", reqs);
    } else {
        log_info("worker %d (pid %d) exited", p->number, p->pid);
    }
}

/*
 * What the scoreboard says about every live worker, for the next decision. The request slots
 * are read only when a rule needs them (--cheaper: busy; --harakiri: the oldest request).
 */
static void observe(struct master *m, struct master_event *ev)
{
    int threads = m->cfg->cheaper || m->cfg->harakiri ? scoreboard_threads(m->sb) : 0;

    for (int i = 0; i < m->st.nprocs; i++) {
        struct master_seen *v = &m->seen[i];
        struct sb_worker *w = scoreboard_worker(m->sb, i);
        memset(v, 0, sizeof(*v));
        if (m->st.procs[i].pid <= 0) continue;
        v->ready = atomic_load(&w->ready) != 0;
        v->recycle = atomic_load(&w->recycle);
        v->requests = atomic_load(&w->requests);
        v->busy = threads > 0;
        for (int t = 0; t < threads; t++) {
            uint64_t started = atomic_load(&scoreboard_slot(m->sb, i, t)->started_ms);
            if (!started) v->busy = false;
            if (started && (!v->oldest_ms || started < v->oldest_ms)) {
                v->oldest_ms = started;
                v->oldest_thread = t;
            }
        }
    }
    ev->seen = m->seen;
    ev->backlog = false;
    for (int i = 0; i < m->nlisteners && m->cfg->cheaper; i++) {
        struct tcp_info ti;
        socklen_t len = sizeof(ti);
        if (!m->listeners[i].is_unix &&
            getsockopt(m->listeners[i].fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0 &&
            ti.tcpi_unacked > 0)
            ev->backlog = true;
    }
}

/* --- reloads of a preloaded app --------------------------------------------------------------- */

/* Exec a fresh master image that adopts the sockets and every live worker. */
static void reexec(struct master *m)
{
    size_t olds_len = (size_t)m->st.nprocs * 12 + 1; /* "pid," each: never truncated */
    char fds[512] = "", *olds = xcalloc(olds_len, 1);
    size_t nf = 0, no = 0;

    for (int i = 0; i < m->nlisteners; i++) {
        fcntl(m->listeners[i].fd, F_SETFD, 0);
        nf +=
            (size_t)snprintf(fds + nf, sizeof(fds) - nf, "%s%d", i ? "," : "", m->listeners[i].fd);
    }
    for (int i = 0; i < m->st.nprocs; i++)
        if (m->st.procs[i].pid > 0)
            no += (size_t)snprintf(olds + no, olds_len - no, "%s%d", no ? "," : "",
                                   m->st.procs[i].pid);
    setenv("CORRAL_LISTEN_FDS", fds, 1);
    setenv("CORRAL_OLD_WORKERS", olds, 1);
    free(olds);
    log_info("reloading: re-executing the master with the new code");
    /* the signals stay blocked across exec: one that arrives meanwhile (a worker's SIGUSR1 to
     * be recycled) waits for the new image instead of killing this one by its default action */
    execv("/proc/self/exe", m->argv);
    log_error("cannot re-execute %s: %s; reload abandoned", m->argv[0], strerror(errno));
    for (int i = 0; i < m->nlisteners; i++)
        fcntl(m->listeners[i].fd, F_SETFD, FD_CLOEXEC);
}

/*
 * Before a preloaded app's master replaces itself, a child imports the new code with the same
 * command line (CORRAL_CHECK_APP): only if that works does the master re-execute, so a broken
 * new version leaves the old one serving. Returns the child's pid, or -errno.
 */
static int start_check(struct master *m)
{
    pid_t pid = fork();

    if (pid == 0) {
        signals_unblock();
        setenv("CORRAL_CHECK_APP", "1", 1);
        execv("/proc/self/exe", m->argv);
        _exit(127);
    }
    return pid < 0 ? -errno : (int)pid;
}

/* Old workers handed over by the previous master image. */
static void adopt_old_workers(struct master *m)
{
    const char *s = getenv("CORRAL_OLD_WORKERS");

    while (s && *s) {
        int pid = atoi(s);
        if (pid > 0 && !master_adopt(&m->st, pid)) {
            log_warn("no room for old worker pid %d: stopping it now", pid);
            kill(pid, SIGTERM);
        }
        s = strchr(s, ',');
        if (s) s++;
    }
    unsetenv("CORRAL_OLD_WORKERS");
}

/* --- deciding and doing ----------------------------------------------------------------------- */

/* A MEV_SPAWNED or MEV_CHECK_STARTED: its decision is at most a log line. */
static void report(struct master *m, const struct master_event *ev)
{
    master_decide(&m->st, now_ms(), ev, &m->reply);
    for (int k = 0; k < m->reply.n; k++)
        if (m->reply.v[k].kind == MACT_LOG) log_at(m->reply.v[k].level, "%s", m->reply.v[k].text);
}

static void harakiri_kill(const struct master *m, const struct master_action *a)
{
    const struct sb_slot *s = scoreboard_slot(m->sb, a->slot, a->thread);
    char line[4 * SB_LINE_MAX];

    scoreboard_line(s, line, sizeof(line));
    log_error("harakiri: worker %d (pid %d) thread %d still on %s after %d s "
              "(stuck outside Python?): killing the worker",
              a->number, a->pid, a->thread + 1, line, m->cfg->harakiri + m->cfg->harakiri_grace);
}

static void perform(struct master *m, const struct master_action *a)
{
    switch (a->kind) {
    case MACT_LOG:
        log_at(a->level, "%s", a->text);
        break;
    case MACT_SPAWN:
        report(m, &(struct master_event){
                      .kind = MEV_SPAWNED, .slot = a->slot, .pid = spawn(m, a->slot, a->number)});
        break;
    case MACT_SIGNAL:
        if (a->thread >= 0) harakiri_kill(m, a);
        if (a->pid > 0) kill(a->pid, a->sig);
        break;
    case MACT_CHECK_APP:
        report(m, &(struct master_event){.kind = MEV_CHECK_STARTED, .pid = start_check(m)});
        break;
    case MACT_REEXEC:
        reexec(m);
        break;
    case MACT_NOTIFY:
        sd_notify(a->text);
        break;
    case MACT_EXIT:
        m->exit_status = a->status;
        vacuum(m);
        log_at(a->level, "%s", a->text);
        break;
    }
}

/* One event: look at the scoreboard, decide, do what was decided. */
static void run(struct master *m, struct master_event *ev)
{
    observe(m, ev);
    master_decide(&m->st, now_ms(), ev, &m->plan);
    if (m->plan.overflow) log_error("internal: the master's plan overflowed (%d)", m->plan.cap);
    for (int k = 0; k < m->plan.n; k++)
        perform(m, &m->plan.v[k]);
}

static void reap(struct master *m)
{
    int status;
    pid_t pid;

    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        struct master_event ev = {.kind = MEV_EXIT, .pid = (int)pid, .status = status};
        int i = master_slot_of(&m->st, (int)pid);
        if (i >= 0) {
            struct sb_worker *w = scoreboard_worker(m->sb, i);
            obituary(m, i, status);
            ev.ready = atomic_load(&w->ready) != 0;
            ev.served = atomic_load(&w->requests);
            atomic_store(&w->pid, 0);
        }
        run(m, &ev);
    }
}

static time_t mtime_of(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? st.st_mtime : 0;
}

/* --touch-reload / --touch-chain-reload: a changed mtime is a reload event. */
static void check_touch(struct master *m)
{
    const struct config *cfg = m->cfg;
    int n = cfg->touch_reload.n, k = cfg->touch_chain_reload.n;

    for (int i = 0; i < n + k; i++) {
        const char *path = i < n ? cfg->touch_reload.v[i] : cfg->touch_chain_reload.v[i - n];
        time_t t = mtime_of(path);
        char why[MASTER_WHY_MAX];
        if (t == m->touch_mtimes[i]) continue;
        m->touch_mtimes[i] = t;
        snprintf(why, sizeof(why), "%s touched", path);
        run(m, &(struct master_event){.kind = i < n ? MEV_RELOAD : MEV_CHAIN_RELOAD, .why = why});
    }
}

/* The signal's event, if it is one (SIGCHLD is reaped below, SIGUSR1 seen by the tick). */
static void take_signal(struct master *m, int sig)
{
    struct master_event ev = {.kind = MEV_TICK};

    if (sig == SIGTERM || sig == SIGINT)
        ev = (struct master_event){.kind = MEV_STOP, .why = "SIGTERM/SIGINT"};
    else if (sig == SIGQUIT)
        ev = (struct master_event){.kind = MEV_QUIT, .why = "SIGQUIT"};
    else if (sig == SIGHUP)
        ev = (struct master_event){.kind = MEV_RELOAD, .why = "SIGHUP"};
    else if (sig == SIGUSR2)
        ev = (struct master_event){.kind = MEV_CHAIN_RELOAD, .why = "SIGUSR2"};
    else
        return;
    run(m, &ev);
}

/* CORRAL_CHECK_APP: the reload check (see start_check): import, report, exit. */
static int check_app(const struct config *cfg)
{
    log_set_role("reload check");
    if (py_init(cfg) < 0 || py_load_app(cfg) < 0) return 1;
    log_info("the new code imports cleanly");
    return 0;
}

static int setup(struct master *m)
{
    const struct config *cfg = m->cfg;
    struct master_limits lim = {
        .processes = cfg->processes,
        .cheaper = cfg->cheaper,
        .cheaper_idle_ms = (uint64_t)cfg->cheaper_idle * 1000,
        .harakiri_kill_ms =
            cfg->harakiri ? (uint64_t)(cfg->harakiri + cfg->harakiri_grace) * 1000 : 0,
        .graceful_ms = (uint64_t)cfg->graceful_timeout * 1000,
        .lazy_apps = cfg->lazy_apps,
        .exit_app_load = WORKER_EXIT_APP_LOAD,
    };
    int ntouch = cfg->touch_reload.n + cfg->touch_chain_reload.n;

    m->touch_mtimes = xcalloc((size_t)ntouch + 1, sizeof(*m->touch_mtimes));
    for (int i = 0; i < ntouch; i++)
        m->touch_mtimes[i] =
            mtime_of(i < cfg->touch_reload.n ? cfg->touch_reload.v[i]
                                             : cfg->touch_chain_reload.v[i - cfg->touch_reload.n]);
    if (master_state_init(&m->st, &lim) < 0 || master_plan_init(&m->plan, &m->st) < 0 ||
        master_plan_init(&m->reply, &m->st) < 0)
        return -1;
    m->seen = xcalloc((size_t)m->st.nprocs, sizeof(*m->seen));
    m->sb = scoreboard_new(m->st.nprocs, cfg->threads);
    if (!m->sb) {
        log_error("cannot map the scoreboard: %s", strerror(errno));
        return -1;
    }
    adopt_old_workers(m);
    return 0;
}

int master_run(const struct config *cfg, char **argv)
{
    struct master m = {.cfg = cfg, .argv = argv};
    struct ids ids;

    if (getenv("CORRAL_CHECK_APP")) return check_app(cfg);
    log_set_role("master");
    signals_block();
    if (resolve_ids(cfg, &ids) < 0 || bind_all(&m, &ids) < 0) return 1;
    if (write_pidfile(cfg) < 0 || drop_privileges(cfg, &ids) < 0) return 1;
    if (py_init(cfg) < 0) return 1;
    if (!cfg->lazy_apps && py_load_app(cfg) < 0) return 1;
    py_release_gil();
    if (setup(&m) < 0) return 1;
    log_info("corral master (pid %d): %d worker(s) x %d thread(s), app %s", (int)getpid(),
             cfg->processes, cfg->threads, cfg->module ? cfg->module : cfg->wsgi_file);

    run(&m, &(struct master_event){.kind = MEV_TICK});
    while (!m.st.done) {
        int sig = signals_wait(m.st.wait_ms);
        take_signal(&m, sig);
        if (!m.st.done) reap(&m);
        if (!m.st.done) check_touch(&m);
        if (!m.st.done) run(&m, &(struct master_event){.kind = MEV_TICK});
    }
    return m.exit_status;
}
