/*
 * py.c - embedding CPython (see py.h).
 *
 * The interpreter is initialised with PyConfig in the master. Its program name is the real
 * interpreter this binary was built against (CORRAL_PYTHON_EXE), or <venv>/bin/python with
 * --venv, so that sys.prefix, the stdlib and site-packages are found exactly as that python
 * would find them (never through the first python3 on PATH). Python's own signal handlers are
 * not installed: the master and the worker own signals.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "python/py.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/log.h"

#ifndef CORRAL_PYTHON_EXE
#define CORRAL_PYTHON_EXE "/usr/bin/python3"
#endif

static PyObject *app;                      /* the WSGI callable (strong reference) */
static _Thread_local PyThreadState *saved; /* this thread's state while it runs without the GIL */

static int set_env(const struct config *cfg)
{
    for (int i = 0; i < cfg->env.n; i++) {
        char *kv = cfg->env.v[i];
        char *eq = strchr(kv, '=');
        if (!eq) continue;
        *eq = '\0';
        int rc = setenv(kv, eq + 1, 1);
        *eq = '=';
        if (rc < 0) {
            log_error("env %s: %s", kv, strerror(errno));
            return -1;
        }
    }
    return 0;
}

static int config_status(PyStatus st, PyConfig *pc)
{
    if (!PyStatus_Exception(st)) return 0;
    log_error("python: cannot initialise: %s%s%s", st.func ? st.func : "", st.func ? ": " : "",
              st.err_msg ? st.err_msg : "unknown error");
    PyConfig_Clear(pc);
    return -1;
}

/* Prepends a directory to sys.path (new reference handling kept local). */
static int path_insert(PyObject *sys_path, Py_ssize_t at, const char *dir)
{
    PyObject *s = PyUnicode_DecodeFSDefault(dir);
    int rc;
    if (!s) return -1;
    rc = PyList_Insert(sys_path, at, s);
    Py_DECREF(s);
    return rc;
}

static int setup_sys_path(const struct config *cfg)
{
    PyObject *sys_path = PySys_GetObject("path"); /* borrowed */
    char cwd[4096];
    Py_ssize_t at = 0;

    if (!sys_path) return -1;
    for (int i = 0; i < cfg->pythonpath.n; i++)
        if (path_insert(sys_path, at++, cfg->pythonpath.v[i]) < 0) return -1;
    /* As `python -m` and gunicorn do: the working directory is importable. */
    if (getcwd(cwd, sizeof(cwd)) && path_insert(sys_path, at, cwd) < 0) return -1;
    return 0;
}

int py_init(const struct config *cfg)
{
    PyConfig pc;
    char exe[4096];
    PyStatus st;

    if (set_env(cfg) < 0) return -1;
    if (cfg->chdir && chdir(cfg->chdir) < 0) {
        log_error("chdir %s: %s", cfg->chdir, strerror(errno));
        return -1;
    }
    if (cfg->venv) {
        snprintf(exe, sizeof(exe), "%s/bin/python", cfg->venv);
        if (access(exe, X_OK) < 0) { /* uWSGI's home= fails the same way */
            log_error("--venv %s: not a virtualenv (no bin/python in it)", cfg->venv);
            return -1;
        }
    } else
        snprintf(exe, sizeof(exe), "%s", CORRAL_PYTHON_EXE);

    PyConfig_InitPythonConfig(&pc);
    pc.install_signal_handlers = 0;
    pc.parse_argv = 0;
    st = PyConfig_SetBytesString(&pc, &pc.program_name, exe);
    if (config_status(st, &pc)) return -1;
    st = PyConfig_SetBytesArgv(&pc, 1, (char *[]){exe});
    if (config_status(st, &pc)) return -1;
    st = Py_InitializeFromConfig(&pc);
    if (config_status(st, &pc)) return -1;
    PyConfig_Clear(&pc);
    if (setup_sys_path(cfg) < 0) {
        py_log_exception("python: cannot set sys.path");
        return -1;
    }
    return 0;
}

/* Imports the file at 'path' as a module named after it, as uWSGI's --wsgi-file does. */
static PyObject *import_file(const char *path)
{
    PyObject *mod = NULL;
    char code[512];
    PyObject *globals;
    PyObject *res;
    PyObject *sys_path = PySys_GetObject("path");
    char dir[4096];
    const char *slash = strrchr(path, '/');

    /* Like `python file.py`: the file's directory comes first on sys.path. */
    if (slash)
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
    else
        snprintf(dir, sizeof(dir), ".");
    if (!sys_path || path_insert(sys_path, 0, dir[0] ? dir : "/") < 0) return NULL;

    globals = PyDict_New();
    if (!globals) return NULL;
    if (PyDict_SetItemString(globals, "__builtins__", PyEval_GetBuiltins()) < 0) goto out;
    PyObject *p = PyUnicode_DecodeFSDefault(path);
    if (!p) goto out;
    int rc = PyDict_SetItemString(globals, "path", p);
    Py_DECREF(p);
    if (rc < 0) goto out;
    snprintf(code, sizeof(code),
             "import importlib.util, sys, re\n"
             "name = 'corral_wsgi_file_' + re.sub(r'\\W', '_', path)\n"
             "spec = importlib.util.spec_from_file_location(name, path)\n"
             "if spec is None: raise ImportError('cannot load %%s: not a Python file' %% path)\n"
             "module = importlib.util.module_from_spec(spec)\n"
             "sys.modules[name] = module\n"
             "spec.loader.exec_module(module)\n");
    res = PyRun_String(code, Py_file_input, globals, globals);
    if (!res) goto out;
    Py_DECREF(res);
    mod = PyDict_GetItemString(globals, "module"); /* borrowed */
    Py_XINCREF(mod);
out:
    Py_DECREF(globals);
    return mod;
}

static PyObject *import_module(const char *name, size_t len)
{
    PyObject *n = PyUnicode_FromStringAndSize(name, (Py_ssize_t)len);
    PyObject *mod;
    if (!n) return NULL;
    mod = PyImport_Import(n);
    Py_DECREF(n);
    return mod;
}

/* Looks up the callable, with Flask users' "app" as the fallback for the default name. */
static PyObject *find_callable(PyObject *mod, const char *name, bool fallback, const char *where)
{
    PyObject *obj = PyObject_GetAttrString(mod, name);

    if (!obj && fallback && PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear();
        obj = PyObject_GetAttrString(mod, "app");
    }
    if (!obj) {
        if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_AttributeError, "%s has no callable '%s'%s", where, name,
                         fallback ? " (nor 'app')" : "");
        }
        return NULL;
    }
    if (!PyCallable_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s: '%s' is not callable (it is a %s)", where, name,
                     Py_TYPE(obj)->tp_name);
        Py_DECREF(obj);
        return NULL;
    }
    return obj;
}

int py_load_app(const struct config *cfg)
{
    const char *callable = config_callable(cfg);
    bool fallback = strcmp(callable, "application") == 0;
    const char *where = cfg->module ? cfg->module : cfg->wsgi_file;
    PyObject *mod;

    if (cfg->module) {
        const char *colon = strchr(cfg->module, ':');
        size_t len = colon ? (size_t)(colon - cfg->module) : strlen(cfg->module);
        if (colon && colon[1]) {
            callable = colon + 1;
            fallback = false;
        }
        mod = import_module(cfg->module, len);
    } else {
        mod = import_file(cfg->wsgi_file);
    }
    if (!mod) goto out_err;
    Py_XSETREF(app, find_callable(mod, callable, fallback, where));
    Py_DECREF(mod);
    if (!app) goto out_err;
    return 0;

out_err : {
    char ctx[600];
    snprintf(ctx, sizeof(ctx), "cannot load the app from %s", where);
    py_log_exception(ctx);
    return -1;
}
}

struct _object *py_app(void)
{
    return app;
}

void py_before_fork(void)
{
    PyOS_BeforeFork();
}

void py_after_fork_parent(void)
{
    PyOS_AfterFork_Parent();
}

void py_after_fork_child(void)
{
    PyOS_AfterFork_Child();
}

void py_enable_faulthandler(int fd)
{
    PyObject *mod = PyImport_ImportModule("faulthandler");
    PyObject *res = mod ? PyObject_CallMethod(mod, "enable", "ii", fd, 1) : NULL;

    Py_XDECREF(mod);
    if (!res) {
        py_log_exception("faulthandler");
        return;
    }
    Py_DECREF(res);
}

void py_release_gil(void)
{
    saved = PyEval_SaveThread();
}

void py_acquire_gil(void)
{
    PyEval_RestoreThread(saved);
}

void py_thread_attach(void)
{
    (void)PyGILState_Ensure(); /* a new thread state for this thread, with the GIL */
}

void py_log_exception(const char *context)
{
    PyObject *exc = NULL, *val = NULL, *tb = NULL;
    PyObject *mod = NULL, *lines = NULL, *text = NULL;
    const char *s = NULL;

    PyErr_Fetch(&exc, &val, &tb);
    if (!exc) {
        log_error("%s", context);
        return;
    }
    PyErr_NormalizeException(&exc, &val, &tb);
    mod = PyImport_ImportModule("traceback");
    if (mod)
        lines = PyObject_CallMethod(mod, "format_exception", "OOO", exc, val ? val : Py_None,
                                    tb ? tb : Py_None);
    if (lines) {
        PyObject *empty = PyUnicode_FromString("");
        if (empty) text = PyUnicode_Join(empty, lines);
        Py_XDECREF(empty);
    }
    if (text) s = PyUnicode_AsUTF8(text);
    if (s)
        log_error("%s:\n%s", context, s);
    else
        log_error("%s (and the traceback could not be formatted)", context);
    PyErr_Clear();
    Py_XDECREF(text);
    Py_XDECREF(lines);
    Py_XDECREF(mod);
    Py_XDECREF(exc);
    Py_XDECREF(val);
    Py_XDECREF(tb);
}

void py_finalize(void)
{
    Py_CLEAR(app);
    Py_FinalizeEx();
}
