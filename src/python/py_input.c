/*
 * py_input.c - the wsgi.input type (see py_input.h).
 *
 * Bodies are already complete in the spool when the app runs (the loop buffered them), so a
 * read never waits for the client. A body spilled to a temporary file is read with pread()
 * with the GIL released only for large reads.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "python/py_input.h"

#include <string.h>

struct input {
    PyObject_HEAD const struct spool *spool; /* NULL once detached */
    uint64_t pos;                            /* next byte to read */
};

static uint64_t remaining(const struct input *in)
{
    if (!in->spool || in->pos >= in->spool->size) return 0;
    return in->spool->size - in->pos;
}

/* Reads exactly n bytes (n <= remaining) at pos into a new bytes object. */
static PyObject *take(struct input *in, size_t n)
{
    const char *mem;
    PyObject *b;
    ssize_t r;

    if (n == 0) return PyBytes_FromStringAndSize(NULL, 0); /* also once detached */
    mem = spool_memory(in->spool, in->pos);

    if (mem) {
        b = PyBytes_FromStringAndSize(mem, (Py_ssize_t)n);
        if (b) in->pos += n;
        return b;
    }
    b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n);
    if (!b) return NULL;
    if (n >= 65536) {
        Py_BEGIN_ALLOW_THREADS r = spool_read(in->spool, in->pos, PyBytes_AS_STRING(b), n);
        Py_END_ALLOW_THREADS
    } else {
        r = spool_read(in->spool, in->pos, PyBytes_AS_STRING(b), n);
    }
    if (r != (ssize_t)n) {
        Py_DECREF(b);
        PyErr_SetString(PyExc_OSError, "wsgi.input: cannot read the spooled request body");
        return NULL;
    }
    in->pos += n;
    return b;
}

static int size_arg(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t *size)
{
    *size = -1;
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "expected at most one argument");
        return -1;
    }
    if (nargs == 1 && args[0] != Py_None) {
        *size = PyLong_AsSsize_t(args[0]);
        if (*size == -1 && PyErr_Occurred()) return -1;
    }
    return 0;
}

static PyObject *input_read(struct input *in, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t size;
    uint64_t left = remaining(in);

    if (size_arg(args, nargs, &size) < 0) return NULL;
    if (size < 0 || (uint64_t)size > left) size = (Py_ssize_t)left;
    return take(in, (size_t)size);
}

/* Length of the next line (through '\n'), at most 'limit' bytes. */
static size_t line_length(struct input *in, size_t limit)
{
    const char *mem;
    char chunk[4096];
    size_t n = 0;

    if (limit == 0) return 0; /* also once detached */
    mem = spool_memory(in->spool, in->pos);

    if (mem) {
        const char *nl = memchr(mem, '\n', limit);
        return nl ? (size_t)(nl - mem) + 1 : limit;
    }
    while (n < limit) {
        size_t want = limit - n < sizeof(chunk) ? limit - n : sizeof(chunk);
        ssize_t r = spool_read(in->spool, in->pos + n, chunk, want);
        if (r <= 0) return n;
        const char *nl = memchr(chunk, '\n', (size_t)r);
        if (nl) return n + (size_t)(nl - chunk) + 1;
        n += (size_t)r;
    }
    return limit;
}

static PyObject *readline_n(struct input *in, Py_ssize_t size)
{
    uint64_t left = remaining(in);
    size_t limit = (size < 0 || (uint64_t)size > left) ? (size_t)left : (size_t)size;
    return take(in, line_length(in, limit));
}

static PyObject *input_readline(struct input *in, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t size;
    if (size_arg(args, nargs, &size) < 0) return NULL;
    return readline_n(in, size);
}

static PyObject *input_readlines(struct input *in, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t hint;
    Py_ssize_t total = 0;
    PyObject *list;

    if (size_arg(args, nargs, &hint) < 0) return NULL;
    list = PyList_New(0);
    if (!list) return NULL;
    while (remaining(in) > 0) {
        PyObject *line = readline_n(in, -1);
        if (!line || PyList_Append(list, line) < 0) {
            Py_XDECREF(line);
            Py_DECREF(list);
            return NULL;
        }
        total += PyBytes_GET_SIZE(line);
        Py_DECREF(line);
        if (hint > 0 && total >= hint) break;
    }
    return list;
}

static PyObject *input_iternext(struct input *in)
{
    if (remaining(in) == 0) return NULL; /* StopIteration */
    return readline_n(in, -1);
}

static PyObject *input_true(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    Py_RETURN_TRUE;
}

static PyObject *input_close(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    Py_RETURN_NONE;
}

static PyMethodDef input_methods[] = {
    {"read", (PyCFunction)(void (*)(void))input_read, METH_FASTCALL, "read([size]) -> bytes"},
    {"readline", (PyCFunction)(void (*)(void))input_readline, METH_FASTCALL,
     "readline([size]) -> bytes"},
    {"readlines", (PyCFunction)(void (*)(void))input_readlines, METH_FASTCALL,
     "readlines([hint]) -> list of bytes"},
    {"readable", input_true, METH_NOARGS, "True"},
    {"close", input_close, METH_NOARGS, "no-op: the server owns the body"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject input_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "corral.Input",
    .tp_basicsize = sizeof(struct input),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "wsgi.input: the request body",
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)input_iternext,
    .tp_methods = input_methods,
};

int py_input_init(void)
{
    input_type.tp_dealloc = (destructor)PyObject_Del;
    return PyType_Ready(&input_type);
}

struct _object *py_input_new(const struct spool *s)
{
    struct input *in = PyObject_New(struct input, &input_type);
    if (!in) return NULL;
    in->spool = s;
    in->pos = 0;
    return (PyObject *)in;
}

void py_input_detach(struct _object *input)
{
    ((struct input *)input)->spool = NULL;
}
