/*
 * http_response.c - response helpers (see http_response.h).
 */
#include "http/http_response.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

const char *http_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 408:
        return "Request Timeout";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 417:
        return "Expectation Failed";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

void http_error_response(struct buf *out, int status, bool close)
{
    const char *reason = http_reason(status);
    size_t rlen = strlen(reason);
    char *p = buf_reserve(out, 256 + 2 * rlen);
    int n = snprintf(p, 256 + 2 * rlen,
                     "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                     "%s%.*s\r\n%s\n",
                     status, reason, rlen + 1, close ? "Connection: close\r\n" : "",
                     HTTP_DATE_HEADER_LEN, http_date_header(), reason);
    out->len += (size_t)n;
}

/* Two buffers so a reader on another thread never sees a half-written value. */
static char date_bufs[2][HTTP_DATE_HEADER_LEN + 1];
static _Atomic int date_cur;
static time_t date_sec = -1;

void http_date_update(time_t now)
{
    struct tm tm;
    int next = 1 - atomic_load(&date_cur);

    if (now == date_sec) return;
    date_sec = now;
    gmtime_r(&now, &tm);
    strftime(date_bufs[next], sizeof(date_bufs[next]), "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
    atomic_store(&date_cur, next);
}

const char *http_date_header(void)
{
    if (date_sec < 0) http_date_update(time(NULL));
    return date_bufs[atomic_load(&date_cur)];
}

bool http_is_token(const char *name, size_t len)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";
    if (len == 0) return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)name[i];
        bool alnum = (ch >= '0' && ch <= '9') || ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z');
        if (!alnum && (ch == 0 || !strchr(extra, ch))) return false;
    }
    return true;
}

bool http_is_field_value(const char *value, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)value[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f) return false;
    }
    return true;
}
