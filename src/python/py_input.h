/*
 * py_input.h - wsgi.input: a file-like object over the request body spool.
 *
 * read(), readline(), readlines() and iteration, as PEP 3333 asks; they never read past the
 * body (the spool holds exactly the body). The object may outlive its request (an app can
 * keep the environ): py_input_detach() cuts it loose, after which it reads as empty.
 * All functions: GIL held.
 */
#ifndef CORRAL_PY_INPUT_H
#define CORRAL_PY_INPUT_H

#include "util/spool.h"

struct _object;

/* Readies the type. Returns 0 or -1 with a Python exception set. */
int py_input_init(void);
/* Returns a new reference to an input reading 's' from offset 0, or NULL (exception set). */
struct _object *py_input_new(const struct spool *s);
/* Makes the input read as empty from now on (its spool is about to be reused). */
void py_input_detach(struct _object *input);

#endif
