/*
 * wsgi.c - PEP 3333 for one request: the environ, start_response, write(), the response
 * iterable, wsgi.file_wrapper, and turning all of it into HTTP/1.1 bytes (see wsgi.h).
 *
 * The somewhat subtle parts, in the PEP's words and ours:
 * - Headers are not sent when start_response is called but when the first non-empty block is
 *   produced (or the iterable ends), so an app may call start_response again with exc_info
 *   until then, and an exception before that point still becomes a clean 500.
 * - "Must not delay the transmission of any block": a generator's block goes out before its
 *   next block is asked for (WSGI_MORE after each). A list or tuple is already in memory, so
 *   it is written in one go, with a Content-Length computed from it when the app gave none.
 * - The iterable's close() is called whatever happens: normal end, app error, client gone.
 * - Strings in the environ are "native strings" holding latin-1 code points of the raw bytes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "python/wsgi.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "http/forwarded.h"
#include "http/http_parser.h"
#include "http/http_response.h"
#include "net/sock.h"
#include "python/py.h"
#include "python/py_input.h"
#include "util/log.h"
#include "util/spool.h"
#include "util/xalloc.h"
#include "uwsgi/uwsgi_proto.h"
#include "uwsgi/uwsgi_request.h"

enum {
    WSGI_BIG_BLOCK = 16384, /* blocks at least this big are sent by reference, not copied */
};

/* --response-buffer: a list response yields, and write() drains, above this many bytes. */
static uint64_t out_high;

/* Interned environ keys and constant values, created once (wsgi_init). */
static PyObject *k_method, *k_script_name, *k_path_info, *k_query, *k_content_type,
    *k_content_length, *k_server_name, *k_server_port, *k_protocol, *k_remote_addr, *k_remote_port,
    *k_request_uri, *k_version, *k_scheme, *k_input, *k_errors, *k_multithread, *k_multiprocess,
    *k_run_once, *k_input_terminated, *k_file_wrapper;
static PyObject *v_version, *v_http, *v_https, *v_empty, *v_errors, *v_proto10, *v_proto11;
static PyObject *v_multithread, *v_multiprocess;
static PyObject *s_close, *s_fileno, *s_tell;
static PyObject *harakiri_exc; /* corral.HarakiriTimeout, a BaseException: not swallowed by
                                  an app's "except Exception" */

/* Common request headers, matched case-insensitively, with their interned environ keys. */
static struct known_header {
    const char *name;
    size_t len;
    PyObject *key;
} known[] = {
    {"host", 4, NULL},
    {"user-agent", 10, NULL},
    {"accept", 6, NULL},
    {"accept-encoding", 15, NULL},
    {"accept-language", 15, NULL},
    {"connection", 10, NULL},
    {"cookie", 6, NULL},
    {"referer", 7, NULL},
    {"cache-control", 13, NULL},
    {"origin", 6, NULL},
    {"authorization", 13, NULL},
    {"x-forwarded-for", 15, NULL},
    {"x-forwarded-proto", 17, NULL},
    {"x-requested-with", 16, NULL},
    {"if-none-match", 13, NULL},
    {"if-modified-since", 17, NULL},
    {"upgrade-insecure-requests", 25, NULL},
    {"content-type", 12, NULL},   /* CONTENT_TYPE, no HTTP_ prefix */
    {"content-length", 14, NULL}, /* not copied: CONTENT_LENGTH comes from the body */
};
enum { KNOWN_CONTENT_TYPE = 17, KNOWN_CONTENT_LENGTH = 18 };

/* --- start_response and write() --------------------------------------------------------- */

struct start_response {
    PyObject_HEAD struct wsgi_call *c; /* NULL once its request has ended */
};

struct writer {
    PyObject_HEAD struct wsgi_call *c;
};

static PyTypeObject sr_type;
static PyTypeObject writer_type;
static PyTypeObject file_wrapper_type;

/* Per-thread cache of the two objects every request needs, reused when nobody kept them. */
static _Thread_local struct start_response *sr_cache;
static _Thread_local struct writer *writer_cache;

static int check_status(PyObject *status)
{
    const char *s;
    Py_ssize_t len;

    if (!PyUnicode_Check(status)) {
        PyErr_Format(PyExc_TypeError, "status must be a str, not %s", Py_TYPE(status)->tp_name);
        return -1;
    }
    s = PyUnicode_AsUTF8AndSize(status, &len);
    if (!s) return -1;
    if (len < 4 || s[0] < '2' || s[0] > '5' || s[1] < '0' || s[1] > '9' || s[2] < '0' ||
        s[2] > '9' || s[3] != ' ' || !http_is_field_value(s, (size_t)len) ||
        !PyUnicode_IS_ASCII(status)) {
        PyErr_Format(PyExc_ValueError,
                     "invalid status %R: want '<3 digits> <reason>', a final status 200-599",
                     status);
        return -1;
    }
    return 0;
}

/* Latin-1 bytes of a native string, without copying (ASCII or 1-byte-kind strings). */
static const char *latin1(PyObject *s, Py_ssize_t *len)
{
    if (!PyUnicode_Check(s) || PyUnicode_KIND(s) != PyUnicode_1BYTE_KIND) return NULL;
    *len = PyUnicode_GET_LENGTH(s);
    return (const char *)PyUnicode_1BYTE_DATA(s);
}

/* What the app's headers say about framing, taken in only once the whole list is valid. */
struct framing {
    int64_t length; /* Content-Length, or -1 */
    bool close;     /* Connection: close */
};

/* Checks one (name, value) header and notes the ones that change the framing. */
static int check_header(PyObject *item, struct framing *f)
{
    Py_ssize_t nlen, vlen;
    const char *name, *value;

    if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) {
        PyErr_Format(PyExc_TypeError, "headers must be (name, value) tuples, not %R", item);
        return -1;
    }
    name = latin1(PyTuple_GET_ITEM(item, 0), &nlen);
    value = latin1(PyTuple_GET_ITEM(item, 1), &vlen);
    if (!name || !value) {
        PyErr_Format(PyExc_TypeError, "header %R: name and value must be latin-1 str", item);
        return -1;
    }
    if (!http_is_token(name, (size_t)nlen) || !http_is_field_value(value, (size_t)vlen)) {
        PyErr_Format(PyExc_ValueError, "invalid header %R", item);
        return -1;
    }
    if (nlen == 14 && strncasecmp(name, "content-length", 14) == 0) {
        if (f->length >= 0) {
            PyErr_Format(PyExc_ValueError, "a second Content-Length header %R", item);
            return -1;
        }
        f->length = http_parse_content_length(value, (size_t)vlen);
        if (f->length < 0) {
            PyErr_Format(PyExc_ValueError, "invalid Content-Length header %R", item);
            return -1;
        }
    } else if (nlen == 17 && strncasecmp(name, "transfer-encoding", 17) == 0) {
        PyErr_SetString(PyExc_ValueError,
                        "Transfer-Encoding is hop-by-hop (PEP 3333): the server frames the body");
        return -1;
    } else if (nlen == 10 && strncasecmp(name, "connection", 10) == 0 && vlen == 5 &&
               strncasecmp(value, "close", 5) == 0) {
        f->close = true;
    }
    return 0;
}

static int check_headers(PyObject *headers, struct framing *f)
{
    f->length = -1;
    f->close = false;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(headers); i++)
        if (check_header(PyList_GET_ITEM(headers, i), f) < 0) return -1;
    return 0;
}

/* The write() callable start_response returns; the call keeps one reference. */
static PyObject *writer_get(struct wsgi_call *c)
{
    struct writer *w = writer_cache;

    if (!c->writer) {
        if (w && Py_REFCNT(w) == 1) {
            Py_INCREF(w);
        } else {
            w = PyObject_New(struct writer, &writer_type);
            if (!w) return NULL;
        }
        w->c = c;
        c->writer = (PyObject *)w;
    }
    Py_INCREF(c->writer);
    return c->writer;
}

/* start_response(status, response_headers, exc_info=None) */
static PyObject *sr_call(struct start_response *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"status", "headers", "exc_info", NULL};
    PyObject *status, *headers, *exc_info = Py_None;
    struct wsgi_call *c = self->c;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|O:start_response", kwlist, &status, &headers,
                                     &exc_info))
        return NULL;
    if (!c) {
        PyErr_SetString(PyExc_RuntimeError, "start_response called after its request ended");
        return NULL;
    }
    if (exc_info != Py_None) {
        if (!PyTuple_Check(exc_info) || PyTuple_GET_SIZE(exc_info) != 3) {
            PyErr_SetString(PyExc_TypeError, "exc_info must be a 3-tuple");
            return NULL;
        }
        if (c->headers_sent) {
            /* PEP 3333: re-raise, so the app's error ends the response. */
            PyObject *t = PyTuple_GET_ITEM(exc_info, 0), *v = PyTuple_GET_ITEM(exc_info, 1),
                     *tb = PyTuple_GET_ITEM(exc_info, 2);
            Py_INCREF(t);
            Py_INCREF(v);
            Py_INCREF(tb);
            PyErr_Restore(t, v, tb == Py_None ? NULL : tb);
            if (tb == Py_None) Py_DECREF(tb);
            return NULL;
        }
    } else if (c->sr_called) {
        PyErr_SetString(PyExc_AssertionError,
                        "start_response called a second time without exc_info");
        return NULL;
    }
    if (check_status(status) < 0) return NULL;
    if (!PyList_Check(headers)) {
        PyErr_Format(PyExc_TypeError, "headers must be a list, not %s", Py_TYPE(headers)->tp_name);
        return NULL;
    }
    /* Our own copy, checked whole before any of it is taken: the app may change its list
     * later, never what we send, and a rejected call changes nothing. */
    PyObject *copy = PyList_GetSlice(headers, 0, PY_SSIZE_T_MAX);
    struct framing f;
    if (!copy) return NULL;
    if (check_headers(copy, &f) < 0) {
        Py_DECREF(copy);
        return NULL;
    }
    c->declared_length = f.length;
    if (f.close) c->keep_alive = false;
    Py_INCREF(status);
    Py_XSETREF(c->status_line, status);
    Py_XSETREF(c->headers, copy);
    c->sr_called = true;
    return writer_get(c);
}

static PyObject *sr_get(struct wsgi_call *c)
{
    struct start_response *sr = sr_cache;
    if (sr && Py_REFCNT(sr) == 1) {
        sr->c = c;
        Py_INCREF(sr);
        return (PyObject *)sr;
    }
    sr = PyObject_New(struct start_response, &sr_type);
    if (!sr) return NULL;
    sr->c = c;
    return (PyObject *)sr;
}

/*
 * Called when a request ends with the call's reference: the object is detached from the call
 * and stays (or becomes) the thread's cached one only if nobody else holds it.
 */
static void sr_release(PyObject *obj, void **cache)
{
    if (!obj) return;
    ((struct start_response *)obj)->c = NULL; /* same layout as struct writer */
    if (*cache == obj) {
        if (Py_REFCNT(obj) > 2) {
            *cache = NULL;
            Py_DECREF(obj); /* the cache's reference */
        }
    } else if (!*cache && Py_REFCNT(obj) == 1) {
        *cache = obj;
        return; /* our reference becomes the cache's */
    }
    Py_DECREF(obj);
}

static PyTypeObject sr_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "corral.StartResponse",
    .tp_basicsize = sizeof(struct start_response),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_call = (ternaryfunc)sr_call,
    .tp_dealloc = (destructor)PyObject_Free,
    .tp_doc = "start_response(status, headers, exc_info=None)",
};

/* --- writing the response --------------------------------------------------------------- */

static void append_str(struct out *o, PyObject *s)
{
    Py_ssize_t len;
    const char *p = latin1(s, &len);
    out_append(o, p, (size_t)len);
}

static void append_uint(struct out *o, uint64_t v, const char *suffix)
{
    char tmp[48];
    int n = snprintf(tmp, sizeof(tmp), "%llu%s", (unsigned long long)v, suffix);
    out_append(o, tmp, (size_t)n);
}

/* Status line, the app's headers, then Date, framing and Connection. */
static void emit_head(struct wsgi_call *c)
{
    struct out *o = c->out;
    PyObject *h = c->headers;
    Py_ssize_t slen;
    const char *s = latin1(c->status_line, &slen);

    c->status = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
    c->no_body = c->no_body || c->status < 200 || c->status == 204 || c->status == 304;
    out_append(o, "HTTP/1.1 ", 9);
    out_append(o, s, (size_t)slen);
    out_append(o, "\r\n", 2);
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(h); i++) {
        PyObject *item = PyList_GET_ITEM(h, i);
        append_str(o, PyTuple_GET_ITEM(item, 0));
        out_append(o, ": ", 2);
        append_str(o, PyTuple_GET_ITEM(item, 1));
        out_append(o, "\r\n", 2);
    }
    out_append(o, http_date_header(), HTTP_DATE_HEADER_LEN);
    if (c->declared_length < 0 && !(c->no_body && c->status != 200)) {
        if (c->known_total >= 0) {
            out_append(o, "Content-Length: ", 16);
            append_uint(o, (uint64_t)c->known_total, "\r\n");
        } else if (c->no_body) {
            /* HEAD of a streamed body: no framing to announce */
        } else if (c->req->minor_version >= 1 && !c->req->vars) {
            out_append(o, "Transfer-Encoding: chunked\r\n", 28);
            c->chunked = true;
        } else {
            c->keep_alive = false; /* RFC 9112 §6.3: the body ends when the connection does */
        }
    }
    if (!c->keep_alive)
        out_append(o, "Connection: close\r\n\r\n", 21);
    else if (c->req->minor_version == 0)
        out_append(o, "Connection: keep-alive\r\n\r\n", 26);
    else
        out_append(o, "\r\n", 2);
    c->headers_sent = true;
}

/*
 * Appends one block of body bytes, framed. With 'by_ref', a big block goes into 'out' by
 * reference instead of being copied. Returns true if it did (the caller must yield).
 */
static bool emit_block(struct wsgi_call *c, PyObject *bytes, bool by_ref)
{
    const char *p = PyBytes_AS_STRING(bytes);
    uint64_t n = (uint64_t)PyBytes_GET_SIZE(bytes);

    if (!c->headers_sent) emit_head(c);
    if (c->declared_length >= 0 && c->body_bytes + n > (uint64_t)c->declared_length)
        n = (uint64_t)c->declared_length - c->body_bytes; /* never send past Content-Length */
    c->body_bytes += n;
    if (c->no_body || n == 0) return false;
    if (c->chunked) {
        char tmp[24];
        int k = snprintf(tmp, sizeof(tmp), "%llx\r\n", (unsigned long long)n);
        out_append(c->out, tmp, (size_t)k);
    }
    if (by_ref && n >= WSGI_BIG_BLOCK) {
        Py_INCREF(bytes);
        c->block_obj = bytes;
        out_append_block(c->out, p, (size_t)n);
        c->crlf_pending = c->chunked;
        return true;
    }
    out_append(c->out, p, (size_t)n);
    if (c->chunked) out_append(c->out, "\r\n", 2);
    return false;
}

static PyObject *writer_call(struct writer *self, PyObject *args, PyObject *kwargs)
{
    struct wsgi_call *c = self->c;
    PyObject *data;
    int rc = 0;

    if (kwargs && PyDict_GET_SIZE(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "write() takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O:write", &data)) return NULL;
    if (!c) {
        PyErr_SetString(PyExc_RuntimeError, "write() called after its request ended");
        return NULL;
    }
    if (!PyBytes_Check(data)) {
        PyErr_Format(PyExc_TypeError, "write() takes bytes, not %s", Py_TYPE(data)->tp_name);
        return NULL;
    }
    if (PyBytes_GET_SIZE(data) == 0) Py_RETURN_NONE;
    emit_block(c, data, false);
    if (out_pending(c->out) > out_high && c->drain) {
        Py_BEGIN_ALLOW_THREADS rc = c->drain(c->drain_arg);
        Py_END_ALLOW_THREADS
    }
    if (rc < 0) {
        PyErr_SetString(PyExc_OSError, "write(): the client has gone away");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyTypeObject writer_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "corral.Write",
    .tp_basicsize = sizeof(struct writer),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_call = (ternaryfunc)writer_call,
    .tp_dealloc = (destructor)PyObject_Free,
    .tp_doc = "write(data): the legacy imperative output of PEP 3333",
};

/* --- wsgi.file_wrapper ------------------------------------------------------------------ */

struct file_wrapper {
    PyObject_HEAD PyObject *filelike;
    Py_ssize_t blksize;
};

static PyObject *fw_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"filelike", "block_size", NULL};
    PyObject *filelike;
    Py_ssize_t blksize = 8192;
    struct file_wrapper *fw;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|n:file_wrapper", kwlist, &filelike, &blksize))
        return NULL;
    fw = (struct file_wrapper *)type->tp_alloc(type, 0);
    if (!fw) return NULL;
    Py_INCREF(filelike);
    fw->filelike = filelike;
    fw->blksize = blksize > 0 ? blksize : 8192;
    return (PyObject *)fw;
}

static void fw_dealloc(struct file_wrapper *fw)
{
    Py_CLEAR(fw->filelike);
    Py_TYPE(fw)->tp_free((PyObject *)fw);
}

/* Iterating a wrapper reads blocks: the fallback when the file has no usable descriptor. */
static PyObject *fw_iternext(struct file_wrapper *fw)
{
    PyObject *data = PyObject_CallMethod(fw->filelike, "read", "n", fw->blksize);
    if (!data) return NULL;
    if (PyBytes_Check(data) && PyBytes_GET_SIZE(data) > 0) return data;
    Py_DECREF(data);
    return NULL;
}

static PyObject *fw_close(struct file_wrapper *fw, PyObject *unused)
{
    (void)unused;
    if (PyObject_HasAttr(fw->filelike, s_close))
        return PyObject_CallMethodNoArgs(fw->filelike, s_close);
    Py_RETURN_NONE;
}

static PyMethodDef fw_methods[] = {
    {"close", (PyCFunction)fw_close, METH_NOARGS, "close the wrapped file"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject file_wrapper_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "corral.FileWrapper",
    .tp_basicsize = sizeof(struct file_wrapper),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = fw_new,
    .tp_dealloc = (destructor)fw_dealloc,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)fw_iternext,
    .tp_methods = fw_methods,
    .tp_doc = "wsgi.file_wrapper(filelike, block_size=8192): sent with sendfile when possible",
};

/* Sets up c->file_* for sendfile if the wrapped object is a regular file; else false. */
static bool file_range(struct wsgi_call *c, struct file_wrapper *fw)
{
    PyObject *r;
    struct stat st;
    long long off = 0;
    int fd;

    r = PyObject_CallMethodNoArgs(fw->filelike, s_fileno);
    if (!r) goto out_no;
    long v = PyLong_AsLong(r);
    Py_DECREF(r);
    if (v < 0 || v > INT_MAX || PyErr_Occurred()) goto out_no; /* not a descriptor: iterate */
    fd = (int)v;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) goto out_no;
    if (PyObject_HasAttr(fw->filelike, s_tell)) {
        r = PyObject_CallMethodNoArgs(fw->filelike, s_tell);
        if (!r) goto out_no;
        off = PyLong_AsLongLong(r);
        Py_DECREF(r);
        if (off < 0 || PyErr_Occurred()) goto out_no;
    }
    c->file_fd = fd;
    c->file_off = (uint64_t)off;
    c->file_len = st.st_size > off ? (uint64_t)(st.st_size - off) : 0;
    return true;

out_no:
    PyErr_Clear();
    return false;
}

/* --- the environ ------------------------------------------------------------------------ */

static int set_item(PyObject *env, PyObject *key, PyObject *value)
{
    int rc;
    if (!value) return -1;
    rc = PyDict_SetItem(env, key, value);
    Py_DECREF(value);
    return rc;
}

static PyObject *str_latin1(const char *p, size_t n)
{
    return PyUnicode_DecodeLatin1(p, (Py_ssize_t)n, NULL);
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    ch = (char)(ch | 0x20);
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    return -1;
}

/* PATH_INFO: the path with %XX escapes decoded (invalid escapes kept as they are). */
static PyObject *path_info(const char *p, size_t n)
{
    char *d;
    size_t j = 0;
    PyObject *s;

    if (!memchr(p, '%', n)) return str_latin1(p, n);
    d = PyMem_Malloc(n);
    if (!d) return PyErr_NoMemory();
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (p[i] == '%' && i + 2 < n && (hi = hexval(p[i + 1])) >= 0 &&
            (lo = hexval(p[i + 2])) >= 0) {
            d[j++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            d[j++] = p[i];
        }
    }
    s = str_latin1(d, j);
    PyMem_Free(d);
    return s;
}

/* The environ key for a header: a known interned one, or a new "HTTP_NAME" (NULL: skip). */
static PyObject *header_key(const char *name, size_t len, int *known_index)
{
    char key[256];

    *known_index = -1;
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        if (known[i].len == len && strncasecmp(known[i].name, name, len) == 0) {
            *known_index = (int)i;
            Py_INCREF(known[i].key);
            return known[i].key;
        }
    }
    /* "X_Foo" and "X-Foo" would both become HTTP_X_FOO: drop names with '_' so a client
     * cannot forge a header a proxy in front set (nginx and gunicorn do the same). */
    if (len > sizeof(key) - 6 || memchr(name, '_', len)) return NULL;
    memcpy(key, "HTTP_", 5);
    for (size_t i = 0; i < len; i++) {
        char ch = name[i];
        key[5 + i] = ch == '-' ? '_' : (char)((ch >= 'a' && ch <= 'z') ? ch - 32 : ch);
    }
    return PyUnicode_FromStringAndSize(key, (Py_ssize_t)len + 5);
}

/*
 * Sets env[key] to val, or joins val to the value a repeated field already put there (RFC 9110
 * §5.3): with ", ", or "; " for Cookie (RFC 6265 §5.4, as HTTP/2 splits it). A singleton field
 * (http_field_is_singleton) is kept once: a repeat that got this far has the same value (the
 * parser, or uwsgi_request_fill for nginx's vars, refused a different one). The one joining
 * rule for HTTP heads and uwsgi vars alike. Steals key and val; NULL val: -1.
 */
static int join_item(PyObject *env, PyObject *key, PyObject *val, bool cookie, bool singleton)
{
    PyObject *old, *joined;
    int rc = -1;

    if (!val) goto out_key;
    old = PyDict_SetDefault(env, key, val); /* borrowed */
    if (!old) goto out_val;
    rc = 0;
    if (old == val || singleton) goto out_val;
    joined = PyUnicode_FromFormat(cookie ? "%U; %U" : "%U, %U", old, val);
    rc = joined ? PyDict_SetItem(env, key, joined) : -1;
    Py_XDECREF(joined);
out_val:
    Py_DECREF(val);
out_key:
    Py_DECREF(key);
    return rc;
}

/* Adds a header field (Content-Length is not copied: CONTENT_LENGTH comes from the body). */
static int add_header(PyObject *env, const struct http_header *h)
{
    int ki;
    PyObject *key = header_key(h->name, h->name_len, &ki);

    if (!key) return PyErr_Occurred() ? -1 : 0;
    if (ki == KNOWN_CONTENT_LENGTH) {
        Py_DECREF(key);
        return 0;
    }
    return join_item(env, key, str_latin1(h->value, h->value_len),
                     h->name_len == 6 && strncasecmp(h->name, "cookie", 6) == 0,
                     http_field_is_singleton(h->name, h->name_len));
}

/* Listener-constant values (SERVER_NAME, SERVER_PORT), made once per listener. */
static struct {
    const struct listener *ls;
    PyObject *name;
    PyObject *port;
} server_cache[16];

static int add_server(PyObject *env, const struct listener *ls)
{
    size_t i;
    for (i = 0; i < ARRAY_SIZE(server_cache) && server_cache[i].ls; i++)
        if (server_cache[i].ls == ls) break;
    if (i == ARRAY_SIZE(server_cache) || !server_cache[i].ls) {
        PyObject *name = PyUnicode_FromString(ls->host);
        PyObject *port = PyUnicode_FromString(ls->port);
        if (!name || !port || i == ARRAY_SIZE(server_cache)) {
            int rc = (name && port) ? (PyDict_SetItem(env, k_server_name, name) |
                                       PyDict_SetItem(env, k_server_port, port))
                                    : -1;
            Py_XDECREF(name);
            Py_XDECREF(port);
            return rc;
        }
        server_cache[i].ls = ls;
        server_cache[i].name = name;
        server_cache[i].port = port;
    }
    if (PyDict_SetItem(env, k_server_name, server_cache[i].name) < 0) return -1;
    return PyDict_SetItem(env, k_server_port, server_cache[i].port);
}

static int add_remote(PyObject *env, const struct request *r)
{
    if (set_item(env, k_remote_addr, PyUnicode_FromString(r->remote_addr)) < 0) return -1;
    return set_item(env, k_remote_port, PyUnicode_FromString(r->remote_port));
}

/* --forwarded-allow-ips, parsed once per worker (environ_init). */
static struct forwarded_allow forwarded_allow;

static int environ_init(const struct config *cfg)
{
    char why[256];
    if (forwarded_allow_parse(cfg->forwarded_allow_ips, &forwarded_allow, why, sizeof(why)) < 0) {
        PyErr_Format(PyExc_ValueError, "--forwarded-allow-ips: %s", why);
        return -1;
    }
    return 0;
}

/*
 * PATH_INFO of an HTTP request: origin-form and absolute-form give the path after the
 * authority, percent-decoded, and "/" when that is empty (RFC 9110 §4.2.3: an empty path is
 * "/"); asterisk-form ("OPTIONS *", the server as a whole) gives "", the application root,
 * since "*" is no path (wsgiref.validate: PATH_INFO is empty or starts with '/').
 */
static PyObject *http_path_info(const struct request *r)
{
    if (r->form == REQUEST_FORM_ASTERISK) {
        Py_INCREF(v_empty);
        return v_empty;
    }
    if (r->path_len == 0) return PyUnicode_FromStringAndSize("/", 1);
    return path_info(r->path, r->path_len);
}

/* REQUEST_URI: the target as sent, but for the userinfo of an absolute-form target, which
 * holds credentials and never reaches the app (RFC 9110 §4.2.4). */
static PyObject *request_uri(const struct request *r)
{
    size_t head, tail;
    char *d;
    PyObject *s;

    if (!r->userinfo) return str_latin1(r->target, r->target_len);
    head = (size_t)(r->userinfo - r->target);
    tail = r->target_len - head - r->userinfo_len;
    d = PyMem_Malloc(head + tail);
    if (!d) return PyErr_NoMemory();
    memcpy(d, r->target, head);
    memcpy(d + head, r->userinfo + r->userinfo_len, tail);
    s = str_latin1(d, head + tail);
    PyMem_Free(d);
    return s;
}

/* absolute-form: the target's authority is the Host (RFC 9112 §3.2.2: a received Host field is
 * ignored), so HTTP_HOST is the authority. SERVER_NAME stays the listener's. */
static int add_authority(PyObject *env, const struct request *r)
{
    int ki;
    if (!r->authority) return 0;
    return join_item(env, header_key("host", 4, &ki), str_latin1(r->authority, r->authority_len),
                     false, true);
}

/* From a trusted proxy (--forwarded-allow-ips), X-Forwarded-For / X-Forwarded-Proto or
 * Forwarded set REMOTE_ADDR (REMOTE_PORT: the port they give, or "") and wsgi.url_scheme;
 * from any other peer they are plain HTTP_* fields. */
static int add_forwarded(PyObject *env, const struct request *r)
{
    struct forwarded_result f;

    if (!r->num_headers ||
        !forwarded_resolve(&forwarded_allow, r->remote_addr, r->headers, r->num_headers, &f))
        return 0;
    if (f.addr && (set_item(env, k_remote_addr, str_latin1(f.addr, f.addr_len)) < 0 ||
                   set_item(env, k_remote_port, str_latin1(f.port, f.port_len)) < 0))
        return -1;
    if (f.scheme == FORWARDED_SCHEME_HTTPS) return PyDict_SetItem(env, k_scheme, v_https);
    if (f.scheme == FORWARDED_SCHEME_HTTP) return PyDict_SetItem(env, k_scheme, v_http);
    return 0;
}

static int add_http_environ(PyObject *env, const struct request *r)
{
    if (set_item(env, k_method, str_latin1(r->method, r->method_len)) < 0 ||
        PyDict_SetItem(env, k_script_name, v_empty) < 0 ||
        set_item(env, k_path_info, http_path_info(r)) < 0 ||
        set_item(env, k_query, str_latin1(r->query, r->query_len)) < 0 ||
        set_item(env, k_request_uri, request_uri(r)) < 0 ||
        PyDict_SetItem(env, k_protocol, r->minor_version ? v_proto11 : v_proto10) < 0 ||
        PyDict_SetItem(env, k_scheme, v_http) < 0 || add_server(env, r->ls) < 0 ||
        add_remote(env, r) < 0)
        return -1;
    for (size_t i = 0; i < r->num_headers; i++) {
        const struct http_header *h = &r->headers[i];
        if (r->authority && h->name_len == 4 && strncasecmp(h->name, "host", 4) == 0) continue;
        if (add_header(env, h) < 0) return -1;
    }
    if (add_authority(env, r) < 0) return -1;
    return add_forwarded(env, r);
}

static bool var_is(const struct uwsgi_var *v, const char *key)
{
    size_t n = strlen(key);
    return v->key_len == n && memcmp(v->key, key, n) == 0;
}

static bool var_value_is(const struct uwsgi_var *v, const char *val)
{
    size_t n = strlen(val);
    return v->val_len == n && memcmp(v->val, val, n) == 0;
}

/*
 * uwsgi: the vars are the CGI environ as nginx built it; defaults first, then the vars
 * (REMOTE_ADDR is the client's as nginx saw it, not nginx's own address). nginx also passes
 * HTTP_CONTENT_TYPE/HTTP_CONTENT_LENGTH, which PEP 3333 forbids beside CONTENT_*: dropped.
 * nginx sends a repeated request header as repeated HTTP_* vars: they are joined exactly as
 * the HTTP listener joins repeated fields (join_item), so an app sees the same environ either
 * way. Another var given twice (a uwsgi_param after 'include uwsgi_params'): the last wins.
 */
static int add_uwsgi_environ(PyObject *env, const struct request *r)
{
    PyObject *scheme = v_http;

    if (PyDict_SetItem(env, k_script_name, v_empty) < 0 ||
        PyDict_SetItem(env, k_path_info, v_empty) < 0 ||
        PyDict_SetItem(env, k_query, v_empty) < 0 ||
        PyDict_SetItem(env, k_protocol, v_proto10) < 0 || add_server(env, r->ls) < 0 ||
        add_remote(env, r) < 0)
        return -1;
    for (size_t i = 0; i < r->num_vars; i++) {
        const struct uwsgi_var *v = &r->vars[i];
        if (var_is(v, "HTTP_CONTENT_TYPE") || var_is(v, "HTTP_CONTENT_LENGTH")) continue;
        PyObject *key = str_latin1(v->key, v->key_len);
        if (!key) return -1;
        if (uwsgi_var_is_header(v)) { /* a request header: repeated ones join as over HTTP */
            if (join_item(env, key, str_latin1(v->val, v->val_len), var_is(v, "HTTP_COOKIE"),
                          uwsgi_var_is_singleton(v)) < 0)
                return -1;
            continue;
        }
        if (set_item(env, key, str_latin1(v->val, v->val_len)) < 0) {
            Py_DECREF(key);
            return -1;
        }
        Py_DECREF(key);
        if ((var_is(v, "HTTPS") && (var_value_is(v, "on") || var_value_is(v, "1"))) ||
            ((var_is(v, "UWSGI_SCHEME") || var_is(v, "REQUEST_SCHEME")) &&
             var_value_is(v, "https")))
            scheme = v_https;
    }
    return PyDict_SetItem(env, k_scheme, scheme);
}

static PyObject *build_environ(struct wsgi_call *c)
{
    const struct request *r = c->req;
    PyObject *env = PyDict_New();
    int rc;

    if (!env) return NULL;
    rc = r->vars ? add_uwsgi_environ(env, r) : add_http_environ(env, r);
    if (rc < 0) goto out_env;
    if (r->has_body && !r->vars) {
        char tmp[24];
        snprintf(tmp, sizeof(tmp), "%llu", (unsigned long long)r->body->size);
        if (set_item(env, k_content_length, PyUnicode_FromString(tmp)) < 0) goto out_env;
    }
    c->input = py_input_new(r->body);
    if (!c->input || PyDict_SetItem(env, k_input, c->input) < 0 ||
        PyDict_SetItem(env, k_version, v_version) < 0 ||
        PyDict_SetItem(env, k_errors, v_errors) < 0 ||
        PyDict_SetItem(env, k_multithread, v_multithread) < 0 ||
        PyDict_SetItem(env, k_multiprocess, v_multiprocess) < 0 ||
        PyDict_SetItem(env, k_run_once, Py_False) < 0 ||
        PyDict_SetItem(env, k_input_terminated, Py_True) < 0 ||
        PyDict_SetItem(env, k_file_wrapper, (PyObject *)&file_wrapper_type) < 0)
        goto out_env;
    return env;

out_env:
    Py_DECREF(env);
    return NULL;
}

/* --- the call --------------------------------------------------------------------------- */

static void log_request_error(struct wsgi_call *c, const char *what)
{
    char ctx[600];
    snprintf(ctx, sizeof(ctx), "%.*s %.*s: %s", (int)c->req->method_len, c->req->method,
             (int)(c->req->target_len > 400 ? 400 : c->req->target_len), c->req->target, what);
    py_log_exception(ctx);
}

/* Calls result.close() if it has one (PEP 3333: always, whatever happened). */
static void close_result(struct wsgi_call *c)
{
    PyObject *r;

    if (!c->result || !PyObject_HasAttr(c->result, s_close)) return;
    r = PyObject_CallMethodNoArgs(c->result, s_close);
    if (!r) log_request_error(c, "exception in the response's close()");
    Py_XDECREF(r);
}

/* Drops every reference of the request; the call is reusable afterwards. */
static void release(struct wsgi_call *c)
{
    close_result(c);
    Py_CLEAR(c->result);
    Py_CLEAR(c->iter);
    Py_CLEAR(c->block_obj);
    Py_CLEAR(c->status_line);
    Py_CLEAR(c->headers);
    Py_CLEAR(c->filelike);
    if (c->input) {
        py_input_detach(c->input);
        Py_CLEAR(c->input);
    }
    Py_CLEAR(c->environ);
    sr_release(c->sr, (void **)&sr_cache);
    sr_release(c->writer, (void **)&writer_cache);
    c->sr = c->writer = NULL;
    c->file_fd = -1;
}

/* An error while producing the response: 500 if nothing was sent yet, else cut. */
static enum wsgi_result fail(struct wsgi_call *c, const char *what)
{
    bool sent = c->headers_sent;
    int status = PyErr_ExceptionMatches(harakiri_exc) ? 504 : 500;

    log_request_error(c, what);
    release(c);
    if (sent) return WSGI_ABORT;
    out_rollback(c->out, c->out_mark); /* drop the unsent head */
    c->status = status;
    c->body_bytes = strlen(http_reason(status)) + 1; /* the short text body */
    http_error_response(out_bytes(c->out), status, !c->keep_alive);
    return WSGI_DONE;
}

static enum wsgi_result finish(struct wsgi_call *c)
{
    if (!c->sr_called) return fail(c, "the app did not call start_response");
    if (!c->headers_sent) {
        if (c->known_total < 0) c->known_total = 0;
        emit_head(c);
    }
    if (c->chunked) out_append(c->out, "0\r\n\r\n", 5);
    if (!c->no_body && c->declared_length >= 0 && c->body_bytes < (uint64_t)c->declared_length) {
        log_warn("%.*s %.*s: the app sent %llu of the %lld bytes its Content-Length promised",
                 (int)c->req->method_len, c->req->method, (int)c->req->target_len, c->req->target,
                 (unsigned long long)c->body_bytes, (long long)c->declared_length);
        c->keep_alive = false; /* the framing is broken: the client must see the close */
    }
    release(c);
    return WSGI_DONE;
}

static bool is_bytes_block(struct wsgi_call *c, PyObject *item)
{
    if (PyBytes_Check(item)) return true;
    PyErr_Format(PyExc_TypeError, "the response iterable yielded %s, not bytes",
                 Py_TYPE(item)->tp_name);
    (void)c;
    return false;
}

/* Writes list/tuple items until done or until the output is worth flushing. */
static enum wsgi_result produce_seq(struct wsgi_call *c)
{
    PyObject *seq = c->result;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);

    while (c->seq_index < n) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, c->seq_index);
        c->seq_index++;
        if (!is_bytes_block(c, item)) return fail(c, "bad response");
        if (PyBytes_GET_SIZE(item) == 0) continue;
        if (!c->sr_called) return fail(c, "the app did not call start_response");
        if (emit_block(c, item, true) || out_pending(c->out) >= out_high) return WSGI_MORE;
    }
    return finish(c);
}

/* A generator's blocks go out one at a time (PEP 3333: no delaying a block). */
static enum wsgi_result produce_iter(struct wsgi_call *c)
{
    for (;;) {
        PyObject *item = PyIter_Next(c->iter);
        if (!item) {
            if (PyErr_Occurred()) return fail(c, "exception while iterating the response");
            return finish(c);
        }
        if (!is_bytes_block(c, item)) {
            Py_DECREF(item);
            return fail(c, "bad response");
        }
        if (PyBytes_GET_SIZE(item) == 0) {
            Py_DECREF(item);
            continue;
        }
        if (!c->sr_called) {
            Py_DECREF(item);
            return fail(c, "the app did not call start_response");
        }
        emit_block(c, item, true);
        Py_DECREF(item);
        return WSGI_MORE;
    }
}

static enum wsgi_result produce_file(struct wsgi_call *c)
{
    int fd = -1;

    if (c->file_sent) return finish(c);
    if (!c->sr_called) return fail(c, "the app did not call start_response");
    if (c->declared_length >= 0 && (uint64_t)c->declared_length < c->file_len)
        c->file_len = (uint64_t)c->declared_length;
    if (c->declared_length < 0) c->known_total = (int64_t)c->file_len;
    if (!c->no_body && c->file_len > 0) {
        /* the connection gets its own descriptor: it sends the file at the client's pace,
         * while the app's file object is closed with the response */
        fd = fcntl(c->file_fd, F_DUPFD_CLOEXEC, 0);
        if (fd < 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            return fail(c, "cannot send the file");
        }
    }
    emit_head(c);
    c->body_bytes = c->file_len;
    if (fd >= 0) out_append_file(c->out, fd, c->file_off, c->file_len);
    c->file_sent = true;
    return WSGI_MORE;
}

static enum wsgi_result produce(struct wsgi_call *c)
{
    if (c->filelike) return produce_file(c);
    if (c->iter) return produce_iter(c);
    return produce_seq(c);
}

/* Sums a list/tuple of bytes, so the response can carry a Content-Length. */
static int64_t seq_total(PyObject *seq)
{
    int64_t total = 0;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyBytes_Check(item)) return -1;
        total += PyBytes_GET_SIZE(item);
    }
    return total;
}

void wsgi_call_init(struct wsgi_call *c, struct out *out)
{
    memset(c, 0, sizeof(*c));
    c->out = out;
    c->file_fd = -1;
}

enum wsgi_result wsgi_call(struct wsgi_call *c)
{
    PyObject *args[2];

    c->out_mark = out_mark(c->out);
    c->status = 0;
    c->body_bytes = 0;
    c->seq_index = 0;
    c->known_total = -1;
    c->declared_length = -1;
    c->sr_called = c->headers_sent = c->chunked = c->crlf_pending = c->file_sent = false;
    c->no_body = c->req->method_len == 4 && memcmp(c->req->method, "HEAD", 4) == 0;
    c->file_fd = -1;

    c->environ = build_environ(c);
    if (!c->environ) return fail(c, "cannot build the environ");
    c->sr = sr_get(c);
    if (!c->sr) return fail(c, "cannot create start_response");
    args[0] = c->environ;
    args[1] = c->sr;
    c->result = PyObject_Vectorcall(py_app(), args, 2, NULL);
    if (!c->result) return fail(c, "exception in the app");
    if (PyList_CheckExact(c->result) || PyTuple_CheckExact(c->result)) {
        c->known_total = seq_total(c->result);
        if (c->declared_length >= 0 || c->no_body) c->known_total = -1;
    } else if (Py_TYPE(c->result) == &file_wrapper_type &&
               file_range(c, (struct file_wrapper *)c->result)) {
        Py_INCREF(c->result);
        c->filelike = c->result;
    } else {
        c->iter = PyObject_GetIter(c->result);
        if (!c->iter) return fail(c, "the app did not return an iterable");
    }
    return produce(c);
}

enum wsgi_result wsgi_resume(struct wsgi_call *c)
{
    if (c->block_obj) { /* it went out: the connection no longer refers to it */
        Py_CLEAR(c->block_obj);
        if (c->crlf_pending) out_append(c->out, "\r\n", 2);
        c->crlf_pending = false;
    }
    return produce(c);
}

void wsgi_abort(struct wsgi_call *c)
{
    release(c);
}

bool wsgi_in_progress(const struct wsgi_call *c)
{
    return c->result != NULL || c->environ != NULL;
}

/* --- set-up ----------------------------------------------------------------------------- */

static int intern(PyObject **slot, const char *s)
{
    *slot = PyUnicode_InternFromString(s);
    return *slot ? 0 : -1;
}

static int make_keys(void)
{
    static const struct {
        PyObject **slot;
        const char *s;
    } keys[] = {
        {&k_method, "REQUEST_METHOD"},
        {&k_script_name, "SCRIPT_NAME"},
        {&k_path_info, "PATH_INFO"},
        {&k_query, "QUERY_STRING"},
        {&k_content_type, "CONTENT_TYPE"},
        {&k_content_length, "CONTENT_LENGTH"},
        {&k_server_name, "SERVER_NAME"},
        {&k_server_port, "SERVER_PORT"},
        {&k_protocol, "SERVER_PROTOCOL"},
        {&k_remote_addr, "REMOTE_ADDR"},
        {&k_remote_port, "REMOTE_PORT"},
        {&k_request_uri, "REQUEST_URI"},
        {&k_version, "wsgi.version"},
        {&k_scheme, "wsgi.url_scheme"},
        {&k_input, "wsgi.input"},
        {&k_errors, "wsgi.errors"},
        {&k_multithread, "wsgi.multithread"},
        {&k_multiprocess, "wsgi.multiprocess"},
        {&k_run_once, "wsgi.run_once"},
        {&k_input_terminated, "wsgi.input_terminated"},
        {&k_file_wrapper, "wsgi.file_wrapper"},
        {&v_http, "http"},
        {&v_https, "https"},
        {&v_empty, ""},
        {&v_proto10, "HTTP/1.0"},
        {&v_proto11, "HTTP/1.1"},
        {&s_close, "close"},
        {&s_fileno, "fileno"},
        {&s_tell, "tell"},
    };
    char key[64];

    for (size_t i = 0; i < ARRAY_SIZE(keys); i++)
        if (intern(keys[i].slot, keys[i].s) < 0) return -1;
    for (size_t i = 0; i < ARRAY_SIZE(known); i++) {
        if (i == KNOWN_CONTENT_TYPE) {
            Py_INCREF(k_content_type);
            known[i].key = k_content_type;
            continue;
        }
        snprintf(key, sizeof(key), "HTTP_%s", known[i].name);
        for (char *p = key; *p; p++)
            *p = *p == '-' ? '_' : (char)((*p >= 'a' && *p <= 'z') ? *p - 32 : *p);
        if (intern(&known[i].key, key) < 0) return -1;
    }
    return 0;
}

int wsgi_init(const struct config *cfg)
{
    if (make_keys() < 0 || PyType_Ready(&sr_type) < 0 || PyType_Ready(&writer_type) < 0 ||
        PyType_Ready(&file_wrapper_type) < 0 || py_input_init() < 0 || environ_init(cfg) < 0)
        goto out_err;
    harakiri_exc = PyErr_NewExceptionWithDoc("corral.HarakiriTimeout",
                                             "the request ran longer than --harakiri allows",
                                             PyExc_BaseException, NULL);
    if (!harakiri_exc) goto out_err;
    v_version = Py_BuildValue("(ii)", 1, 0);
    v_errors = PySys_GetObject("stderr");
    if (!v_version || !v_errors) goto out_err;
    Py_INCREF(v_errors);
    v_multithread = cfg->threads > 1 ? Py_True : Py_False;
    v_multiprocess = cfg->processes > 1 ? Py_True : Py_False;
    out_high = (uint64_t)cfg->response_buffer;
    return 0;

out_err:
    py_log_exception("cannot set up the WSGI layer");
    return -1;
}

/* The formatted stack of thread 'ident', or NULL. */
static PyObject *thread_stack(uint64_t ident)
{
    PyObject *fn = PySys_GetObject("_current_frames"); /* borrowed */
    PyObject *frames = fn ? PyObject_CallNoArgs(fn) : NULL;
    PyObject *key = PyLong_FromUnsignedLongLong(ident);
    PyObject *frame, *tb = NULL, *lines = NULL, *text = NULL;

    if (!frames || !key) goto out;
    frame = PyDict_GetItem(frames, key); /* borrowed */
    if (!frame) goto out;
    tb = PyImport_ImportModule("traceback");
    if (tb) lines = PyObject_CallMethod(tb, "format_stack", "O", frame);
    if (lines) text = PyUnicode_Join(v_empty, lines);
out:
    Py_XDECREF(lines);
    Py_XDECREF(tb);
    Py_XDECREF(key);
    Py_XDECREF(frames);
    PyErr_Clear();
    return text;
}

void wsgi_harakiri(uint64_t ident, const char *request, int seconds)
{
    PyGILState_STATE g = PyGILState_Ensure();
    PyObject *stack = thread_stack(ident);
    const char *s = stack ? PyUnicode_AsUTF8(stack) : NULL;

    log_error("harakiri: %s ran over %d s on thread %llu; raising HarakiriTimeout in it. "
              "Where it was:\n%s",
              request, seconds, (unsigned long long)ident, s ? s : "(no Python frame)\n");
    PyThreadState_SetAsyncExc((unsigned long)ident, harakiri_exc);
    Py_XDECREF(stack);
    PyErr_Clear();
    PyGILState_Release(g);
}
