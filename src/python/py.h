/*
 * py.h - the embedded CPython: start-up, loading the app, fork hooks, the GIL around the
 * loop's wait, and tracebacks into the log.
 *
 * Called by the master (py_init, py_load_app before forking unless --lazy-apps, the fork
 * hooks) and by workers (py_load_app with --lazy-apps, py_release_gil/py_acquire_gil around
 * the loop's wait). No Python API call appears outside src/python/. Functions marked
 * "GIL: held" must be called by a thread holding the GIL.
 */
#ifndef CORRAL_PY_H
#define CORRAL_PY_H

#include "config/config.h"

/* CPython's object type, without including Python.h outside src/python/. */
struct _object;

/*
 * Starts the interpreter: --env, --chdir, --venv, --pythonpath, then Py_InitializeFromConfig.
 * On return the calling thread holds the GIL. Returns 0, or -1 after logging why.
 */
int py_init(const struct config *cfg);
/*
 * Imports the app (--module or --wsgi-file, --callable with "app" as fallback) and keeps it.
 * On failure logs the Python traceback once and returns -1. GIL: held.
 */
int py_load_app(const struct config *cfg);
/* The loaded app (borrowed), or NULL before py_load_app(). */
struct _object *py_app(void);

/* Around fork(): CPython's own hooks, so os.register_at_fork callbacks run. GIL: held. */
void py_before_fork(void);
void py_after_fork_parent(void);
void py_after_fork_child(void);

/* Dumps every thread's traceback to 'fd' on SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL. */
void py_enable_faulthandler(int fd);

/*
 * Where a thread lets go of the GIL and takes it back: the loop's wait (threads = 1), a pool
 * thread's idle wait, the master's fork. Each thread has its own saved state.
 */
void py_release_gil(void);
void py_acquire_gil(void);
/* A pool thread's entry: creates its Python thread state and takes the GIL. */
void py_thread_attach(void);

/*
 * Logs the current Python exception as "<context>: <traceback>" and clears it. GIL: held.
 */
void py_log_exception(const char *context);

/* Runs atexit handlers and finalizes the interpreter. GIL: held. */
void py_finalize(void);

#endif
