/*
 * decide.h - the master's decisions, as one pure function.
 *
 * struct master_state is everything the master knows about its workers: one process table
 * (procs[], 3 x --processes rows: the current generation, the previous one during a reload,
 * and successors of recycled workers beside them; the row index is also the worker's
 * scoreboard entry), the generation counter, the reload/chain/stop state and the reloads
 * still to do. master_decide() takes that state, the time and one event (a signal, a reaped
 * child, a tick with what the scoreboard shows), updates the state and returns what to do: a
 * list of actions (spawn row i, send signal S to row i, fork the import check, re-execute,
 * tell systemd, log a line, exit). It makes no system call, reads no global and allocates
 * nothing, so every rule below is unit-tested (tests/unit/test_master.c); master.c performs
 * the actions and reports back what the kernel said (the pid a fork gave, a child's status).
 *
 * A row's life:
 *
 *   FREE --(a number is missing)--> WAITING --(respawn_ms reached: MACT_SPAWN)--> RUNNING
 *    ^                                 ^                                            |  |
 *    |                                 +--- died: at once if it had been ready -----+  |
 *    |                                      (or served), after a back-off if not       |
 *    |                                                                                 |
 *    |                                  recycle asked / reload / chain step            |
 *    |        STOPPING <--(SIGTERM once every RUNNING worker is ready)-- OLD <---------+
 *    |           |              (stop, cheaper retire, aborted reload: from any row)
 *    +--(reaped)-+
 *
 * The rules (docs/supervision.md says them for users):
 * - Back-off only for a worker that died before it became ready (set its scoreboard 'ready'
 *   flag or served a request): 250 ms, doubling up to 16 s, per row. A worker that was ready is
 *   replaced at once. A worker that could not import the app (WORKER_EXIT_APP_LOAD) stops the
 *   server only if no worker of this master image was ever ready and no old worker is left;
 *   during a reload it aborts the reload (the old workers go on), otherwise it backs off.
 * - A replacement (reload, chain step, recycle) completes when every RUNNING worker has been
 *   ready for MASTER_SETTLE_MS: then every OLD worker gets SIGTERM. A reload (SIGHUP, touch)
 *   that arrives while a replacement or an import check is in progress is queued, never
 *   dropped, and starts at the first moment none is, before any new recycle. A chain reload
 *   starts at once (its steps wait for replacements in progress); a second one restarts it.
 * - A worker is marked for recycling only when a free row exists for its successor; until then
 *   it keeps serving.
 */
#ifndef CORRAL_DECIDE_H
#define CORRAL_DECIDE_H

#include <stdbool.h>
#include <stdint.h>

#include "util/log.h"

/* Every constant that ties the table to the config or to time. */
enum {
    MASTER_MAX_PROCESSES = 1024,   /* config.c's limit for --processes and --cheaper */
    MASTER_ROWS_PER_PROCESS = 3,   /* table rows per --processes (see above) */
    MASTER_BACKOFF_FIRST_MS = 250, /* first delay after a death before ready */
    MASTER_BACKOFF_MAX_MS = 16000, /* the back-off doubles up to this */
    MASTER_SETTLE_MS = 200,        /* a worker counts as ready once up this long, accepting */
    MASTER_FORK_RETRY_MS = 1000,   /* fork() failed: try again after this */
    MASTER_TICK_MS = 1000,         /* the loop's wait when nothing is going on */
    MASTER_FAST_TICK_MS = 100,     /* ... while something is (reload, stop, harakiri, cheaper) */
    MASTER_CHEAPER_BUSY_MS = 1000, /* --cheaper: all busy this long: one more worker */
    MASTER_KILL_AGAIN_MS = 60000,  /* after the graceful timeout's SIGKILL, before another */
    MASTER_WHY_MAX = 256,          /* a reload's reason ("SIGHUP", "/path touched") */
    MASTER_TEXT_MAX = 384,         /* one log line of an action */
    MASTER_PLAN_EXTRA = 16,        /* actions per call beyond two per row (see master_plan) */
};

/* From the config, once. */
struct master_limits {
    int processes;             /* --processes */
    int cheaper;               /* --cheaper, 0: off */
    uint64_t cheaper_idle_ms;  /* --cheaper-idle */
    uint64_t harakiri_kill_ms; /* --harakiri + --harakiri-grace; 0: no harakiri */
    uint64_t graceful_ms;      /* --graceful-timeout */
    bool lazy_apps;            /* --lazy-apps: reloads spawn new workers; else check + re-exec */
    int exit_app_load;         /* the worker exit status meaning "the app did not import" */
};

/* One worker as the scoreboard shows it now (master.c fills these before each call). */
struct master_seen {
    bool ready;         /* its 'ready' flag: it accepts connections */
    int recycle;        /* enum sb_recycle: it asks to be replaced (1..3), 0: no */
    bool busy;          /* every thread is inside the app */
    uint64_t requests;  /* requests it completed */
    uint64_t oldest_ms; /* when its longest-running request reached the app; 0: none */
    int oldest_thread;  /* that request's thread index */
};

enum master_proc_state {
    MPROC_FREE,     /* no process */
    MPROC_WAITING,  /* to be spawned at respawn_ms */
    MPROC_RUNNING,  /* serving, current generation */
    MPROC_OLD,      /* serving, but replaced: SIGTERM once every RUNNING worker is ready */
    MPROC_STOPPING, /* sent SIGTERM (or SIGKILL): finishing its requests */
};

struct master_proc {
    int pid; /* 0: no process (yet) */
    enum master_proc_state state;
    int number;           /* 1..processes, for logs and CPU pinning; unique among RUNNING/WAITING */
    int generation;       /* the generation it was spawned in */
    uint64_t started_ms;  /* when it was spawned */
    uint64_t respawn_ms;  /* MPROC_WAITING: spawn at */
    uint64_t backoff_ms;  /* this row's current back-off (0 after a worker that was ready) */
    bool ready;           /* has been seen ready */
    bool harakiri_killed; /* SIGKILL already sent for a stuck request */
    uint64_t last_requests;  /* --cheaper: requests at the last look */
    uint64_t idle_since;     /* --cheaper: since when it served nothing */
    struct master_seen seen; /* the last observation */
};

struct master_state {
    struct master_limits lim;
    struct master_proc *procs; /* [nprocs] (master_state_init) */
    int nprocs;
    bool *numbers;  /* scratch: [processes + 1], worker numbers in use */
    int generation; /* the current generation; every reload and chain reload adds one */
    int target;     /* workers wanted now: --processes, or from --cheaper up to it */

    bool stopping;          /* stop begun: nothing is spawned any more */
    bool app_broken;        /* the app never loaded: stopping, exit status 1 */
    uint64_t stop_deadline; /* stopping: SIGKILL whatever is left at this time */
    bool reload;            /* a full reload's new generation is starting */
    int reload_generation;  /* ... its generation (workers from it on belong to it) */
    bool chain;             /* a chain reload is replacing workers one at a time */
    int chain_generation;   /* ... workers older than this are still to be replaced */
    int checker;            /* the import check's pid; -1 while being forked; 0: none */
    bool ever_ready;        /* some worker of this master image has been ready */
    bool notified;          /* systemd was told READY=1 */
    uint64_t busy_since;    /* --cheaper: since when every worker is busy, or 0 */
    bool pending_reload;    /* a reload arrived while it could not start: do it next */
    char pending_why[MASTER_WHY_MAX];

    int wait_ms; /* out: call again (MEV_TICK) after at most this long */
    bool done;   /* out: MACT_EXIT was returned */
};

enum master_event_kind {
    MEV_TICK,          /* time passed, or a worker asked to be recycled (SIGUSR1) */
    MEV_EXIT,          /* a child was reaped: pid, status, ready, served */
    MEV_STOP,          /* SIGTERM/SIGINT: graceful stop (why) */
    MEV_QUIT,          /* SIGQUIT: immediate stop (why) */
    MEV_RELOAD,        /* SIGHUP or a --touch-reload file (why) */
    MEV_CHAIN_RELOAD,  /* SIGUSR2 or a --touch-chain-reload file (why) */
    MEV_SPAWNED,       /* master.c forked row 'slot' (MACT_SPAWN): pid, or -errno */
    MEV_CHECK_STARTED, /* master.c forked the import check (MACT_CHECK_APP): pid, or -errno */
};

struct master_event {
    enum master_event_kind kind;
    int slot;        /* MEV_SPAWNED */
    int pid;         /* MEV_EXIT, MEV_SPAWNED, MEV_CHECK_STARTED */
    int status;      /* MEV_EXIT: the waitpid() status */
    bool ready;      /* MEV_EXIT: its scoreboard 'ready' flag was set */
    uint64_t served; /* MEV_EXIT: requests it completed */
    const char *why; /* MEV_STOP, MEV_QUIT, MEV_RELOAD, MEV_CHAIN_RELOAD: for the log */
    const struct master_seen *seen; /* [nprocs]: the scoreboard now, or NULL: as last seen */
    bool backlog; /* with 'seen': connections wait in a TCP listener's accept queue */
};

enum master_act {
    MACT_LOG,       /* log 'text' at 'level' */
    MACT_SPAWN,     /* fork worker 'number' into row 'slot'; report MEV_SPAWNED */
    MACT_SIGNAL,    /* send 'sig' to 'pid' (row 'slot'); 'thread' >= 0: a harakiri kill */
    MACT_CHECK_APP, /* fork the import check; report MEV_CHECK_STARTED */
    MACT_REEXEC,    /* re-execute the master, handing over the sockets and live workers */
    MACT_NOTIFY,    /* systemd: send 'text' ("READY=1", "STOPPING=1") */
    MACT_EXIT,      /* the master is done: exit with 'status' after logging 'text' */
};

struct master_action {
    enum master_act kind;
    enum log_level level;
    int slot;   /* the row, or -1 */
    int pid;    /* the row's pid when decided */
    int number; /* the row's worker number */
    int sig;
    int thread; /* MACT_SIGNAL for harakiri: the stuck thread; else -1 */
    int status; /* MACT_EXIT */
    char text[MASTER_TEXT_MAX];
};

/*
 * The actions of one call, in order. 'v' has room for 'cap' (master_plan_cap()): a call emits
 * at most two actions per row (a log line and a signal or spawn) plus MASTER_PLAN_EXTRA;
 * 'overflow' says the bound was wrong (the extra actions were dropped).
 */
struct master_plan {
    struct master_action *v;
    int n;
    int cap;
    bool overflow;
    struct master_action spill; /* where an action beyond 'cap' goes */
};

/* Fills 's' for 'lim' (3 x processes rows, all FREE). Returns 0, or -1 (out of memory). */
int master_state_init(struct master_state *s, const struct master_limits *lim);
void master_state_free(struct master_state *s);
/* A plan for 's': v allocated with master_plan_cap(s) entries. Returns 0 or -1. */
int master_plan_init(struct master_plan *p, const struct master_state *s);
void master_plan_free(struct master_plan *p);
int master_plan_cap(const struct master_state *s);

/*
 * A worker handed over by the previous master image (a preloaded app's reload): it becomes
 * OLD, stopped once this image's workers are ready. Returns false if no row is free.
 */
bool master_adopt(struct master_state *s, int pid);
/* The row of 'pid', or -1. */
int master_slot_of(const struct master_state *s, int pid);

/* The decision: see the top of this file. 'out' is emptied first. */
void master_decide(struct master_state *s, uint64_t now_ms, const struct master_event *ev,
                   struct master_plan *out);

#endif
