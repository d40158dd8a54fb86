/*
 * parse.h - the result convention shared by every pure parser in corral (HTTP head, chunked
 * body, uwsgi packet, ini line): a value > 0 is "complete, this many bytes consumed";
 * PARSE_INCOMPLETE asks for more bytes; PARSE_ERROR comes with a reason out-parameter.
 */
#ifndef CORRAL_PARSE_H
#define CORRAL_PARSE_H

enum {
    PARSE_INCOMPLETE = -2,
    PARSE_ERROR = -1,
};

#endif
