/*
 * sock.c - binding listeners and accepting connections (see sock.h).
 */
#include "net/sock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static bool is_unix_addr(const char *addr)
{
    return strchr(addr, '/') != NULL || addr[0] == '@';
}

/*
 * A socket file left by a previous run is removed; anything else at the path (a typo naming a
 * real file) is an error, and so is a socket some live server still accepts on.
 */
static int remove_stale(const char *addr, const struct sockaddr_un *sun, size_t len, char *err,
                        size_t errlen)
{
    struct stat st;
    int probe;

    if (lstat(addr, &st) < 0) return 0;
    if (!S_ISSOCK(st.st_mode)) {
        snprintf(err, errlen, "%s: exists and is not a socket: not replacing it", addr);
        return -1;
    }
    probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe >= 0 && connect(probe, (const struct sockaddr *)sun,
                              (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) == 0) {
        close(probe);
        snprintf(err, errlen, "%s: another server is accepting on it", addr);
        return -1;
    }
    if (probe >= 0) close(probe);
    unlink(addr);
    return 0;
}

static int bind_unix(struct listener *ls, const char *addr, const char *chmod_mode, char *err,
                     size_t errlen)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    size_t len = strlen(addr);
    int fd;

    if (len >= sizeof(sun.sun_path)) {
        snprintf(err, errlen, "%s: socket path too long", addr);
        return -1;
    }
    memcpy(sun.sun_path, addr, len);
    if (addr[0] == '@') sun.sun_path[0] = '\0';
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) goto out_err;
    if (addr[0] != '@' && remove_stale(addr, &sun, len, err, errlen) < 0) {
        close(fd);
        return -1;
    }
    if (bind(fd, (struct sockaddr *)&sun,
             (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) < 0)
        goto out_close;
    if (chmod_mode && addr[0] != '@' && chmod(addr, (mode_t)strtol(chmod_mode, NULL, 8)) < 0)
        goto out_close;
    ls->fd = fd;
    ls->is_unix = addr[0] != '@';
    snprintf(ls->host, sizeof(ls->host), "%s", "localhost");
    return 0;

out_close:
    close(fd);
out_err:
    snprintf(err, errlen, "%s: %s", addr, strerror(errno));
    return -1;
}

/* Splits "host:port", ":port" or "[v6]:port" into host (may be empty) and port. */
static int split_hostport(const char *addr, char *host, size_t hostlen, char *port, size_t portlen)
{
    const char *colon = strrchr(addr, ':');
    const char *h = addr;
    size_t hl;

    if (!colon || colon[1] == '\0') return -1;
    hl = (size_t)(colon - addr);
    if (hl >= 2 && addr[0] == '[' && addr[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    if (hl >= hostlen || strlen(colon + 1) >= portlen) return -1;
    /* a decimal port that fits in 16 bits: getaddrinfo() would take 99999 as 34463 */
    long v = 0;
    for (const char *p = colon + 1; *p; p++) {
        if (*p < '0' || *p > '9' || (v = v * 10 + (*p - '0')) > 65535) return -1;
    }
    memcpy(host, h, hl);
    host[hl] = '\0';
    snprintf(port, portlen, "%s", colon + 1);
    return 0;
}

static int bind_inet(struct listener *ls, const char *addr, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int one = 1;
    int fd = -1;
    int rc;

    if (split_hostport(addr, ls->host, sizeof(ls->host), ls->port, sizeof(ls->port)) < 0) {
        snprintf(
            err, errlen,
            "%s: not an address (host:port or :port with a port 0-65535, or a UNIX socket path)",
            addr);
        return -1;
    }
    /* Whoever reaches a uwsgi socket sets any environ key (REMOTE_ADDR, HTTPS, ...): with no
     * host given it binds loopback only, never every interface. */
    if (!ls->host[0])
        snprintf(ls->host, sizeof(ls->host), "%s",
                 ls->proto == SOCK_PROTO_UWSGI ? "127.0.0.1" : "0.0.0.0");
    rc = getaddrinfo(ls->host, ls->port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "%s: %s", addr, gai_strerror(rc));
        return -1;
    }
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) goto out_err;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, res->ai_addr, res->ai_addrlen) < 0) goto out_err;
    freeaddrinfo(res);
    ls->fd = fd;
    return 0;

out_err:
    snprintf(err, errlen, "%s: %s", addr, strerror(errno));
    if (fd >= 0) close(fd);
    freeaddrinfo(res);
    return -1;
}

/*
 * TCP_NODELAY on the listener: Linux copies it to every accepted socket, which saves a
 * setsockopt() per connection (one syscall of five for a uwsgi request). Fails harmlessly on
 * UNIX sockets.
 */
static void nodelay(int fd)
{
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

int sock_listen(struct listener *ls, const char *addr, enum sock_proto proto, int backlog,
                const char *chmod_mode, int inherited_fd, char *err, size_t errlen)
{
    memset(ls, 0, sizeof(*ls));
    ls->fd = -1;
    ls->proto = proto;
    snprintf(ls->name, sizeof(ls->name), "%s", addr);
    if (is_unix_addr(addr)) {
        snprintf(ls->host, sizeof(ls->host), "%s", "localhost");
        snprintf(ls->port, sizeof(ls->port), "%s", "0"); /* PEP 3333: never empty */
        ls->is_unix = addr[0] != '@';
    } else if (split_hostport(addr, ls->host, sizeof(ls->host), ls->port, sizeof(ls->port)) < 0) {
        snprintf(
            err, errlen,
            "%s: not an address (host:port or :port with a port 0-65535, or a UNIX socket path)",
            addr);
        return -1;
    }
    if (inherited_fd >= 0) {
        ls->fd = inherited_fd;
        nodelay(ls->fd);
        fcntl(ls->fd, F_SETFD, FD_CLOEXEC);
        /* systemd passes blocking sockets; the loop must never block in accept() */
        fcntl(ls->fd, F_SETFL, fcntl(ls->fd, F_GETFL) | O_NONBLOCK);
        if (!ls->host[0]) snprintf(ls->host, sizeof(ls->host), "%s", "0.0.0.0");
        return 0;
    }
    if (is_unix_addr(addr) ? bind_unix(ls, addr, chmod_mode, err, errlen)
                           : bind_inet(ls, addr, err, errlen))
        return -1;
    nodelay(ls->fd);
    if (listen(ls->fd, backlog) < 0) {
        snprintf(err, errlen, "%s: listen: %s", addr, strerror(errno));
        close(ls->fd);
        ls->fd = -1;
        return -1;
    }
    return 0;
}

int sock_accept(const struct listener *ls, char *addr, size_t addrlen, char *port, size_t portlen)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    int fd = accept4(ls->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);

    if (fd < 0) return -errno;
    addr[0] = port[0] = '\0';
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &sin->sin_addr, addr, (socklen_t)addrlen);
        snprintf(port, portlen, "%u", ntohs(sin->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &sin6->sin6_addr, addr, (socklen_t)addrlen);
        snprintf(port, portlen, "%u", ntohs(sin6->sin6_port));
    }
    return fd;
}

int sock_somaxconn(void)
{
    FILE *f = fopen("/proc/sys/net/core/somaxconn", "re");
    int v = -1;
    if (!f) return -1;
    if (fscanf(f, "%d", &v) != 1) v = -1;
    fclose(f);
    return v;
}

bool sock_is_loopback(const struct listener *ls)
{
    return ls->is_unix || ls->name[0] == '@' || strncmp(ls->host, "127.", 4) == 0 ||
           strcmp(ls->host, "::1") == 0 || strcmp(ls->host, "localhost") == 0;
}
