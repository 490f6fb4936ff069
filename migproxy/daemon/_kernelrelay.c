/*
 * The loop of migproxy's kernel relay (optional; see migproxy/daemon/splice.py), in C so
 * that a relay thread holds the GIL only once a report interval instead of around every
 * splice(2) call.
 *
 * relay(src, dst, wake, a, b, idle_ms, idle_elapsed_ms, report_ms)
 *     -> (status, failed_fd, errno, idle_elapsed_ms, a, b, moved_a, moved_b)
 *
 * ``a`` (src -> dst) and ``b`` (dst -> src) are the directions' states, each the tuple
 * (src, dst, read_end, write_end, room, fill, eof, stalled, done) of splice.py's
 * _Direction; they come back updated, with the bytes each wrote to its dst in this call.
 * Both sockets and all pipes are non-blocking. Exactly the Python loop's steps: each
 * direction drains its pipe into dst, fills it from src while it has room, and shuts dst
 * for writing once src ended and the pipe is empty; then poll(2) on what each direction
 * waits for and on ``wake``. It returns:
 *
 *   RELAY_CLOSED  both directions ended;
 *   RELAY_REPORT  ``report_ms`` passed (the caller reports the counts and calls again,
 *                 with the idle time so far);
 *   RELAY_IDLE    no byte either way for ``idle_ms`` (0: no idle limit);
 *   RELAY_STOPPED ``wake`` became readable (the event loop stops the relay);
 *   RELAY_FAILED  a splice, shutdown or socket error: ``failed_fd`` is the socket it
 *                 concerns, ``errno`` the error (a socket error's SO_ERROR); poll(2)
 *                 failing: ``failed_fd`` -1.
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>

enum {
    RELAY_CLOSED = 0,
    RELAY_REPORT = 1,
    RELAY_IDLE = 2,
    RELAY_STOPPED = 3,
    RELAY_FAILED = 4,
};

struct direction {
    int src, dst, read_end, write_end;
    long long room, fill;
    int eof, stalled, done;
    long long moved;
};

struct failure {
    int fd, err;
};

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int again(int e)
{
    return e == EAGAIN || e == EWOULDBLOCK || e == EINTR;
}

/* Move what can move now without blocking: 1 if a byte moved or the direction ended, 0 if
 * not, -1 on an error (in *f). */
static int pump(struct direction *d, struct failure *f)
{
    const unsigned int flags = SPLICE_F_MOVE | SPLICE_F_NONBLOCK;
    int progress = 0;

    while (!d->done) {
        int moved = 0;

        if (d->fill) {
            ssize_t n = splice(d->read_end, NULL, d->dst, NULL, (size_t)d->fill, flags);

            if (n < 0 && !again(errno)) {
                f->fd = d->dst;
                f->err = errno;
                return -1;
            }
            if (n >= 0) {
                d->fill -= n;
                d->moved += n;
                moved = n > 0;
                d->stalled = 0;
            }
        }
        if (!d->eof && d->fill < d->room) {
            ssize_t n = splice(d->src, NULL, d->write_end, NULL, (size_t)(d->room - d->fill),
                               flags);

            if (n < 0) {
                if (!again(errno)) {
                    f->fd = d->src;
                    f->err = errno;
                    return -1;
                }
                d->stalled = d->fill > 0; /* or nothing to read: the drain helps either way */
            } else {
                if (n == 0)
                    d->eof = 1;
                d->fill += n;
                moved = 1;
            }
        }
        if (d->eof && !d->fill) {
            if (shutdown(d->dst, SHUT_WR) < 0 && errno != ENOTCONN) {
                f->fd = d->dst;
                f->err = errno;
                return -1;
            }
            d->done = 1;
            moved = 1;
        }
        if (!moved)
            break;
        progress = 1;
    }
    return progress;
}

static int socket_error(int fd)
{
    int code = 0;
    socklen_t len = sizeof code;

    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &code, &len) < 0)
        code = errno;
    return code ? code : ECONNRESET;
}

static int run(int src, int dst, int wake, struct direction *dirs, long long idle_ms,
               long long *idle_elapsed, long long report_ms, struct failure *f)
{
    long long now = now_ms();
    long long last_activity = now - *idle_elapsed;
    const long long next_report = now + report_ms;
    int status;

    for (;;) {
        struct pollfd p[3];
        short masks[2] = {0, 0};
        int fds[2] = {src, dst};
        long long wait;
        int nfds = 1, i, any = 0;

        for (i = 0; i < 2; i++) {
            int r = pump(&dirs[i], f);

            if (r < 0) {
                status = RELAY_FAILED;
                goto out;
            }
            any |= r;
        }
        now = now_ms();
        if (any)
            last_activity = now;
        if (dirs[0].done && dirs[1].done) {
            status = RELAY_CLOSED;
            goto out;
        }
        if (now >= next_report) {
            status = RELAY_REPORT;
            goto out;
        }
        wait = next_report - now;
        if (idle_ms > 0) {
            long long idle_left = last_activity + idle_ms - now;

            if (idle_left <= 0) {
                status = RELAY_IDLE;
                goto out;
            }
            if (idle_left < wait)
                wait = idle_left;
        }
        for (i = 0; i < 2; i++) {
            struct direction *d = &dirs[i];

            if (!d->eof && d->fill < d->room && !d->stalled)
                masks[d->src == src ? 0 : 1] |= POLLIN;
            if (d->fill)
                masks[d->dst == src ? 0 : 1] |= POLLOUT;
        }
        p[0].fd = wake;
        p[0].events = POLLIN;
        p[0].revents = 0;
        /* A socket with nothing to do is left out: once it is shut both ways it would
         * report POLLHUP at every poll. Its errors show at its next use. */
        for (i = 0; i < 2; i++) {
            if (masks[i]) {
                p[nfds].fd = fds[i];
                p[nfds].events = masks[i];
                p[nfds].revents = 0;
                nfds++;
            }
        }
        if (poll(p, (nfds_t)nfds, (int)wait + 1) < 0 && errno != EINTR) {
            f->fd = -1; /* neither socket's failure */
            f->err = errno;
            status = RELAY_FAILED;
            goto out;
        }
        if (p[0].revents) {
            status = RELAY_STOPPED;
            goto out;
        }
        for (i = 1; i < nfds; i++) {
            if (p[i].revents & (POLLERR | POLLNVAL)) {
                f->fd = p[i].fd;
                f->err = socket_error(p[i].fd);
                status = RELAY_FAILED;
                goto out;
            }
        }
    }
out:
    *idle_elapsed = now_ms() - last_activity;
    return status;
}

static int parse_direction(PyObject *t, struct direction *d)
{
    return PyArg_ParseTuple(t, "iiiiLLppp", &d->src, &d->dst, &d->read_end, &d->write_end,
                            &d->room, &d->fill, &d->eof, &d->stalled, &d->done);
}

static PyObject *direction_tuple(const struct direction *d)
{
    return Py_BuildValue("iiiiLLNNN", d->src, d->dst, d->read_end, d->write_end, d->room,
                         d->fill, PyBool_FromLong(d->eof), PyBool_FromLong(d->stalled),
                         PyBool_FromLong(d->done));
}

static PyObject *relay(PyObject *self, PyObject *args)
{
    int src, dst, wake, status;
    PyObject *a, *b, *ta, *tb;
    long long idle_ms, idle_elapsed, report_ms;
    struct direction dirs[2];
    struct failure f = {-1, 0};

    (void)self;
    if (!PyArg_ParseTuple(args, "iiiO!O!LLL", &src, &dst, &wake, &PyTuple_Type, &a,
                          &PyTuple_Type, &b, &idle_ms, &idle_elapsed, &report_ms))
        return NULL;
    memset(dirs, 0, sizeof dirs);
    if (!parse_direction(a, &dirs[0]) || !parse_direction(b, &dirs[1]))
        return NULL;
    if (report_ms <= 0 || idle_ms < 0 || idle_elapsed < 0 || dirs[0].room <= 0 ||
        dirs[1].room <= 0 || dirs[0].fill < 0 || dirs[1].fill < 0 ||
        dirs[0].fill > dirs[0].room || dirs[1].fill > dirs[1].room) {
        PyErr_SetString(PyExc_ValueError, "relay: bad report interval, idle time or pipe fill");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    status = run(src, dst, wake, dirs, idle_ms, &idle_elapsed, report_ms, &f);
    Py_END_ALLOW_THREADS
    ta = direction_tuple(&dirs[0]);
    tb = direction_tuple(&dirs[1]);
    if (ta == NULL || tb == NULL) {
        Py_XDECREF(ta);
        Py_XDECREF(tb);
        return NULL;
    }
    return Py_BuildValue("iiiLNNLL", status, f.fd, f.err, idle_elapsed, ta, tb,
                         dirs[0].moved, dirs[1].moved);
}

static PyMethodDef methods[] = {
    {"relay", relay, METH_VARARGS,
     "relay(src, dst, wake, a, b, idle_ms, idle_elapsed_ms, report_ms) -> (status, "
     "failed_fd, errno, idle_elapsed_ms, a, b, moved_a, moved_b)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_kernelrelay",
    "The kernel relay's loop: splice(2) both ways without the GIL.", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__kernelrelay(void)
{
    return PyModule_Create(&module);
}
