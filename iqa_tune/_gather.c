/* The crop kernel of iqa-tune: copy crops out of the decoded-image cache, one memcpy per row.
 *
 * A batch of crops is, in the cache, B x P runs of P x 3 bytes each (one per crop row), evenly spaced within a
 * crop. numpy gathers them by a fancy index with a per-row overhead; one memcpy per row, on offsets drawn
 * beforehand, reached about half a plain copy's bandwidth at 224 px on the 2-core VM (docs/performance.md). Built
 * at install time where a C compiler is present (setup.py marks it optional); without it iqa_tune.patches falls
 * back to numpy. The copy runs without the GIL, so the prefetch thread's crops overlap the model's Python on the
 * main thread.
 *
 * Every argument is checked before the first byte moves, with arithmetic that cannot overflow, and the offsets are
 * copied first: nothing the caller does to its arrays while the GIL is released can move a read outside src.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

PyDoc_STRVAR(crops_doc,
"crops(src, first, stride, rows, width, out)\n\n"
"Copy len(first) crops out of src: crop k is `rows` rows of `width` bytes, row r starting at byte\n"
"first[k] + r * stride[k], written one after another into out. src: a C-contiguous bytes-like object (the\n"
"cache's memory map); first, stride: C-contiguous int64 arrays of one length; out: a writable C-contiguous\n"
"buffer of len(first) * rows * width bytes that does not overlap src. Every crop is checked before the first\n"
"byte moves: IndexError names the first crop that would read outside src.");

/* A C-contiguous buffer of signed 64-bit integers (numpy's int64: format 'l' or 'q', any native prefix). */
static int get_int64(PyObject *obj, Py_buffer *view, const char *name) {
    if (PyObject_GetBuffer(obj, view, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    const char *f = view->format ? view->format : "B";
    if (*f == '@' || *f == '=' || *f == '<')
        f++;
    if (view->itemsize != 8 || !(strcmp(f, "l") == 0 || strcmp(f, "q") == 0)) {
        PyErr_Format(PyExc_TypeError, "crops: %s must be an int64 array (got format '%s', %zd-byte items)", name,
                     view->format ? view->format : "B", view->itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* Whether `rows` rows of `width` bytes from byte f, stride st, all lie in [0, len): no product or sum overflows. */
static int inside(int64_t f, int64_t st, Py_ssize_t rows, Py_ssize_t width, Py_ssize_t len) {
    if (width > len || f < 0 || f > (int64_t)(len - width))
        return 0;
    if (rows == 1)
        return 1;
    if (st == INT64_MIN)
        return 0;
    int64_t room = st >= 0 ? (int64_t)(len - width) - f : f; /* how far the last row's start may move from f */
    int64_t step = st >= 0 ? st : -st;
    return step <= room / (int64_t)(rows - 1);
}

static PyObject *crops(PyObject *self, PyObject *args) {
    PyObject *first_obj, *stride_obj;
    Py_buffer src, first, stride, out;
    Py_ssize_t rows, width;
    int64_t *offsets = NULL;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "y*OOnnw*", &src, &first_obj, &stride_obj, &rows, &width, &out))
        return NULL;
    if (get_int64(first_obj, &first, "first") < 0) {
        PyBuffer_Release(&src);
        PyBuffer_Release(&out);
        return NULL;
    }
    if (get_int64(stride_obj, &stride, "stride") < 0) {
        PyBuffer_Release(&src);
        PyBuffer_Release(&first);
        PyBuffer_Release(&out);
        return NULL;
    }
    Py_ssize_t n = first.len / 8;
    if (rows <= 0 || width <= 0 || stride.len != first.len) {
        PyErr_SetString(PyExc_ValueError, "crops: rows and width must be positive, first and stride of one length");
        goto done;
    }
    if (rows > PY_SSIZE_T_MAX / width || (n > 0 && rows * width > PY_SSIZE_T_MAX / n)) {
        PyErr_Format(PyExc_ValueError, "crops: %zd crops of %zd x %zd bytes overflow a buffer size", n, rows, width);
        goto done;
    }
    if (out.len != n * rows * width) {
        PyErr_Format(PyExc_ValueError, "crops: out holds %zd bytes, %zd crops of %zd x %zd need %zd",
                     out.len, n, rows, width, n * rows * width);
        goto done;
    }
    {
        const char *s0 = (const char *)src.buf, *o0 = (const char *)out.buf;
        if (out.len > 0 && src.len > 0 && o0 < s0 + src.len && s0 < o0 + out.len) {
            PyErr_SetString(PyExc_ValueError, "crops: out overlaps src");
            goto done;
        }
    }
    /* the offsets the copy will use, checked and owned here: the caller's arrays may change once the GIL is gone */
    offsets = PyMem_Malloc(n > 0 ? (size_t)n * 2 * sizeof(int64_t) : 1);
    if (offsets == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    memcpy(offsets, first.buf, (size_t)n * sizeof(int64_t));
    memcpy(offsets + n, stride.buf, (size_t)n * sizeof(int64_t));
    for (Py_ssize_t k = 0; k < n; k++) {
        if (!inside(offsets[k], offsets[n + k], rows, width, src.len)) {
            PyErr_Format(PyExc_IndexError, "crops: crop %zd (rows from byte %lld, stride %lld) reads outside the "
                         "%zd-byte source", k, (long long)offsets[k], (long long)offsets[n + k], src.len);
            goto done;
        }
    }
    {
        const uint8_t *base = (const uint8_t *)src.buf;
        uint8_t *dst = (uint8_t *)out.buf;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t k = 0; k < n; k++) {
            const uint8_t *s = base + offsets[k];
            int64_t st = offsets[n + k];
            for (Py_ssize_t r = 0; r < rows; r++, s += st, dst += width)
                memcpy(dst, s, (size_t)width);
        }
        Py_END_ALLOW_THREADS
    }
    result = Py_None;
    Py_INCREF(result);
done:
    PyMem_Free(offsets);
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
