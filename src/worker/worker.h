/*
 * worker.h - a worker process: one event loop that owns every connection, and the app.
 *
 * The master forks a worker and calls worker_main() in the child; it never returns. The
 * worker accepts on the listeners it inherited (EPOLLEXCLUSIVE: a new connection wakes one idle
 * worker, not all of them), serves until told to stop, and exits with one of the codes below.
 *
 * Signals from the master: SIGTERM = finish what is in flight and exit (graceful);
 * SIGQUIT = exit now. SIGINT (a terminal's Ctrl-C reaches the whole process group) is ignored:
 * the master decides.
 */
#ifndef CORRAL_WORKER_H
#define CORRAL_WORKER_H

#include "config/config.h"
#include "net/sock.h"
#include "stats/scoreboard.h"

enum {
    WORKER_EXIT_OK = 0,
    WORKER_EXIT_ERROR = 1,    /* could not start (logged) */
    WORKER_EXIT_APP_LOAD = 3, /* --lazy-apps: the app failed to import (traceback logged) */
};

struct worker_args {
    const struct config *cfg;
    const struct listener *ls; /* the bound listeners */
    int nls;
    struct scoreboard *sb;
    int id;         /* the worker's process-table and scoreboard index */
    int number;     /* 1..processes, for logs */
    int master_pid; /* the master: a worker whose parent is someone else stops */
};

_Noreturn void worker_main(const struct worker_args *a);

#endif
