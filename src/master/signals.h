/*
 * signals.h - the master's signals, taken synchronously.
 *
 * The master blocks the signals it acts on and takes them one at a time with sigtimedwait(),
 * so there are no asynchronous handlers in the master at all: a signal is just the next event
 * of its loop. Master process only.
 */
#ifndef CORRAL_SIGNALS_H
#define CORRAL_SIGNALS_H

/* Blocks SIGCHLD, SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2; ignores SIGPIPE. */
void signals_block(void);
/* Waits up to timeout_ms for one of them; returns its number, or 0 on timeout. */
int signals_wait(int timeout_ms);
/* In a freshly forked child: restores the mask the master had before signals_block(). */
void signals_unblock(void);
/* "SIGSEGV" for SIGSEGV, or "signal N". The buffer is used for unknown signals. */
const char *signals_name(int sig, char *buf, unsigned long len);

#endif
