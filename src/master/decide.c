/*
 * decide.c - the master's decisions (see decide.h): pure, apart from master_state_init()'s
 * and master_plan_init()'s allocations. <sys/wait.h> and <signal.h> are here for the W*()
 * macros and the signal numbers only.
 */
#include "master/decide.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "util/xalloc.h"

/* --- the plan --------------------------------------------------------------------------------- */

static struct master_action *push(struct master_plan *o, enum master_act kind,
                                  const struct master_state *s, int slot)
{
    struct master_action *a = o->n < o->cap ? &o->v[o->n++] : &o->spill;

    if (a == &o->spill) o->overflow = true;
    memset(a, 0, sizeof(*a));
    a->kind = kind;
    a->level = LOG_LEVEL_INFO;
    a->slot = slot;
    a->thread = -1;
    if (slot >= 0) {
        a->pid = s->procs[slot].pid;
        a->number = s->procs[slot].number;
    }
    return a;
}

static void say(struct master_plan *o, enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A log line; the slot is only for tests that want to know which row it is about. */
static void say(struct master_plan *o, enum log_level level, const char *fmt, ...)
{
    struct master_action *a = o->n < o->cap ? &o->v[o->n++] : &o->spill;
    va_list ap;

    if (a == &o->spill) o->overflow = true;
    memset(a, 0, sizeof(*a));
    a->kind = MACT_LOG;
    a->level = level;
    a->slot = -1;
    a->thread = -1;
    va_start(ap, fmt);
    vsnprintf(a->text, sizeof(a->text), fmt, ap);
    va_end(ap);
}

/* Sends 'sig' to row i (if it has a process) and moves it to 'to'. */
static void signal_row(struct master_state *s, int i, int sig, enum master_proc_state to,
                       struct master_plan *o)
{
    struct master_proc *p = &s->procs[i];

    if (p->pid > 0) {
        struct master_action *a = push(o, MACT_SIGNAL, s, i);
        a->sig = sig;
        p->state = to;
    } else {
        p->state = MPROC_FREE;
    }
}

/* --- looking at the table --------------------------------------------------------------------- */

static int count_state(const struct master_state *s, enum master_proc_state st)
{
    int n = 0;
    for (int i = 0; i < s->nprocs; i++)
        n += s->procs[i].state == st;
    return n;
}

static int live(const struct master_state *s)
{
    int n = 0;
    for (int i = 0; i < s->nprocs; i++)
        n += s->procs[i].pid > 0;
    return n;
}

static bool any_old(const struct master_state *s)
{
    return count_state(s, MPROC_OLD) > 0;
}

/* The current generation is whole, and every worker of it is up, accepting, and has been
 * for MASTER_SETTLE_MS. */
static bool generation_ready(const struct master_state *s, uint64_t now)
{
    if (count_state(s, MPROC_RUNNING) < s->target) return false;
    for (int i = 0; i < s->nprocs; i++) {
        const struct master_proc *p = &s->procs[i];
        if (p->state == MPROC_WAITING) return false;
        if (p->state != MPROC_RUNNING) continue;
        if (!p->ready || p->pid <= 0 || now - p->started_ms < MASTER_SETTLE_MS) return false;
    }
    return true;
}

/* A reload cannot start while workers are being replaced or the new code is being checked. */
static const char *reload_blocker(const struct master_state *s)
{
    if (s->checker) return "an import check";
    if (!any_old(s)) return NULL;
    if (s->reload) return "a reload";
    if (s->chain) return "a chain reload step";
    return "a recycle";
}

int master_slot_of(const struct master_state *s, int pid)
{
    if (pid <= 0) return -1;
    for (int i = 0; i < s->nprocs; i++)
        if (s->procs[i].pid == pid) return i;
    return -1;
}

/* --- observations ----------------------------------------------------------------------------- */

static void apply_seen(struct master_state *s, const struct master_seen *seen)
{
    for (int i = 0; i < s->nprocs; i++) {
        struct master_proc *p = &s->procs[i];
        if (p->pid <= 0) {
            memset(&p->seen, 0, sizeof(p->seen));
            continue;
        }
        p->seen = seen[i];
        if (p->seen.ready && p->state == MPROC_RUNNING) {
            p->ready = true;
            s->ever_ready = true;
        }
    }
}

/* --- stopping --------------------------------------------------------------------------------- */

static void begin_stop(struct master_state *s, uint64_t now, bool quit, const char *why,
                       struct master_plan *o)
{
    if (s->stopping && !quit) return;
    say(o, LOG_LEVEL_INFO, "%s: stopping %s", why,
        quit ? "now" : "gracefully (in-flight requests finish)");
    if (!s->stopping) snprintf(push(o, MACT_NOTIFY, s, -1)->text, MASTER_TEXT_MAX, "STOPPING=1");
    s->stopping = true;
    s->reload = false;
    s->chain = false;
    s->pending_reload = false;
    s->stop_deadline = now + s->lim.graceful_ms;
    for (int i = 0; i < s->nprocs; i++) {
        struct master_proc *p = &s->procs[i];
        if (p->state == MPROC_WAITING) p->state = MPROC_FREE;
        if (p->pid > 0) signal_row(s, i, quit ? SIGKILL : SIGTERM, MPROC_STOPPING, o);
    }
}

/* While stopping: SIGKILL what outlives the graceful timeout; exit once nothing is left. */
static void stop_progress(struct master_state *s, uint64_t now, struct master_plan *o)
{
    int n = live(s);

    if (!s->stopping) return;
    if (n && now >= s->stop_deadline) {
        say(o, LOG_LEVEL_WARN, "graceful timeout (%llu s): killing %d worker(s)",
            (unsigned long long)(s->lim.graceful_ms / 1000), n);
        for (int i = 0; i < s->nprocs; i++)
            if (s->procs[i].pid > 0) signal_row(s, i, SIGKILL, MPROC_STOPPING, o);
        s->stop_deadline = now + MASTER_KILL_AGAIN_MS;
    }
    if (n == 0 && !s->done) {
        struct master_action *a = push(o, MACT_EXIT, s, -1);
        a->status = s->app_broken ? 1 : 0;
        a->level = s->app_broken ? LOG_LEVEL_ERROR : LOG_LEVEL_INFO;
        snprintf(a->text, sizeof(a->text), "%s",
                 s->app_broken ? "the app cannot be loaded: exiting" : "bye");
        s->done = true;
    }
}

/* --- reloads ---------------------------------------------------------------------------------- */

static void begin_reload(struct master_state *s, const char *why, struct master_plan *o)
{
    if (!s->lim.lazy_apps) {
        say(o, LOG_LEVEL_INFO, "%s: reloading: importing the new code in a check process first",
            why);
        push(o, MACT_CHECK_APP, s, -1);
        s->checker = -1;
        return;
    }
    say(o, LOG_LEVEL_INFO, "%s: reloading: new workers first, then the old ones finish and exit%s",
        why, s->chain ? " (this replaces the chain reload in progress)" : "");
    for (int i = 0; i < s->nprocs; i++) {
        struct master_proc *p = &s->procs[i];
        if (p->state == MPROC_RUNNING)
            p->state = MPROC_OLD;
        else if (p->state == MPROC_WAITING)
            p->state = MPROC_FREE;
    }
    s->generation++;
    s->reload = true;
    s->reload_generation = s->generation;
    s->chain = false;
}

/* A reload asked for now: started, or queued behind what is in progress. */
static void want_reload(struct master_state *s, const char *why, struct master_plan *o)
{
    const char *blocker = reload_blocker(s);

    if (s->stopping) return;
    if (!blocker) {
        begin_reload(s, why, o);
        return;
    }
    if (s->pending_reload) {
        say(o, LOG_LEVEL_INFO, "%s: a reload is already queued; it will load this too", why);
        return;
    }
    say(o, LOG_LEVEL_INFO, "%s: reload queued: %s is in progress; it starts once that is done", why,
        blocker);
    s->pending_reload = true;
    snprintf(s->pending_why, sizeof(s->pending_why), "%s", why);
}

static void want_chain(struct master_state *s, const char *why, struct master_plan *o)
{
    if (s->stopping) return;
    if (!s->lim.lazy_apps) {
        say(o, LOG_LEVEL_INFO,
            "%s: chain reload needs --lazy-apps (a preloaded app is reloaded whole)", why);
        want_reload(s, why, o);
        return;
    }
    if (s->pending_reload) {
        say(o, LOG_LEVEL_INFO, "%s: a reload is already queued; it will load this too", why);
        return;
    }
    say(o, LOG_LEVEL_INFO, "%s: chain reload: one worker at a time%s", why,
        s->chain     ? " (restarted: workers replaced so far are replaced again)"
        : any_old(s) ? " (once the replacement in progress is done)"
                     : "");
    s->chain = true;
    s->chain_generation = ++s->generation;
}

/* A chain reload's next step: one worker older than the chain, once nothing is replaced. */
static void chain_step(struct master_state *s, struct master_plan *o)
{
    if (!s->chain || any_old(s)) return;
    for (int i = 0; i < s->nprocs; i++) {
        struct master_proc *p = &s->procs[i];
        if (p->state != MPROC_RUNNING || p->generation >= s->chain_generation) continue;
        say(o, LOG_LEVEL_INFO, "chain reload: replacing worker %d (pid %d)", p->number, p->pid);
        p->state = MPROC_OLD;
        return;
    }
    s->chain = false;
    say(o, LOG_LEVEL_INFO, "chain reload done");
}

/*
 * The new code does not import: the reload (or chain reload) stops here. The workers it
 * replaced serve again; its new workers that are not ready are killed (they serve nothing),
 * and, for a full reload, the ready ones stop gracefully (the old ones are back).
 */
static void abort_replacement(struct master_state *s, struct master_plan *o)
{
    bool full = s->reload;
    int gen = full ? s->reload_generation : s->chain_generation;

    say(o, LOG_LEVEL_ERROR, "%s aborted: the new code does not load; the old workers keep serving",
        full ? "reload" : "chain reload");
    for (int i = 0; i < s->nprocs; i++) {
        struct master_proc *p = &s->procs[i];
        if (p->state == MPROC_RUNNING && p->generation >= gen && (full || !p->ready))
            signal_row(s, i, p->ready ? SIGTERM : SIGKILL, MPROC_STOPPING, o);
        else if (p->state == MPROC_WAITING)
            p->state = MPROC_FREE;
        else if (p->state == MPROC_OLD)
            p->state = MPROC_RUNNING;
    }
    s->reload = false;
    s->chain = false;
}

static void check_done(struct master_state *s, int status, struct master_plan *o)
{
    s->checker = 0;
    if (s->stopping) return;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        /* the new image imports the code after every reload asked so far: they are done */
        s->pending_reload = false;
        push(o, MACT_REEXEC, s, -1);
        return;
    }
    say(o, LOG_LEVEL_ERROR,
        "reload aborted: the new code does not load (see the traceback above); the old "
        "workers keep serving");
}

/* --- deaths ----------------------------------------------------------------------------------- */

static void back_off(struct master_proc *p, uint64_t now, const char *what, struct master_plan *o)
{
    p->backoff_ms = p->backoff_ms ? p->backoff_ms * 2 : MASTER_BACKOFF_FIRST_MS;
    if (p->backoff_ms > MASTER_BACKOFF_MAX_MS) p->backoff_ms = MASTER_BACKOFF_MAX_MS;
    say(o, LOG_LEVEL_WARN, "worker %d %s: respawning in %llu ms", p->number, what,
        (unsigned long long)p->backoff_ms);
    p->state = MPROC_WAITING;
    p->respawn_ms = now + p->backoff_ms;
}

static void app_load_failed(struct master_state *s, int i, uint64_t now, struct master_plan *o)
{
    struct master_proc *p = &s->procs[i];

    if (!s->ever_ready && !any_old(s)) {
        p->state = MPROC_FREE;
        s->app_broken = true;
        begin_stop(s, now, false, "the app cannot be loaded and no worker ever could", o);
        return;
    }
    if ((s->reload && p->generation >= s->reload_generation) ||
        (s->chain && p->generation >= s->chain_generation)) {
        p->state = MPROC_FREE;
        abort_replacement(s, o);
        return;
    }
    back_off(p, now, "could not load the app (the other workers keep serving)", o);
}

static void on_death(struct master_state *s, uint64_t now, const struct master_event *ev,
                     struct master_plan *o)
{
    int i;
    struct master_proc *p;
    bool was_ready;

    if (s->checker > 0 && ev->pid == s->checker) {
        check_done(s, ev->status, o);
        return;
    }
    if ((i = master_slot_of(s, ev->pid)) < 0) return; /* not ours (an app's child, adopted) */
    p = &s->procs[i];
    was_ready = p->ready || ev->ready || ev->served > 0;
    if (was_ready) s->ever_ready = true;
    p->pid = 0;
    memset(&p->seen, 0, sizeof(p->seen));
    if (p->state != MPROC_RUNNING || s->stopping) {
        p->state = MPROC_FREE;
        return;
    }
    if (WIFEXITED(ev->status) && WEXITSTATUS(ev->status) == s->lim.exit_app_load) {
        app_load_failed(s, i, now, o);
    } else if (was_ready) {
        p->backoff_ms = 0; /* it served: a crash in a request is not a start-up failure */
        p->state = MPROC_WAITING;
        p->respawn_ms = now;
    } else {
        back_off(p, now, "died before it was ready", o);
    }
}

static void on_spawned(struct master_state *s, uint64_t now, const struct master_event *ev,
                       struct master_plan *o)
{
    struct master_proc *p;

    if (ev->slot < 0 || ev->slot >= s->nprocs) return;
    p = &s->procs[ev->slot];
    if (ev->pid > 0) {
        p->pid = ev->pid;
        return;
    }
    say(o, LOG_LEVEL_ERROR, "cannot fork worker %d: %s", p->number, strerror(-ev->pid));
    p->pid = 0;
    p->state = MPROC_WAITING;
    p->respawn_ms = now + MASTER_FORK_RETRY_MS;
}

static void on_check_started(struct master_state *s, const struct master_event *ev,
                             struct master_plan *o)
{
    if (ev->pid > 0) {
        s->checker = ev->pid;
        return;
    }
    s->checker = 0;
    say(o, LOG_LEVEL_ERROR, "reload: cannot fork the import check: %s", strerror(-ev->pid));
}

/* --- keeping the table full ------------------------------------------------------------------- */

/* Once every current worker is ready, the workers they replace stop gracefully. */
static void finish_replacement(struct master_state *s, uint64_t now, struct master_plan *o)
{
    if (!any_old(s) || !generation_ready(s, now)) return;
    if (s->reload)
        say(o, LOG_LEVEL_INFO, "the new workers are serving; the old ones finish and exit");
    s->reload = false;
    for (int i = 0; i < s->nprocs; i++)
        if (s->procs[i].state == MPROC_OLD) signal_row(s, i, SIGTERM, MPROC_STOPPING, o);
}

/* Workers that asked to be recycled get a successor first, each only if a row is free for it. */
static void recycle(struct master_state *s, struct master_plan *o)
{
    static const char *const why[] = {"", "max-requests reached", "reload-on-rss exceeded",
                                      "max-worker-lifetime reached"};
    int active = count_state(s, MPROC_RUNNING) + count_state(s, MPROC_WAITING);
    int room = count_state(s, MPROC_FREE) - (s->target > active ? s->target - active : 0);

    for (int i = 0; i < s->nprocs && room > 0; i++) {
        struct master_proc *p = &s->procs[i];
        int r = p->seen.recycle;
        if (p->state != MPROC_RUNNING || p->pid <= 0 || r <= 0 ||
            r >= (int)(sizeof(why) / sizeof(why[0])))
            continue;
        room--;
        say(o, LOG_LEVEL_INFO, "worker %d (pid %d): %s: recycling it once its successor is ready",
            p->number, p->pid, why[r]);
        p->state = MPROC_OLD;
    }
}

/* --cheaper: one more worker when all are busy for a while; an idle extra one retires. */
static void adapt(struct master_state *s, uint64_t now, bool backlog, struct master_plan *o)
{
    int running = 0, busy = 0;

    if (!s->lim.cheaper || any_old(s) || s->chain) return;
    for (int i = 0; i < s->nprocs; i++) {
        struct master_proc *p = &s->procs[i];
        if (p->state != MPROC_RUNNING || p->pid <= 0) continue;
        running++;
        busy += p->seen.busy;
        if (p->seen.requests != p->last_requests || p->seen.busy || !p->idle_since)
            p->idle_since = now;
        p->last_requests = p->seen.requests;
    }
    if (running && (busy == running || backlog)) {
        if (!s->busy_since) s->busy_since = now;
        if (now - s->busy_since >= MASTER_CHEAPER_BUSY_MS && s->target < s->lim.processes) {
            s->target++;
            s->busy_since = 0;
            say(o, LOG_LEVEL_INFO,
                "cheaper: all %d worker(s) busy: starting one more (%d of at "
                "most %d)",
                running, s->target, s->lim.processes);
        }
        return;
    }
    s->busy_since = 0;
    for (int i = s->nprocs - 1; i >= 0 && s->target > s->lim.cheaper; i--) {
        struct master_proc *p = &s->procs[i];
        if (p->state != MPROC_RUNNING || p->pid <= 0 || p->number <= s->lim.cheaper) continue;
        if (now - p->idle_since < s->lim.cheaper_idle_ms) continue;
        s->target--;
        say(o, LOG_LEVEL_INFO, "cheaper: worker %d (pid %d) idle for %llu s: retiring it (%d left)",
            p->number, p->pid, (unsigned long long)(s->lim.cheaper_idle_ms / 1000), s->target);
        signal_row(s, i, SIGTERM, MPROC_STOPPING, o);
        p->idle_since = 0;
        return;
    }
}

/* The current generation gets 'target' rows, running or waiting, numbered 1..processes. */
static void fill(struct master_state *s, uint64_t now)
{
    int count = 0;
    int next = 1;

    memset(s->numbers, 0, (size_t)(s->lim.processes + 1) * sizeof(*s->numbers));
    for (int i = 0; i < s->nprocs; i++) {
        const struct master_proc *p = &s->procs[i];
        if (p->state != MPROC_RUNNING && p->state != MPROC_WAITING) continue;
        count++;
        if (p->number >= 1 && p->number <= s->lim.processes) s->numbers[p->number] = true;
    }
    for (int i = 0; i < s->nprocs && count < s->target; i++) {
        if (s->procs[i].state != MPROC_FREE) continue;
        while (next <= s->lim.processes && s->numbers[next])
            next++;
        if (next > s->lim.processes) break; /* cannot happen: count < target <= processes */
        s->numbers[next] = true;
        s->procs[i] =
            (struct master_proc){.state = MPROC_WAITING, .respawn_ms = now, .number = next};
        count++;
    }
}

static void spawn_due(struct master_state *s, uint64_t now, struct master_plan *o)
{
    for (int i = 0; i < s->nprocs; i++) {
        struct master_proc *p = &s->procs[i];
        if (p->state != MPROC_WAITING || p->respawn_ms > now) continue;
        p->state = MPROC_RUNNING;
        p->pid = 0;
        p->generation = s->generation;
        p->started_ms = now;
        p->ready = false;
        p->harakiri_killed = false;
        p->last_requests = 0;
        p->idle_since = now;
        memset(&p->seen, 0, sizeof(p->seen));
        push(o, MACT_SPAWN, s, i);
    }
}

/* Harakiri, step two: a request still in the app harakiri + grace after it started. */
static void harakiri(struct master_state *s, uint64_t now, struct master_plan *o)
{
    uint64_t limit = s->lim.harakiri_kill_ms;

    for (int i = 0; i < s->nprocs && limit; i++) {
        struct master_proc *p = &s->procs[i];
        uint64_t started = p->seen.oldest_ms;
        if (p->pid <= 0 || p->harakiri_killed || !started || now < started + limit) continue;
        struct master_action *a = push(o, MACT_SIGNAL, s, i);
        a->sig = SIGKILL;
        a->thread = p->seen.oldest_thread;
        a->level = LOG_LEVEL_ERROR;
        p->harakiri_killed = true;
    }
}

static void compute_wait(struct master_state *s, uint64_t now)
{
    bool fast = s->stopping || s->chain || s->checker || s->pending_reload || !s->notified ||
                s->lim.harakiri_kill_ms || s->lim.cheaper || any_old(s);
    uint64_t wait = fast ? MASTER_FAST_TICK_MS : MASTER_TICK_MS;

    for (int i = 0; i < s->nprocs; i++) {
        const struct master_proc *p = &s->procs[i];
        if (p->state == MPROC_WAITING && p->respawn_ms <= now) wait = 0;
        if (p->state == MPROC_WAITING && p->respawn_ms > now && p->respawn_ms - now < wait)
            wait = p->respawn_ms - now;
        if (p->state == MPROC_RUNNING && !p->ready && wait > MASTER_FAST_TICK_MS)
            wait = MASTER_FAST_TICK_MS;
    }
    s->wait_ms = (int)wait;
}

static void maintain(struct master_state *s, uint64_t now, bool backlog, struct master_plan *o)
{
    if (!s->stopping) {
        finish_replacement(s, now, o);
        if (s->pending_reload && !reload_blocker(s)) {
            s->pending_reload = false;
            begin_reload(s, s->pending_why, o);
        }
        chain_step(s, o);
        adapt(s, now, backlog, o);
        recycle(s, o);
        fill(s, now);
        spawn_due(s, now, o);
        if (!s->notified && !any_old(s) && generation_ready(s, now)) {
            snprintf(push(o, MACT_NOTIFY, s, -1)->text, MASTER_TEXT_MAX, "READY=1");
            s->notified = true;
        }
    }
    harakiri(s, now, o);
    stop_progress(s, now, o);
    compute_wait(s, now);
}

void master_decide(struct master_state *s, uint64_t now, const struct master_event *ev,
                   struct master_plan *out)
{
    out->n = 0;
    out->overflow = false;
    if (ev->seen) apply_seen(s, ev->seen);
    switch (ev->kind) {
    case MEV_SPAWNED:
        on_spawned(s, now, ev, out);
        compute_wait(s, now);
        return;
    case MEV_CHECK_STARTED:
        on_check_started(s, ev, out);
        compute_wait(s, now);
        return;
    case MEV_TICK:
        break;
    case MEV_EXIT:
        on_death(s, now, ev, out);
        break;
    case MEV_STOP:
    case MEV_QUIT:
        begin_stop(s, now, ev->kind == MEV_QUIT, ev->why ? ev->why : "stop", out);
        break;
    case MEV_RELOAD:
        want_reload(s, ev->why ? ev->why : "reload", out);
        break;
    case MEV_CHAIN_RELOAD:
        want_chain(s, ev->why ? ev->why : "chain reload", out);
        break;
    }
    maintain(s, now, ev->seen && ev->backlog, out);
}

/* --- set-up ----------------------------------------------------------------------------------- */

int master_state_init(struct master_state *s, const struct master_limits *lim)
{
    memset(s, 0, sizeof(*s));
    s->lim = *lim;
    s->nprocs = MASTER_ROWS_PER_PROCESS * lim->processes;
    s->procs = xcalloc((size_t)s->nprocs, sizeof(*s->procs));
    s->numbers = xcalloc((size_t)lim->processes + 1, sizeof(*s->numbers));
    s->generation = 1;
    s->target = lim->cheaper && lim->cheaper < lim->processes ? lim->cheaper : lim->processes;
    s->wait_ms = 0;
    return 0;
}

void master_state_free(struct master_state *s)
{
    free(s->procs);
    free(s->numbers);
    s->procs = NULL;
    s->numbers = NULL;
}

int master_plan_cap(const struct master_state *s)
{
    return 2 * s->nprocs + MASTER_PLAN_EXTRA;
}

int master_plan_init(struct master_plan *p, const struct master_state *s)
{
    memset(p, 0, sizeof(*p));
    p->cap = master_plan_cap(s);
    p->v = xcalloc((size_t)p->cap, sizeof(*p->v));
    return 0;
}

void master_plan_free(struct master_plan *p)
{
    free(p->v);
    p->v = NULL;
    p->cap = 0;
}

bool master_adopt(struct master_state *s, int pid)
{
    /* rows from 'processes' on, so the new generation's first rows stay free for it */
    for (int i = s->lim.processes; i < s->nprocs; i++) {
        struct master_proc *p = &s->procs[i];
        if (p->state != MPROC_FREE) continue;
        *p = (struct master_proc){
            .pid = pid, .state = MPROC_OLD, .number = i - s->lim.processes + 1, .ready = true};
        s->reload = true;
        s->reload_generation = s->generation;
        return true;
    }
    return false;
}
