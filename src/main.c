/*
 * main.c - argv -> config -> master_run().
 *
 * Config errors are one line on stderr and exit status 2, before anything is bound. With
 * --log-file, stdout and stderr are redirected into the log, so that what the app prints,
 * wsgi.errors and faulthandler's tracebacks land there too (as uWSGI's logto does).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "config/config.h"
#include "master/master.h"
#include "util/log.h"

static int redirect_output(const char *path)
{
    int err = log_open(path);
    if (err) return err;
    if (dup2(log_fd(), 2) < 0 || dup2(log_fd(), 1) < 0) return -errno;
    return 0;
}

/* Every connection is a descriptor: take all the kernel allows this process (as nginx's
 * worker_rlimit_nofile would). */
static void raise_nofile(void)
{
    struct rlimit r;

    if (getrlimit(RLIMIT_NOFILE, &r) < 0 || r.rlim_cur >= r.rlim_max) return;
    rlim_t was = r.rlim_cur;
    r.rlim_cur = r.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &r) == 0)
        log_info("open files limit raised from %llu to %llu", (unsigned long long)was,
                 (unsigned long long)r.rlim_max);
}

int main(int argc, char **argv)
{
    struct config cfg;
    enum config_action action;
    char err[CONFIG_ERR_MAX];
    int rc;

    if (config_load(&cfg, argc, argv, &action, err, sizeof(err)) < 0) {
        fprintf(stderr, "corral: %s\n", err);
        return 2;
    }
    if (action != CONFIG_SERVE) {
        config_free(&cfg);
        return 0;
    }
    if (cfg.log_file) {
        rc = redirect_output(cfg.log_file);
        if (rc) {
            fprintf(stderr, "corral: log-file %s: %s\n", cfg.log_file, strerror(-rc));
            return 2;
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    log_set_access(!cfg.disable_logging);
    raise_nofile();
    rc = master_run(&cfg, argv);
    config_free(&cfg);
    return rc;
}
