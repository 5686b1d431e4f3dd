/* The packed rows of dataset_items in a binary COPY (PostgreSQL's ``COPY (SELECT idx, n, data ...) TO STDOUT
   (FORMAT binary)``, the format in copyformat.py): each row holds the items ``idx - n + 1 .. idx``, their bytes
   joined by b"\n". What an export reads, without a Python object per row or per item (datasets.py, _Joined): the
   items of a range in order, ascending or descending, as pieces joined by a separator or as lists of the items.
   An ascending piece joined by b"\n" takes a whole row with one memcpy; the rows at the ends of the range are
   trimmed, and another separator replaces the b"\n" between the items of a row. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* a row: the field count, then (length, value) for idx (int8), n (int4) and data (bytea) */
#define ROW_HEAD 26

static int32_t be32(const unsigned char *p)
{
    return (int32_t)(((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3]);
}

static int64_t be64(const unsigned char *p)
{
    return (int64_t)(((uint64_t)(uint32_t)be32(p) << 32) | (uint64_t)(uint32_t)be32(p + 4));
}

/* A part of the output: ``len`` bytes at ``p``, holding ``inner`` b"\n" that become the separator (several items
   of a row in their stored order) or none (one item). */
typedef struct {
    const unsigned char *p;
    Py_ssize_t len, inner;
} Seg;

typedef struct {
    Seg *segs;
    Py_ssize_t nsegs, segcap;
    Py_ssize_t *offs; /* the start of each item of the row being split, and one past its end + 1 */
    Py_ssize_t offcap;
} Work;

static int add_seg(Work *w, const unsigned char *p, Py_ssize_t len, Py_ssize_t inner)
{
    if (w->nsegs == w->segcap) {
        Py_ssize_t cap = w->segcap ? w->segcap * 2 : 64;
        Seg *s = PyMem_Realloc(w->segs, (size_t)cap * sizeof(Seg));
        if (s == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        w->segs = s;
        w->segcap = cap;
    }
    w->segs[w->nsegs++] = (Seg){p, len, inner};
    return 0;
}

/* offs[k]: where item k of the row starts, for k < n; offs[n]: the row's length + 1. -1 and a ValueError when
   the row does not hold n items. */
static int split(Work *w, const unsigned char *d, Py_ssize_t len, Py_ssize_t n)
{
    if (n + 1 > w->offcap) {
        Py_ssize_t *o = PyMem_Realloc(w->offs, (size_t)(n + 1) * sizeof(Py_ssize_t));
        if (o == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        w->offs = o;
        w->offcap = n + 1;
    }
    Py_ssize_t k = 0, at = 0;
    w->offs[0] = 0;
    for (;;) {
        const unsigned char *nl = len > at ? memchr(d + at, '\n', (size_t)(len - at)) : NULL;
        if (nl == NULL)
            break;
        if (++k >= n)
            break;
        at = nl - d + 1;
        w->offs[k] = at;
    }
    if (k != n - 1) {
        PyErr_Format(PyExc_ValueError, "a packed row of %zd items holding another number", n);
        return -1;
    }
    w->offs[n] = len + 1;
    return 0;
}

enum { FULL = 0, MORE = 1, ENDED = 2 };

/* take(data, pos, next, lo, hi, desc, sep, lead, room, max_bytes) -> (out, pos, next, items, size, state)

   The items of the range [lo, hi) from the rows in ``data`` from ``pos`` on (the start of a row, past the COPY's
   header), in order from item ``next`` (ascending: up; ``desc``: down), for a piece that holds ``lead`` bytes
   already: each item after ``sep`` but the piece's first, as long as the piece stays within ``max_bytes`` and
   ``room`` more items (an empty piece takes its first item whatever its size). ``sep`` None: the items as a list
   of bytes, counted without separators. ``out``: the bytes to append (or the list), ``size`` their bytes, ``pos``
   the row where the next item is (a row may be left in the middle), ``next`` the next item; ``state`` FULL (0:
   the next item does not fit), MORE (1: the rest of ``data`` is not a whole row; it comes with the next data) or
   ENDED (2: the COPY's trailer came; ``pos`` is past it). Rows wholly outside the range are passed over. Raises
   ValueError for what is not a COPY of such rows: another width, a NULL, data after the trailer, a row that does
   not hold its n items or holds items before 0, or a row that is not the next (items missing); and for a
   ``lead``, ``room`` or ``max_bytes`` below 0 or a ``lead`` past PY_SSIZE_T_MAX / 4 (a caller's error). A row
   that goes whole into a joined piece, joined by b"\n" or of one item, is copied as stored, its b"\n" not
   counted against its n (PostgreSQL's rows, and a stored item holds no b"\n"); the other rows are split. */
static PyObject *take(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer data;
    Py_ssize_t pos, lead, room, max_bytes;
    long long next, lo, hi;
    int desc;
    PyObject *sepobj;
    if (!PyArg_ParseTuple(args, "y*nLLLpOnnn:take", &data, &pos, &next, &lo, &hi, &desc, &sepobj, &lead, &room,
                          &max_bytes))
        return NULL;
    PyObject *result = NULL, *out = NULL;
    if (lead < 0 || room < 0 || max_bytes < 0 || lead > PY_SSIZE_T_MAX / 4) {
        /* (only a caller's error: the sums of bytes below then stay far from the limits) */
        PyErr_SetString(PyExc_ValueError, "lead, room or max_bytes out of range");
        PyBuffer_Release(&data);
        return NULL;
    }
    Work w = {0};
    const unsigned char *sep = NULL;
    Py_ssize_t seplen = 0;
    int listed = sepobj == Py_None;
    if (!listed) {
        if (!PyBytes_Check(sepobj)) {
            PyErr_SetString(PyExc_TypeError, "sep must be bytes or None");
            goto done;
        }
        sep = (const unsigned char *)PyBytes_AS_STRING(sepobj);
        seplen = PyBytes_GET_SIZE(sepobj);
    }
    int newline = seplen == 1 && sep[0] == '\n'; /* a run of a row's items goes as it is stored */
    const unsigned char *p = data.buf;
    Py_ssize_t n = data.len;
    if (pos < 0 || pos > n) {
        PyErr_SetString(PyExc_IndexError, "pos out of range");
        goto done;
    }
    Py_ssize_t items = 0, size = 0; /* taken: items, and bytes (separators included when joined) */
    int state = MORE;
    while (pos + 2 <= n) {
        int16_t fields = (int16_t)(((unsigned)p[pos] << 8) | p[pos + 1]);
        if (fields == -1) { /* (the trailer is taken whatever the bounds) */
            if (pos + 2 != n) {
                PyErr_SetString(PyExc_ValueError, "data after a binary COPY's trailer");
                goto done;
            }
            pos = n;
            state = ENDED;
            break;
        }
        if (fields != 3) {
            PyErr_Format(PyExc_ValueError, "a binary COPY row of %d fields, not 3", (int)fields);
            goto done;
        }
        if (pos + ROW_HEAD > n)
            break;
        const unsigned char *h = p + pos + 2;
        if (be32(h) != 8 || be32(h + 12) != 4) {
            PyErr_SetString(PyExc_ValueError, "a packed row's idx or n is not of its type (or NULL)");
            goto done;
        }
        int64_t idx = be64(h + 4), count = be32(h + 16);
        int32_t len = be32(h + 20);
        if (len < 0 || count < 1 || idx < count - 1) {
            PyErr_SetString(PyExc_ValueError, "a packed row without data or items, or of items before 0");
            goto done;
        }
        if (pos + ROW_HEAD + len > n)
            break;
        const unsigned char *d = p + pos + ROW_HEAD;
        int64_t first = idx - count + 1;
        if (desc ? next < lo : next >= hi) { /* the range is done: a row past it */
            pos += ROW_HEAD + len;
            continue;
        }
        /* the items of this row still wanted, in the order they go: from ``next`` to ``last`` (hi > next here:
           hi - 1 does not overflow) */
        int64_t last = desc ? (first > lo ? first : lo) : (idx < hi - 1 ? idx : hi - 1);
        if (next < first || next > idx) {
            PyErr_Format(PyExc_ValueError, "item %lld is not in the next packed row (%lld..%lld): items missing",
                         (long long)next, (long long)first, (long long)idx);
            goto done;
        }
        Py_ssize_t lead_in = lead + size;
        int held = lead_in || items; /* the piece holds an item (an empty one too): the next goes after sep */
        Py_ssize_t want = (Py_ssize_t)(desc ? next - last : last - next) + 1;
        Py_ssize_t whole = len + (count - 1) * (seplen - 1) + (held ? seplen : 0);
        if (!listed && !desc && next == first && last == idx && want <= room - items &&
            (lead_in + whole <= max_bytes || (!held && want == 1))) {
            /* the whole row at once: its bytes, its b"\n" the separator */
            if (add_seg(&w, d, len, newline ? 0 : count - 1) < 0)
                goto done;
            size += whole;
            items += want;
            next = idx + 1;
            pos += ROW_HEAD + len;
            continue;
        }
        if (split(&w, d, len, (Py_ssize_t)count) < 0)
            goto done;
        Py_ssize_t run = -1, runitems = 0; /* ascending joined: the run of this row's items taken so far */
        int full = 0;
        for (;;) {
            if (desc ? next < last : next > last)
                break;
            Py_ssize_t k = (Py_ssize_t)(next - first);
            Py_ssize_t ilen = w.offs[k + 1] - 1 - w.offs[k];
            held = lead + size || items;
            Py_ssize_t add = ilen + (held && !listed ? seplen : 0);
            if (items >= room || (held && lead + size + add > max_bytes)) {
                full = 1;
                break;
            }
            if (listed || desc) {
                if (add_seg(&w, d + w.offs[k], ilen, 0) < 0)
                    goto done;
            } else if (run < 0) {
                run = w.offs[k];
            }
            runitems++;
            size += add;
            items++;
            next += desc ? -1 : 1;
        }
        if (run >= 0) {
            Py_ssize_t end = w.offs[(Py_ssize_t)(next - first)] - 1; /* (the end of the run's last item) */
            if (add_seg(&w, d + run, end - run, newline ? 0 : runitems - 1) < 0)
                goto done;
        }
        if (full) {
            state = FULL;
            break;
        }
        pos += ROW_HEAD + len;
    }

    if (listed) {
        out = PyList_New(w.nsegs);
        if (out == NULL)
            goto done;
        for (Py_ssize_t s = 0; s < w.nsegs; s++) {
            PyObject *v = PyBytes_FromStringAndSize((const char *)w.segs[s].p, w.segs[s].len);
            if (v == NULL)
                goto done;
            PyList_SET_ITEM(out, s, v);
        }
    } else {
        if (size < 0) { /* (a row's n past its bytes, joined by b"": counted less than nothing) */
            PyErr_SetString(PyExc_ValueError, "a packed row that does not hold its items");
            goto done;
        }
        out = PyBytes_FromStringAndSize(NULL, size);
        if (out == NULL)
            goto done;
        unsigned char *o = (unsigned char *)PyBytes_AS_STRING(out), *end = o + size;
        Py_ssize_t s;
        for (s = 0; s < w.nsegs; s++) {
            Seg g = w.segs[s];
            /* every copy within the bytes counted: a row whose n is not its items' count is counted wrong */
            if ((lead || s) && seplen > end - o)
                break;
            if (lead || s) {
                memcpy(o, sep, (size_t)seplen);
                o += seplen;
            }
            if (!g.inner && g.len > end - o)
                break;
            if (!g.inner) {
                memcpy(o, g.p, (size_t)g.len);
                o += g.len;
                continue;
            }
            Py_ssize_t at = 0, found = 0;
            for (;;) {
                const unsigned char *nl = memchr(g.p + at, '\n', (size_t)(g.len - at));
                Py_ssize_t part = (nl ? nl - g.p : g.len) - at;
                if ((nl && ++found > g.inner) || part > end - o || (nl && seplen > end - o - part))
                    break; /* (a row that does not hold its items: never past the bytes counted) */
                memcpy(o, g.p + at, (size_t)part);
                o += part;
                if (!nl)
                    break;
                memcpy(o, sep, (size_t)seplen);
                o += seplen;
                at += part + 1;
            }
            if (found != g.inner)
                break;
        }
        if (s < w.nsegs) {
            PyErr_SetString(PyExc_ValueError, "a packed row that does not hold its items");
            goto done;
        }
        if (o != end) {
            PyErr_SetString(PyExc_SystemError, "_copyrows.take: joined bytes miscounted");
            goto done;
        }
    }
    result = Py_BuildValue("(OnLnni)", out, pos, next, items, size, state);
done:
    Py_XDECREF(out);
    PyMem_Free(w.segs);
    PyMem_Free(w.offs);
    PyBuffer_Release(&data);
    return result;
}

static PyMethodDef methods[] = {
    {"take", take, METH_VARARGS,
     "take(data, pos, next, lo, hi, desc, sep, lead, room, max_bytes): (out, pos, next, items, size, state)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_copyrows", "the items of a binary COPY of packed rows (see _copyrows.c).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__copyrows(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m == NULL || PyModule_AddIntConstant(m, "FULL", FULL) < 0 || PyModule_AddIntConstant(m, "MORE", MORE) < 0 ||
        PyModule_AddIntConstant(m, "ENDED", ENDED) < 0) {
        Py_XDECREF(m);
        return NULL;
    }
    return m;
}
