/*
 * balance.h - whether a worker should take a new connection, from its own load and its
 * siblings' (read from the scoreboard). Pure: the worker publishes and gathers the numbers.
 *
 * The rule (nginx's accept_disabled idea, made aware of busy threads):
 * - One worker alone takes everything: there is nobody to leave a connection to, and waiting
 *   in its loop or in the kernel's listen queue is the same.
 * - A worker whose threads are all taken ('saturated': requests running or queued for them)
 *   takes nothing while a sibling is not saturated. When all are, new connections still go
 *   by rank (below) and wait in the loop with the requests already queued, in arrival order:
 *   refusing them would leave them in the kernel's listen queue behind every request of the
 *   keep-alive connections the workers hold, for as long as the overload lasts. With
 *   --thread-queue N a saturated worker stops taking them once N requests wait.
 * - Otherwise each worker that is not saturated has a rank, and a connection belongs to the
 *   best rank: first a worker holding less than its fair share of the open connections
 *   (total / workers + BALANCE_SLACK), then, among equals, one that will still have an idle
 *   thread once its new connections have sent their requests (busy + fresh < threads). A
 *   worker takes a connection unless a sibling ranks strictly better. So keep-alive
 *   connections spread evenly over the workers, and requests go where a thread is idle.
 * Every worker ranks everyone, itself included, from the same published numbers, so they
 * agree on who is best and some worker always takes a connection (unless --thread-queue
 * says stop). Saturation counts once it has lasted BALANCE_BUSY_MS: a request of a few
 * microseconds must not send the next connection elsewhere.
 */
#ifndef CORRAL_BALANCE_H
#define CORRAL_BALANCE_H

#include <stdbool.h>
#include <stdint.h>

enum {
    BALANCE_SLACK = 2,     /* connections above the fair share before a worker gives way */
    BALANCE_BUSY_MS = 100, /* a sibling's saturation counts once it has lasted this long */
};

struct balance_load {
    int conns;           /* open connections */
    int busy;            /* requests in the app: queued for a thread, or running */
    int fresh;           /* connections accepted a moment ago without a request yet */
    uint64_t full_since; /* ms (CLOCK_MONOTONIC) since busy >= threads; 0 if it is not */
};

bool balance_may_accept(const struct balance_load *me, const struct balance_load *others, int n,
                        int threads, int queue, uint64_t now_ms);

#endif
