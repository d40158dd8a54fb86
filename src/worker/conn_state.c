/*
 * conn_state.c - the table of conn_state.h.
 */
#include "worker/conn_state.h"

#include "net/loop.h"

struct conn_plan conn_plan(enum conn_state s, const struct conn_facts *f,
                           const struct conn_timeouts *t)
{
    unsigned write = f->output ? LOOP_WRITABLE : 0;

    switch (s) {
    case CONN_HEAD:
        if (f->output) /* finish the last response before reading the next request */
            return (struct conn_plan){LOOP_WRITABLE, t->request_ms};
        return (struct conn_plan){LOOP_READABLE,
                                  (f->input || !f->served) ? t->request_ms : t->keepalive_ms};
    case CONN_BODY:
        return (struct conn_plan){LOOP_READABLE | write, t->request_ms};
    case CONN_APP:
        return (struct conn_plan){(f->read_closed ? 0 : LOOP_READABLE) | write, 0};
    case CONN_SEND:
        return (struct conn_plan){LOOP_WRITABLE, t->request_ms};
    case CONN_LINGER:
        return (struct conn_plan){LOOP_READABLE, t->linger_ms};
    case CONN_STATES:
        break;
    }
    return (struct conn_plan){0, 0};
}

const char *conn_state_name(enum conn_state s)
{
    static const char *const names[CONN_STATES] = {"HEAD", "BODY", "APP", "SEND", "LINGER"};
    return (unsigned)s < CONN_STATES ? names[s] : "?";
}
