/*
 * http_response.h - small pure helpers for writing HTTP/1.1 responses: reason phrases,
 * canned error responses, the cached Date header, and validation of header fields an app
 * hands us (so a bad header can never split a response).
 *
 * No I/O. http_date_update() is called by the loop thread once a second; any thread may read
 * the current value.
 */
#ifndef CORRAL_HTTP_RESPONSE_H
#define CORRAL_HTTP_RESPONSE_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "util/buf.h"

/* The reason phrase for a status code corral itself sends ("Bad Request"), or "Unknown". */
const char *http_reason(int status);

/*
 * Appends a complete error response with a short text/plain body. With 'close', it carries
 * "Connection: close" (the caller closes after writing it).
 */
void http_error_response(struct buf *out, int status, bool close);

/* Recomputes the Date header value for 'now' (no-op within the same second). */
void http_date_update(time_t now);
/* "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n" (37 bytes), valid for the current second. */
const char *http_date_header(void);
enum { HTTP_DATE_HEADER_LEN = 37 };

/* True if name[0, len) is a non-empty RFC 9110 token. */
bool http_is_token(const char *name, size_t len);
/* True if the value has no CTL other than HTAB (so no CR, LF or NUL). */
bool http_is_field_value(const char *value, size_t len);

#endif
