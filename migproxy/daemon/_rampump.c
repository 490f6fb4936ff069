/*
 * The RAM pump of migproxy's executor (optional; see migproxy/daemon/pump.py).
 *
 * pump(src, dst, wake, buf, skip, page_size, block_len, have_block, budget, yield_ms,
 *      quiet_ms, pipes, prefix) -> (status, forwarded, pages, zeros, skip_left, leftover,
 *      errno)
 *
 * While the stream engine says that the next bytes of a main channel are RAM records it
 * forwards unchanged (after ``skip`` bytes of a page it already framed), this moves them
 * from the source socket to the destination socket in the calling thread, without the
 * GIL, walking every record with the framer's own walk (ramwalk.h). It stops:
 *
 *   PUMP_RECORD  at a record the walk does not take (the Python framer decides it);
 *   PUMP_EOF     at the end of the source's direction;
 *   PUMP_WAKE    when ``wake`` (an eventfd) is readable: the event loop wants it back;
 *   PUMP_QUIET   when no byte came for ``quiet_ms``;
 *   PUMP_BUDGET  after ``budget`` bytes or ``yield_ms`` (the loop counts them);
 *   PUMP_FULL    splicing, when pipe a is full of what it kept (a record split into many
 *                tiny segments): the engine takes it from here;
 *   PUMP_READ_ERROR, PUMP_WRITE_ERROR with the errno; PUMP_PIPE_ERROR when tee(2) or a
 *                pipe failed (the caller stops splicing; nothing was lost).
 *
 * After PUMP_WAKE, PUMP_WRITE_ERROR and PUMP_READ_ERROR the position in the stream is not
 * kept (a write may have been cut short): the caller closes the connection. After the
 * others every record counted has been forwarded whole.
 *
 * ``prefix`` (bytes-like or None) is written to the destination first: what the engine
 * sent of the last run's leftover (not counted in ``forwarded``).
 *
 * Whatever it read and did not forward (the record it stopped at, an incomplete record)
 * is in buf[0:leftover] on return, in order: the caller feeds it to the engine. The bytes
 * forwarded are exactly the records walked (and the skip), so the engine accounts for
 * them without seeing them.
 *
 * Two data paths, the same bytes:
 *   copy   (pipes None): read(2) into buf, walk, write(2) from buf;
 *   splice (pipes = (a_read, a_write, b_read, b_write)): splice(2) the socket into pipe a,
 *          tee(2) pipe a into pipe b, read pipe b into buf to walk it, and splice the
 *          bytes walked from pipe a to the destination: the forwarded bytes are never
 *          copied to user memory and back (one copy instead of two).
 * Both sockets are non-blocking (the event loop's); the pump waits in poll(2), always
 * also on ``wake``.
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ramwalk.h"

enum {
    PUMP_RECORD = 0,
    PUMP_EOF = 1,
    PUMP_WAKE = 2,
    PUMP_QUIET = 3,
    PUMP_BUDGET = 4,
    PUMP_READ_ERROR = 5,
    PUMP_WRITE_ERROR = 6,
    PUMP_FULL = 7,
    PUMP_PIPE_ERROR = 8,
};

enum { WAIT_READY = 0, WAIT_WAKE = 1, WAIT_QUIET = 2, WAIT_ERROR = 3 };

struct pump {
    int src, dst, wake;
    int a_r, a_w, b_r, b_w; /* -1: the copy path */
    unsigned char *buf;
    size_t cap;
    struct ram_block rb;
    uint64_t skip;
    size_t budget;
    int yield_ms, quiet_ms;
    /* results */
    size_t forwarded, pages, zeros, leftover;
    int err;
};

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait until ``fd`` is ready for ``events`` or ``wake`` is readable; ``timeout_ms`` < 0:
 * no limit. A socket error or hang-up counts as ready (the next call reports it). */
static int wait_for(int fd, short events, int wake, int timeout_ms)
{
    struct pollfd p[2];

    for (;;) {
        int n;

        p[0].fd = fd;
        p[0].events = events;
        p[0].revents = 0;
        p[1].fd = wake;
        p[1].events = POLLIN;
        p[1].revents = 0;
        n = poll(p, 2, timeout_ms);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return WAIT_ERROR;
        }
        if (n == 0)
            return WAIT_QUIET;
        if (p[1].revents)
            return WAIT_WAKE;
        return WAIT_READY;
    }
}

/* Forward n bytes to the destination: b[0:n], or the head of pipe a (``piped``); 0, or a
 * PUMP_ status. */
static int forward(struct pump *pp, const unsigned char *b, size_t n, int piped)
{
    while (n > 0) {
        ssize_t w = !piped ? write(pp->dst, b, n)
                                : splice(pp->a_r, NULL, pp->dst, NULL, n,
                                         SPLICE_F_MOVE | SPLICE_F_NONBLOCK | SPLICE_F_MORE);

        if (w > 0) {
            if (!piped)
                b += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int r = wait_for(pp->dst, POLLOUT, pp->wake, -1);

            if (r == WAIT_WAKE)
                return PUMP_WAKE;
            if (r == WAIT_ERROR) {
                pp->err = errno;
                return PUMP_WRITE_ERROR;
            }
            continue;
        }
        pp->err = w < 0 ? errno : EPIPE;
        return PUMP_WRITE_ERROR;
    }
    return 0;
}

/* Read exactly n bytes of a pipe (they are in it) into b; 0 or -1 (errno set). */
static int read_pipe(int fd, unsigned char *b, size_t n)
{
    while (n > 0) {
        ssize_t r = read(fd, b, n);

        if (r > 0) {
            b += r;
            n -= (size_t)r;
        } else if (r < 0 && errno == EINTR) {
            continue;
        } else {
            if (r == 0)
                errno = EIO;
            return -1;
        }
    }
    return 0;
}

/* What the source sent, waiting for it: bytes read (into buf[len:] or pipe a), or a
 * negative PUMP_ status. */
static ssize_t take(struct pump *pp, size_t len, long long started)
{
    int waited = 0;

    for (;;) {
        ssize_t r;
        int w;

        if (pp->a_r < 0)
            r = read(pp->src, pp->buf + len, pp->cap - len);
        else
            r = splice(pp->src, NULL, pp->a_w, NULL, pp->cap - len,
                       SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (r > 0)
            return r;
        if (r == 0)
            return -PUMP_EOF;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            pp->err = errno;
            return -PUMP_READ_ERROR;
        }
        if (waited && pp->a_r >= 0)
            return -PUMP_FULL; /* the socket has bytes, so pipe a has no room */
        if (pp->forwarded && now_ms() - started >= pp->yield_ms)
            return -PUMP_BUDGET;
        waited = 1;
        w = wait_for(pp->src, POLLIN, pp->wake, pp->quiet_ms);
        if (w == WAIT_WAKE)
            return -PUMP_WAKE;
        if (w == WAIT_QUIET)
            return -PUMP_QUIET;
        if (w == WAIT_ERROR) {
            pp->err = errno;
            return -PUMP_READ_ERROR;
        }
    }
}

static int run(struct pump *pp, const unsigned char *prefix, size_t prefix_len)
{
    size_t len = 0; /* bytes read and not forwarded: buf[0:len] (and, splicing, pipe a) */
    const long long started = now_ms();
    int status = prefix_len ? forward(pp, prefix, prefix_len, 0) : 0;

    while (!status) {
        size_t pos = 0, seen;
        ssize_t r = take(pp, len, started);

        if (r < 0) {
            status = (int)-r;
            break;
        }
        len += (size_t)r;
        seen = len;
        if (pp->a_r >= 0) {
            /* The whole of pipe a (what was kept last time, then what came) into pipe b,
             * and from there into buf: buf[0:seen] is the head of pipe a. */
            ssize_t t = tee(pp->a_r, pp->b_w, len, SPLICE_F_NONBLOCK);

            if (t <= 0 || read_pipe(pp->b_r, pp->buf, (size_t)t) < 0) {
                pp->err = t == 0 ? EIO : errno;
                status = PUMP_PIPE_ERROR;
                break;
            }
            seen = (size_t)t;
        }
        if (pp->skip) {
            size_t k = pp->skip < seen ? (size_t)pp->skip : seen;

            pos = k;
            pp->skip -= k;
        }
        if (!pp->skip)
            pos = ram_walk(pp->buf, pos, seen, &pp->rb, &pp->pages, &pp->zeros);
        if (pos) {
            status = forward(pp, pp->buf, pos, pp->a_r >= 0);
            if (status)
                break;
            pp->forwarded += pos;
        }
        len -= pos;
        memmove(pp->buf, pp->buf + pos, seen - pos); /* what was seen and not forwarded */
        if (!pp->skip && seen == len + pos &&
            !ram_walk_incomplete(pp->buf, 0, seen - pos, &pp->rb)) {
            status = PUMP_RECORD;
            break;
        }
        if (pp->forwarded >= pp->budget || now_ms() - started >= pp->yield_ms) {
            status = PUMP_BUDGET;
            break;
        }
    }
    if (status == PUMP_WAKE || status == PUMP_READ_ERROR || status == PUMP_WRITE_ERROR) {
        len = 0; /* the position is lost (a write may have been cut short): nothing kept */
    } else if (pp->a_r >= 0 && len) {
        /* What pipe a still holds is the leftover, in order: take it out. */
        if (read_pipe(pp->a_r, pp->buf, len) < 0) {
            pp->err = errno;
            status = PUMP_READ_ERROR; /* bytes lost: the connection cannot go on */
        }
    }
    pp->leftover = len;
    return status;
}

static PyObject *pump(PyObject *self, PyObject *args)
{
    int src, dst, wake, have_block, yield_ms, quiet_ms;
    Py_buffer view, pre;
    PyObject *prefix;
    unsigned long long skip, page_size, block_len;
    Py_ssize_t budget;
    PyObject *pipes;
    struct pump pp;
    int status;
    PyObject *result = NULL;

    (void)self;
    if (!PyArg_ParseTuple(args, "iiiw*KKKpniiOO", &src, &dst, &wake, &view, &skip,
                          &page_size, &block_len, &have_block, &budget, &yield_ms, &quiet_ms,
                          &pipes, &prefix))
        return NULL;
    memset(&pre, 0, sizeof pre);
    if (prefix != Py_None && PyObject_GetBuffer(prefix, &pre, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    memset(&pp, 0, sizeof pp);
    pp.a_r = pp.a_w = pp.b_r = pp.b_w = -1;
    if (pipes != Py_None &&
        !PyArg_ParseTuple(pipes, "iiii", &pp.a_r, &pp.a_w, &pp.b_r, &pp.b_w))
        goto done;
    if (page_size < 512 || (page_size & (page_size - 1)) != 0 ||
        (unsigned long long)view.len < 2 * (page_size + 8) || budget <= 0 || yield_ms <= 0 ||
        quiet_ms <= 0) {
        PyErr_SetString(PyExc_ValueError,
                        "pump: bad page size, buffer size (2 records at least), budget or wait");
        goto done;
    }
    pp.src = src;
    pp.dst = dst;
    pp.wake = wake;
    pp.buf = (unsigned char *)view.buf;
    pp.cap = (size_t)view.len;
    pp.rb = ram_block_of(page_size, block_len, have_block);
    pp.skip = skip;
    pp.budget = (size_t)budget;
    pp.yield_ms = yield_ms;
    pp.quiet_ms = quiet_ms;
    Py_BEGIN_ALLOW_THREADS
    status = run(&pp, (const unsigned char *)pre.buf, pre.obj != NULL ? (size_t)pre.len : 0);
    Py_END_ALLOW_THREADS
    result = Py_BuildValue("inn" "nKni", status, (Py_ssize_t)pp.forwarded,
                           (Py_ssize_t)pp.pages, (Py_ssize_t)pp.zeros,
                           (unsigned long long)pp.skip, (Py_ssize_t)pp.leftover, pp.err);
done:
    PyBuffer_Release(&view);
    if (pre.obj != NULL)
        PyBuffer_Release(&pre);
    return result;
}

static PyMethodDef methods[] = {
    {"pump", pump, METH_VARARGS,
     "pump(src, dst, wake, buf, skip, page_size, block_len, have_block, budget, yield_ms, "
     "quiet_ms, pipes, prefix) -> (status, forwarded, pages, zeros, skip_left, leftover, "
     "errno)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_rampump",
    "The RAM pump of the executor: RAM records from socket to socket without the GIL.", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__rampump(void)
{
    return PyModule_Create(&module);
}
