/*
 * master.c - the master process (see master.h).
 *
 * One process table, procs[], holds every worker of the current and of the previous
 * generation (during a reload); its index is also the worker's scoreboard entry. The master's
 * loop is a flat list of "if this happened, do that": take a signal (sigtimedwait), reap,
 * then bring the table back to what it should be (spawn, stop, kill, exit).
 */
#include "master/master.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
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

#include "master/signals.h"
#include "net/sock.h"
#include "python/py.h"
#include "stats/scoreboard.h"
#include "util/log.h"
#include "util/xalloc.h"
#include "worker/worker.h"

enum proc_state {
    PROC_FREE,     /* no process */
    PROC_WAITING,  /* to be (re)spawned at respawn_at */
    PROC_RUNNING,  /* serving, current generation */
    PROC_OLD,      /* previous generation: stopped once the new one is ready */
    PROC_STOPPING, /* sent SIGTERM, finishing its requests */
};

struct proc {
    pid_t pid;
    enum proc_state state;
    int number; /* 1..processes, for logs */
    int generation;
    uint64_t started_at; /* ms */
    uint64_t respawn_at; /* ms, for PROC_WAITING */
    uint64_t backoff_ms; /* delay before the next respawn after a quick death */
    bool ever_ready;     /* lived long enough to count as started */
};

static const struct config *cfg;
static char **saved_argv;
static struct listener *listeners;
static int nlisteners;
static struct scoreboard *sb;
static struct proc *procs; /* [2 * processes] */
static int nprocs;
static int generation = 1;
static bool stopping;
static uint64_t stop_deadline;
static bool reloading;       /* new workers spawned, old ones (PROC_OLD) still serving */
static bool app_broken;      /* the app failed to load: do not respawn */
static pid_t checker;        /* a child importing the new code before a re-exec, or 0 */
static bool chain;           /* a chain reload is replacing workers one at a time */
static int chain_generation; /* workers older than this are still to be chain-replaced */
static bool notified;        /* systemd was told READY=1 */
static time_t *touch_mtimes; /* [touch_reload.n + touch_chain_reload.n] */
static int target;           /* workers wanted now: --processes, or between --cheaper and it */
static uint64_t busy_since;  /* --cheaper: when every worker became busy, or 0 */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* --- listeners -------------------------------------------------------------------------- */

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

static int bind_all(void)
{
    char err[256];
    int total = cfg->http.n + cfg->socket.n;

    listeners = xcalloc((size_t)total, sizeof(*listeners));
    for (int i = 0; i < total; i++) {
        bool http = i < cfg->http.n;
        const char *addr = http ? cfg->http.v[i] : cfg->socket.v[i - cfg->http.n];
        if (sock_listen(&listeners[i], addr, http ? SOCK_PROTO_HTTP : SOCK_PROTO_UWSGI, cfg->listen,
                        cfg->chmod_socket, inherited_fd(i), err, sizeof(err)) < 0) {
            log_error("cannot listen on %s", err);
            return -1;
        }
        nlisteners++;
        log_info("listening on %s (%s)%s", addr, http ? "http" : "uwsgi",
                 inherited_fd(i) >= 0 ? ", inherited" : "");
        if (!http && !sock_is_loopback(&listeners[i]))
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
static int drop_privileges(void)
{
    gid_t gid = 0;
    uid_t uid = 0;
    char *end;

    if (cfg->gid) {
        struct group *g = getgrnam(cfg->gid);
        gid = g ? g->gr_gid : (gid_t)strtoul(cfg->gid, &end, 10);
        if (!g && (*end || end == cfg->gid)) {
            log_error("gid %s: no such group", cfg->gid);
            return -1;
        }
        if (setgroups(0, NULL) < 0 && errno != EPERM) return -1;
        if (setgid(gid) < 0) {
            log_error("setgid %s: %s", cfg->gid, strerror(errno));
            return -1;
        }
    }
    if (cfg->uid) {
        struct passwd *pw = getpwnam(cfg->uid);
        uid = pw ? pw->pw_uid : (uid_t)strtoul(cfg->uid, &end, 10);
        if (!pw && (*end || end == cfg->uid)) {
            log_error("uid %s: no such user", cfg->uid);
            return -1;
        }
        if (!cfg->gid && pw && setgid(pw->pw_gid) < 0) {
            log_error("setgid for %s: %s", cfg->uid, strerror(errno));
            return -1;
        }
        if (setuid(uid) < 0) {
            log_error("setuid %s: %s", cfg->uid, strerror(errno));
            return -1;
        }
    }
    if (cfg->uid || cfg->gid) log_info("running as uid %d, gid %d", (int)getuid(), (int)getgid());
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

static void vacuum(void)
{
    if (!cfg->vacuum) return;
    for (int i = 0; i < nlisteners; i++)
        if (listeners[i].is_unix) unlink(listeners[i].name);
    if (cfg->pidfile) unlink(cfg->pidfile);
}

static int write_pidfile(void)
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

/* --- spawning and reaping ---------------------------------------------------------------- */

static void spawn(int i)
{
    struct proc *p = &procs[i];
    struct sb_worker *w = scoreboard_worker(sb, i);
    struct worker_args a = {.cfg = cfg,
                            .ls = listeners,
                            .nls = nlisteners,
                            .sb = sb,
                            .id = i,
                            .number = p->number,
                            .master_pid = (int)getpid()};
    pid_t pid;

    memset(w, 0, sizeof(*w));
    for (int t = 0; t < scoreboard_threads(sb); t++)
        scoreboard_end(scoreboard_slot(sb, i, t));
    py_acquire_gil();
    py_before_fork();
    pid = fork();
    if (pid == 0) {
        py_after_fork_child();
        signals_unblock();
        worker_main(&a);
    }
    py_after_fork_parent();
    py_release_gil();
    if (pid < 0) {
        log_error("cannot fork worker %d: %s", p->number, strerror(errno));
        p->state = PROC_WAITING;
        p->respawn_at = now_ms() + 1000;
        return;
    }
    atomic_store(&w->pid, (int)pid);
    p->pid = pid;
    p->state = PROC_RUNNING;
    p->generation = generation;
    p->started_at = now_ms();
    p->ever_ready = false;
    log_info("spawned worker %d (pid %d)", p->number, (int)pid);
}

/* The requests a dead worker was serving, for its obituary. */
static void describe_requests(int i, char *out, size_t len)
{
    size_t n = 0;
    out[0] = '\0';
    for (int t = 0; t < scoreboard_threads(sb); t++) {
        struct sb_slot *s = scoreboard_slot(sb, i, t);
        if (!atomic_load(&s->started_ms)) continue;
        n += (size_t)snprintf(out + n, len - n, "%s%s", n ? ", " : "", s->line);
        if (n >= len) break;
    }
}

static void obituary(int i, int status)
{
    struct proc *p = &procs[i];
    char reqs[1024], sig[32];

    describe_requests(i, reqs, sizeof(reqs));
    if (WIFSIGNALED(status)) {
        log_error("worker %d (pid %d) killed by %s %s%s", p->number, (int)p->pid,
                  signals_name(WTERMSIG(status), sig, sizeof(sig)),
                  reqs[0] ? "while serving " : "while idle", reqs);
    } else if (WEXITSTATUS(status) == WORKER_EXIT_APP_LOAD) {
        log_error("worker %d (pid %d) could not load the app (see the traceback above)", p->number,
                  (int)p->pid);
    } else if (WEXITSTATUS(status) != 0 || p->state == PROC_RUNNING) {
        log_error("worker %d (pid %d) exited with status %d%s%s", p->number, (int)p->pid,
                  WEXITSTATUS(status), reqs[0] ? " while serving " : "", reqs);
    } else {
        log_info("worker %d (pid %d) exited", p->number, (int)p->pid);
    }
}

/* A new-generation worker could not import the app: the old workers go on serving. */
static void abort_reload(void)
{
    log_error("reload aborted: the new code does not load; the old workers keep serving");
    for (int i = 0; i < nprocs; i++) {
        if (procs[i].state == PROC_RUNNING && procs[i].generation == generation) {
            if (procs[i].pid > 0) kill(procs[i].pid, SIGKILL);
            procs[i].state = procs[i].pid > 0 ? PROC_STOPPING : PROC_FREE;
        } else if (procs[i].state == PROC_WAITING) {
            procs[i].state = PROC_FREE;
        } else if (procs[i].state == PROC_OLD) {
            procs[i].state = PROC_RUNNING;
        }
    }
    reloading = false;
    chain = false;
}

static void schedule_respawn(struct proc *p, int status)
{
    uint64_t now = now_ms();
    bool quick = now - p->started_at < 1000;

    if (WIFEXITED(status) && WEXITSTATUS(status) == WORKER_EXIT_APP_LOAD) {
        if (generation == 1 && !p->ever_ready)
            app_broken = true;
        else if (reloading) {
            p->state = PROC_FREE;
            abort_reload();
            return;
        }
    }
    p->backoff_ms = quick ? (p->backoff_ms ? p->backoff_ms * 2 : 250) : 0;
    if (p->backoff_ms > 16000) p->backoff_ms = 16000;
    if (p->backoff_ms)
        log_warn("worker %d died right after starting: respawning in %llu ms", p->number,
                 (unsigned long long)p->backoff_ms);
    p->state = PROC_WAITING;
    p->respawn_at = now + p->backoff_ms;
}

static void reexec(void);

static void reap(void)
{
    int status;
    pid_t pid;

    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        int i;
        if (pid == checker) {
            checker = 0;
            if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
                reexec();
            else
                log_error("reload aborted: the new code does not load (see the traceback "
                          "above); the old workers keep serving");
            continue;
        }
        for (i = 0; i < nprocs && procs[i].pid != pid; i++)
            ;
        if (i == nprocs) continue; /* not ours (an app's own child of a re-exec'd master) */
        obituary(i, status);
        atomic_store(&scoreboard_worker(sb, i)->pid, 0);
        procs[i].pid = 0;
        if (procs[i].state == PROC_RUNNING && !stopping)
            schedule_respawn(&procs[i], status);
        else
            procs[i].state = PROC_FREE;
    }
}

/* --- stopping and reloading ---------------------------------------------------------------- */

static void signal_state(enum proc_state from, int sig, enum proc_state to)
{
    for (int i = 0; i < nprocs; i++) {
        if (procs[i].state != from || procs[i].pid <= 0) continue;
        kill(procs[i].pid, sig);
        procs[i].state = to;
    }
}

static void begin_stop(bool now)
{
    if (stopping && !now) return;
    log_info("%s: stopping %s", now ? "SIGQUIT" : "SIGTERM/SIGINT",
             now ? "now" : "gracefully (in-flight requests finish)");
    stopping = true;
    sd_notify("STOPPING=1");
    stop_deadline = now_ms() + (uint64_t)cfg->graceful_timeout * 1000;
    for (int i = 0; i < nprocs; i++) {
        if (procs[i].state == PROC_WAITING) procs[i].state = PROC_FREE;
        if (procs[i].pid > 0) kill(procs[i].pid, now ? SIGKILL : SIGTERM);
        if (procs[i].pid > 0) procs[i].state = PROC_STOPPING;
    }
}

/* Preloaded app: exec a fresh master image that adopts the sockets and the old workers. */
static void reexec(void)
{
    char fds[512] = "", olds[2048] = "";
    size_t nf = 0, no = 0;

    for (int i = 0; i < nlisteners; i++) {
        fcntl(listeners[i].fd, F_SETFD, 0);
        nf += (size_t)snprintf(fds + nf, sizeof(fds) - nf, "%s%d", i ? "," : "", listeners[i].fd);
    }
    for (int i = 0; i < nprocs; i++)
        if (procs[i].pid > 0)
            no += (size_t)snprintf(olds + no, sizeof(olds) - no, "%s%d", no ? "," : "",
                                   (int)procs[i].pid);
    setenv("CORRAL_LISTEN_FDS", fds, 1);
    setenv("CORRAL_OLD_WORKERS", olds, 1);
    log_info("reloading: re-executing the master with the new code");
    signals_unblock();
    execv("/proc/self/exe", saved_argv);
    signals_block();
    log_error("cannot re-execute %s: %s; reload abandoned", saved_argv[0], strerror(errno));
    for (int i = 0; i < nlisteners; i++)
        fcntl(listeners[i].fd, F_SETFD, FD_CLOEXEC);
}

/*
 * Before a preloaded app's master replaces itself, a child imports the new code with the same
 * command line (CORRAL_CHECK_APP): only if that works does the master re-execute, so a broken
 * new version leaves the old one serving.
 */
static void check_then_reexec(void)
{
    pid_t pid;

    if (checker) return;
    pid = fork();
    if (pid == 0) {
        signals_unblock();
        setenv("CORRAL_CHECK_APP", "1", 1);
        execv("/proc/self/exe", saved_argv);
        _exit(127);
    }
    if (pid < 0)
        log_error("reload: cannot fork the import check: %s", strerror(errno));
    else
        checker = pid;
}

/* Lazy apps: new workers import the code themselves; the old ones stop once they are up. */
static void begin_reload(const char *why)
{
    if (stopping || reloading) return;
    if (!cfg->lazy_apps) {
        log_info("%s: reloading: importing the new code in a check process first", why);
        check_then_reexec();
        return;
    }
    log_info("%s: reloading: new workers first, then the old ones finish and exit", why);
    for (int i = 0; i < nprocs; i++) {
        if (procs[i].state == PROC_RUNNING)
            procs[i].state = PROC_OLD;
        else if (procs[i].state == PROC_WAITING)
            procs[i].state = PROC_FREE;
    }
    generation++;
    reloading = true;
}

/* Chain reload: replace the workers one at a time, each only once its successor is ready. */
static void begin_chain_reload(const char *why)
{
    if (stopping || chain) return;
    if (!cfg->lazy_apps) {
        log_info("%s: chain reload needs --lazy-apps (a preloaded app is reloaded whole)", why);
        begin_reload(why);
        return;
    }
    log_info("%s: chain reload: one worker at a time", why);
    chain = true;
    chain_generation = ++generation;
}

static void chain_step(void)
{
    if (!chain || reloading) return;
    for (int i = 0; i < nprocs; i++) {
        if (procs[i].state != PROC_RUNNING || procs[i].generation >= chain_generation) continue;
        log_info("chain reload: replacing worker %d (pid %d)", procs[i].number, (int)procs[i].pid);
        procs[i].state = PROC_OLD;
        reloading = true;
        return;
    }
    chain = false;
    log_info("chain reload done");
}

/* Workers that asked to be recycled (max-requests, RSS, lifetime) get a successor first. */
static void recycle(void)
{
    static const char *const why[] = {"", "max-requests reached", "reload-on-rss exceeded",
                                      "max-worker-lifetime reached"};
    int room = 0; /* free slots for successors: a worker without one waits, and keeps serving */

    for (int i = 0; i < nprocs; i++)
        room += procs[i].state == PROC_FREE;
    for (int i = 0; i < nprocs && room > 0; i++) {
        int r = atomic_load(&scoreboard_worker(sb, i)->recycle);
        if (procs[i].state != PROC_RUNNING || r <= 0 || r > SB_RECYCLE_LIFETIME) continue;
        room--;
        log_info("worker %d (pid %d): %s: recycling it once its successor is ready",
                 procs[i].number, (int)procs[i].pid, why[r]);
        procs[i].state = PROC_OLD;
        reloading = true;
    }
}

/* Harakiri, step two: a request still running harakiri + grace seconds after it started. */
static void harakiri_kill(uint64_t now)
{
    uint64_t limit = (uint64_t)(cfg->harakiri + cfg->harakiri_grace) * 1000;

    for (int i = 0; i < nprocs && cfg->harakiri; i++) {
        if (procs[i].pid <= 0 || procs[i].state == PROC_WAITING) continue;
        for (int t = 0; t < scoreboard_threads(sb); t++) {
            struct sb_slot *s = scoreboard_slot(sb, i, t);
            uint64_t started = atomic_load(&s->started_ms);
            if (!started || now - started < limit) continue;
            log_error("harakiri: worker %d (pid %d) thread %d still on %s after %d s "
                      "(stuck outside Python?): killing the worker",
                      procs[i].number, (int)procs[i].pid, t + 1, s->line,
                      cfg->harakiri + cfg->harakiri_grace);
            kill(procs[i].pid, SIGKILL);
            break;
        }
    }
}

static time_t mtime_of(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? st.st_mtime : 0;
}

/* --touch-reload / --touch-chain-reload: a changed mtime triggers the reload. */
static void check_touch(void)
{
    int n = cfg->touch_reload.n, m = cfg->touch_chain_reload.n;
    for (int i = 0; i < n + m; i++) {
        const char *path = i < n ? cfg->touch_reload.v[i] : cfg->touch_chain_reload.v[i - n];
        time_t t = mtime_of(path);
        if (t == touch_mtimes[i]) continue;
        touch_mtimes[i] = t;
        char why[300];
        snprintf(why, sizeof(why), "%s touched", path);
        if (i < n)
            begin_reload(why);
        else
            begin_chain_reload(why);
    }
}

/* True if every thread of worker i is inside the app. */
static bool worker_busy(int i)
{
    for (int t = 0; t < scoreboard_threads(sb); t++)
        if (!atomic_load(&scoreboard_slot(sb, i, t)->started_ms)) return false;
    return true;
}

/* Connections waiting in any TCP listener's accept queue (TCP_INFO on a listening socket). */
static bool backlog_waiting(void)
{
    for (int i = 0; i < nlisteners; i++) {
        struct tcp_info ti;
        socklen_t len = sizeof(ti);
        if (!listeners[i].is_unix &&
            getsockopt(listeners[i].fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0 &&
            ti.tcpi_unacked > 0)
            return true;
    }
    return false;
}

/*
 * --cheaper: one more worker when all are busy (or connections queue up) for a second; an
 * extra worker that served nothing for --cheaper-idle seconds is retired gracefully.
 */
static void adapt(uint64_t now)
{
    static uint64_t last_requests[1024 * 3];
    static uint64_t idle_since[1024 * 3];
    int running = 0, busy = 0;

    if (!cfg->cheaper || reloading || chain) return;
    for (int i = 0; i < nprocs; i++) {
        if (procs[i].state != PROC_RUNNING) continue;
        uint64_t n = atomic_load(&scoreboard_worker(sb, i)->requests);
        running++;
        if (worker_busy(i)) busy++;
        if (n != last_requests[i] || worker_busy(i) || !idle_since[i]) idle_since[i] = now;
        last_requests[i] = n;
    }
    if (running && (busy == running || backlog_waiting())) {
        if (!busy_since) busy_since = now;
        if (now - busy_since >= 1000 && target < cfg->processes) {
            target++;
            busy_since = 0;
            log_info("cheaper: all %d worker(s) busy: starting one more (%d of at most %d)",
                     running, target, cfg->processes);
        }
        return;
    }
    busy_since = 0;
    for (int i = nprocs - 1; i >= 0 && target > cfg->cheaper; i--) {
        if (procs[i].state != PROC_RUNNING || procs[i].number <= cfg->cheaper) continue;
        if (now - idle_since[i] < (uint64_t)cfg->cheaper_idle * 1000) continue;
        log_info("cheaper: worker %d (pid %d) idle for %d s: retiring it (%d left)",
                 procs[i].number, (int)procs[i].pid, cfg->cheaper_idle, target - 1);
        kill(procs[i].pid, SIGTERM);
        procs[i].state = PROC_STOPPING;
        idle_since[i] = 0;
        target--;
        return;
    }
}

/* Old workers handed over by the previous master image. */
static void adopt_old_workers(void)
{
    const char *s = getenv("CORRAL_OLD_WORKERS");
    int slot = cfg->processes;

    for (; s && *s && slot < nprocs; slot++) {
        procs[slot].pid = (pid_t)atoi(s);
        procs[slot].state = PROC_OLD;
        procs[slot].number = slot - cfg->processes + 1;
        s = strchr(s, ',');
        if (s) s++;
    }
    if (getenv("CORRAL_OLD_WORKERS")) reloading = true;
    unsetenv("CORRAL_OLD_WORKERS");
}

/* A worker counts as ready once it has been up a moment without dying. */
static bool generation_ready(void)
{
    uint64_t now = now_ms();
    for (int i = 0; i < nprocs; i++) {
        struct proc *p = &procs[i];
        if (p->state == PROC_WAITING) return false;
        if (p->state != PROC_RUNNING) continue;
        if (!atomic_load(&scoreboard_worker(sb, i)->ready) || now - p->started_at < 200)
            return false;
        p->ever_ready = true;
    }
    return true;
}

/* Worker numbers 1..processes in use by the current generation, as a bit set. */
static uint64_t numbers_in_use(int *count)
{
    uint64_t used = 0;
    *count = 0;
    for (int i = 0; i < nprocs; i++) {
        if (procs[i].state != PROC_RUNNING && procs[i].state != PROC_WAITING) continue;
        (*count)++;
        if (procs[i].number <= 64) used |= 1ull << (procs[i].number - 1);
    }
    return used;
}

/* Makes sure the current generation has 'processes' workers, running or about to be. */
static void fill_generation(uint64_t now)
{
    int count;
    uint64_t used = numbers_in_use(&count);

    for (int i = 0; i < nprocs && count < target && !app_broken; i++) {
        if (procs[i].state != PROC_FREE) continue;
        int n = 1;
        while (n <= 64 && (used & (1ull << (n - 1))))
            n++;
        procs[i] = (struct proc){.state = PROC_WAITING, .respawn_at = now, .number = n};
        used |= n <= 64 ? 1ull << (n - 1) : 0;
        count++;
    }
}

/* Brings the table back to what it should be. Returns the next wait in ms. */
static int maintain(void)
{
    uint64_t now = now_ms();
    int running = 0;

    if (!stopping) {
        adapt(now);
        recycle();
        chain_step();
        check_touch();
        fill_generation(now);
        for (int i = 0; i < nprocs; i++)
            if (procs[i].state == PROC_WAITING && procs[i].respawn_at <= now && !app_broken)
                spawn(i);
        if (reloading && generation_ready()) {
            signal_state(PROC_OLD, SIGTERM, PROC_STOPPING);
            reloading = false;
            if (!chain) log_info("the new workers are serving; the old ones finish and exit");
            chain_step();
        }
        if (!notified && !reloading && generation_ready()) {
            sd_notify("READY=1");
            notified = true;
        }
    }
    harakiri_kill(now);
    for (int i = 0; i < nprocs; i++)
        if (procs[i].pid > 0) running++;
    if (stopping && running && now >= stop_deadline) {
        log_warn("graceful timeout (%ds): killing %d worker(s)", cfg->graceful_timeout, running);
        for (int i = 0; i < nprocs; i++)
            if (procs[i].pid > 0) kill(procs[i].pid, SIGKILL);
        stop_deadline = now + 60000;
    }
    if ((stopping || app_broken) && running == 0) return -1;
    return reloading || stopping || chain || checker || cfg->harakiri || cfg->cheaper ? 100 : 1000;
}

/* Room for two generations plus workers being recycled beside them. */
static int numbered_slots(void)
{
    return 3 * cfg->processes;
}

/* CORRAL_CHECK_APP: the reload check (see check_then_reexec): import, report, exit. */
static int check_app(void)
{
    log_set_role("reload check");
    if (py_init(cfg) < 0 || py_load_app(cfg) < 0) return 1;
    log_info("the new code imports cleanly");
    return 0;
}

int master_run(const struct config *c, char **argv)
{
    int wait_ms;

    cfg = c;
    saved_argv = argv;
    if (getenv("CORRAL_CHECK_APP")) return check_app();
    log_set_role("master");
    signals_block();
    if (bind_all() < 0) return 1;
    if (write_pidfile() < 0 || drop_privileges() < 0) return 1;
    if (py_init(cfg) < 0) return 1;
    if (!cfg->lazy_apps && py_load_app(cfg) < 0) return 1;
    touch_mtimes = xcalloc((size_t)(cfg->touch_reload.n + cfg->touch_chain_reload.n) + 1,
                           sizeof(*touch_mtimes));
    for (int i = 0; i < cfg->touch_reload.n; i++)
        touch_mtimes[i] = mtime_of(cfg->touch_reload.v[i]);
    for (int i = 0; i < cfg->touch_chain_reload.n; i++)
        touch_mtimes[cfg->touch_reload.n + i] = mtime_of(cfg->touch_chain_reload.v[i]);
    py_release_gil();
    nprocs = numbered_slots();
    target = cfg->cheaper ? (cfg->cheaper < cfg->processes ? cfg->cheaper : cfg->processes)
                          : cfg->processes;
    procs = xcalloc((size_t)nprocs, sizeof(*procs));
    sb = scoreboard_new(nprocs, cfg->threads);
    if (!sb) {
        log_error("cannot map the scoreboard: %s", strerror(errno));
        return 1;
    }
    adopt_old_workers();
    log_info("corral master (pid %d): %d worker(s) x %d thread(s), app %s", (int)getpid(),
             cfg->processes, cfg->threads, cfg->module ? cfg->module : cfg->wsgi_file);

    while ((wait_ms = maintain()) >= 0) {
        int sig = signals_wait(wait_ms);
        if (sig == SIGCHLD)
            reap();
        else if (sig == SIGTERM || sig == SIGINT)
            begin_stop(false);
        else if (sig == SIGQUIT)
            begin_stop(true);
        else if (sig == SIGHUP)
            begin_reload("SIGHUP");
        else if (sig == SIGUSR2)
            begin_chain_reload("SIGUSR2");
        else
            reap(); /* SIGUSR1 (recycle requests: seen in maintain) or a timeout */
    }
    vacuum();
    if (app_broken) {
        log_error("the app cannot be loaded: exiting");
        return 1;
    }
    log_info("bye");
    return 0;
}
