/*
 * master.h - the master process: binds, loads the app, forks and supervises the workers.
 *
 * main() calls master_run() once the configuration is loaded; it returns the process exit
 * status. The master keeps N workers alive (a worker that had been ready is replaced at once;
 * only one that died before it became ready is respawned after a back-off), reports every
 * worker death with the requests it was serving (from the scoreboard), stops gracefully on
 * SIGTERM/SIGINT, at once on SIGQUIT, and reloads gracefully on SIGHUP: new workers first,
 * then the old ones finish their requests and exit; a reload that arrives while workers are
 * being replaced is queued, never dropped. With a preloaded app, a reload re-executes the
 * master so the code is imported afresh; the listening sockets and the old workers are handed
 * to the new image (same pid). What to do is decided by master_decide() (master/decide.h);
 * master.c performs it.
 */
#ifndef CORRAL_MASTER_H
#define CORRAL_MASTER_H

#include "config/config.h"

int master_run(const struct config *cfg, char **argv);

#endif
