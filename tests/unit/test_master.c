/*
 * test_master.c - unit tests for the master's decisions (src/master/decide.c).
 *
 * master_decide() is pure, so each test plays the master's part itself: it feeds events
 * (ticks with a hand-made scoreboard, deaths, signals), "forks" every MACT_SPAWN by handing
 * out a made-up pid (MEV_SPAWNED), and checks the actions and the table. Time is a number the
 * test moves forward; nothing sleeps.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "master/decide.h"

enum { EXIT_APP_LOAD = 3, MAX_ACTIONS = 8192 };

/* The test's master: the state, the scoreboard it pretends to read, and the last plan. */
struct fx {
    struct master_state s;
    struct master_plan plan;                /* what master_decide() returned */
    struct master_plan reply;               /* MEV_SPAWNED answers */
    struct master_seen *seen;               /* [s.nprocs] */
    struct master_action acts[MAX_ACTIONS]; /* the last decision's actions, kept */
    int nacts;
    uint64_t now;
    int next_pid;
};

static struct master_limits limits(int processes, bool lazy)
{
    return (struct master_limits){.processes = processes,
                                  .graceful_ms = 30000,
                                  .lazy_apps = lazy,
                                  .exit_app_load = EXIT_APP_LOAD};
}

static struct fx *fx_new(struct master_limits lim)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    assert_int_equal(master_state_init(&f->s, &lim), 0);
    assert_int_equal(master_plan_init(&f->plan, &f->s), 0);
    assert_int_equal(master_plan_init(&f->reply, &f->s), 0);
    f->seen = calloc((size_t)f->s.nprocs, sizeof(*f->seen));
    f->now = 1000000;
    f->next_pid = 100;
    return f;
}

static void fx_free(struct fx *f)
{
    master_plan_free(&f->plan);
    master_plan_free(&f->reply);
    master_state_free(&f->s);
    free(f->seen);
    free(f);
}

/* One event, with the scoreboard as f->seen says; every spawn "forks" at once. */
static void event(struct fx *f, struct master_event ev)
{
    ev.seen = f->seen;
    master_decide(&f->s, f->now, &ev, &f->plan);
    assert_false(f->plan.overflow);
    assert_true(f->plan.n <= MAX_ACTIONS);
    memcpy(f->acts, f->plan.v, (size_t)f->plan.n * sizeof(*f->acts));
    f->nacts = f->plan.n;
    for (int k = 0; k < f->nacts; k++) {
        if (f->acts[k].kind != MACT_SPAWN) continue;
        memset(&f->seen[f->acts[k].slot], 0, sizeof(f->seen[0]));
        master_decide(&f->s, f->now,
                      &(struct master_event){
                          .kind = MEV_SPAWNED, .slot = f->acts[k].slot, .pid = f->next_pid++},
                      &f->reply);
        assert_int_equal(f->reply.n, 0);
    }
}

static void tick(struct fx *f)
{
    event(f, (struct master_event){.kind = MEV_TICK});
}

static void sighup(struct fx *f)
{
    event(f, (struct master_event){.kind = MEV_RELOAD, .why = "SIGHUP"});
}

static void sigusr2(struct fx *f)
{
    event(f, (struct master_event){.kind = MEV_CHAIN_RELOAD, .why = "SIGUSR2"});
}

/* Row i's process died: killed by 'sig', or exited with 'code' when sig is 0. */
static void dies(struct fx *f, int i, int sig, int code, bool was_ready, uint64_t served)
{
    int status = sig ? sig : (code & 0xff) << 8;
    int pid = f->s.procs[i].pid;
    assert_true(pid > 0);
    event(
        f,
        (struct master_event){
            .kind = MEV_EXIT, .pid = pid, .status = status, .ready = was_ready, .served = served});
}

static int count_acts(const struct fx *f, enum master_act kind)
{
    int n = 0;
    for (int k = 0; k < f->nacts; k++)
        n += f->acts[k].kind == kind;
    return n;
}

static int count_signals(const struct fx *f, int sig)
{
    int n = 0;
    for (int k = 0; k < f->nacts; k++)
        n += f->acts[k].kind == MACT_SIGNAL && f->acts[k].sig == sig;
    return n;
}

static bool logged(const struct fx *f, const char *text)
{
    for (int k = 0; k < f->nacts; k++)
        if (f->acts[k].kind == MACT_LOG && strstr(f->acts[k].text, text)) return true;
    return false;
}

static int count_state(const struct fx *f, enum master_proc_state st)
{
    int n = 0;
    for (int i = 0; i < f->s.nprocs; i++)
        n += f->s.procs[i].state == st;
    return n;
}

/* Rows in state 'st', in order. */
static int rows(const struct fx *f, enum master_proc_state st, int *out, int max)
{
    int n = 0;
    for (int i = 0; i < f->s.nprocs && n < max; i++)
        if (f->s.procs[i].state == st) out[n++] = i;
    return n;
}

/* Every live worker's scoreboard says: accepting. */
static void all_ready(struct fx *f)
{
    for (int i = 0; i < f->s.nprocs; i++)
        if (f->s.procs[i].pid > 0) f->seen[i].ready = true;
}

/* The workers report ready and time passes until they count as ready; one tick. */
static void settle(struct fx *f)
{
    all_ready(f);
    f->now += MASTER_SETTLE_MS;
    tick(f);
}

static struct fx *started(int processes, bool lazy)
{
    struct fx *f = fx_new(limits(processes, lazy));
    tick(f);
    assert_int_equal(count_acts(f, MACT_SPAWN), processes);
    settle(f);
    return f;
}

/* SIGTERM sent to the OLD/STOPPING rows reaps them: they exit 0. */
static void reap_stopping(struct fx *f)
{
    for (int i = 0; i < f->s.nprocs; i++)
        if (f->s.procs[i].state == MPROC_STOPPING && f->s.procs[i].pid > 0)
            dies(f, i, 0, 0, true, 10);
}

/* ---------------------------------------------------------------- spawning */

static void test_spawn_then_ready_notifies_systemd(void **state)
{
    struct fx *f = fx_new(limits(2, false));
    (void)state;

    tick(f);
    assert_int_equal(count_acts(f, MACT_SPAWN), 2);
    assert_int_equal(f->acts[0].number + f->acts[1].number, 3); /* workers 1 and 2 */
    assert_int_equal(count_state(f, MPROC_RUNNING), 2);
    assert_int_equal(count_acts(f, MACT_NOTIFY), 0);
    assert_true(f->s.wait_ms <= MASTER_FAST_TICK_MS);

    all_ready(f);
    f->now += MASTER_SETTLE_MS - 1;
    tick(f);
    assert_int_equal(count_acts(f, MACT_NOTIFY), 0); /* not settled yet */
    f->now += 1;
    tick(f);
    assert_int_equal(count_acts(f, MACT_NOTIFY), 1);
    assert_string_equal(f->acts[0].text, "READY=1");
    assert_true(f->s.ever_ready);
    tick(f);
    assert_int_equal(f->nacts, 0); /* nothing to do: nothing done */
    assert_int_equal(f->s.wait_ms, MASTER_TICK_MS);
    fx_free(f);
}

/* ---------------------------------------------------------------- deaths and back-off */

static void test_death_before_ready_backs_off(void **state)
{
    struct fx *f = fx_new(limits(1, false));
    uint64_t expect = MASTER_BACKOFF_FIRST_MS;
    (void)state;

    tick(f);
    for (int round = 0; round < 10; round++) {
        dies(f, 0, SIGSEGV, 0, false, 0);
        assert_int_equal(count_acts(f, MACT_SPAWN), 0);
        assert_true(logged(f, "died before it was ready: respawning in"));
        assert_int_equal(f->s.procs[0].backoff_ms, expect);
        assert_true(f->s.wait_ms > 0 && f->s.wait_ms <= (int)expect);
        f->now += expect - 1;
        tick(f);
        assert_int_equal(count_acts(f, MACT_SPAWN), 0);
        f->now += 1;
        tick(f);
        assert_int_equal(count_acts(f, MACT_SPAWN), 1);
        expect = expect * 2 > MASTER_BACKOFF_MAX_MS ? MASTER_BACKOFF_MAX_MS : expect * 2;
    }
    assert_int_equal(f->s.procs[0].backoff_ms, MASTER_BACKOFF_MAX_MS);
    fx_free(f);
}

/* A worker that served (or was ready) is replaced in the same decision, whatever its age. */
static void test_death_after_serving_respawns_at_once(void **state)
{
    struct fx *f = started(2, false);
    (void)state;

    /* ready, crashed 1 ms after it started serving: no back-off */
    dies(f, 0, SIGSEGV, 0, true, 3);
    assert_int_equal(count_acts(f, MACT_SPAWN), 1);
    assert_false(logged(f, "respawning in"));
    assert_int_equal(f->s.procs[0].backoff_ms, 0);

    /* served a request before the master ever saw its ready flag */
    dies(f, 0, SIGABRT, 0, false, 1);
    assert_int_equal(count_acts(f, MACT_SPAWN), 1);

    /* ready flag seen by an earlier tick, then killed: at once too */
    settle(f);
    dies(f, 0, SIGKILL, 0, false, 0);
    assert_int_equal(count_acts(f, MACT_SPAWN), 1);

    /* a start-up failure backs off; once a worker of that row serves, the back-off is gone */
    dies(f, 0, SIGSEGV, 0, false, 0);
    assert_int_equal(f->s.procs[0].backoff_ms, MASTER_BACKOFF_FIRST_MS);
    f->now += MASTER_BACKOFF_FIRST_MS;
    tick(f);
    assert_int_equal(count_acts(f, MACT_SPAWN), 1);
    dies(f, 0, SIGSEGV, 0, true, 5);
    assert_int_equal(count_acts(f, MACT_SPAWN), 1);
    assert_int_equal(f->s.procs[0].backoff_ms, 0);
    fx_free(f);
}

/* A crash storm: workers die after serving, again and again; there is always a replacement. */
static void test_crash_storm_never_leaves_zero_workers(void **state)
{
    struct fx *f = started(2, false);
    (void)state;

    for (int k = 0; k < 500; k++) {
        int i = k % 2;
        f->now += 7;
        f->seen[i].requests = 10;
        dies(f, i, SIGSEGV, 0, true, 10);
        assert_int_equal(count_acts(f, MACT_SPAWN), 1);
        assert_int_equal(count_state(f, MPROC_RUNNING), 2);
        assert_int_equal(count_state(f, MPROC_WAITING), 0);
        all_ready(f);
    }
    assert_false(f->s.stopping);
    fx_free(f);
}

/* Status 3 before any worker was ever ready: the app is broken, the master stops (exit 1). */
static void test_app_that_never_loads_stops_the_master(void **state)
{
    struct fx *f = fx_new(limits(2, true));
    (void)state;

    tick(f);
    dies(f, 0, 0, EXIT_APP_LOAD, false, 0);
    assert_true(f->s.app_broken);
    assert_true(f->s.stopping);
    assert_int_equal(count_signals(f, SIGTERM), 1); /* the other one */
    assert_int_equal(count_acts(f, MACT_SPAWN), 0);
    assert_int_equal(count_acts(f, MACT_EXIT), 0);
    dies(f, 1, 0, EXIT_APP_LOAD, false, 0);
    assert_int_equal(count_acts(f, MACT_EXIT), 1);
    assert_int_equal(f->acts[f->nacts - 1].status, 1);
    assert_true(f->s.done);
    fx_free(f);
}

/* Status 3 after the app once loaded (a recycle's successor, a respawn): back off, go on. */
static void test_app_load_failure_later_never_stops_the_server(void **state)
{
    struct fx *f = started(2, true);
    int old[1];
    (void)state;

    f->seen[0].recycle = 1; /* max-requests */
    tick(f);
    assert_int_equal(rows(f, MPROC_OLD, old, 1), 1);
    int succ = -1;
    for (int i = 0; i < f->s.nprocs; i++)
        if (f->s.procs[i].state == MPROC_RUNNING && f->s.procs[i].pid > 0 && !f->s.procs[i].ready)
            succ = i;
    assert_true(succ >= 0);
    dies(f, succ, 0, EXIT_APP_LOAD, false, 0); /* the code on disk is broken now */
    assert_false(f->s.stopping);
    assert_true(logged(f, "could not load the app"));
    assert_int_equal(f->s.procs[succ].state, MPROC_WAITING);
    assert_int_equal(count_signals(f, SIGTERM), 0); /* the old one keeps serving */
    assert_int_equal(f->s.procs[old[0]].state, MPROC_OLD);

    /* a crashed worker's replacement fails to import too: it backs off, the other serves */
    dies(f, 1, SIGSEGV, 0, true, 9);
    assert_int_equal(count_acts(f, MACT_SPAWN), 1);
    for (int i = 0; i < f->s.nprocs; i++)
        if (f->s.procs[i].state == MPROC_RUNNING && f->s.procs[i].pid > 0 && !f->s.procs[i].ready)
            succ = i;
    dies(f, succ, 0, EXIT_APP_LOAD, false, 0);
    assert_false(f->s.stopping);
    assert_int_equal(f->s.procs[succ].state, MPROC_WAITING);
    fx_free(f);
}

/* ---------------------------------------------------------------- recycling */

static void test_recycle_successor_first(void **state)
{
    struct fx *f = started(2, false);
    int pid0 = f->s.procs[0].pid;
    (void)state;

    f->seen[0].recycle = 1;
    tick(f);
    assert_true(logged(f, "max-requests reached: recycling it once its successor is ready"));
    assert_int_equal(f->s.procs[0].state, MPROC_OLD);
    assert_int_equal(count_acts(f, MACT_SPAWN), 1);
    assert_int_equal(count_signals(f, SIGTERM), 0); /* it serves until the successor is up */

    settle(f);
    assert_int_equal(count_signals(f, SIGTERM), 1);
    for (int k = 0; k < f->nacts; k++)
        if (f->acts[k].kind == MACT_SIGNAL) assert_int_equal(f->acts[k].pid, pid0);
    assert_int_equal(f->s.procs[0].state, MPROC_STOPPING);
    assert_int_equal(count_state(f, MPROC_RUNNING), 2);
    fx_free(f);
}

/* A worker is marked only when a row is free for its successor; until then it serves. */
static void test_recycle_waits_for_a_free_row(void **state)
{
    struct fx *f = started(1, false); /* 3 rows */
    (void)state;

    for (int k = 0; k < 4; k++) { /* each new worker asks at once */
        for (int i = 0; i < f->s.nprocs; i++)
            if (f->s.procs[i].state == MPROC_RUNNING) f->seen[i].recycle = 1;
        tick(f);
    }
    assert_int_equal(count_state(f, MPROC_OLD), 2);
    assert_int_equal(count_state(f, MPROC_RUNNING), 1);
    assert_int_equal(count_state(f, MPROC_FREE), 0);
    settle(f);
    assert_int_equal(count_signals(f, SIGTERM), 2);
    reap_stopping(f); /* now it has room: marked, and its successor spawned */
    assert_int_equal(count_state(f, MPROC_OLD), 1);
    assert_int_equal(count_state(f, MPROC_RUNNING), 1);
    fx_free(f);
}

/* ---------------------------------------------------------------- reloads */

static void test_lazy_reload_new_generation_then_old_stop(void **state)
{
    struct fx *f = started(2, true);
    (void)state;

    sighup(f);
    assert_true(logged(f, "SIGHUP: reloading: new workers first"));
    assert_int_equal(count_state(f, MPROC_OLD), 2);
    assert_int_equal(count_acts(f, MACT_SPAWN), 2);
    assert_int_equal(f->s.generation, 2);
    settle(f);
    assert_int_equal(count_signals(f, SIGTERM), 2);
    assert_true(logged(f, "the new workers are serving; the old ones finish and exit"));
    assert_false(f->s.reload);
    fx_free(f);
}

/* The bug: a SIGHUP during a recycle was dropped. It is queued and carried out. */
static void test_reload_during_recycle_is_queued_not_lost(void **state)
{
    struct fx *f = started(2, true);
    (void)state;

    f->seen[0].recycle = 1;
    tick(f);
    assert_int_equal(count_state(f, MPROC_OLD), 1);
    sighup(f);
    assert_true(logged(f, "SIGHUP: reload queued: a recycle is in progress"));
    assert_true(f->s.pending_reload);
    assert_int_equal(f->s.generation, 1);
    sighup(f);
    assert_true(logged(f, "a reload is already queued"));

    /* the recycle completes; the reload starts in the same decision, before anything else */
    settle(f);
    assert_int_equal(count_signals(f, SIGTERM), 1); /* the recycled worker */
    assert_true(logged(f, "SIGHUP: reloading: new workers first"));
    assert_false(f->s.pending_reload);
    assert_int_equal(f->s.generation, 2);
    assert_int_equal(count_state(f, MPROC_OLD), 2);

    /* even when every new worker asks to be recycled at once, the reload completes */
    reap_stopping(f);
    for (int i = 0; i < f->s.nprocs; i++)
        if (f->s.procs[i].state == MPROC_RUNNING) f->seen[i].recycle = 1;
    tick(f);
    settle(f);
    for (int i = 0; i < f->s.nprocs; i++)
        f->seen[i].recycle = 0;
    settle(f);
    assert_int_equal(count_state(f, MPROC_OLD), 0);
    assert_false(f->s.reload);
    for (int i = 0; i < f->s.nprocs; i++)
        if (f->s.procs[i].state == MPROC_RUNNING) assert_int_equal(f->s.procs[i].generation, 2);
    fx_free(f);
}

/* Recycling goes on during a reload: a new worker that asks gets its successor too. */
static void test_recycle_during_reload(void **state)
{
    struct fx *f = started(2, true);
    (void)state;

    sighup(f);
    all_ready(f);
    tick(f);
    int asks = -1;
    for (int i = 0; i < f->s.nprocs; i++)
        if (f->s.procs[i].state == MPROC_RUNNING) asks = i;
    f->seen[asks].recycle = 1;
    tick(f);
    assert_int_equal(f->s.procs[asks].state, MPROC_OLD);
    assert_int_equal(count_acts(f, MACT_SPAWN), 1);
    assert_int_equal(count_state(f, MPROC_OLD), 3);
    assert_true(f->s.reload);
    settle(f);
    assert_int_equal(count_signals(f, SIGTERM), 3); /* both old ones and the recycled one */
    assert_false(f->s.reload);
    assert_int_equal(count_state(f, MPROC_RUNNING), 2);
    fx_free(f);
}

static void test_reload_during_reload_runs_after_it(void **state)
{
    struct fx *f = started(2, true);
    (void)state;

    sighup(f);
    event(f, (struct master_event){.kind = MEV_RELOAD, .why = "/srv/app.py touched"});
    assert_true(logged(f, "/srv/app.py touched: reload queued: a reload is in progress"));
    settle(f);
    assert_true(logged(f, "the new workers are serving"));
    assert_true(logged(f, "/srv/app.py touched: reloading: new workers first"));
    assert_int_equal(f->s.generation, 3);
    settle(f);
    assert_int_equal(count_signals(f, SIGTERM), 2);
    assert_int_equal(f->s.generation, 3);
    assert_false(f->s.pending_reload);
    fx_free(f);
}

/* A preloaded app: import check, then re-exec; a reload during the check is covered by it. */
static void test_preload_reload_check_then_reexec(void **state)
{
    struct fx *f = started(2, false);
    (void)state;

    sighup(f);
    assert_int_equal(count_acts(f, MACT_CHECK_APP), 1);
    master_decide(&f->s, f->now, &(struct master_event){.kind = MEV_CHECK_STARTED, .pid = 77},
                  &f->reply);
    sighup(f);
    assert_true(logged(f, "reload queued: an import check is in progress"));
    event(f, (struct master_event){.kind = MEV_EXIT, .pid = 77, .status = 0});
    assert_int_equal(count_acts(f, MACT_REEXEC), 1);
    assert_false(f->s.pending_reload); /* the new image imports after both signals */

    /* a failing check: logged; a reload queued meanwhile then gets its own check */
    sighup(f);
    master_decide(&f->s, f->now, &(struct master_event){.kind = MEV_CHECK_STARTED, .pid = 78},
                  &f->reply);
    sighup(f);
    event(f, (struct master_event){.kind = MEV_EXIT, .pid = 78, .status = 1 << 8});
    assert_true(logged(f, "reload aborted: the new code does not load"));
    assert_int_equal(count_acts(f, MACT_REEXEC), 0);
    assert_int_equal(count_acts(f, MACT_CHECK_APP), 1);
    fx_free(f);
}

/* After a re-exec: the adopted workers stop once this image's workers are ready. */
static void test_adopted_workers_stop_once_new_ones_ready(void **state)
{
    struct fx *f = fx_new(limits(2, false));
    (void)state;

    assert_true(master_adopt(&f->s, 501));
    assert_true(master_adopt(&f->s, 502));
    tick(f);
    assert_int_equal(count_acts(f, MACT_SPAWN), 2);
    sighup(f);
    assert_true(logged(f, "reload queued: a reload is in progress"));
    settle(f);
    assert_int_equal(count_signals(f, SIGTERM), 2);
    assert_true(logged(f, "the new workers are serving"));
    assert_int_equal(count_acts(f, MACT_CHECK_APP), 1); /* the queued one */
    assert_int_equal(count_acts(f, MACT_NOTIFY), 1);    /* READY=1 */
    tick(f);
    assert_int_equal(count_acts(f, MACT_NOTIFY), 0);
    fx_free(f);
}

static void test_lazy_reload_with_broken_code_is_aborted(void **state)
{
    struct fx *f = started(2, true);
    int old_pids[2] = {f->s.procs[0].pid, f->s.procs[1].pid};
    (void)state;

    sighup(f);
    int fresh = -1;
    for (int i = 0; i < f->s.nprocs; i++)
        if (f->s.procs[i].state == MPROC_RUNNING) fresh = i;
    dies(f, fresh, 0, EXIT_APP_LOAD, false, 0);
    assert_true(logged(f, "reload aborted: the new code does not load"));
    assert_false(f->s.stopping);
    assert_false(f->s.reload);
    assert_int_equal(count_signals(f, SIGKILL), 1); /* the other new one, not ready */
    assert_int_equal(f->s.procs[0].state, MPROC_RUNNING);
    assert_int_equal(f->s.procs[1].state, MPROC_RUNNING);
    assert_int_equal(f->s.procs[0].pid, old_pids[0]);
    assert_int_equal(f->s.procs[1].pid, old_pids[1]);
    tick(f);
    assert_int_equal(count_acts(f, MACT_SPAWN), 0);
    fx_free(f);
}

/* ---------------------------------------------------------------- chain reload */

static void test_chain_reload_one_at_a_time(void **state)
{
    struct fx *f = started(3, true);
    int replaced = 0;
    (void)state;

    sigusr2(f);
    assert_true(logged(f, "SIGUSR2: chain reload: one worker at a time"));
    for (int step = 0; step < 3; step++) {
        /* one worker replaced, its successor spawned; the previous one told to stop */
        assert_int_equal(count_state(f, MPROC_OLD), 1);
        assert_true(logged(f, "chain reload: replacing worker"));
        assert_int_equal(count_acts(f, MACT_SPAWN), 1);
        assert_int_equal(count_signals(f, SIGTERM), step ? 1 : 0);
        replaced++;
        settle(f);
    }
    assert_int_equal(replaced, 3);
    assert_int_equal(count_signals(f, SIGTERM), 1);
    assert_true(logged(f, "chain reload done"));
    assert_false(f->s.chain);
    for (int i = 0; i < f->s.nprocs; i++)
        if (f->s.procs[i].state == MPROC_RUNNING)
            assert_true(f->s.procs[i].generation >= f->s.chain_generation);
    fx_free(f);
}

/* A second chain reload restarts the chain; one during a recycle or a reload waits for it. */
static void test_chain_reload_during_chain_recycle_and_reload(void **state)
{
    struct fx *f = started(2, true);
    (void)state;

    sigusr2(f);
    settle(f);
    reap_stopping(f);
    sigusr2(f); /* the code changed again: the worker replaced already is replaced again */
    assert_true(logged(f, "restarted"));
    for (int k = 0; k < 6 && f->s.chain; k++) {
        settle(f);
        reap_stopping(f);
    }
    assert_false(f->s.chain);
    for (int i = 0; i < f->s.nprocs; i++)
        if (f->s.procs[i].state == MPROC_RUNNING)
            assert_int_equal(f->s.procs[i].generation, f->s.chain_generation);

    /* during a recycle: the chain starts, its first step waits for the recycle */
    f->seen[0].recycle = 1;
    f->seen[1].recycle = 1;
    tick(f);
    for (int i = 0; i < f->s.nprocs; i++)
        f->seen[i].recycle = 0;
    sigusr2(f);
    assert_true(logged(f, "once the replacement in progress is done"));
    assert_false(logged(f, "replacing worker"));
    settle(f);
    assert_true(logged(f, "chain reload: replacing worker"));

    /* a full reload during a chain step is queued, then replaces everything and ends it */
    sighup(f);
    assert_true(logged(f, "reload queued: a chain reload step is in progress"));
    settle(f);
    assert_true(logged(f, "(this replaces the chain reload in progress)"));
    assert_false(f->s.chain);
    assert_int_equal(count_state(f, MPROC_OLD), 2);
    fx_free(f);
}

/* A chain reload without --lazy-apps is a whole reload. */
static void test_chain_reload_preloaded_is_whole_reload(void **state)
{
    struct fx *f = started(2, false);
    (void)state;

    sigusr2(f);
    assert_true(logged(f, "chain reload needs --lazy-apps"));
    assert_int_equal(count_acts(f, MACT_CHECK_APP), 1);
    fx_free(f);
}

/* ---------------------------------------------------------------- cheaper */

static void test_cheaper_up_and_down(void **state)
{
    struct master_limits lim = limits(3, false);
    struct fx *f;
    (void)state;

    lim.cheaper = 1;
    lim.cheaper_idle_ms = 2000;
    f = fx_new(lim);
    tick(f);
    assert_int_equal(count_acts(f, MACT_SPAWN), 1);
    settle(f);

    f->seen[0].busy = true;
    tick(f);
    f->now += MASTER_CHEAPER_BUSY_MS - 1;
    tick(f);
    assert_int_equal(count_acts(f, MACT_SPAWN), 0);
    f->now += 1;
    tick(f);
    assert_true(logged(f, "cheaper: all 1 worker(s) busy: starting one more (2 of at most 3)"));
    assert_int_equal(count_acts(f, MACT_SPAWN), 1);
    settle(f);

    /* idle again: the extra worker retires after --cheaper-idle, the first one stays */
    f->seen[0].busy = false;
    tick(f);
    f->now += 2000;
    tick(f);
    assert_true(logged(f, "cheaper: worker 2"));
    assert_true(logged(f, "idle for 2 s: retiring it (1 left)"));
    assert_int_equal(count_signals(f, SIGTERM), 1);
    assert_int_equal(f->s.target, 1);
    f->now += 5000;
    tick(f);
    assert_int_equal(count_signals(f, SIGTERM), 0);
    fx_free(f);
}

/* ---------------------------------------------------------------- many workers */

static void check_numbers(const struct fx *f, int processes)
{
    bool *seen = calloc((size_t)processes + 1, sizeof(*seen));
    int n = 0;
    for (int i = 0; i < f->s.nprocs; i++) {
        const struct master_proc *p = &f->s.procs[i];
        if (p->state != MPROC_RUNNING) continue;
        assert_true(p->number >= 1 && p->number <= processes);
        assert_false(seen[p->number]);
        seen[p->number] = true;
        n++;
    }
    assert_int_equal(n, processes);
    free(seen);
}

static void test_seventy_and_1024_workers_have_distinct_numbers(void **state)
{
    int sizes[] = {70, MASTER_MAX_PROCESSES};
    (void)state;

    for (int k = 0; k < 2; k++) {
        int n = sizes[k];
        struct fx *f = started(n, true);
        check_numbers(f, n);
        /* worker 65's replacement is worker 65 again */
        int row = -1;
        for (int i = 0; i < f->s.nprocs; i++)
            if (f->s.procs[i].state == MPROC_RUNNING && f->s.procs[i].number == 65) row = i;
        assert_true(row >= 0);
        dies(f, row, SIGKILL, 0, true, 1);
        assert_int_equal(count_acts(f, MACT_SPAWN), 1);
        assert_int_equal(f->acts[0].number, 65);
        check_numbers(f, n);
        /* a whole reload: a second generation, numbered 1..n again, and the plan holds */
        sighup(f);
        assert_int_equal(count_acts(f, MACT_SPAWN), n);
        settle(f);
        assert_int_equal(count_signals(f, SIGTERM), n);
        check_numbers(f, n);
        event(f, (struct master_event){.kind = MEV_QUIT, .why = "SIGQUIT"});
        assert_int_equal(count_signals(f, SIGKILL), 2 * n);
        fx_free(f);
    }
}

/* ---------------------------------------------------------------- stop, harakiri */

static void test_graceful_stop_and_timeout(void **state)
{
    struct fx *f = started(2, false);
    (void)state;

    event(f, (struct master_event){.kind = MEV_STOP, .why = "SIGTERM/SIGINT"});
    assert_true(logged(f, "SIGTERM/SIGINT: stopping gracefully"));
    assert_int_equal(count_signals(f, SIGTERM), 2);
    assert_int_equal(count_acts(f, MACT_NOTIFY), 1);
    sighup(f); /* ignored while stopping */
    assert_int_equal(f->nacts, 0);
    dies(f, 0, 0, 0, true, 1);
    assert_int_equal(count_acts(f, MACT_SPAWN), 0);
    f->now += 30000;
    tick(f);
    assert_true(logged(f, "graceful timeout (30 s): killing 1 worker(s)"));
    assert_int_equal(count_signals(f, SIGKILL), 1);
    dies(f, 1, SIGKILL, 0, true, 1);
    assert_int_equal(count_acts(f, MACT_EXIT), 1);
    assert_int_equal(f->acts[f->nacts - 1].status, 0);
    fx_free(f);
}

static void test_harakiri_kills_once(void **state)
{
    struct master_limits lim = limits(1, false);
    struct fx *f;
    (void)state;

    lim.harakiri_kill_ms = 7000;
    f = fx_new(lim);
    tick(f);
    settle(f);
    f->seen[0].oldest_ms = f->now;
    f->seen[0].oldest_thread = 2;
    f->now += 6999;
    tick(f);
    assert_int_equal(count_signals(f, SIGKILL), 0);
    f->now += 1;
    tick(f);
    assert_int_equal(count_signals(f, SIGKILL), 1);
    assert_int_equal(f->acts[0].thread, 2);
    tick(f);
    assert_int_equal(count_signals(f, SIGKILL), 0); /* once */
    dies(f, 0, SIGKILL, 0, true, 1);
    assert_int_equal(count_acts(f, MACT_SPAWN), 1);
    fx_free(f);
}

/* fork() failed: logged, and tried again a while later. */
static void test_fork_failure_retries(void **state)
{
    struct fx *f = fx_new(limits(1, false));
    struct master_plan *r = &f->reply;
    (void)state;

    master_decide(&f->s, f->now, &(struct master_event){.kind = MEV_TICK}, &f->plan);
    assert_int_equal(f->plan.n, 1);
    assert_int_equal(f->plan.v[0].kind, MACT_SPAWN);
    master_decide(
        &f->s, f->now,
        &(struct master_event){.kind = MEV_SPAWNED, .slot = f->plan.v[0].slot, .pid = -11}, r);
    assert_int_equal(r->n, 1);
    assert_non_null(strstr(r->v[0].text, "cannot fork worker 1"));
    assert_int_equal(f->s.procs[0].state, MPROC_WAITING);
    f->now += MASTER_FORK_RETRY_MS - 1;
    tick(f);
    assert_int_equal(count_acts(f, MACT_SPAWN), 0);
    f->now += 1;
    tick(f);
    assert_int_equal(count_acts(f, MACT_SPAWN), 1);
    fx_free(f);
}

/* A re-executed master adopts what fits; the rest is the caller's to stop. */
static void test_adopt_only_what_fits(void **state)
{
    struct fx *f = fx_new(limits(2, false)); /* 6 rows, 4 for old workers */
    (void)state;

    for (int k = 0; k < 4; k++)
        assert_true(master_adopt(&f->s, 900 + k));
    assert_false(master_adopt(&f->s, 999));
    assert_int_equal(master_slot_of(&f->s, 902), 4);
    assert_int_equal(master_slot_of(&f->s, 999), -1);
    tick(f); /* the new generation still gets its rows */
    assert_int_equal(count_acts(f, MACT_SPAWN), 2);
    fx_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spawn_then_ready_notifies_systemd),
        cmocka_unit_test(test_death_before_ready_backs_off),
        cmocka_unit_test(test_death_after_serving_respawns_at_once),
        cmocka_unit_test(test_crash_storm_never_leaves_zero_workers),
        cmocka_unit_test(test_app_that_never_loads_stops_the_master),
        cmocka_unit_test(test_app_load_failure_later_never_stops_the_server),
        cmocka_unit_test(test_recycle_successor_first),
        cmocka_unit_test(test_recycle_waits_for_a_free_row),
        cmocka_unit_test(test_lazy_reload_new_generation_then_old_stop),
        cmocka_unit_test(test_reload_during_recycle_is_queued_not_lost),
        cmocka_unit_test(test_recycle_during_reload),
        cmocka_unit_test(test_reload_during_reload_runs_after_it),
        cmocka_unit_test(test_preload_reload_check_then_reexec),
        cmocka_unit_test(test_adopted_workers_stop_once_new_ones_ready),
        cmocka_unit_test(test_lazy_reload_with_broken_code_is_aborted),
        cmocka_unit_test(test_chain_reload_one_at_a_time),
        cmocka_unit_test(test_chain_reload_during_chain_recycle_and_reload),
        cmocka_unit_test(test_chain_reload_preloaded_is_whole_reload),
        cmocka_unit_test(test_cheaper_up_and_down),
        cmocka_unit_test(test_seventy_and_1024_workers_have_distinct_numbers),
        cmocka_unit_test(test_graceful_stop_and_timeout),
        cmocka_unit_test(test_harakiri_kills_once),
        cmocka_unit_test(test_fork_failure_retries),
        cmocka_unit_test(test_adopt_only_what_fits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
