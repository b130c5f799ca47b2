/* The crop kernel of iqa-tune: copy crops out of the decoded-image cache, one memcpy per row.
 *
 * A batch of crops is, in the cache, B x P runs of P x 3 bytes each (one per crop row), evenly spaced within a
 * crop. numpy gathers them by a fancy index at 2-4 GB/s on 224 px crops and about 1 GB/s on 64 px ones (its
 * per-row overhead); one memcpy per row reaches 5-7 GB/s on either, about half a plain copy. Built at install time where a C compiler is present (setup.py marks it
 * optional); without it iqa_tune.patches falls back to numpy. The copy runs without the GIL, so the prefetch
 * thread's crops overlap the model's Python on the main thread.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

PyDoc_STRVAR(crops_doc,
"crops(src, first, stride, rows, width, out)\n\n"
"Copy len(first) crops out of src: crop k is `rows` rows of `width` bytes, row r starting at byte\n"
"first[k] + r * stride[k], written one after another into out. src: a bytes-like object (the cache's memory\n"
"map); first, stride: C-contiguous int64 buffers of the same length; out: a writable C-contiguous buffer of\n"
"len(first) * rows * width bytes. Every crop is checked before the first byte moves: IndexError names the first\n"
"crop that would read outside src.");

static PyObject *crops(PyObject *self, PyObject *args) {
    Py_buffer src, first, stride, out;
    Py_ssize_t rows, width;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "y*y*y*nnw*", &src, &first, &stride, &rows, &width, &out))
        return NULL;
    const int64_t *f = (const int64_t *)first.buf, *st = (const int64_t *)stride.buf;
    Py_ssize_t n = first.len / (Py_ssize_t)sizeof(int64_t);
    if (rows <= 0 || width <= 0 || first.len % (Py_ssize_t)sizeof(int64_t) != 0 || stride.len != first.len) {
        PyErr_SetString(PyExc_ValueError,
                        "crops: rows and width must be positive, first and stride int64 buffers of one length");
        goto done;
    }
    if (out.len != n * rows * width) {
        PyErr_Format(PyExc_ValueError, "crops: out holds %zd bytes, %zd crops of %zd x %zd need %zd",
                     out.len, n, rows, width, n * rows * width);
        goto done;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        /* the first and the last row bound every row between them (rows are evenly spaced) */
        int64_t last = f[k] + (int64_t)(rows - 1) * st[k];
        if (f[k] < 0 || last < 0 || f[k] > (int64_t)(src.len - width) || last > (int64_t)(src.len - width)) {
            PyErr_Format(PyExc_IndexError, "crops: crop %zd (rows from byte %lld, stride %lld) reads outside the "
                         "%zd-byte source", k, (long long)f[k], (long long)st[k], src.len);
            goto done;
        }
    }
    {
        const uint8_t *base = (const uint8_t *)src.buf;
        uint8_t *dst = (uint8_t *)out.buf;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t k = 0; k < n; k++) {
            const uint8_t *s = base + f[k];
            for (Py_ssize_t r = 0; r < rows; r++, s += st[k], dst += width)
                memcpy(dst, s, (size_t)width);
        }
        Py_END_ALLOW_THREADS
    }
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&src);
    PyBuffer_Release(&first);
    PyBuffer_Release(&stride);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"crops", crops, METH_VARARGS, crops_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_gather", "The crop kernel: crops out of the image cache, one memcpy per row.", -1,
    methods,
};

PyMODINIT_FUNC PyInit__gather(void) { return PyModule_Create(&module); }
