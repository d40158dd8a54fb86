/*
 * balance.c - the accept rule of balance.h.
 */
#include "worker/balance.h"

static bool saturated(const struct balance_load *w, int threads, uint64_t now_ms)
{
    return w->busy >= threads && w->full_since && now_ms - w->full_since >= BALANCE_BUSY_MS;
}

/* Lower is better: 0 under its share with an idle thread ahead, 1 under its share, 2 an idle
 * thread ahead, 3 neither. */
static int rank(const struct balance_load *w, int threads, int share)
{
    return (w->conns >= share ? 2 : 0) + (w->busy + w->fresh >= threads ? 1 : 0);
}

bool balance_may_accept(const struct balance_load *me, const struct balance_load *others, int n,
                        int threads, int queue, uint64_t now_ms)
{
    int total = me->conns, share, mine;

    bool me_saturated = saturated(me, threads, now_ms), all_saturated = me_saturated;

    if (n == 0) return true;
    for (int i = 0; i < n && all_saturated; i++)
        all_saturated = saturated(&others[i], threads, now_ms);
    if (me_saturated && !all_saturated) return false; /* a sibling has a free thread */
    if (all_saturated && queue > 0 && me->busy >= threads + queue) return false;
    for (int i = 0; i < n; i++)
        total += others[i].conns;
    share = (total + n) / (n + 1) + BALANCE_SLACK; /* ceil(total / workers) + slack */
    mine = rank(me, threads, share);
    for (int i = 0; i < n; i++)
        if ((all_saturated || !saturated(&others[i], threads, now_ms)) &&
            rank(&others[i], threads, share) < mine)
            return false;
    return true;
}
