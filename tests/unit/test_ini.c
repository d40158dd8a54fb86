/*
 * test_ini.c - unit tests for the pure ini reader (src/config/ini.c).
 *
 * Table-driven: each case is an input and the walk it must give, written as one string
 * ("[section]@line", "section|key=value@line", "section|key@line" for a bare key, and
 * "ERR code@line" last on an error). Every case is also fed to ini_parse_line() incrementally:
 * split in two at every position and one byte at a time, each piece just before a PROT_NONE
 * guard page, and must give the same walk.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config/ini.h"
#include "guard.h"

struct walk {
    char out[4096]; /* the serialised walk */
    size_t len;
};

static void walk_add(struct walk *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void walk_add(struct walk *w, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(w->out + w->len, sizeof(w->out) - w->len, fmt, ap);
    va_end(ap);
    assert_true(n >= 0 && (size_t)n < sizeof(w->out) - w->len);
    w->len += (size_t)n;
}

static void walk_pair(struct walk *w, const char *sec, size_t seclen, const struct ini_line *l,
                      unsigned line)
{
    walk_add(w, "%.*s|%.*s", (int)seclen, sec, (int)l->name.len, l->name.p);
    if (l->has_value) walk_add(w, "=%.*s", (int)l->value.len, l->value.p);
    walk_add(w, "@%u\n", line);
}

/* The whole-buffer walk (ini_next), input placed just before a guard page. */
static void walk_whole(const char *in, size_t len, struct walk *w)
{
    struct guard g;
    struct ini_reader r;
    struct ini_item it;
    enum ini_error err;
    int rc;
    const char *buf = guard_copy(&g, in, len);

    w->len = 0;
    w->out[0] = '\0';
    ini_reader_init(&r, buf, len);
    while ((rc = ini_next(&r, &it, &err)) > 0) {
        assert_int_equal(err, INI_OK);
        if (it.kind == INI_SECTION) {
            walk_add(w, "[%.*s]@%u\n", (int)it.section.len, it.section.p, it.line);
            continue;
        }
        struct ini_line l = {INI_PAIR, it.key, it.value, it.has_value};
        walk_pair(w, it.section.p, it.section.len, &l, it.line);
    }
    if (rc < 0) walk_add(w, "ERR %d@%u\n", (int)err, r.line);
    /* a finished walk stays finished */
    assert_int_equal(ini_next(&r, &it, &err), rc < 0 ? PARSE_ERROR : 0);
    guard_free(&g);
}

/* One call on in[off, have), copied to just before a guard page. */
static int parse_piece(const char *in, size_t off, size_t have, bool eof, struct ini_line *l,
                       enum ini_error *err, char *sec, size_t *seclen)
{
    struct guard g;
    const char *buf = guard_copy(&g, in + off, have - off);
    int rc = ini_parse_line(buf, have - off, eof, l, err);
    if (rc > 0 && l->kind == INI_SECTION) {
        memcpy(sec, l->name.p, l->name.len); /* the view dies with the piece */
        *seclen = l->name.len;
    }
    if (rc > 0 && l->kind == INI_PAIR) {
        /* re-point the views at the stable input before the piece is unmapped */
        l->name.p = in + off + (l->name.p - buf);
        l->value.p = in + off + (l->value.p - buf);
    }
    guard_free(&g);
    return rc;
}

/*
 * The incremental walk: the caller has in[0, have) so far; 'sched' lists the successive
 * values of 'have' (the last is len, and only then is eof true).
 */
static void walk_pieces(const char *in, size_t len, const size_t *sched, size_t nsched,
                        struct walk *w)
{
    char sec[256];
    size_t seclen = 0;
    size_t off = 0;
    size_t step = 0;
    unsigned line = 0;
    struct ini_line l;
    enum ini_error err;

    w->len = 0;
    w->out[0] = '\0';
    for (;;) {
        size_t have = sched[step];
        bool eof = step == nsched - 1;
        int rc = parse_piece(in, off, have, eof, &l, &err, sec, &seclen);
        if (rc == PARSE_INCOMPLETE) {
            assert_false(eof);
            step++;
            continue;
        }
        if (rc == 0) break;
        line++;
        if (rc < 0) {
            walk_add(w, "ERR %d@%u\n", (int)err, line);
            break;
        }
        off += (size_t)rc;
        if (l.kind == INI_SECTION) walk_add(w, "[%.*s]@%u\n", (int)seclen, sec, line);
        if (l.kind == INI_PAIR) walk_pair(w, sec, seclen, &l, line);
    }
    (void)len;
}

/* The whole walk, then every split in two and byte-at-a-time must all give 'expect'. */
static void check_case(const char *name, const char *in, size_t len, const char *expect)
{
    struct walk w;
    size_t *sched = malloc((len + 1) * sizeof(*sched));

    walk_whole(in, len, &w);
    if (strcmp(w.out, expect) != 0) fail_msg("%s (whole): got\n%s\nwant\n%s", name, w.out, expect);
    for (size_t k = 0; k <= len; k++) {
        size_t two[2] = {k, len};
        walk_pieces(in, len, two, 2, &w);
        if (strcmp(w.out, expect) != 0)
            fail_msg("%s (split at %zu): got\n%s\nwant\n%s", name, k, w.out, expect);
    }
    for (size_t k = 0; k <= len; k++)
        sched[k] = k;
    walk_pieces(in, len, sched, len + 1, &w);
    if (strcmp(w.out, expect) != 0)
        fail_msg("%s (bytewise): got\n%s\nwant\n%s", name, w.out, expect);
    free(sched);
}

struct ini_case {
    const char *name;
    const char *in; /* NUL-terminated unless 'len' is set */
    size_t len;     /* for inputs holding a NUL byte */
    const char *expect;
};

#define E(n) "ERR " #n
#define WITH_NUL(s) s, sizeof(s) - 1

static const struct ini_case cases[] = {
    {"empty", "", 0, ""},
    {"blank lines", "\n  \n\t\n \r\n", 0, ""},
    {"comments", "; one\n# two\n   ; three\n\t# four\n;[not]=a section\n", 0, ""},
    {"section and pairs", "[uwsgi]\nmodule = app:wsgi\nprocesses=4\n", 0,
     "[uwsgi]@1\nuwsgi|module=app:wsgi@2\nuwsgi|processes=4@3\n"},
    {"blanks around everything", "  [ corral ]  \n\t key \t=\t value with  spaces \t\n", 0,
     "[corral]@1\ncorral|key=value with  spaces@2\n"},
    {"split at the first '='", "[s]\na = b = c\nenv=K=V\n", 0, "[s]@1\ns|a=b = c@2\ns|env=K=V@3\n"},
    {"no inline comments", "[s]\nprocesses = 4 ; four\nx = y # z\n", 0,
     "[s]@1\ns|processes=4 ; four@2\ns|x=y # z@3\n"},
    {"bare key and empty value", "[s]\nvacuum\n  master  \nchmod-socket =\n", 0,
     "[s]@1\ns|vacuum@2\ns|master@3\ns|chmod-socket=@4\n"},
    {"CRLF", "[uwsgi]\r\nmodule = app \r\nvacuum\r\n\r\n; c\r\nx =\r\n", 0,
     "[uwsgi]@1\nuwsgi|module=app@2\nuwsgi|vacuum@3\nuwsgi|x=@6\n"},
    {"no final newline", "[s]\nk = v", 0, "[s]@1\ns|k=v@2\n"},
    {"no final newline, bare", "[s]\nflag", 0, "[s]@1\ns|flag@2\n"},
    {"no final newline, CR", "[s]\r\nk = v\r", 0, "[s]@1\ns|k=v@2\n"},
    {"repeated keys in order", "[s]\nhttp = :1\nhttp = :2\nenv = A=1\nhttp = :3\n", 0,
     "[s]@1\ns|http=:1@2\ns|http=:2@3\ns|env=A=1@4\ns|http=:3@5\n"},
    {"keys before any section", "k = v\n[s]\nk = w\n", 0, "|k=v@1\n[s]@2\ns|k=w@3\n"},
    {"several sections", "[a]\nx=1\n[b]\nx=2\n[a]\nx=3\n", 0,
     "[a]@1\na|x=1@2\n[b]@3\nb|x=2@4\n[a]@5\na|x=3@6\n"},
    {"colon is not a separator", "[s]\nkey: value\n", 0, "[s]@1\ns|key: value@2\n"},
    {"quotes are kept", "[s]\nmodule = \"app:wsgi\"\n", 0, "[s]@1\ns|module=\"app:wsgi\"@2\n"},
    {"brackets in a value", "[s]\nk = [x]\n", 0, "[s]@1\ns|k=[x]@2\n"},
    {"utf-8 kept as bytes", "[s]\nk = caf\xc3\xa9\n", 0, "[s]@1\ns|k=caf\xc3\xa9@2\n"},
    {"magic is not the reader's business", "[s]\nk = %d$(HOME)%(x)\n", 0,
     "[s]@1\ns|k=%d$(HOME)%(x)@2\n"},
    {"unterminated section", "[s]\nk = v\n[unterminated\nx = y\n", 0,
     "[s]@1\ns|k=v@2\n" E(1) "@3\n"},
    {"lone bracket", "[\n", 0, E(1) "@1\n"},
    {"unterminated section at eof", "[s", 0, E(1) "@1\n"},
    {"text after ]", "[uwsgi] ; comment\n", 0, E(2) "@1\n"},
    {"double ]", "[a]]\n", 0, E(2) "@1\n"},
    {"empty section", "[]\n", 0, E(3) "@1\n"},
    {"blank section", "\n[ \t]\n", 0, E(3) "@2\n"},
    {"empty key", "[s]\n= v\n", 0, "[s]@1\n" E(4) "@2\n"},
    {"blank key", "[s]\n  =\n", 0, "[s]@1\n" E(4) "@2\n"},
    {"NUL in value", WITH_NUL("[s]\nk = a\0b\nx = y\n"), "[s]@1\n" E(5) "@2\n"},
    {"NUL in comment", WITH_NUL("; a\0\n"), E(5) "@1\n"},
    {"NUL at eof", WITH_NUL("[s]\n\0"), "[s]@1\n" E(5) "@2\n"},
};

static void test_cases(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct ini_case *c = &cases[i];
        check_case(c->name, c->in, c->len ? c->len : strlen(c->in), c->expect);
    }
}

/* The return value of single calls: bytes consumed, 0 at the end, PARSE_INCOMPLETE. */
static void test_parse_line_results(void **state)
{
    struct ini_line l;
    enum ini_error err;
    (void)state;

    assert_int_equal(ini_parse_line(NULL, 0, true, &l, &err), 0);
    assert_int_equal(ini_parse_line(NULL, 0, false, &l, &err), PARSE_INCOMPLETE);
    assert_int_equal(ini_parse_line("k = v\nrest", 10, false, &l, &err), 6);
    assert_int_equal(l.kind, INI_PAIR);
    assert_true(l.has_value);
    assert_int_equal(ini_parse_line("k = v", 5, false, &l, &err), PARSE_INCOMPLETE);
    assert_int_equal(err, INI_OK);
    assert_int_equal(ini_parse_line("k = v", 5, true, &l, &err), 5);
    assert_int_equal(ini_parse_line("\n", 1, false, &l, &err), 1);
    assert_int_equal(l.kind, INI_BLANK);
    assert_int_equal(ini_parse_line("# x\n", 4, false, &l, &err), 4);
    assert_int_equal(l.kind, INI_COMMENT);
    assert_int_equal(ini_parse_line("[s]\r\n", 5, false, &l, &err), 5);
    assert_int_equal(l.kind, INI_SECTION);
    assert_int_equal(l.name.len, 1);
    /* an error needs the whole line: without its '\n' it may still be incomplete */
    assert_int_equal(ini_parse_line("[s", 2, false, &l, &err), PARSE_INCOMPLETE);
    assert_int_equal(ini_parse_line("[s", 2, true, &l, &err), PARSE_ERROR);
    assert_int_equal(err, INI_ERR_UNTERMINATED_SECTION);
}

/* The views point into the caller's buffer; a bare key's value is empty. */
static void test_views(void **state)
{
    const char *in = "  name =  val  \nflag\n";
    struct ini_line l;
    enum ini_error err;
    (void)state;

    assert_int_equal(ini_parse_line(in, strlen(in), true, &l, &err), 16);
    assert_ptr_equal(l.name.p, in + 2);
    assert_int_equal(l.name.len, 4);
    assert_ptr_equal(l.value.p, in + 10);
    assert_int_equal(l.value.len, 3);
    assert_int_equal(ini_parse_line(in + 16, 5, true, &l, &err), 5);
    assert_false(l.has_value);
    assert_int_equal(l.value.len, 0);
    assert_memory_equal(l.name.p, "flag", 4);
}

/* A line of INI_LINE_MAX bytes is fine; one more byte is an error, found without the '\n'. */
static void test_line_limit(void **state)
{
    struct ini_line l;
    enum ini_error err;
    struct guard g;
    char *big = malloc(INI_LINE_MAX + 2);
    (void)state;

    memset(big, 'x', INI_LINE_MAX + 2);
    big[0] = 'k';
    big[1] = '=';
    big[INI_LINE_MAX] = '\n';
    char *b = guard_copy(&g, big, INI_LINE_MAX + 1);
    assert_int_equal(ini_parse_line(b, INI_LINE_MAX + 1, false, &l, &err), INI_LINE_MAX + 1);
    assert_int_equal(l.value.len, INI_LINE_MAX - 2);
    assert_int_equal(ini_parse_line(b, INI_LINE_MAX, false, &l, &err), PARSE_INCOMPLETE);
    assert_int_equal(ini_parse_line(b, INI_LINE_MAX, true, &l, &err), INI_LINE_MAX);
    guard_free(&g);

    big[INI_LINE_MAX] = 'x';
    b = guard_copy(&g, big, INI_LINE_MAX + 1);
    assert_int_equal(ini_parse_line(b, INI_LINE_MAX + 1, false, &l, &err), PARSE_ERROR);
    assert_int_equal(err, INI_ERR_TOO_LONG);
    assert_int_equal(ini_parse_line(b, INI_LINE_MAX + 1, true, &l, &err), PARSE_ERROR);
    guard_free(&g);

    big[INI_LINE_MAX + 1] = '\n';
    b = guard_copy(&g, big, INI_LINE_MAX + 2);
    assert_int_equal(ini_parse_line(b, INI_LINE_MAX + 2, false, &l, &err), PARSE_ERROR);
    assert_int_equal(err, INI_ERR_TOO_LONG);
    guard_free(&g);
    free(big);
}

/* A too-long line in a whole-buffer walk is reported with its line number. */
static void test_line_limit_walk(void **state)
{
    size_t len = 4 + INI_LINE_MAX + 1;
    char *in = malloc(len);
    struct ini_reader r;
    struct ini_item it;
    enum ini_error err;
    (void)state;

    memcpy(in, "[s]\n", 4);
    memset(in + 4, 'y', INI_LINE_MAX + 1);
    ini_reader_init(&r, in, len);
    assert_int_equal(ini_next(&r, &it, &err), 1);
    assert_int_equal(ini_next(&r, &it, &err), PARSE_ERROR);
    assert_int_equal(err, INI_ERR_TOO_LONG);
    assert_int_equal(r.line, 2);
    free(in);
}

static void test_strerror(void **state)
{
    (void)state;
    assert_string_equal(ini_strerror(INI_ERR_UNTERMINATED_SECTION),
                        "section header has no closing ']'");
    assert_string_equal(ini_strerror(INI_ERR_SECTION_TRAILING),
                        "text after ']' in a section header");
    assert_string_equal(ini_strerror(INI_ERR_EMPTY_SECTION), "empty section name");
    assert_string_equal(ini_strerror(INI_ERR_EMPTY_KEY), "no key before '='");
    assert_string_equal(ini_strerror(INI_ERR_NUL), "NUL byte in line");
    assert_string_equal(ini_strerror(INI_ERR_TOO_LONG), "line longer than 65536 bytes");
    assert_string_equal(ini_strerror(INI_OK), "no error");
    assert_string_equal(ini_strerror((enum ini_error)99), "unknown error");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases),           cmocka_unit_test(test_parse_line_results),
        cmocka_unit_test(test_views),           cmocka_unit_test(test_line_limit),
        cmocka_unit_test(test_line_limit_walk), cmocka_unit_test(test_strerror),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
