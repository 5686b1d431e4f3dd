/* The rows of a one-column binary COPY (PostgreSQL's ``COPY (query) TO STDOUT (FORMAT binary)``, the format in
   copyformat.py) joined by a separator: what a dataset export of unchanged items sends, read without a Python
   object per row (datasets.py, PgItemSnapshot.joined). In Python this walk costs more than asyncpg's own decoding
   of the rows; here it is two passes over the row headers and one memcpy a row. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static int32_t be32(const unsigned char *p)
{
    return (int32_t)(((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3]);
}

/* The rows from ``pos`` on that a piece takes (see join): how many, the end of the last, their values' bytes, and
   whether the COPY's trailer came. -1 and a ValueError for what is not a COPY of one non-NULL column. */
typedef struct {
    Py_ssize_t rows, end, values;
    int ended;
} Scan;

static int scan(const unsigned char *p, Py_ssize_t n, Py_ssize_t pos, Py_ssize_t sep, Py_ssize_t lead,
                Py_ssize_t max_rows, Py_ssize_t max_bytes, Scan *s)
{
    Py_ssize_t i = pos, total = 0;
    *s = (Scan){0};
    while (i + 2 <= n) { /* (the trailer is taken whatever the bounds: what follows a piece is a row) */
        int16_t fields = (int16_t)(((unsigned)p[i] << 8) | p[i + 1]);
        if (fields == -1) {
            if (i + 2 != n) {
                PyErr_SetString(PyExc_ValueError, "data after a binary COPY's trailer");
                return -1;
            }
            s->ended = 1;
            i = n;
            break;
        }
        if (fields != 1) {
            PyErr_Format(PyExc_ValueError, "a binary COPY row of %d fields, not 1", (int)fields);
            return -1;
        }
        if (s->rows >= max_rows || i + 6 > n)
            break;
        int32_t len = be32(p + i + 2);
        if (len < 0) {
            PyErr_SetString(PyExc_ValueError, "a NULL in a binary COPY of items");
            return -1;
        }
        if (i + 6 + len > n)
            break;
        Py_ssize_t add = (lead + s->rows ? sep : 0) + len;
        if (lead + total + add > max_bytes && lead + s->rows > 0)
            break;
        total += add;
        s->values += len;
        s->rows++;
        i += 6 + len;
    }
    s->end = i;
    return 0;
}

/* join(data, pos, sep, lead, max_rows, max_bytes) -> (joined, pos, rows, ended)

   The values of the whole rows from ``pos`` on (the start of a row in ``data``, past the COPY's header), to be
   appended to a piece of ``lead`` bytes: each after ``sep`` but the piece's first, as long as the piece stays within
   ``max_bytes`` and ``max_rows`` rows (an empty piece takes its first row whatever its size). ``pos`` after the
   last row taken; ``ended`` when the COPY's trailer came (``pos`` is then past it). Stops before a row cut at the
   end of ``data`` (its rest is in the caller's next data). Raises ValueError for what is not a COPY of one non-NULL
   column: a row of another width, a NULL, data after the trailer. */
static PyObject *join(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer data, sep;
    Py_ssize_t pos, lead, max_rows, max_bytes;
    if (!PyArg_ParseTuple(args, "y*ny*nnn:join", &data, &pos, &sep, &lead, &max_rows, &max_bytes))
        return NULL;
    PyObject *result = NULL;
    const unsigned char *p = data.buf;
    Scan s;
    if (pos < 0 || pos > data.len) {
        PyErr_SetString(PyExc_IndexError, "pos out of range");
        goto done;
    }
    if (scan(p, data.len, pos, sep.len, lead, max_rows, max_bytes, &s) < 0)
        goto done;
    PyObject *out = PyBytes_FromStringAndSize(NULL, s.values + (s.rows - (lead ? 0 : s.rows > 0)) * sep.len);
    if (out == NULL)
        goto done;
    char *w = PyBytes_AS_STRING(out);
    Py_ssize_t j = pos;
    for (Py_ssize_t r = 0; r < s.rows; r++) {
        Py_ssize_t len = be32(p + j + 2);
        if (lead + r) {
            memcpy(w, sep.buf, (size_t)sep.len);
            w += sep.len;
        }
        memcpy(w, p + j + 6, (size_t)len);
        w += len;
        j += 6 + len;
    }
    result = Py_BuildValue("(NnnO)", out, s.end, s.rows, s.ended ? Py_True : Py_False);
done:
    PyBuffer_Release(&data);
    PyBuffer_Release(&sep);
    return result;
}

/* values(data, pos, lead, max_rows, max_bytes) -> (values, pos, size, ended): join's rows as a list of bytes, one
   per row, to be appended to a batch of ``lead`` bytes (counted without separators), and their bytes. */
static PyObject *values(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer data;
    Py_ssize_t pos, lead, max_rows, max_bytes;
    if (!PyArg_ParseTuple(args, "y*nnnn:values", &data, &pos, &lead, &max_rows, &max_bytes))
        return NULL;
    PyObject *result = NULL;
    const unsigned char *p = data.buf;
    Scan s;
    if (pos < 0 || pos > data.len) {
        PyErr_SetString(PyExc_IndexError, "pos out of range");
        goto done;
    }
    if (scan(p, data.len, pos, 0, lead, max_rows, max_bytes, &s) < 0)
        goto done;
    PyObject *out = PyList_New(s.rows);
    if (out == NULL)
        goto done;
    Py_ssize_t j = pos;
    for (Py_ssize_t r = 0; r < s.rows; r++) {
        Py_ssize_t len = be32(p + j + 2);
        PyObject *v = PyBytes_FromStringAndSize((const char *)p + j + 6, len);
        if (v == NULL) {
            Py_DECREF(out);
            goto done;
        }
        PyList_SET_ITEM(out, r, v);
        j += 6 + len;
    }
    result = Py_BuildValue("(NnnO)", out, s.end, s.values, s.ended ? Py_True : Py_False);
done:
    PyBuffer_Release(&data);
    return result;
}

static PyMethodDef methods[] = {
    {"join", join, METH_VARARGS, "join(data, pos, sep, lead, max_rows, max_bytes): (joined, pos, rows, ended)."},
    {"values", values, METH_VARARGS, "values(data, pos, lead, max_rows, max_bytes): (values, pos, size, ended)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_copyrows", "a one-column binary COPY's rows joined (see _copyrows.c).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__copyrows(void)
{
    return PyModule_Create(&module);
}
