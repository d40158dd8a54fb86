/*
 * signals.c - synchronous signal handling for the master (see signals.h).
 */
#include "master/signals.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static sigset_t master_set; /* the signals the master takes */
static sigset_t saved_mask; /* the mask before signals_block() */

static void on_chld(int sig)
{
    (void)sig; /* never runs while blocked; installed so SIGCHLD is never discarded */
}

void signals_block(void)
{
    struct sigaction sa = {.sa_handler = on_chld};

    sigemptyset(&sa.sa_mask);
    sigaction(SIGCHLD, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&master_set);
    sigaddset(&master_set, SIGCHLD);
    sigaddset(&master_set, SIGTERM);
    sigaddset(&master_set, SIGINT);
    sigaddset(&master_set, SIGQUIT);
    sigaddset(&master_set, SIGHUP);
    sigaddset(&master_set, SIGUSR1); /* a worker asks to be recycled */
    sigaddset(&master_set, SIGUSR2); /* chain reload */
    sigprocmask(SIG_BLOCK, &master_set, &saved_mask);
    /* after a re-exec the mask came blocked from the previous image: children get it without */
    for (int sig = 1; sig < NSIG; sig++)
        if (sigismember(&master_set, sig)) sigdelset(&saved_mask, sig);
}

int signals_wait(int timeout_ms)
{
    struct timespec ts = {.tv_sec = timeout_ms / 1000, .tv_nsec = (timeout_ms % 1000) * 1000000L};
    siginfo_t info;
    int sig = sigtimedwait(&master_set, &info, &ts);
    return sig < 0 ? 0 : sig;
}

void signals_unblock(void)
{
    sigprocmask(SIG_SETMASK, &saved_mask, NULL);
}

const char *signals_name(int sig, char *buf, unsigned long len)
{
    const char *abbrev = sigabbrev_np(sig);
    if (abbrev)
        snprintf(buf, len, "SIG%s", abbrev);
    else
        snprintf(buf, len, "signal %d", sig);
    return buf;
}
