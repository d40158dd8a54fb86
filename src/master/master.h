/*
 * master.h - the master process: binds, loads the app, forks and supervises the workers.
 *
 * main() calls master_run() once the configuration is loaded; it returns the process exit
 * status. The master keeps N workers alive (respawning the dead with a backoff when they die
 * right after starting), reports every worker death with the requests it was serving (from the
 * scoreboard), stops gracefully on SIGTERM/SIGINT, at once on SIGQUIT, and reloads gracefully
 * on SIGHUP: new workers first, then the old ones finish their requests and exit. With a
 * preloaded app, a reload re-executes the master so the code is imported afresh; the
 * listening sockets and the old workers are handed to the new image (same pid).
 */
#ifndef CORRAL_MASTER_H
#define CORRAL_MASTER_H

#include "config/config.h"

int master_run(const struct config *cfg, char **argv);

#endif
