/*
 * fuzz_ini.c - libFuzzer harness for the pure ini reader (src/config/ini.c).
 *
 * For each input: walk it whole with ini_next(), checking that every view lies inside the
 * input, holds no '\n' and is trimmed; then feed it to ini_parse_line() in pieces (split in two
 * at a position taken from the input, and one byte at a time for small inputs), each piece in
 * its own exact-size heap block so ASan sees any read past it. All walks must agree (compared
 * by a hash of every item and the final result).
 *
 * Build: clang -std=c11 -D_GNU_SOURCE -Isrc -g -O1 -fsanitize=fuzzer,address,undefined
 *        tests/fuzz/fuzz_ini.c src/config/ini.c -o build/fuzz/fuzz_ini
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/ini.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t hash_bytes(uint64_t h, const void *p, size_t len)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < len; i++)
        h = (h ^ b[i]) * 1099511628211ULL; /* FNV-1a */
    return h;
}

static uint64_t hash_item(uint64_t h, int kind, const char *sec, size_t seclen, struct ini_str key,
                          struct ini_str val, int has_value, unsigned line)
{
    h = hash_bytes(h, &kind, sizeof(kind));
    h = hash_bytes(h, &seclen, sizeof(seclen));
    h = hash_bytes(h, sec, seclen);
    if (kind == INI_PAIR) {
        h = hash_bytes(h, &key.len, sizeof(key.len));
        h = hash_bytes(h, key.p, key.len);
        h = hash_bytes(h, &val.len, sizeof(val.len));
        h = hash_bytes(h, val.p, val.len);
        h = hash_bytes(h, &has_value, sizeof(has_value));
    }
    return hash_bytes(h, &line, sizeof(line));
}

static int is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

/* A view must lie in buf[0, len), hold no '\n', and (if not empty) be trimmed. */
static void check_view(struct ini_str s, const char *buf, size_t len, int may_be_empty)
{
    if (!s.len) {
        if (!may_be_empty) abort();
        return;
    }
    if (s.p < buf || s.p + s.len > buf + len) abort();
    if (memchr(s.p, '\n', s.len)) abort();
    if (is_blank(s.p[0]) || is_blank(s.p[s.len - 1])) abort();
}

static uint64_t walk_whole(const char *buf, size_t len)
{
    struct ini_reader r;
    struct ini_item it;
    enum ini_error err;
    uint64_t h = 14695981039346656037ULL;
    int rc;

    ini_reader_init(&r, buf, len);
    while ((rc = ini_next(&r, &it, &err)) > 0) {
        check_view(it.section, buf, len, 1);
        check_view(it.key, buf, len, it.kind != INI_PAIR);
        check_view(it.value, buf, len, 1);
        if (it.kind == INI_PAIR && !it.has_value && it.value.len) abort();
        h = hash_item(h, it.kind, it.section.p, it.section.len, it.key, it.value, it.has_value,
                      it.line);
    }
    h = hash_bytes(h, &rc, sizeof(rc));
    if (rc < 0) h = hash_bytes(h, &r.line, sizeof(r.line));
    return hash_bytes(h, &err, sizeof(err));
}

/* One ini_parse_line() call on data[off, have), from its own heap block. */
static int parse_piece(const char *data, size_t off, size_t have, int eof, struct ini_line *l,
                       enum ini_error *err, char *sec, size_t *seclen, uint64_t *h, unsigned line)
{
    size_t n = have - off;
    char *piece = malloc(n ? n : 1);
    if (!piece) abort();
    memcpy(piece, data + off, n);
    int rc = ini_parse_line(piece, n, eof, l, err);
    if (rc > 0 && (size_t)rc > n) abort();
    if (rc > 0 && l->kind == INI_SECTION) {
        memcpy(sec, l->name.p, l->name.len);
        *seclen = l->name.len;
        *h = hash_item(*h, INI_SECTION, sec, *seclen, l->name, l->value, 0, line + 1);
    }
    if (rc > 0 && l->kind == INI_PAIR)
        *h = hash_item(*h, INI_PAIR, sec, *seclen, l->name, l->value, l->has_value, line + 1);
    free(piece);
    return rc;
}

/*
 * Feeds data in pieces: the caller has data[0, have) at step i, where have is i for the
 * bytewise walk, or split and then size for the split walk; only the last step is EOF.
 */
static uint64_t walk_pieces(const char *data, size_t size, size_t split, int bytewise)
{
    static char sec[INI_LINE_MAX + 1];
    size_t seclen = 0;
    size_t off = 0;
    size_t step = 0;
    size_t nsteps = bytewise ? size + 1 : 2;
    unsigned line = 0;
    struct ini_line l;
    enum ini_error err = INI_OK;
    uint64_t h = 14695981039346656037ULL;
    int rc;

    for (;;) {
        size_t have = bytewise ? step : (step == 0 ? split : size);
        int eof = step == nsteps - 1;
        rc = parse_piece(data, off, have, eof, &l, &err, sec, &seclen, &h, line);
        if (rc == PARSE_INCOMPLETE) {
            if (eof) abort();
            step++;
            continue;
        }
        if (rc == 0) break;
        line++;
        if (rc < 0) break;
        off += (size_t)rc;
    }
    h = hash_bytes(h, &rc, sizeof(rc));
    if (rc < 0) h = hash_bytes(h, &line, sizeof(line));
    return hash_bytes(h, &err, sizeof(err));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    uint64_t whole = walk_whole(in, size);
    size_t split = size ? (size_t)data[0] * 257 % (size + 1) : 0;

    if (walk_pieces(in, size, split, 0) != whole) abort();
    if (size <= 256 && walk_pieces(in, size, 0, 1) != whole) abort();
    return 0;
}
