/*
 * The RAM record walk of migproxy's stream framer, compiled (optional; see ramsection.py).
 *
 * walk(buf, pos, end, page_size, block_len, have_block) -> (pos, pages, zeros)
 *
 * From buf[pos], walks the records the framer meets by the million: PAGE|CONTINUE (a
 * record word then one page) and ZERO|CONTINUE (a record word then one fill byte), each
 * checked as the Python loop checks it (a block is named and the page lies inside it).
 * It stops before the first record that is anything else, incomplete before ``end``, or
 * out of its block, and returns that record's position with the counts; the Python
 * framer handles that record exactly as without this module. So both implementations
 * frame every stream to the same bytes and events, whatever the split.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#define RAM_ZERO_CONT 0x22u
#define RAM_PAGE_CONT 0x28u

static inline uint64_t be64(const unsigned char *p)
{
    return ((uint64_t)p[0] << 56) | ((uint64_t)p[1] << 48) | ((uint64_t)p[2] << 40) |
           ((uint64_t)p[3] << 32) | ((uint64_t)p[4] << 24) | ((uint64_t)p[5] << 16) |
           ((uint64_t)p[6] << 8) | (uint64_t)p[7];
}

static PyObject *walk(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t pos, end, pages = 0, zeros = 0;
    unsigned long long page_size, block_len;
    int have_block;

    (void)self;
    if (!PyArg_ParseTuple(args, "y*nnKKp", &view, &pos, &end, &page_size, &block_len,
                          &have_block))
        return NULL;
    if (pos < 0 || end > view.len || pos > end || page_size < 512 ||
        (page_size & (page_size - 1)) != 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "walk: bad position, end or page size");
        return NULL;
    }
    {
        const unsigned char *b = (const unsigned char *)view.buf;
        const uint64_t ps = page_size, mask = page_size - 1, blen = block_len;
        /* the largest offset whose page lies inside the block (none if it is too short) */
        const int fits = have_block && blen >= ps;
        const uint64_t last = fits ? blen - ps : 0;

        Py_BEGIN_ALLOW_THREADS
        while (end - pos >= 8) {
            const uint64_t word = be64(b + pos);
            const uint64_t flags = word & mask;
            const uint64_t offset = word ^ flags;

            if (flags == RAM_PAGE_CONT) {
                if (!fits || offset > last || (uint64_t)(end - pos - 8) < ps)
                    break;
                pos += 8 + (Py_ssize_t)ps;
                pages++;
            } else if (flags == RAM_ZERO_CONT) {
                if (end - pos < 9 || !fits || offset > last)
                    break;
                pos += 9;
                zeros++;
            } else {
                break;
            }
        }
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("nnn", pos, pages, zeros);
}

static PyMethodDef methods[] = {
    {"walk", walk, METH_VARARGS,
     "walk(buf, pos, end, page_size, block_len, have_block) -> (pos, pages, zeros)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_ramwalk",
    "The RAM record walk of the stream framer, compiled.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__ramwalk(void)
{
    return PyModule_Create(&module);
}
