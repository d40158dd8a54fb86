/*
 * sock.h - listening sockets: parse an address, bind, listen, accept.
 *
 * Addresses are "host:port", ":port" (all IPv4 interfaces), "[v6addr]:port", or a path
 * containing '/' (or starting with '@' for the Linux abstract namespace) for a UNIX socket.
 * Called by the master (bind) and by workers (accept). Errors go to a caller-supplied buffer.
 */
#ifndef CORRAL_SOCK_H
#define CORRAL_SOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* What a listener speaks; chosen by the option that named it (--http or --socket). */
enum sock_proto {
    SOCK_PROTO_HTTP,
    SOCK_PROTO_UWSGI,
};

struct listener {
    int fd; /* listening socket, non-blocking, CLOEXEC */
    enum sock_proto proto;
    bool is_unix;   /* UNIX socket: remove the path on exit with --vacuum */
    char name[108]; /* the address as given, for logs; the path for UNIX sockets */
    char host[64];  /* SERVER_NAME for the environ */
    char port[8];   /* SERVER_PORT for the environ ("" for UNIX sockets) */
};

/*
 * Binds and listens on 'addr'. 'chmod_mode' (octal string or NULL) is applied to UNIX socket
 * paths. If 'inherited_fd' >= 0, that already-bound socket is adopted instead (master re-exec,
 * systemd). Returns 0, or -1 with a message in err.
 */
int sock_listen(struct listener *ls, const char *addr, enum sock_proto proto, int backlog,
                const char *chmod_mode, int inherited_fd, char *err, size_t errlen);

/*
 * Accepts one connection as a non-blocking, CLOEXEC socket (TCP_NODELAY comes from the
 * listener), writing the peer's address and port as text. Returns the fd, or -errno (-EAGAIN when
 * none is waiting).
 */
int sock_accept(const struct listener *ls, char *addr, size_t addrlen, char *port, size_t portlen);

/* True for UNIX sockets and loopback addresses. */
bool sock_is_loopback(const struct listener *ls);

/* Reads net.core.somaxconn, or -1 if unknown. */
int sock_somaxconn(void);

#endif
