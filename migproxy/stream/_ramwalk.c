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

#include "ramwalk.h"

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
        const struct ram_block rb = ram_block_of(page_size, block_len, have_block);
        size_t p = (size_t)pos, np = 0, nz = 0;

        Py_BEGIN_ALLOW_THREADS
        p = ram_walk(b, p, (size_t)end, &rb, &np, &nz);
        Py_END_ALLOW_THREADS
        pos = (Py_ssize_t)p;
        pages = (Py_ssize_t)np;
        zeros = (Py_ssize_t)nz;
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
