/*
 * ini.c - the ini line parser and the whole-buffer walk built on it (see ini.h for the
 * dialect). A line is found with one bounded memchr, then trimmed and classified; nothing is
 * copied, so every result is a view into the caller's bytes.
 */
#include "config/ini.h"

#include <string.h>

/* uWSGI's blank set: '\r' is in it, which is what makes CRLF files work. */
static bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

/* Trims blanks from both ends of p[0, len). */
static struct ini_str trim(const char *p, size_t len)
{
    while (len && is_blank(p[0])) {
        p++;
        len--;
    }
    while (len && is_blank(p[len - 1]))
        len--;
    return (struct ini_str){p, len};
}

/* "[name]" with s trimmed and s.p[0] == '['. */
static enum ini_error parse_section(struct ini_str s, struct ini_line *out)
{
    const char *close = memchr(s.p, ']', s.len);
    if (!close) return INI_ERR_UNTERMINATED_SECTION;
    if (close != s.p + s.len - 1) return INI_ERR_SECTION_TRAILING;
    out->name = trim(s.p + 1, (size_t)(close - s.p - 1));
    if (!out->name.len) return INI_ERR_EMPTY_SECTION;
    out->kind = INI_SECTION;
    return INI_OK;
}

/* "key = value" or a bare "key", with s trimmed and not empty. */
static enum ini_error parse_pair(struct ini_str s, struct ini_line *out)
{
    const char *eq = memchr(s.p, '=', s.len);
    out->kind = INI_PAIR;
    if (!eq) {
        out->name = s;
        out->value = (struct ini_str){s.p + s.len, 0};
        out->has_value = false;
        return INI_OK;
    }
    out->name = trim(s.p, (size_t)(eq - s.p));
    out->value = trim(eq + 1, (size_t)(s.p + s.len - eq - 1));
    out->has_value = true;
    return out->name.len ? INI_OK : INI_ERR_EMPTY_KEY;
}

/* Classifies one line (without its '\n'). */
static enum ini_error classify(const char *p, size_t len, struct ini_line *out)
{
    struct ini_str s = trim(p, len);
    if (memchr(p, '\0', len)) return INI_ERR_NUL;
    if (!s.len) return INI_OK; /* INI_BLANK */
    if (s.p[0] == ';' || s.p[0] == '#') {
        out->kind = INI_COMMENT;
        return INI_OK;
    }
    if (s.p[0] == '[') return parse_section(s, out);
    return parse_pair(s, out);
}

int ini_parse_line(const char *buf, size_t len, bool eof, struct ini_line *out, enum ini_error *err)
{
    /* Look no further than one byte past the longest line: that byte decides "too long". */
    size_t scan = len < INI_LINE_MAX + 1 ? len : INI_LINE_MAX + 1;
    const char *nl = scan ? memchr(buf, '\n', scan) : NULL;
    size_t line_len = nl ? (size_t)(nl - buf) : len;

    *out = (struct ini_line){INI_BLANK, {buf, 0}, {buf, 0}, false};
    *err = INI_OK;
    if (line_len > INI_LINE_MAX) {
        *err = INI_ERR_TOO_LONG;
        return PARSE_ERROR;
    }
    if (!nl && !eof) return PARSE_INCOMPLETE;
    if (!nl && !len) return 0;
    *err = classify(buf, line_len, out);
    if (*err != INI_OK) return PARSE_ERROR;
    return (int)(nl ? line_len + 1 : line_len);
}

void ini_reader_init(struct ini_reader *r, const char *buf, size_t len)
{
    *r = (struct ini_reader){.buf = buf, .len = len, .section = {buf, 0}};
}

int ini_next(struct ini_reader *r, struct ini_item *item, enum ini_error *err)
{
    struct ini_line l;

    *err = r->error;
    if (r->error != INI_OK) return PARSE_ERROR;
    for (;;) {
        if (r->off == r->len) return 0; /* also keeps NULL + 0 out of the arithmetic */
        int n = ini_parse_line(r->buf + r->off, r->len - r->off, true, &l, err);
        r->line++;
        if (n < 0) {
            r->error = *err;
            return PARSE_ERROR;
        }
        r->off += (size_t)n;
        if (l.kind == INI_SECTION) r->section = l.name;
        if (l.kind == INI_SECTION || l.kind == INI_PAIR) break;
    }
    *item = (struct ini_item){l.kind, r->section, l.name, l.value, l.has_value, r->line};
    return 1;
}

const char *ini_strerror(enum ini_error err)
{
    switch (err) {
    case INI_OK:
        return "no error";
    case INI_ERR_UNTERMINATED_SECTION:
        return "section header has no closing ']'";
    case INI_ERR_SECTION_TRAILING:
        return "text after ']' in a section header";
    case INI_ERR_EMPTY_SECTION:
        return "empty section name";
    case INI_ERR_EMPTY_KEY:
        return "no key before '='";
    case INI_ERR_NUL:
        return "NUL byte in line";
    case INI_ERR_TOO_LONG:
        return "line longer than 65536 bytes";
    }
    return "unknown error";
}
