/*
 * softdev_main(): the command line of a libsoftdev device program.  It
 * parses the options into a struct softdev_server_options, opens the
 * device, listens (unix, TCP, vsock) or takes a connected socket (--fd),
 * checks peers (--allow-uid) and calls softdev_serve() for each client.
 * The library proper knows nothing of this file.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#include "server-internal.h"

/* What the command line asked for */
typedef struct MainArgs {
    const char *path, *tcp, *vsock;
    int fd;
    uid_t *allowed_uids;            /* --allow-uid */
    size_t n_allowed_uids;
    struct softdev_server_options opts;
    char **args;                    /* for dev->open(), argv[0] first */
    int nargs;
} MainArgs;

/*
 * What SIGTERM and SIGINT stop: the connection being served (shut down,
 * so that it ends once the callbacks under way return) and the accept
 * loop (woken through a pipe); softdev_main() then closes the device
 * (dev->close) and returns 0.
 */
static struct {
    pthread_mutex_t lock;
    bool stopping;
    int cfd;                        /* -1: none */
    int wake[2];                    /* readable once stopping */
    const char *path;               /* the unix socket, if any */
} serving = { PTHREAD_MUTEX_INITIALIZER, false, -1, { -1, -1 }, NULL };

/* Serve @cfd from now on; false if a signal asked us to stop */
static bool serving_begin(int cfd)
{
    bool go;

    pthread_mutex_lock(&serving.lock);
    go = !serving.stopping;
    serving.cfd = go ? cfd : -1;
    pthread_mutex_unlock(&serving.lock);
    return go;
}

/* Serve no connection now; true if a signal asked us to stop */
static bool serving_end(void)
{
    bool stopping;

    pthread_mutex_lock(&serving.lock);
    serving.cfd = -1;
    stopping = serving.stopping;
    pthread_mutex_unlock(&serving.lock);
    return stopping;
}

/*
 * SIGTERM and SIGINT, blocked in every thread: this one stops serving at
 * the first (the callbacks under way return, the connection ends, the
 * device is closed); a second one, while that waits for a callback,
 * exits at once
 */
static void *signal_thread(void *opaque)
{
    sigset_t set;
    int sig;

    (void)opaque;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    while (sigwait(&set, &sig) != 0) {
        /* retry */
    }
    pthread_mutex_lock(&serving.lock);
    serving.stopping = true;
    if (serving.cfd >= 0) {
        shutdown(serving.cfd, SHUT_RDWR);
    }
    /* (shutdown() of a listening socket does not end accept() on vsock) */
    if (write(serving.wake[1], "", 1) < 0) {
        /* the pipe is empty and ours: cannot fail */
    }
    pthread_mutex_unlock(&serving.lock);
    while (sigwait(&set, &sig) != 0) {
        /* retry */
    }
    if (serving.path) {
        unlink(serving.path);
    }
    _exit(1);
}

/* Route SIGTERM and SIGINT to signal_thread(); 0 or -1 */
static int catch_signals(const char *path)
{
    pthread_t thread;
    sigset_t set;

    serving.path = path;
    if (pipe2(serving.wake, O_CLOEXEC) < 0) {
        softdev_error("cannot set up signal handling: %s", strerror(errno));
        return -1;
    }
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0 ||
        pthread_create(&thread, NULL, signal_thread, NULL) != 0) {
        softdev_error("cannot set up signal handling");
        return -1;
    }
    pthread_detach(thread);
    return 0;
}

static int listen_unix(const char *path)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    char tmp[sizeof(addr.sun_path) + 32];
    struct stat st;
    mode_t old;
    int fd, ret, n;

    if (strlen(path) >= sizeof(addr.sun_path)) {
        softdev_error("socket path too long: %s", path);
        return -1;
    }
    strcpy(addr.sun_path, path);
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
        /* Replace a stale socket, not a live one */
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0) {
            ret = connect(fd, (struct sockaddr *)&addr, sizeof(addr));
            close(fd);
            if (ret == 0) {
                softdev_error("a server is already listening on %s", path);
                return -1;
            }
            unlink(path);
        }
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        softdev_error("socket: %s", strerror(errno));
        return -1;
    }
    /*
     * Listen under a temporary name and rename it into place, so that a
     * client which connects as soon as the socket exists never finds it
     * not listening yet.
     */
    n = snprintf(tmp, sizeof(tmp), "%s.%ld~", path, (long)getpid());
    if (n > 0 && (size_t)n < sizeof(addr.sun_path)) {
        strcpy(addr.sun_path, tmp);
        unlink(tmp);
    }
    old = umask(0177);
    ret = bind(fd, (struct sockaddr *)&addr, sizeof(addr));
    umask(old);
    if (ret < 0 || chmod(addr.sun_path, 0600) < 0 || listen(fd, 4) < 0 ||
        (strcmp(addr.sun_path, path) && rename(addr.sun_path, path) < 0)) {
        softdev_error("cannot listen on %s: %s", path, strerror(errno));
        if (ret == 0) {
            unlink(addr.sun_path);
        }
        close(fd);
        return -1;
    }
    return fd;
}

/* Split "HOST:PORT" (HOST may be empty or [IPv6]) in place */
static int split_host_port(char *arg, char **host, char **port)
{
    char *colon = strrchr(arg, ':');

    if (!colon || !colon[1]) {
        return -1;
    }
    *colon = '\0';
    *port = colon + 1;
    *host = arg;
    if (arg[0] == '[' && colon > arg && colon[-1] == ']') {
        colon[-1] = '\0';
        *host = arg + 1;
    }
    if (!**host) {
        *host = NULL;
    }
    return 0;
}

static int listen_tcp(const char *spec)
{
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
        .ai_flags = AI_PASSIVE,
    };
    struct addrinfo *res, *ai;
    char *copy = strdup(spec), *host, *port;
    int fd = -1, ret, one = 1;

    if (!copy || split_host_port(copy, &host, &port) < 0) {
        softdev_error("--tcp wants HOST:PORT, not '%s'", spec);
        free(copy);
        return -1;
    }
    ret = getaddrinfo(host, port, &hints, &res);
    if (ret) {
        softdev_error("--tcp %s: %s", spec, gai_strerror(ret));
        free(copy);
        return -1;
    }
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
                    ai->ai_protocol);
        if (fd < 0) {
            continue;
        }
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
            listen(fd, 4) == 0) {
            break;
        }
        close(fd);
        fd = -1;
    }
    if (fd < 0) {
        softdev_error("cannot listen on %s: %s", spec, strerror(errno));
    } else if (!strcmp(port, "0")) {
        /* Tell where the kernel put us */
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        char h[NI_MAXHOST], p[NI_MAXSERV];
        if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0 &&
            getnameinfo((struct sockaddr *)&ss, len, h, sizeof(h), p,
                        sizeof(p), NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
            softdev_error("listening on %s%s%s:%s", strchr(h, ':') ? "[" : "",
                          h, strchr(h, ':') ? "]" : "", p);
        }
    }
    freeaddrinfo(res);
    free(copy);
    return fd;
}

static int listen_vsock(const char *spec)
{
    struct sockaddr_vm addr = { .svm_family = AF_VSOCK };
    char *copy = strdup(spec), *host, *port, *end;
    unsigned long cid = VMADDR_CID_ANY, portnum;
    int fd;

    if (!copy || split_host_port(copy, &host, &port) < 0) {
        goto bad;
    }
    if (host && strcmp(host, "-1") && strcmp(host, "any")) {
        cid = strtoul(host, &end, 0);
        if (*end || cid > UINT32_MAX) {
            goto bad;
        }
    }
    portnum = strtoul(port, &end, 0);
    if (*end || portnum > UINT32_MAX) {
        goto bad;
    }
    free(copy);
    addr.svm_cid = cid;
    addr.svm_port = portnum;
    fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        softdev_error("vsock: %s", strerror(errno));
        return -1;
    }
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
        listen(fd, 4) < 0) {
        softdev_error("cannot listen on vsock %s: %s", spec,
                      strerror(errno));
        close(fd);
        return -1;
    }
    return fd;

bad:
    softdev_error("--vsock wants CID:PORT (CID may be empty or -1 for "
                  "any), not '%s'", spec);
    free(copy);
    return -1;
}

static int parse_uids(MainArgs *a, const char *arg)
{
    const char *p = arg;

    do {
        char *end;
        unsigned long v = strtoul(p, &end, 10);
        uid_t *n;

        if (end == p || (*end && *end != ',') || v >= (uid_t)-1) {
            softdev_error("--allow-uid wants UID[,UID...], not '%s'", arg);
            return -1;
        }
        n = realloc(a->allowed_uids, (a->n_allowed_uids + 1) * sizeof(*n));
        if (!n) {
            return -1;
        }
        a->allowed_uids = n;
        a->allowed_uids[a->n_allowed_uids++] = v;
        p = *end ? end + 1 : end;
    } while (*p);
    return 0;
}

/* Whether the peer on unix socket @fd may talk to us (--allow-uid) */
static bool peer_allowed(const MainArgs *a, int fd)
{
    struct ucred cred;
    socklen_t len = sizeof(cred);
    size_t i;

    if (!a->n_allowed_uids) {
        return true;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
        softdev_error("refusing a connection: cannot get the peer's "
                      "credentials: %s", strerror(errno));
        return false;
    }
    for (i = 0; i < a->n_allowed_uids; i++) {
        if (a->allowed_uids[i] == cred.uid) {
            return true;
        }
    }
    softdev_error("refusing a connection from uid %u (pid %d): not in "
                  "--allow-uid", (unsigned)cred.uid, (int)cred.pid);
    return false;
}

static void usage(FILE *f, const char *prog)
{
    fprintf(f,
            "usage: %s (--unix PATH | --tcp HOST:PORT | --vsock CID:PORT | "
            "--fd N)\n"
            "          [--allow-uid UID[,UID...]] [--no-shm] [--no-ring]\n"
            "          [--poll-us N] [--] [DEVICE ARGS...]\n"
            "  --unix PATH    listen on a unix socket (mode 0600), one\n"
            "                 client at a time; SIGTERM/SIGINT end the\n"
            "                 connection, close the device, remove the\n"
            "                 socket and exit with 0 (a second one: at once)\n"
            "  --tcp H:P      listen on TCP (HOST may be empty: any; PORT 0:\n"
            "                 any, printed)\n"
            "  --vsock C:P    listen on vsock (CID may be empty or -1: any)\n"
            "  --fd N         serve the connected socket N once\n"
            "  --allow-uid    unix sockets: only these users' processes\n"
            "  --no-shm       decline the shared-memory data path\n"
            "  --no-ring      shared memory for data only: requests and\n"
            "                 replies as socket messages\n"
            "  --poll-us N    busy-poll for requests up to N microseconds\n"
            "                 before sleeping, adapted to the load (0 to\n"
            "                 1000000, 0: never; default 100)\n"
            "  --             the rest are device arguments\n",
            prog);
}

/* Parse @argv into @a; -1 to go on, else the exit status */
static int parse_args(MainArgs *a, int argc, char **argv)
{
    int i, nlisten;

    a->args[a->nargs++] = argv[0];
    for (i = 1; i < argc; i++) {
        bool has_val = i + 1 < argc;
        char *end;
        long v;

        if (!strcmp(argv[i], "--unix") && has_val) {
            a->path = argv[++i];
        } else if (!strcmp(argv[i], "--tcp") && has_val) {
            a->tcp = argv[++i];
        } else if (!strcmp(argv[i], "--vsock") && has_val) {
            a->vsock = argv[++i];
        } else if (!strcmp(argv[i], "--allow-uid") && has_val) {
            if (parse_uids(a, argv[++i]) < 0) {
                return 2;
            }
        } else if (!strcmp(argv[i], "--no-shm")) {
            a->opts.flags |= SOFTDEV_SERVER_NO_SHM;
        } else if (!strcmp(argv[i], "--no-ring")) {
            a->opts.flags |= SOFTDEV_SERVER_NO_RING;
        } else if (!strcmp(argv[i], "--poll-us") && has_val) {
            v = strtol(argv[++i], &end, 10);
            if (*end || v < 0 || v > 1000000) {
                softdev_error("--poll-us takes 0 to 1000000");
                return 2;
            }
            a->opts.poll_ns = (uint64_t)v * 1000;
        } else if (!strcmp(argv[i], "--fd") && has_val) {
            v = strtol(argv[++i], &end, 10);
            if (*end || v < 0 || v > INT_MAX) {
                usage(stderr, argv[0]);
                return 2;
            }
            a->fd = v;
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout, argv[0]);
            return 0;
        } else if (!strcmp(argv[i], "--")) {
            while (++i < argc) {
                a->args[a->nargs++] = argv[i];
            }
        } else {
            a->args[a->nargs++] = argv[i];
        }
    }
    nlisten = !!a->path + !!a->tcp + !!a->vsock + (a->fd >= 0);
    if (nlisten != 1) {
        if (nlisten > 1) {
            softdev_error("give one of --unix, --tcp, --vsock and --fd");
        }
        usage(stderr, argv[0]);
        return 2;
    }
    if (a->n_allowed_uids && (a->tcp || a->vsock)) {
        softdev_error("--allow-uid works on unix sockets only");
        return 2;
    }
    return -1;
}

/* Serve one client; 0, or -1 if the connection failed */
static int serve_one(const struct softdev_device *dev, void *h,
                     const MainArgs *a, int fd)
{
    struct softdev_err *err = NULL;
    int ret = softdev_serve(dev, h, fd, &a->opts, &err);

    /* a->opts.on_failure reported it */
    softdev_err_free(err);
    return ret < 0 ? -1 : 0;
}

/* --fd: serve the connected socket once; the exit status */
static int serve_fd(const struct softdev_device *dev, void *h,
                    const MainArgs *a)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int ret = 1;

    if (catch_signals(NULL) < 0) {
        close(a->fd);
        return 1;
    }
    if (!serving_begin(a->fd)) {
        ret = 0;
    } else if (a->n_allowed_uids &&
        (getsockname(a->fd, (struct sockaddr *)&ss, &len) < 0 ||
         ss.ss_family != AF_UNIX)) {
        softdev_error("--allow-uid: fd %d is not a unix socket", a->fd);
    } else if (peer_allowed(a, a->fd)) {
        ret = serve_one(dev, h, a, a->fd) < 0 ? 1 : 0;
    }
    if (serving_end()) {
        ret = 0;                    /* asked to stop: not a failure */
    }
    close(a->fd);
    return ret;
}

/* Listen and serve one client after the other; the exit status */
static int serve_listening(const struct softdev_device *dev, void *h,
                           const MainArgs *a)
{
    int lfd, ret = 0;

    /*
     * Signals first: once the socket exists, a client (or a script that
     * waits for it) may send SIGTERM, which must then close the device
     * and remove the socket, not kill us with the socket left behind.
     */
    if (catch_signals(a->path) < 0) {
        return 1;
    }
    lfd = a->path ? listen_unix(a->path) :
          a->tcp ? listen_tcp(a->tcp) : listen_vsock(a->vsock);
    if (lfd < 0) {
        return 1;
    }
    /* Non-blocking: a client gone between poll() and accept() */
    if (fcntl(lfd, F_SETFL, fcntl(lfd, F_GETFL) | O_NONBLOCK) < 0) {
        close(lfd);
        if (a->path) {
            unlink(a->path);
        }
        return 1;
    }
    for (;;) {
        struct pollfd pfd[2] = {
            { .fd = lfd, .events = POLLIN },
            { .fd = serving.wake[0], .events = POLLIN },
        };
        int cfd;

        if (poll(pfd, 2, -1) < 0 && errno != EINTR) {
            softdev_error("poll: %s", strerror(errno));
            ret = 1;
            break;
        }
        if (pfd[1].revents) {
            break;                  /* SIGTERM or SIGINT */
        }
        if (!pfd[0].revents) {
            continue;
        }
        cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno == EINTR || errno == ECONNABORTED ||
                errno == EAGAIN || errno == EWOULDBLOCK) {
                continue;
            }
            if (serving_end()) {
                break;              /* SIGTERM or SIGINT */
            }
            softdev_error("accept: %s", strerror(errno));
            ret = 1;
            break;
        }
        if (!serving_begin(cfd)) {
            close(cfd);
            break;
        }
        /* The old connection's callbacks have all returned by now */
        if (!a->path || peer_allowed(a, cfd)) {
            serve_one(dev, h, a, cfd);
        }
        serving_end();
        close(cfd);
    }
    close(lfd);
    if (a->path) {
        unlink(a->path);
    }
    return ret;
}

int softdev_main(const struct softdev_device *dev, int argc, char **argv)
{
    MainArgs a = {
        .fd = -1, .opts = SOFTDEV_SERVER_OPTIONS_INIT,
    };

    a.opts.on_failure = softdev_err_report;
    int ret;
    void *h;

    softdev_error_name_set(dev->name);
    a.args = calloc(argc + 1, sizeof(*a.args));
    if (!a.args) {
        return 1;
    }
    ret = parse_args(&a, argc, argv);
    if (ret >= 0) {
        free(a.args);
        free(a.allowed_uids);
        return ret;
    }
    signal(SIGPIPE, SIG_IGN);

    h = dev->open ? dev->open(a.nargs, a.args) : (void *)dev;
    free(a.args);
    a.args = NULL;
    if (!h) {
        softdev_error("cannot open the device");
        free(a.allowed_uids);
        return 1;
    }
    ret = a.fd >= 0 ? serve_fd(dev, h, &a) : serve_listening(dev, h, &a);
    if (dev->close) {
        dev->close(h);
    }
    free(a.allowed_uids);
    return ret;
}
