/*
 * ini.h - a pure reader for uWSGI-style ini files: bytes in, (section, key, value, line) out.
 *
 * The dialect is uWSGI's (core/ini.c), made strict where uWSGI silently misreads:
 *  - a line is everything up to '\n'; ' ', '\t' and '\r' around lines, keys and values are
 *    trimmed, so CRLF files read like LF files. The last line needs no '\n'.
 *  - blank lines, and lines whose first non-blank character is ';' or '#', are skipped. There
 *    are no inline comments: in "processes = 4 ; four" the value is "4 ; four", as in uWSGI.
 *  - "[name]" starts a section (the name is trimmed). A header with no ']', with text after
 *    the ']' or with an empty name is an error (uWSGI would take a mangled name instead).
 *  - "key = value" splits at the first '=': "a = b = c" is key "a", value "b = c". ':' is not
 *    a separator (uWSGI does not accept "key: value" either). Quotes are not special.
 *  - a line with no '=' is a bare key, value "" (uWSGI reads "vacuum" as "vacuum =", which
 *    its boolean options take as true). An empty key ("= x") is an error.
 *  - a NUL byte anywhere in a line, or a line longer than INI_LINE_MAX bytes, is an error.
 *  - repeated keys are all returned, in file order; meaning is left to the caller.
 *
 * Pure: no I/O, no allocation, no logging, no globals. Output is views into the caller's
 * buffer (not NUL-terminated). Any thread may call it. config.c reads the file and feeds it in.
 */
#ifndef CORRAL_INI_H
#define CORRAL_INI_H

#include <stdbool.h>
#include <stddef.h>

#include "util/parse.h"

/* The longest line (without its '\n') the reader accepts. */
enum { INI_LINE_MAX = 65536 };

/* A view into the caller's buffer; not NUL-terminated; p may be NULL when len is 0. */
struct ini_str {
    const char *p;
    size_t len;
};

/* What one line is. */
enum ini_kind {
    INI_BLANK,   /* empty or only blanks */
    INI_COMMENT, /* first non-blank is ';' or '#' */
    INI_SECTION, /* "[name]" */
    INI_PAIR,    /* "key = value" or a bare "key" */
};

/* Why a line was refused. */
enum ini_error {
    INI_OK = 0,
    INI_ERR_UNTERMINATED_SECTION, /* "[name" with no ']' */
    INI_ERR_SECTION_TRAILING,     /* "[name] text": something after the ']' */
    INI_ERR_EMPTY_SECTION,        /* "[]" or "[  ]" */
    INI_ERR_EMPTY_KEY,            /* "= value": nothing before the '=' */
    INI_ERR_NUL,                  /* a NUL byte in the line */
    INI_ERR_TOO_LONG,             /* more than INI_LINE_MAX bytes before the '\n' */
};

/* One parsed line. */
struct ini_line {
    enum ini_kind kind;
    struct ini_str name;  /* INI_SECTION: the section name; INI_PAIR: the key; else empty */
    struct ini_str value; /* INI_PAIR: the value, "" for a bare key; else empty */
    bool has_value;       /* INI_PAIR: false for a bare key (no '=' on the line) */
};

/*
 * Parses the first line of buf[0, len).
 *
 * Returns:
 *  - the number of bytes the line takes, its '\n' included (> 0), with *out filled and
 *    *err = INI_OK. The views point into buf.
 *  - 0 when 'eof' is true and len is 0: no lines are left.
 *  - PARSE_INCOMPLETE when there is no '\n' in buf and 'eof' is false: call again with the
 *    same bytes plus more. With 'eof' true, the rest of buf is the last line.
 *  - PARSE_ERROR with *err set. A too-long line is reported as soon as INI_LINE_MAX + 1
 *    bytes without a '\n' are present; other errors once the whole line is. Feeding a file in
 *    pieces gives the same lines and errors as feeding it whole.
 * 'buf' may be NULL when len is 0.
 */
int ini_parse_line(const char *buf, size_t len, bool eof, struct ini_line *out,
                   enum ini_error *err);

/* A section header or a key of a whole-buffer walk (see ini_next). */
struct ini_item {
    enum ini_kind kind;     /* INI_SECTION or INI_PAIR only */
    struct ini_str section; /* the current section ("" before the first header) */
    struct ini_str key;     /* INI_PAIR: the key */
    struct ini_str value;   /* INI_PAIR: the value, "" for a bare key */
    bool has_value;         /* INI_PAIR: false for a bare key */
    unsigned line;          /* 1-based line number of this item */
};

/* Walks a whole buffer held by the caller; set up with ini_reader_init(). */
struct ini_reader {
    const char *buf;        /* the whole input */
    size_t len;             /* its length */
    size_t off;             /* where the next line starts */
    unsigned line;          /* lines consumed so far; after an error, the broken line */
    struct ini_str section; /* the current section */
    enum ini_error error;   /* INI_OK, or the error that ended the walk */
};

/* Starts a walk over buf[0, len); buf must stay valid and unchanged during the walk. */
void ini_reader_init(struct ini_reader *r, const char *buf, size_t len);

/*
 * Returns 1 with the next section header or key in *item (blank lines and comments are
 * skipped), 0 at the end of the input, or PARSE_ERROR with *err set and r->line the number of
 * the broken line. After PARSE_ERROR the walk is over (it keeps returning the same error).
 */
int ini_next(struct ini_reader *r, struct ini_item *item, enum ini_error *err);

/* A static, lowercase description of 'err' ("unknown error" for other values). */
const char *ini_strerror(enum ini_error err);

#endif
