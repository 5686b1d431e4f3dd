/* csv lines of stored dataset items, straight from their JSON bytes (issue 13's csv goal).

What it replaces, for the common export (format=csv, no option that changes rows): openkvs/datasets/itemjson.py
``load`` of each item, then formats.py ``CsvRenderer.rows`` of the parsed items. Per row that is ~8.5 us of Python;
this walks each item's bytes once, keeps the text of each column's last leaf (formats.py ``row_texts``: a later
leaf of one path wins, null writes "", empty containers write nothing) and writes the line.

The Python path stays the reference (tests/datasets/test_ccsv.py compares the two) and the fallback: wherever this
code is not sure that its bytes would be the Python path's, it stops at that item and Python renders it. It stops
at: anything that is not strict JSON (Python would fail or parse it otherwise), a top-level value that is not an
object (Shape.iter_rows gives no row), invalid UTF-8 (and UTF-8 of surrogates), a lone surrogate escape, a
duplicate key in an object (the parsed dict keeps one value at the first key's place), nesting deeper than
MAX_DEPTH, an integer of more than MAX_INT_DIGITS digits (Python's int/str limit may refuse it), "-0", a number in
a column whose text is not Python's repr of its value (e.g. 1E5, 1e400, 0.10000000000000001), an object of more
than MAX_OBJECT_KEYS keys (the check for a repeated key is pairwise: Python's parse is linear).

The walk runs without the GIL (the export's other threads, storage reads and the event loop's sends, go on
meanwhile): the items are held (a reference each) and the buffers that grow meanwhile are PyMem_Raw's. The one
check that needs Python, a float text that is maybe not repr (more than 15 digits, or an exponent: float_is_repr),
is deferred to after the walk, with the GIL; where it fails, the lines end before that item's.

The plan: the items of a dataset mostly have one shape, the same keys in the same order, so the walk remembers
the steps of the last item it walked (each member's key and each array element, in order, with its depth and its
path's hash and length, and its column once a leaf of it has looked that up: ``Step``) and follows them in the
next item. A member whose key's bytes and closing quote are the remembered key's, at the same depth, takes the
step's path and column: no hash of its path, no look-up of its column, no check of its key against its object's
earlier keys (the plan's keys of that object were checked against each other when learnt) and no scan of the key
(the comparison is one). An element at the step's depth takes the step's (its index is the step's: the steps
before it were the same). At the first step that differs (another key, depth or kind of step, a key with escapes,
the plan's end), the rest of that item is walked as without a plan (its path written from the segments kept
meanwhile), and its steps from there replace the plan's. Only paths come from the plan: every value is parsed and
checked as without one, so each rule above holds whatever the plan holds. A plan is made anew in each call, from
its first item; the remembered keys are bytes of earlier items of the call, which stay as they are until it
returns. (callgrind, bench/datasets.py's items: 7,750 instructions per item without it, 4,970 with it.)

The template: most items of a dataset are byte for byte the item before but for their leaves (strings, numbers,
true, false, null), so each item walked in full is also kept as its leaves' places: the bytes between one leaf and
the next (keys, punctuation, brackets, empty containers; ``Slot``) and each leaf's column. The next item is first
matched against it: the bytes between its leaves compared with the template's, each leaf parsed and checked as
in the walk, its cell the template's column, and nothing else (no recursion, no key steps, no path: callgrind,
bench/cg_csv.py, 4,740 instructions per item with the walk and its plan, 2,400 with templates). Bytes that are the template's are JSON of the same structure and keys, so every
rule above holds as it did for the template's item (its keys were checked for repeats, its depth and object sizes
counted). A call keeps TEMPLATES of them (a dataset's items of optional keys have a few shapes): an item starts
with the one the last item followed, and where that one's next bytes differ it goes on with another whose bytes
before are the same (the leaves before have the same paths in both: their cells stand). An item that follows none
goes to the walk with its plan, as without templates, and is a template if it is rendered (in place of the one
followed least recently); items that keep following none pause the templates for a while (walk_item).

Python API (formats.py wraps it):
    prepare(columns: list[str], delimiter: str) -> table | None   (None: this table can't be done here)
    lines(table, items: list[bytes], start: int) -> (bytes, stop)
        the csv lines (each ending CRLF) of items[start:stop]; stop == len(items), or the index of the first item
        left to Python.
    joined_lines(table, data: bytes, start: int) -> (bytes, stop)
        the same for the items of data[start:] joined by b"\n" (storage's joined pieces): the lines of those in
        data[start:stop]; stop == len(data), or the offset of the first item left to Python.
*/

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "_jsonbytes.h"

#define MAX_DEPTH 256         /* stored items nest at most 128 levels (api/items.py ITEM_MAX_DEPTH) */
#define MAX_INT_DIGITS 640    /* the least int/str digit limit Python can be set to (sys.set_int_max_str_digits) */
#define MAX_FLOAT_TEXT 32     /* a float's repr is at most 24 characters: a longer token is not one */
#define MAX_OBJECT_KEYS 256   /* an object of more keys is left to Python: each key is checked against the object's
                                 earlier ones, so one object of n keys costs n*n/2 checks (500,000 keys: 47 s) */
#define MAX_PLAN_STEPS 1024   /* the steps of an item a plan remembers (an item of more is planned up to there) */
#define UNKNOWN_COL (-2)      /* a step's column not looked up yet */
#define MAX_TEMPLATE_LEAVES 1024 /* the leaves of an item a template holds (an item of more makes none) */
#define TEMPLATES 8           /* the templates kept: a dataset's items of a few shapes (optional keys) follow one each */
#define TRIES_BEFORE_PAUSE 4  /* items in a row that follow no template before the templates are paused */
#define MAX_PAUSE 64          /* items walked without trying the templates, at most, between two tries */

/* A byte's class inside a JSON string (one table per delimiter). */
enum { C_PLAIN, C_DELIM, C_END, C_ESCAPE, C_CONTROL, C_HIGH };

/* What a cell's text needs when written: NEED_QUOTES (holds the delimiter, '"', CR or LF) and HAS_QUOTE (holds '"',
   which quoting doubles). */
#define NEED_QUOTES 1
#define HAS_QUOTE 2

typedef struct {
    const char *text; /* NULL: empty */
    Py_ssize_t len;
    int flags;
} Cell;

typedef struct {
    Py_ssize_t ncols;
    Py_ssize_t maxlen;       /* the longest column's UTF-8 bytes: a longer path matches none */
    char **names;            /* each column's UTF-8 (owned copies) */
    Py_ssize_t *lens;
    uint64_t *hashes;
    Py_ssize_t *slots;       /* open addressing over the columns: index + 1, 0 empty */
    size_t mask;
    unsigned char delim;
    unsigned char cls[256];  /* byte classes in a string */
    int num_flags[256];      /* NEED_QUOTES for a byte of a number token that is the delimiter */
    int true_flags, false_flags;
    int spread;              /* the most csv bytes per byte of an item, but for ncols + 4 a line (see line_room) */
    int num_delim;           /* the delimiter is a byte a number's text may hold */
} Table;

/* One step of a walk: a member of an object (its key) or an element of an array, at the container's depth (the
   item is 1), with its path's hash and length (-1: longer than any column) and its column. */
enum { STEP_KEY, STEP_ELEMENT };
typedef struct {
    const char *key;  /* STEP_KEY: the key's bytes in the item it was learnt from (the same bytes are the same key);
                         NULL for a key with escapes, which no later key matches */
    Py_ssize_t klen;
    uint64_t h;
    Py_ssize_t plen;
    Py_ssize_t col;   /* the path's column, -1 none, UNKNOWN_COL: not looked up yet (only a leaf needs it) */
    int depth;
    int kind;
} Step;

/* A leaf of a template (see the header): the bytes before it since the leaf before (or the item's start), and the
   column of its path (-1: none). */
typedef struct {
    const unsigned char *lit;
    Py_ssize_t n;
    Py_ssize_t col;
} Slot;

typedef struct {
    Slot *slots;         /* its n leaves, then slots[n]: the bytes after the last leaf, to the item's end */
    Py_ssize_t n;
    unsigned char *lits; /* the slots' bytes, owned, and 16 more: a literal is read 16 bytes at a time, which could
                            pass the end of the item it was learnt from */
    Py_ssize_t common[TEMPLATES]; /* with each other template: how many of the first slots have the same bytes */
    int direct;          /* its leaves' columns are the columns in order, one leaf each (see follow) */
    size_t used;         /* when it was last followed (the one followed least recently makes room) */
} Template;

/* The state of one call of lines(). */
typedef struct {
    const Table *t;
    const unsigned char *p, *end;
    Cell *cells;
    char *scratch;            /* decoded strings with escapes; never longer than the item's bytes */
    Py_ssize_t scratch_cap, scratch_len;
    char *path;               /* the current path's UTF-8, when it is at most t->maxlen bytes */
    struct Key { const char *s; Py_ssize_t n; uint64_t h; } *keys; /* the keys of the open objects, outermost first */
    Py_ssize_t nkeys, keys_cap;
    Py_ssize_t current; /* the item walked */
    struct Deferred { Py_ssize_t item; const unsigned char *s; Py_ssize_t n; } *deferred; /* float texts to check */
    Py_ssize_t ndeferred, deferred_cap;
    Step *steps;              /* the plan: the steps of the last item walked (see the header) */
    Py_ssize_t nsteps, next;  /* how many; the one the item walked is at */
    int planning;             /* the item walked has matched the plan so far */
    struct Seg { const char *s; Py_ssize_t n; } *segs; /* while planning: the segment of the path at each depth (a
                                                          key's bytes; s NULL: an element, n its index) */
    Template tmpls[TEMPLATES];
    int ntmpls, cur;          /* the templates; the one the last item followed (tried first) */
    size_t clock;
    int misses, pause;        /* items in a row that followed none; items still to walk without trying them */
    Slot *rec;                /* the leaves of the item walked, recorded for a template */
    Py_ssize_t nrec;
    const unsigned char *rec_from; /* the end of the last leaf recorded (NULL: not recorded, or too many leaves) */
} Walk;

/* The walk's results: _jsonbytes.h's OK, BAIL and ERROR (out of memory: raised once the GIL is back), and MORE. */
#define MORE 3 /* separator() only: another member or element follows */
#define OVERRUN 4 /* render() only: a line took more than line_room (never: a SystemError if it did) */
#define RESTART 5 /* follow() only: the line written as the leaves came can't go on (see follow) */

static const char CAPSULE[] = "openkvs.datasets._ccsv.table";

/* -- the table of columns ------------------------------------------------------------------------------------- */

static void table_free(Table *t)
{
    if (t == NULL)
        return;
    if (t->names != NULL)
        for (Py_ssize_t i = 0; i < t->ncols; i++)
            PyMem_Free(t->names[i]);
    PyMem_Free(t->names);
    PyMem_Free(t->lens);
    PyMem_Free(t->hashes);
    PyMem_Free(t->slots);
    PyMem_Free(t);
}

static void capsule_free(PyObject *capsule)
{
    table_free((Table *)PyCapsule_GetPointer(capsule, CAPSULE));
}

/* The column whose name is path[0:len] (hash h), or -1. */
static Py_ssize_t lookup(const Table *t, const char *path, Py_ssize_t len, uint64_t h)
{
    for (size_t i = (size_t)h & t->mask;; i = (i + 1) & t->mask) {
        Py_ssize_t s = t->slots[i];
        if (s == 0)
            return -1;
        s--;
        if (t->hashes[s] == h && t->lens[s] == len && memcmp(t->names[s], path, (size_t)len) == 0)
            return s;
    }
}

static PyObject *prepare(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *columns, *delimiter;
    if (!PyArg_ParseTuple(args, "O!U:prepare", &PyList_Type, &columns, &delimiter))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(columns);
    /* One ASCII character other than '"', CR and LF (query.py allows any one character: another one, or no
       columns, is left to Python). */
    if (n == 0 || PyUnicode_GET_LENGTH(delimiter) != 1)
        Py_RETURN_NONE;
    Py_UCS4 d = PyUnicode_READ_CHAR(delimiter, 0);
    if (d >= 0x80 || d == '"' || d == '\r' || d == '\n')
        Py_RETURN_NONE;
    Table *t = PyMem_Calloc(1, sizeof(Table));
    if (t == NULL)
        return PyErr_NoMemory();
    size_t size = 8;
    while (size < (size_t)n * 2)
        size *= 2;
    t->mask = size - 1;
    t->names = PyMem_Calloc((size_t)n, sizeof(char *));
    t->lens = PyMem_Calloc((size_t)n, sizeof(Py_ssize_t));
    t->hashes = PyMem_Calloc((size_t)n, sizeof(uint64_t));
    t->slots = PyMem_Calloc(size, sizeof(Py_ssize_t));
    if (t->names == NULL || t->lens == NULL || t->hashes == NULL || t->slots == NULL) {
        table_free(t);
        return PyErr_NoMemory();
    }
    t->ncols = n;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name = PyList_GET_ITEM(columns, i);
        Py_ssize_t len;
        const char *utf8 = PyUnicode_Check(name) ? PyUnicode_AsUTF8AndSize(name, &len) : NULL;
        if (utf8 == NULL) { /* not a str, or a lone surrogate: Python's */
            PyErr_Clear();
            table_free(t);
            Py_RETURN_NONE;
        }
        t->names[i] = PyMem_Malloc(len ? (size_t)len : 1);
        if (t->names[i] == NULL) {
            table_free(t);
            return PyErr_NoMemory();
        }
        memcpy(t->names[i], utf8, (size_t)len);
        t->lens[i] = len;
        t->hashes[i] = fnv(FNV_OFFSET, utf8, len);
        if (len > t->maxlen)
            t->maxlen = len;
        if (lookup(t, utf8, len, t->hashes[i]) >= 0) { /* a repeated column: row_texts fills both; Python's */
            table_free(t);
            Py_RETURN_NONE;
        }
        size_t j = (size_t)t->hashes[i] & t->mask;
        while (t->slots[j] != 0)
            j = (j + 1) & t->mask;
        t->slots[j] = i + 1;
    }
    t->delim = (unsigned char)d;
    for (int c = 0; c < 256; c++)
        t->cls[c] = c < 0x20 ? C_CONTROL : c >= 0x80 ? C_HIGH : C_PLAIN;
    t->cls[(unsigned char)d] = C_DELIM; /* a control character as the delimiter is still refused raw: see below */
    if (d < 0x20)
        t->cls[(unsigned char)d] = C_CONTROL;
    t->cls['"'] = C_END;
    t->cls['\\'] = C_ESCAPE;
    t->num_flags[(unsigned char)d] = NEED_QUOTES;
    t->true_flags = memchr("true", (int)d, 4) ? NEED_QUOTES : 0;
    t->false_flags = memchr("false", (int)d, 5) ? NEED_QUOTES : 0;
    t->spread = memchr("0123456789+-.eEtruefalse", (int)d, 24) ? 3 : 1;
    t->num_delim = memchr("0123456789+-.eE", (int)d, 15) != NULL;
    PyObject *capsule = PyCapsule_New(t, CAPSULE, capsule_free);
    if (capsule == NULL)
        table_free(t);
    return capsule;
}

/* -- the walk of one item ------------------------------------------------------------------------------------- */

static void ws(Walk *w)
{
    /* (stored JSON is compact: the first test ends it for any byte after the space) */
    while (w->p < w->end && *w->p <= ' ' && (*w->p == ' ' || *w->p == '\t' || *w->p == '\n' || *w->p == '\r'))
        w->p++;
}

/* Whether the next token is the byte c (after any whitespace); then w->p is past it. (Stored JSON is compact: c
   is there, without the calls of ws() that were a twentieth of the walk.) */
static inline int next_is(Walk *w, unsigned char c)
{
    if (w->p < w->end && *w->p == c) {
        w->p++;
        return 1;
    }
    ws(w);
    if (w->p < w->end && *w->p == c) {
        w->p++;
        return 1;
    }
    return 0;
}

/* The flags of one decoded ASCII byte. */
static int ascii_flags(const Table *t, unsigned char c)
{
    if (c == '"')
        return NEED_QUOTES | HAS_QUOTE;
    return c == '\r' || c == '\n' || c == t->delim ? NEED_QUOTES : 0;
}

/* Which of the 8 bytes at p are not plain text (C_PLAIN): '"', '\\', the delimiter, a control character or
   non-ASCII, as the high bit of each. Word-at-a-time tests (a zero byte of x: (x - 0x01..) & ~x & 0x80..; a byte
   under 0x20 likewise) that may flag a plain byte after a special one (a borrow), never the bytes before the first
   special one, and never miss it: 0 when all 8 are plain. */
static uint64_t special8(const Table *t, const unsigned char *p)
{
    const uint64_t ones = 0x0101010101010101ULL, high = 0x8080808080808080ULL;
    uint64_t v, q, b, d;
    memcpy(&v, p, 8);
    q = v ^ (ones * '"');
    b = v ^ (ones * '\\');
    d = v ^ (ones * t->delim);
    return (v | ((q - ones) & ~q) | ((b - ones) & ~b) | ((d - ones) & ~d) | ((v - ones * 0x20) & ~v)) & high;
}

#ifdef __SSE2__
/* special8 for 16 bytes (SSE2 is part of x86-64): a bit per byte, set for exactly the bytes that are not plain
   text ('"', '\\', the delimiter, a control character or non-ASCII: under 0x20 as a signed byte); 0 when all 16
   are plain. A third of the instructions per byte of special8's word tests, which were a seventh of a csv
   export's rendering (callgrind). */
static int special16(__m128i quote, __m128i backslash, __m128i delim, __m128i space, const unsigned char *p)
{
    __m128i v = _mm_loadu_si128((const __m128i *)p);
    __m128i m = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                             _mm_or_si128(_mm_cmpeq_epi8(v, delim), _mm_cmplt_epi8(v, space)));
    return _mm_movemask_epi8(m);
}
#endif

/* The plain bytes before the first flagged one of a special8 mask (the lowest bit in memory order); 0 where that
   can't be told cheaply, which is never wrong: the byte loop goes on from there. */
static int plain_before(uint64_t mask)
{
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return __builtin_ctzll(mask) >> 3;
#else
    (void)mask;
    return 0;
#endif
}

/* A string, w->p just after its opening quote: its text (raw bytes when it has no escape, else decoded into
   scratch), length and flags; w->p after its closing quote. */
static int string(Walk *w, const char **text, Py_ssize_t *len, int *flags)
{
    const Table *t = w->t;
    const unsigned char *p = w->p, *end = w->end, *start = p;
    int f = 0;
#ifdef __SSE2__
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\'), delim = _mm_set1_epi8((char)t->delim),
                  space = _mm_set1_epi8(' ');
#endif
    for (;;) { /* the common case: no escape; the text is the bytes themselves */
#ifdef __SSE2__
        while (end - p >= 16) {
            int mask = special16(quote, backslash, delim, space, p);
            if (mask) {
                p += __builtin_ctz((unsigned)mask);
                goto special;
            }
            p += 16;
        }
#endif
        while (end - p >= 8) {
            uint64_t mask = special8(t, p);
            if (mask) {
                p += plain_before(mask);
                break;
            }
            p += 8;
        }
#ifdef __SSE2__
    special:
#endif
        if (p >= end)
            return BAIL;
        switch (t->cls[*p]) {
        case C_PLAIN:
            p++;
            continue;
        case C_DELIM:
            f |= NEED_QUOTES;
            p++;
            continue;
        case C_HIGH: {
            int n = utf8_len(p, end);
            if (n == 0)
                return BAIL;
            p += n;
            continue;
        }
        case C_END:
            *text = (const char *)start;
            *len = p - start;
            *flags = f;
            w->p = p + 1;
            return OK;
        case C_ESCAPE:
            break;
        default: /* a raw control character: not JSON */
            return BAIL;
        }
        break;
    }
    /* Escapes: decode into scratch. Every escape is longer than what it decodes to (\n 2 -> 1 byte, \uXXXX 6 -> at
       most 3, a surrogate pair 12 -> 4), so the item's bytes bound what all its strings decode to (scratch holds
       that and 16 bytes more: the room for one escape's bytes, checked before each). */
    char *out = w->scratch + w->scratch_len, *o = out;
    char *limit = w->scratch + w->scratch_cap;
    if (p - start > limit - o) /* (cannot happen: checked all the same) */
        return BAIL;
    memcpy(o, start, (size_t)(p - start));
    o += p - start;
    for (;;) {
        if (p >= end || o + 4 > limit)
            return BAIL;
        unsigned char c = *p;
        switch (t->cls[c]) {
        case C_PLAIN:
            *o++ = (char)c;
            p++;
            continue;
        case C_DELIM:
            f |= NEED_QUOTES;
            *o++ = (char)c;
            p++;
            continue;
        case C_HIGH: {
            int n = utf8_len(p, end);
            if (n == 0)
                return BAIL;
            memcpy(o, p, (size_t)n);
            o += n;
            p += n;
            continue;
        }
        case C_END:
            *text = out;
            *len = o - out;
            *flags = f;
            w->scratch_len += o - out;
            w->p = p + 1;
            return OK;
        case C_ESCAPE:
            break;
        default:
            return BAIL;
        }
        if (end - p < 2)
            return BAIL;
        unsigned char e = p[1];
        unsigned char b;
        switch (e) {
        case '"': b = '"'; break;
        case '\\': b = '\\'; break;
        case '/': b = '/'; break;
        case 'b': b = '\b'; break;
        case 'f': b = '\f'; break;
        case 'n': b = '\n'; break;
        case 'r': b = '\r'; break;
        case 't': b = '\t'; break;
        case 'u': {
            unsigned cp;
            if (!hex4(p + 2, end, &cp))
                return BAIL;
            p += 6;
            if (cp >= 0xdc00 && cp <= 0xdfff) /* a lone low surrogate */
                return BAIL;
            if (cp >= 0xd800 && cp <= 0xdbff) {
                unsigned lo;
                if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || !hex4(p + 2, end, &lo) || lo < 0xdc00 ||
                    lo > 0xdfff)
                    return BAIL; /* a lone high surrogate */
                p += 6;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            }
            if (cp < 0x80) {
                f |= ascii_flags(t, (unsigned char)cp);
                *o++ = (char)cp;
            } else if (cp < 0x800) {
                *o++ = (char)(0xc0 | (cp >> 6));
                *o++ = (char)(0x80 | (cp & 0x3f));
            } else if (cp < 0x10000) {
                *o++ = (char)(0xe0 | (cp >> 12));
                *o++ = (char)(0x80 | ((cp >> 6) & 0x3f));
                *o++ = (char)(0x80 | (cp & 0x3f));
            } else {
                *o++ = (char)(0xf0 | (cp >> 18));
                *o++ = (char)(0x80 | ((cp >> 12) & 0x3f));
                *o++ = (char)(0x80 | ((cp >> 6) & 0x3f));
                *o++ = (char)(0x80 | (cp & 0x3f));
            }
            continue;
        }
        default:
            return BAIL;
        }
        f |= ascii_flags(t, b);
        *o++ = (char)b;
        p += 2;
    }
}

/* Whether a float token's text is Python's repr of the float it parses to (what the Python path writes). */
static int float_is_repr(const unsigned char *s, Py_ssize_t n)
{
    char buf[MAX_FLOAT_TEXT + 1], *endp;
    if (n > MAX_FLOAT_TEXT)
        return 0;
    memcpy(buf, s, (size_t)n);
    buf[n] = '\0';
    double x = PyOS_string_to_double(buf, &endp, NULL);
    if (x == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    if (endp != buf + n)
        return 0;
    char *r = PyOS_double_to_string(x, 'r', 0, Py_DTSF_ADD_DOT_0, NULL); /* float.__repr__ */
    if (r == NULL) {
        PyErr_Clear();
        return 0;
    }
    int same = strlen(r) == (size_t)n && memcmp(r, buf, (size_t)n) == 0;
    PyMem_Free(r);
    return same;
}

/* Whether a float token without an exponent is Python's repr of its value, told from its text alone (the common
   case, ~40x cheaper than float_is_repr): at most 15 significant digits (DBL_DIG: two such decimals never round to
   one double, so no shorter string rounds to this one's, and repr writes the shortest), between 1e-4 and 1e15
   (repr writes those without an exponent), and no trailing zero after the point but in "N.0". 0 sends it to
   float_is_repr. */
static int fixed_is_repr(const unsigned char *s, Py_ssize_t n)
{
    const unsigned char *p = s, *end = s + n;
    if (*p == '-')
        p++;
    const unsigned char *int_start = p;
    while (p < end && *p != '.')
        p++;
    if (p == end)
        return 0;
    Py_ssize_t int_digits = p - int_start, frac_digits = end - p - 1;
    const unsigned char *frac = p + 1;
    if (frac_digits < 1 || (frac_digits > 1 && end[-1] == '0'))
        return 0;
    if (*int_start != '0') /* 1 <= |x| */
        return int_digits + (frac[0] == '0' && frac_digits == 1 ? 0 : frac_digits) <= 15;
    if (frac_digits == 1 && frac[0] == '0') /* 0.0, -0.0 */
        return 1;
    Py_ssize_t zeros = 0;
    while (zeros < frac_digits && frac[zeros] == '0')
        zeros++;
    return zeros <= 3 && frac_digits - zeros <= 15;
}

/* A number token at w->p, by JSON's grammar. Its text is Python's repr of its value: an integer's is its digits
   (but "-0", and past Python's int/str limit), a float's is checked when it lands in a column (``col``). */
static int number(Walk *w, Py_ssize_t col)
{
    const unsigned char *p = w->p, *end = w->end, *start = p;
    int is_float = 0, has_exponent = 0;
    if (p < end && *p == '-')
        p++;
    if (p >= end)
        return BAIL;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    } else {
        return BAIL;
    }
    Py_ssize_t int_digits = p - start - (*start == '-');
    if (p < end && *p == '.') {
        is_float = 1;
        p++;
        if (p >= end || *p < '0' || *p > '9')
            return BAIL;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        is_float = has_exponent = 1;
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || *p < '0' || *p > '9')
            return BAIL;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    Py_ssize_t n = p - start;
    w->p = p;
    if (!is_float) {
        if (int_digits > MAX_INT_DIGITS) /* json.loads may refuse it: whatever Python does, it does */
            return BAIL;
        if (n == 2 && start[0] == '-' && start[1] == '0') /* -0 is the int 0: its text is "0" */
            return BAIL;
    }
    if (col < 0)
        return OK;
    if (is_float && !(!has_exponent && fixed_is_repr(start, n))) {
        if (n > MAX_FLOAT_TEXT) /* no repr is that long */
            return BAIL;
        if (w->ndeferred == w->deferred_cap) {
            Py_ssize_t cap = w->deferred_cap * 2;
            struct Deferred *grown = PyMem_RawRealloc(w->deferred, (size_t)cap * sizeof(struct Deferred));
            if (grown == NULL)
                return ERROR;
            w->deferred = grown;
            w->deferred_cap = cap;
        }
        w->deferred[w->ndeferred].item = w->current;
        w->deferred[w->ndeferred].s = start;
        w->deferred[w->ndeferred].n = n;
        w->ndeferred++;
    }
    int f = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        f |= w->t->num_flags[start[i]];
    Cell *c = &w->cells[col];
    c->text = (const char *)start;
    c->len = n;
    c->flags = f;
    return OK;
}

static int literal(Walk *w, const char *word, Py_ssize_t n)
{
    const unsigned char *past = after_word(w->p, w->end, word, n);
    if (past == NULL)
        return BAIL;
    w->p = past;
    return OK;
}

static int value(Walk *w, int depth, uint64_t h, Py_ssize_t plen, Py_ssize_t si);
static void leaf(Walk *w, uint64_t h, Py_ssize_t plen, Py_ssize_t si, const unsigned char *start, const char *text,
                 Py_ssize_t len, int flags);

/* The column of the path w->path[0:plen] with hash h (plen < 0: longer than any column), or -1. */
static Py_ssize_t column(const Walk *w, uint64_t h, Py_ssize_t plen)
{
    return plen < 0 ? -1 : lookup(w->t, w->path, plen, h);
}

/* An index in decimal, written backwards from end (snprintf costs 10x): its first character. */
static char *decimal(char *end, size_t k)
{
    do {
        *--end = (char)('0' + k % 10);
        k /= 10;
    } while (k);
    return end;
}

/* The path of a member or element: prefix (w->path[0:plen], hash h) + "/" + segment, or the segment at the top
   (plen == -2 there; -1 is "too long"). Sets *nh and returns the new length (-1: too long to match). */
static Py_ssize_t extend(Walk *w, uint64_t h, Py_ssize_t plen, const char *seg, Py_ssize_t n, uint64_t *nh)
{
    Py_ssize_t len;
    if (plen == -2) {
        h = FNV_OFFSET;
        len = 0;
    } else {
        h = (h ^ '/') * FNV_PRIME;
        len = plen < 0 ? -1 : plen + 1;
    }
    *nh = fnv(h, seg, n);
    if (len < 0 || len + n > w->t->maxlen)
        return -1;
    if (plen >= 0)
        w->path[plen] = '/';
    memcpy(w->path + len, seg, (size_t)n);
    return len + n;
}

/* -- the plan ------------------------------------------------------------------------------------------------- */

/* Whether a[0:n] == b[0:n], inline: the plan compares short keys, for which a call of memcmp was most of the cost. */
static int same_bytes(const char *a, const char *b, Py_ssize_t n)
{
    uint64_t x, y;
    uint32_t u, v;
    if (n >= 8) {
        Py_ssize_t i = 0;
        for (; i + 8 <= n; i += 8) {
            memcpy(&x, a + i, 8);
            memcpy(&y, b + i, 8);
            if (x != y)
                return 0;
        }
        if (i == n)
            return 1;
        memcpy(&x, a + n - 8, 8); /* the last 8 bytes, overlapping the ones compared */
        memcpy(&y, b + n - 8, 8);
        return x == y;
    }
    if (n >= 4) {
        memcpy(&u, a, 4);
        memcpy(&v, b, 4);
        if (u != v)
            return 0;
        memcpy(&u, a + n - 4, 4);
        memcpy(&v, b + n - 4, 4);
        return u == v;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        if (a[i] != b[i])
            return 0;
    return 1;
}

/* The plan's next step, if the member whose key starts at w->p (after its quote) in an object at depth is it: the
   same depth and key bytes, then the closing quote. (The step's key had no escape, no '"' and was valid UTF-8 when
   it was learnt: the same bytes followed by '"' are the same key.) */
static const Step *plan_member(const Walk *w, int depth)
{
    if (w->next >= w->nsteps)
        return NULL;
    const Step *s = &w->steps[w->next];
    if (s->kind != STEP_KEY || s->depth != depth || s->key == NULL || w->end - w->p <= s->klen ||
        w->p[s->klen] != '"' || !same_bytes((const char *)w->p, s->key, s->klen))
        return NULL;
    return s;
}

/* The plan's next step, if the next element of an array at depth is it. (No index to compare: the steps before
   it were this item's, so the element's place among its siblings is the step's.) */
static const Step *plan_element(const Walk *w, int depth)
{
    if (w->next >= w->nsteps)
        return NULL;
    const Step *s = &w->steps[w->next];
    return s->kind == STEP_ELEMENT && s->depth == depth ? s : NULL;
}

/* w->path[0:expect] written from the segments of depths 1..upto, which the walk kept while it followed the plan
   (it writes no path then). expect: the path's length as the plan has it (< 0: the top, or longer than any
   column: nothing to write). */
/* The text of the path's segment at depth d: its key, or its element's index in decimal (written in digits). */
static const char *seg_text(const Walk *w, int d, char digits[24], Py_ssize_t *n)
{
    const char *s = w->segs[d].s;
    *n = w->segs[d].n;
    if (s == NULL) {
        s = decimal(digits + 24, (size_t)*n);
        *n = digits + 24 - s;
    }
    return s;
}

static int write_path(Walk *w, int upto, Py_ssize_t expect)
{
    if (expect < 0)
        return OK;
    Py_ssize_t len = 0;
    for (int d = 1; d <= upto; d++) {
        char digits[24];
        Py_ssize_t n;
        const char *s = seg_text(w, d, digits, &n);
        if (d > 1) {
            if (len >= expect)
                return BAIL; /* (cannot happen: the plan's lengths are the paths') */
            w->path[len++] = '/';
        }
        if (n > expect - len)
            return BAIL;
        memcpy(w->path + len, s, (size_t)n);
        len += n;
    }
    return len == expect ? OK : BAIL;
}

/* The item walked stops following the plan at a member or element of a container at depth (its path: plen
   bytes): the general walk from here to the item's end, which needs the container's path in w->path, and learns
   this item's steps from here in place of the plan's. */
static int leave_plan(Walk *w, int depth, Py_ssize_t plen)
{
    w->planning = 0;
    w->nsteps = w->next;
    if (plen == -1) {
        /* The container's path is past every column: none needed below it, but its ancestors' that fit are,
           once the walk is back at them (it extends w->path[0:their plen], which the plan did not write). */
        Py_ssize_t len = 0;
        for (int d = 1; d <= depth - 1; d++) {
            char digits[24];
            Py_ssize_t n;
            const char *s = seg_text(w, d, digits, &n);
            if (len + (d > 1) + n > w->t->maxlen)
                break;
            if (d > 1)
                w->path[len++] = '/';
            memcpy(w->path + len, s, (size_t)n);
            len += n;
        }
        return OK;
    }
    return write_path(w, depth - 1, plen);
}

/* A step the general walk took, learnt (the plan holds MAX_PLAN_STEPS at most): its index, or -1. */
static Py_ssize_t learn(Walk *w, int kind, int depth, const char *key, Py_ssize_t klen, uint64_t h, Py_ssize_t plen)
{
    if (w->nsteps >= MAX_PLAN_STEPS)
        return -1;
    Step *s = &w->steps[w->nsteps];
    s->key = key;
    s->klen = klen;
    s->h = h;
    s->plen = plen;
    s->col = UNKNOWN_COL;
    s->depth = depth;
    s->kind = kind;
    w->next = ++w->nsteps;
    return w->nsteps - 1;
}

/* The column of a leaf whose path is w->path[0:plen] (hash h), of step si (-1: none): looked up once per step. A
   step matched in the plan has no path in w->path: it is written then (the step's value was a container when it
   was learnt, and is not now). */
static Py_ssize_t step_column(Walk *w, Step *s, uint64_t h, Py_ssize_t plen)
{
    if (w->planning && write_path(w, s->depth, plen) != OK)
        return -1; /* (cannot happen) */
    s->col = column(w, h, plen);
    return s->col;
}

static inline Py_ssize_t cell_column(Walk *w, uint64_t h, Py_ssize_t plen, Py_ssize_t si)
{
    if (si < 0)
        return column(w, h, plen);
    Step *s = &w->steps[si];
    return s->col != UNKNOWN_COL ? s->col : step_column(w, s, h, plen);
}

/* -- the walk of one item, continued -------------------------------------------------------------------------- */

/* What follows a member or an element: ',' and another (MORE), or ``close`` ending the container (OK). (The
   whitespace after ',' is the next member's or element's: next_is() or value() skips it.) */
static int separator(Walk *w, char close)
{
    if (next_is(w, ','))
        return MORE;
    if (w->p < w->end && *w->p == close) { /* (next_is(w, ',') skipped the whitespace) */
        w->p++;
        return OK;
    }
    return BAIL;
}

/* The value of a member or element of a container at depth (its path: h, plen; its step si): a string, the
   commonest, without value()'s call (whose entry and exit cost as much), anything else by value(). */
static inline int inner_value(Walk *w, int depth, uint64_t h, Py_ssize_t plen, Py_ssize_t si)
{
    if (w->p < w->end && *w->p == '"' && depth + 1 <= MAX_DEPTH) {
        const unsigned char *start = w->p;
        const char *text;
        Py_ssize_t len;
        int flags;
        int r;
        w->p++;
        if ((r = string(w, &text, &len, &flags)) != OK)
            return r;
        leaf(w, h, plen, si, start, text, len, flags);
        return OK;
    }
    return value(w, depth + 1, h, plen, si);
}

static int object(Walk *w, int depth, uint64_t h, Py_ssize_t plen)
{
    Py_ssize_t base = w->nkeys;
    w->p++; /* '{' */
    ws(w);
    if (w->p < w->end && *w->p == '}') {
        w->p++;
        return OK;
    }
    for (;;) {
        if (!next_is(w, '"'))
            return BAIL;
        if (w->nkeys - base >= MAX_OBJECT_KEYS)
            return BAIL;
        const char *key;
        Py_ssize_t klen, klenpath, si;
        uint64_t kh;
        int r;
        const Step *s = w->planning ? plan_member(w, depth) : NULL;
        if (s != NULL) {
            /* The plan's key: its path, hash and column are the step's. No check for a repeated key: the plan's
               keys of this object (this object's so far) were checked against each other when they were learnt. */
            key = (const char *)w->p;
            klen = s->klen;
            kh = s->h;
            klenpath = s->plen;
            si = w->next++;
            w->p += klen + 1;
            w->segs[depth] = (struct Seg){key, klen};
        } else {
            if (w->planning && (r = leave_plan(w, depth, plen)) != OK)
                return r;
            const unsigned char *kstart = w->p;
            int kflags;
            if ((r = string(w, &key, &klen, &kflags)) != OK)
                return r;
            klenpath = extend(w, h, plen, key, klen, &kh);
            /* A repeated key: the parsed dict holds the last value at the first key's place, so a walk in order
               would write leaves Python drops. Keys compared by hash, then bytes (the path's hash has the same
               prefix for every key of this object). */
            for (Py_ssize_t i = base; i < w->nkeys; i++)
                if (w->keys[i].h == kh && w->keys[i].n == klen && memcmp(w->keys[i].s, key, (size_t)klen) == 0)
                    return BAIL;
            /* (a key with escapes was decoded into scratch: its bytes in the item are not its text) */
            si = learn(w, STEP_KEY, depth, key == (const char *)kstart ? key : NULL, klen, kh, klenpath);
        }
        if (w->nkeys == w->keys_cap) {
            Py_ssize_t cap = w->keys_cap * 2;
            struct Key *grown = PyMem_RawRealloc(w->keys, (size_t)cap * sizeof(struct Key));
            if (grown == NULL)
                return ERROR;
            w->keys = grown;
            w->keys_cap = cap;
        }
        w->keys[w->nkeys].s = key;
        w->keys[w->nkeys].n = klen;
        w->keys[w->nkeys].h = kh;
        w->nkeys++;
        if (!next_is(w, ':'))
            return BAIL;
        if ((r = inner_value(w, depth, kh, klenpath, si)) != OK)
            return r;
        if ((r = separator(w, '}')) == MORE)
            continue;
        w->nkeys = base;
        return r;
    }
}

static int array(Walk *w, int depth, uint64_t h, Py_ssize_t plen)
{
    w->p++; /* '[' */
    ws(w);
    if (w->p < w->end && *w->p == ']') {
        w->p++;
        return OK;
    }
    for (Py_ssize_t i = 0;; i++) {
        uint64_t ih;
        Py_ssize_t ilen, si;
        const Step *s = w->planning ? plan_element(w, depth) : NULL;
        int r;
        if (s != NULL) {
            ih = s->h;
            ilen = s->plen;
            si = w->next++;
            w->segs[depth] = (struct Seg){NULL, i};
        } else {
            if (w->planning && (r = leave_plan(w, depth, plen)) != OK)
                return r;
            char digits[24], *d = decimal(digits + sizeof digits, (size_t)i);
            ilen = extend(w, h, plen, d, digits + sizeof digits - d, &ih);
            si = learn(w, STEP_ELEMENT, depth, NULL, 0, ih, ilen);
        }
        if ((r = inner_value(w, depth, ih, ilen, si)) != OK)
            return r;
        if ((r = separator(w, ']')) != MORE)
            return r;
    }
}

/* A leaf whose token (w->p is past it) starts at start, recorded for the template with its column. */
static inline void record(Walk *w, const unsigned char *start, Py_ssize_t col)
{
    if (w->rec_from == NULL)
        return;
    if (w->nrec == MAX_TEMPLATE_LEAVES) {
        w->rec_from = NULL;
        return;
    }
    w->rec[w->nrec++] = (Slot){w->rec_from, start - w->rec_from, col};
    w->rec_from = w->p;
}

/* A leaf of the path w->path[0:plen] (hash h; step si), its token from start to w->p: its cell, if the path is a
   column, holds it (a later leaf of one path wins, as in the Python path). */
static inline void leaf(Walk *w, uint64_t h, Py_ssize_t plen, Py_ssize_t si, const unsigned char *start,
                        const char *text, Py_ssize_t len, int flags)
{
    Py_ssize_t col = cell_column(w, h, plen, si);
    record(w, start, col);
    if (col >= 0) {
        Cell *c = &w->cells[col];
        c->text = text;
        c->len = len;
        c->flags = flags;
    }
}

/* A value whose path is w->path[0:plen] (hash h; plen -1: too long for any column), the value of step si. */
static int value(Walk *w, int depth, uint64_t h, Py_ssize_t plen, Py_ssize_t si)
{
    if (depth > MAX_DEPTH)
        return BAIL;
again:
    if (w->p >= w->end)
        return BAIL;
    const unsigned char *start = w->p;
    switch (*w->p) {
    case '{':
        return object(w, depth, h, plen);
    case '[':
        return array(w, depth, h, plen);
    case '"': {
        const char *text;
        Py_ssize_t len;
        int flags;
        w->p++;
        int r = string(w, &text, &len, &flags);
        if (r != OK)
            return r;
        leaf(w, h, plen, si, start, text, len, flags);
        return OK;
    }
    case 't':
        if (literal(w, "true", 4) != OK)
            return BAIL;
        leaf(w, h, plen, si, start, "true", 4, w->t->true_flags);
        return OK;
    case 'f':
        if (literal(w, "false", 5) != OK)
            return BAIL;
        leaf(w, h, plen, si, start, "false", 5, w->t->false_flags);
        return OK;
    case 'n':
        if (literal(w, "null", 4) != OK)
            return BAIL;
        leaf(w, h, plen, si, start, NULL, 0, 0); /* null writes an empty cell over an earlier leaf of its path */
        return OK;
    case ' ':
    case '\t':
    case '\n':
    case '\r': /* whitespace before the value (not in stored JSON, which is compact) */
        ws(w);
        goto again;
    default: {
        Py_ssize_t col = cell_column(w, h, plen, si);
        int r = number(w, col);
        if (r == OK)
            record(w, start, col);
        return r;
    }
    }
}

/* -- lines ---------------------------------------------------------------------------------------------------- */

/* The most bytes of the line of an item of n bytes (ncols columns): a cell is a leaf of its own (one per path), so
   the cells' tokens are apart in the item; a string's field is at most its token (its quotes, if any, take the
   token's; each '"' doubled came from an escape of two bytes or more, and escapes only shrink), a number's, true's
   and false's is its token, quoted (two more, where ``spread`` is 3) if it holds the delimiter, null's nothing;
   then ncols - 1 delimiters, '""' for a line of one empty field, CRLF. None overflows: n and ncols are the sizes
   of objects in memory, and render() checks the sum over a call's items. */
static inline Py_ssize_t line_room(const Table *t, Py_ssize_t n)
{
    return t->spread * n + t->ncols + 4;
}

/* dst[0:n] = src[0:n], a short n inline (a call of memcpy per cell was a third of line()'s instructions). */
static inline void copy_text(char *dst, const char *src, Py_ssize_t n)
{
    if (n > 16) {
        memcpy(dst, src, (size_t)n);
    } else if (n >= 8) { /* two 8-byte moves, overlapping when n < 16 */
        uint64_t a, b;
        memcpy(&a, src, 8);
        memcpy(&b, src + n - 8, 8);
        memcpy(dst, &a, 8);
        memcpy(dst + n - 8, &b, 8);
    } else if (n >= 4) {
        uint32_t a, b;
        memcpy(&a, src, 4);
        memcpy(&b, src + n - 4, 4);
        memcpy(dst, &a, 4);
        memcpy(dst + n - 4, &b, 4);
    } else {
        for (Py_ssize_t i = 0; i < n; i++)
            dst[i] = src[i];
    }
}

/* The line of the cells, as CsvRenderer.rows writes it: a field quoted when it holds the delimiter, '"', CR or
   LF, its quotes doubled; a line of one empty field written '""' (a blank line is skipped by readers); CRLF. */
static inline char *field(char *w, const char *text, Py_ssize_t len, int flags)
{
    if (!(flags & NEED_QUOTES)) {
        copy_text(w, text, len);
        return w + len;
    }
    *w++ = '"';
    if (flags & HAS_QUOTE) {
        for (Py_ssize_t j = 0; j < len; j++) {
            if (text[j] == '"')
                *w++ = '"';
            *w++ = text[j];
        }
    } else {
        memcpy(w, text, (size_t)len);
        w += len;
    }
    *w++ = '"';
    return w;
}

/* The end of a line from start (w: past its last field). */
static inline char *line_end(const Table *t, char *start, char *w)
{
    if (t->ncols == 1 && w == start) {
        *w++ = '"';
        *w++ = '"';
    }
    *w++ = '\r';
    *w++ = '\n';
    return w;
}

static char *line(const Table *t, const Cell *cells, char *w)
{
    char *start = w;
    for (Py_ssize_t i = 0; i < t->ncols; i++) {
        if (i)
            *w++ = (char)t->delim;
        w = field(w, cells[i].text, cells[i].len, cells[i].flags);
    }
    return line_end(t, start, w);
}

/* One item: its cells into w->cells (cleared before), and (record_it) the item as a template if it has at most
   MAX_TEMPLATE_LEAVES leaves. (Float texts it deferred before it was left to Python can only cut the lines where
   they end anyway: at this item.) */
static int learn_template(Walk *w);

static int item(Walk *w, const char *data, Py_ssize_t n, int record_it)
{
    w->p = (const unsigned char *)data;
    w->end = w->p + n;
    w->scratch_len = 0;
    w->nkeys = 0;
    w->next = 0;
    w->planning = w->nsteps > 0;
    w->nrec = 0;
    w->rec_from = record_it ? w->p : NULL;
    ws(w);
    int r = BAIL;
    if (w->p < w->end && *w->p == '{') { /* else not an object: no row (Shape.iter_rows), or not JSON */
        r = object(w, 1, 0, -2);
        if (r == OK) {
            ws(w);
            r = w->p == w->end ? OK : BAIL;
        }
    }
    if (r == OK && w->rec_from != NULL)
        r = learn_template(w);
    return r;
}

/* The template of the item just walked (its leaves recorded in w->rec), in place of the one followed least
   recently when all TEMPLATES are taken. ERROR: out of memory. */
static int learn_template(Walk *w)
{
    Py_ssize_t n = w->nrec, bytes = 0;
    w->rec[n] = (Slot){w->rec_from, w->end - w->rec_from, -1}; /* (room for it: rec holds one more than the most) */
    for (Py_ssize_t i = 0; i <= n; i++)
        bytes += w->rec[i].n;
    int at = w->ntmpls;
    if (at == TEMPLATES) {
        at = 0;
        for (int i = 1; i < TEMPLATES; i++)
            if (w->tmpls[i].used < w->tmpls[at].used)
                at = i;
        PyMem_RawFree(w->tmpls[at].slots);
        PyMem_RawFree(w->tmpls[at].lits);
    } else {
        w->ntmpls++;
    }
    Template *t = &w->tmpls[at];
    t->slots = PyMem_RawMalloc((size_t)(n + 1) * sizeof(Slot));
    t->lits = PyMem_RawMalloc((size_t)bytes + 16);
    if (t->slots == NULL || t->lits == NULL) {
        PyMem_RawFree(t->slots);
        PyMem_RawFree(t->lits);
        t->slots = NULL;
        t->lits = NULL;
        return ERROR; /* (the call ends: its templates are freed, this one's NULLs too) */
    }
    memset(t->lits + bytes, 0, 16);
    unsigned char *to = t->lits;
    for (Py_ssize_t i = 0; i <= n; i++) {
        memcpy(to, w->rec[i].lit, (size_t)w->rec[i].n);
        t->slots[i] = (Slot){to, w->rec[i].n, w->rec[i].col};
        to += w->rec[i].n;
    }
    t->n = n;
    t->used = ++w->clock;
    Py_ssize_t next_col = 0;
    t->direct = 1;
    for (Py_ssize_t i = 0; i < n && t->direct; i++)
        if (t->slots[i].col >= 0)
            t->direct = t->slots[i].col == next_col++;
    t->direct = t->direct && next_col == w->t->ncols;
    for (int u = 0; u < w->ntmpls; u++) {
        if (u == at)
            continue;
        const Template *o = &w->tmpls[u];
        Py_ssize_t m = 0;
        while (m < n && m < o->n && o->slots[m].n == t->slots[m].n &&
               memcmp(o->slots[m].lit, t->slots[m].lit, (size_t)t->slots[m].n) == 0)
            m++;
        t->common[u] = m;
        w->tmpls[u].common[at] = m;
    }
    w->cur = at;
    return OK;
}

/* The plain text of a string from p (past its quote, or inside it): the first byte from p on that is '"', '\\', a
   control character or non-ASCII (end: none before it), and NEED_QUOTES into *flags if the delimiter is among the
   bytes before it. first: the item's first byte (the 16 bytes before end are read where fewer are left after p).
   A control character as the delimiter stops the run, as it does in string(). */
static inline const unsigned char *plain_run(const Table *t, const unsigned char *p, const unsigned char *end,
                                             const unsigned char *first, int *flags)
{
#ifdef __SSE2__
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\'), space = _mm_set1_epi8(' '),
                  delim = _mm_set1_epi8((char)t->delim);
    unsigned stop, d;
    for (;; p += 16) {
        if (end - p < 16) {
            if (p >= end || end - first < 16)
                break;
            /* the last bytes: the 16 that end at end (no read past the item), shifted past the ones before p */
            int before = 16 - (int)(end - p);
            __m128i v = _mm_loadu_si128((const __m128i *)(end - 16));
            stop = (unsigned)_mm_movemask_epi8(_mm_or_si128(
                       _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)), _mm_cmplt_epi8(v, space)))
                   >> before;
            d = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, delim)) >> before;
            if (stop == 0) {
                if (d)
                    *flags = NEED_QUOTES;
                return end;
            }
            goto found;
        }
        __m128i v = _mm_loadu_si128((const __m128i *)p);
        __m128i m = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                                 _mm_cmplt_epi8(v, space));
        /* (one mask of both for the commonest 16 bytes, those of neither) */
        unsigned any = (unsigned)_mm_movemask_epi8(_mm_or_si128(m, _mm_cmpeq_epi8(v, delim)));
        if (any == 0)
            continue;
        stop = (unsigned)_mm_movemask_epi8(m);
        d = any & ~stop;
        if (stop)
            goto found;
        *flags = NEED_QUOTES;
    }
#else
    (void)first;
#endif
    for (; p < end; p++) {
        int c = t->cls[*p];
        if (c == C_DELIM)
            *flags = NEED_QUOTES;
        else if (c != C_PLAIN)
            return p;
    }
    return end;
#ifdef __SSE2__
found: {
    unsigned at = (unsigned)__builtin_ctz(stop);
    if (d & ((1u << at) - 1))
        *flags = NEED_QUOTES;
    return p + at;
}
#endif
}

/* Whether p[0:n] (p before end) is the literal lit[0:n] (lit: a template's, readable 16 bytes past its end). */
static inline int same_literal(const unsigned char *p, const unsigned char *end, const unsigned char *lit,
                               Py_ssize_t n)
{
#ifdef __SSE2__
    if (end - p >= 16) {
        if (n <= 16) { /* (the common case: a key with its punctuation) */
            unsigned eq = (unsigned)_mm_movemask_epi8(
                _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)p), _mm_loadu_si128((const __m128i *)lit)));
            return ((eq ^ 0xffffu) & ((1u << n) - 1)) == 0;
        }
        if (end - p < n)
            return 0;
        Py_ssize_t i = 0;
        for (; i + 16 <= n; i += 16)
            if (_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(p + i)),
                                                 _mm_loadu_si128((const __m128i *)(lit + i)))) != 0xffff)
                return 0;
        return i == n || _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(p + n - 16)),
                                                          _mm_loadu_si128((const __m128i *)(lit + n - 16)))) == 0xffff;
    }
#endif
    return end - p >= n && same_bytes((const char *)p, (const char *)lit, n);
}

/* A number at v whose text is surely Python's repr of its value, the commonest (an integer of at most
   MAX_INT_DIGITS digits but 0, a float without an exponent that fixed_is_repr takes, but 0.x): its cell, and the
   byte after it; NULL for any other, which number() decides (without the call, the parse of number() and
   fixed_is_repr's own scan for the point: a number cost a third of a templated item's leaves). */
static inline const unsigned char *plain_number(const Table *t, const unsigned char *v, const unsigned char *end,
                                                Cell *c)
{
    const unsigned char *q = v + (*v == '-'), *e;
    if (q >= end || *q < '1' || *q > '9')
        return NULL;
    for (e = q + 1; e < end && (unsigned)(*e - '0') < 10; e++)
        ;
    if (e < end && *e == '.') {
        const unsigned char *g = e + 1;
        while (g < end && (unsigned)(*g - '0') < 10)
            g++;
        if (g == e + 1 || (g < end && (*g == 'e' || *g == 'E')) || !fixed_is_repr(v, g - v))
            return NULL;
        e = g;
    } else if ((e < end && (*e == 'e' || *e == 'E')) || e - q > MAX_INT_DIGITS) {
        return NULL;
    }
    int f = 0;
    if (t->num_delim)
        for (const unsigned char *b = v; b < e; b++)
            f |= t->num_flags[*b];
    *c = (Cell){(const char *)v, e - v, f};
    return e;
}

/* An item that follows a template (see the header): its cells into w->cells, or BAIL where it follows none (no
   template has the bytes between two of its leaves, or a leaf where it has a container) or a leaf is not sure
   (string() and number() decide those: the general walk will tell the same). It starts with the template the last
   item followed; where that one's next slot differs, it goes on with another whose slots before are the same
   bytes (``common``): the leaves before have the same paths in both, so their cells stand. line_at (not NULL,
   only for a ``direct`` template: its leaves are the columns in order, one each) is where the line goes: its
   fields written as the leaves come, without cells and line()'s pass over them, *line_at moved past it; where
   the item moves to a template that is not direct, RESTART (the caller renders it into the cells then). */
static int follow(Walk *w, const unsigned char *p, const unsigned char *end, char **line_at)
{
    const Table *t = w->t;
    char *o = line_at != NULL ? *line_at : NULL; /* the line written as the leaves come (NULL: into the cells) */
    const unsigned char *first = p;
    Cell *cells = w->cells;
    int ti = w->cur;
    const Template *tp = &w->tmpls[ti];
    unsigned tried = 0; /* the templates whose slot i differed */
    Py_ssize_t i = 0;
    for (;;) {
        const Slot *s = &tp->slots[i];
        if (i == tp->n) {
            if (end - p == s->n && same_literal(p, end, s->lit, s->n)) {
                w->cur = ti;
                w->tmpls[ti].used = ++w->clock;
                if (o != NULL)
                    *line_at = line_end(t, *line_at, o);
                return OK;
            }
            goto other;
        }
        if (end - p <= s->n || !same_literal(p, end, s->lit, s->n))
            goto other;
        const unsigned char *v = p + s->n;
        Py_ssize_t col = s->col;
        Cell c;
        switch (*v) {
        case '"': {
            int f = 0;
            const unsigned char *q = plain_run(t, v + 1, end, first, &f);
            if (q < end && *q == '"') {
                c = (Cell){(const char *)v + 1, q - v - 1, f};
                v = q + 1;
            } else { /* escapes, non-ASCII, or not JSON: the string walked by string() */
                w->p = v + 1;
                int r = string(w, &c.text, &c.len, &c.flags);
                if (r != OK)
                    return r;
                v = w->p;
            }
            break;
        }
        case 't':
            if ((v = after_word(v, end, "true", 4)) == NULL)
                return BAIL;
            c = (Cell){"true", 4, t->true_flags};
            break;
        case 'f':
            if ((v = after_word(v, end, "false", 5)) == NULL)
                return BAIL;
            c = (Cell){"false", 5, t->false_flags};
            break;
        case 'n':
            if ((v = after_word(v, end, "null", 4)) == NULL)
                return BAIL;
            c = (Cell){NULL, 0, 0};
            break;
        default: {
            if (*v != '-' && (*v < '0' || *v > '9'))
                goto other; /* a container (or not JSON): another template's slot may take its bracket */
            const unsigned char *e = plain_number(t, v, end, &c);
            if (e != NULL) {
                v = e;
                break;
            }
            w->p = v;
            int r = number(w, col); /* (its cell written there) */
            if (r != OK)
                return r;
            v = w->p;
            if (o == NULL || col < 0) {
                p = v;
                i++;
                tried = 0;
                continue;
            }
            c = cells[col];
            break;
        }
        }
        if (col >= 0) {
            if (o == NULL) {
                cells[col] = c;
            } else {
                if (col)
                    *o++ = (char)t->delim;
                o = field(o, c.text, c.len, c.flags);
            }
        }
        p = v;
        i++;
        tried = 0;
        continue;
    other:
        tried |= 1u << ti;
        for (int u = 0;; u++) {
            if (u == w->ntmpls)
                return BAIL;
            if (!(tried & (1u << u)) && tp->common[u] >= i) {
                if (o != NULL && !w->tmpls[u].direct)
                    return RESTART;
                ti = u;
                tp = &w->tmpls[u];
                break;
            }
        }
    }
}

/* One item, by a template if it follows one, else by item(). Templates that items keep following none of (each
   item of its own shape) are paused for a while, longer each time, so that such items cost about the walk alone. */
static int walk_item(Walk *w, const char *data, Py_ssize_t n, char **line_at)
{
    const Table *t = w->t;
    int r = BAIL, record_it = 1;
    if (w->ntmpls > 0 && w->pause > 0) {
        w->pause--;
        record_it = 0;
    } else if (w->ntmpls > 0) {
        w->end = (const unsigned char *)data + n;
        w->scratch_len = 0;
        Py_ssize_t deferred = w->ndeferred;
        r = RESTART;
        if (w->tmpls[w->cur].direct) { /* the line as the leaves come: no cells, no pass over them */
            r = follow(w, (const unsigned char *)data, w->end, line_at);
            if (r == OK) {
                w->misses = 0;
                return OK;
            }
        }
        if (r == RESTART) { /* (its deferred float texts deferred again) */
            w->ndeferred = deferred;
            memset(w->cells, 0, (size_t)t->ncols * sizeof(Cell));
            r = follow(w, (const unsigned char *)data, w->end, NULL);
        }
        if (r == OK)
            w->misses = 0;
        if (r != BAIL)
            goto done;
        w->ndeferred = deferred; /* (the general walk defers its own) */
        if (++w->misses >= TRIES_BEFORE_PAUSE) {
            int doubling = w->misses - TRIES_BEFORE_PAUSE;
            w->pause = doubling >= 6 ? MAX_PAUSE : 1 << doubling;
        }
    }
    memset(w->cells, 0, (size_t)t->ncols * sizeof(Cell));
    r = item(w, data, n, record_it);
done:
    if (r == OK)
        *line_at = line(t, w->cells, *line_at);
    return r;
}

/* One item's bytes. */
typedef struct {
    const char *p;
    Py_ssize_t n;
} Span;

/* The csv lines of items[0:count] (``longest``: the longest item's length), walked
   without the GIL: a bytes object, and in *done how many items it holds (count, or the first left to Python). The
   items' bytes must stay as they are meanwhile (the callers hold them). NULL with an exception set on no memory. */
static PyObject *render(const Table *t, const Span *items, Py_ssize_t count, Py_ssize_t longest, Py_ssize_t *done)
{
    Walk w = {.t = t};
    PyObject *result = NULL;
    /* The lines go straight into the bytes object returned, made for the most they can take (line_room) and cut
       to what they took: no copy of them (which was a tenth of the rendering), no check of room per line. */
    Py_ssize_t room = 0;
    for (Py_ssize_t k = 0; k < count; k++) {
        Py_ssize_t n = items[k].n;
        if (n > (PY_SSIZE_T_MAX / 4 - room - t->ncols - 4) / t->spread) /* (never: a few times what is in memory) */
            return PyErr_NoMemory();
        room += line_room(t, n);
    }
    /* and the room of the longest line once more: each line is checked against its room only once it is written,
       so, were line_room ever wrong, a line could pass its room by up to that much before the check sees it
       (SystemError) and still be written inside the bytes object, never past it */
    Py_ssize_t slack = line_room(t, longest);
    if (room > PY_SSIZE_T_MAX / 2 - slack)
        return PyErr_NoMemory();
    room += slack;
    Py_ssize_t *line_at = PyMem_Malloc(((size_t)count + 1) * sizeof(Py_ssize_t)); /* where each item's line starts */
    w.cells = PyMem_Calloc((size_t)t->ncols, sizeof(Cell));
    w.scratch_cap = longest + 16;
    w.scratch = PyMem_Malloc((size_t)w.scratch_cap);
    w.path = PyMem_Malloc((size_t)t->maxlen + 1);
    w.keys_cap = 64;
    w.keys = PyMem_RawMalloc((size_t)w.keys_cap * sizeof(struct Key));
    w.deferred_cap = 16;
    w.deferred = PyMem_RawMalloc((size_t)w.deferred_cap * sizeof(struct Deferred));
    w.steps = PyMem_Malloc(MAX_PLAN_STEPS * sizeof(Step));
    w.segs = PyMem_Malloc((MAX_DEPTH + 1) * sizeof(struct Seg));
    w.rec = PyMem_Malloc((MAX_TEMPLATE_LEAVES + 1) * sizeof(Slot));
    result = PyBytes_FromStringAndSize(NULL, room);
    if (line_at == NULL || w.cells == NULL || w.scratch == NULL || w.path == NULL || w.keys == NULL ||
        w.deferred == NULL || w.steps == NULL || w.segs == NULL || w.rec == NULL || result == NULL) {
        Py_CLEAR(result);
        PyErr_NoMemory();
        goto done;
    }
    char *out = PyBytes_AS_STRING(result), *at = out;
    int r = OK;
    Py_ssize_t k = 0;
    Py_BEGIN_ALLOW_THREADS
    for (; k < count; k++) {
        w.current = k;
        line_at[k] = at - out;
        r = walk_item(&w, items[k].p, items[k].n, &at);
        if (r != OK)
            break;
        if (at - out - line_at[k] > line_room(t, items[k].n)) { /* (never: see line_room; loud if it were) */
            r = OVERRUN;
            break;
        }
    }
    line_at[k] = at - out;
    Py_END_ALLOW_THREADS
    if (r == ERROR || r == OVERRUN) {
        Py_CLEAR(result);
        if (r == ERROR)
            PyErr_NoMemory();
        else
            PyErr_SetString(PyExc_SystemError, "_ccsv: a line longer than its room");
        goto done;
    }
    /* The deferred float texts, in item order: the lines end before the first item with one that is not repr. */
    for (Py_ssize_t d = 0; d < w.ndeferred; d++) {
        if (!float_is_repr(w.deferred[d].s, w.deferred[d].n)) {
            k = w.deferred[d].item;
            break;
        }
    }
    if (_PyBytes_Resize(&result, line_at[k]) < 0) /* (result NULL then) */
        goto done;
    *done = k;
done:
    PyMem_Free(line_at);
    PyMem_Free(w.cells);
    PyMem_Free(w.scratch);
    PyMem_Free(w.path);
    PyMem_RawFree(w.keys);
    PyMem_RawFree(w.deferred);
    PyMem_Free(w.steps);
    PyMem_Free(w.segs);
    for (int i = 0; i < w.ntmpls; i++) {
        PyMem_RawFree(w.tmpls[i].slots);
        PyMem_RawFree(w.tmpls[i].lits);
    }
    PyMem_Free(w.rec);
    return result;
}

static PyObject *lines(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *capsule, *items;
    Py_ssize_t start;
    if (!PyArg_ParseTuple(args, "OO!n:lines", &capsule, &PyList_Type, &items, &start))
        return NULL;
    Table *t = PyCapsule_GetPointer(capsule, CAPSULE);
    if (t == NULL)
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(items);
    if (start < 0 || start > n) {
        PyErr_SetString(PyExc_IndexError, "start out of range");
        return NULL;
    }
    /* Items are bytes (storage's); anything else stops the run there. The longest sizes the scratch. */
    Py_ssize_t stop = start, longest = 0;
    for (; stop < n; stop++) {
        PyObject *b = PyList_GET_ITEM(items, stop);
        if (!PyBytes_Check(b))
            break;
        Py_ssize_t len = PyBytes_GET_SIZE(b);
        if (len > longest)
            longest = len;
    }
    Py_ssize_t count = stop - start, done = 0;
    PyObject *result = NULL, *text, **held = PyMem_Calloc((size_t)count + 1, sizeof(PyObject *));
    Span *spans = PyMem_Malloc(((size_t)count + 1) * sizeof(Span));
    if (held == NULL || spans == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    /* A reference to each item: the walk reads their bytes without the GIL, while another thread could change
       the list. */
    for (Py_ssize_t k = 0; k < count; k++) {
        held[k] = PyList_GET_ITEM(items, start + k);
        Py_INCREF(held[k]);
        spans[k] = (Span){PyBytes_AS_STRING(held[k]), PyBytes_GET_SIZE(held[k])};
    }
    if ((text = render(t, spans, count, longest, &done)) != NULL)
        result = Py_BuildValue("(Nn)", text, start + done);
done:
    if (held != NULL)
        for (Py_ssize_t j = 0; j < count; j++)
            Py_XDECREF(held[j]);
    PyMem_Free(held);
    PyMem_Free(spans);
    return result;
}

/* joined_lines: the items of a piece of storage's joined bytes (items separated by b"\n", which stored JSON never
   holds raw), without a bytes object per item: storage's split of its packed rows into items, and those objects'
   allocation and release, were a sixth of a csv export's CPU (BENCHMARKS.md, issue 13 exports). */
static PyObject *joined_lines(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *capsule;
    Py_buffer data;
    Py_ssize_t start;
    if (!PyArg_ParseTuple(args, "Oy*n:joined_lines", &capsule, &data, &start))
        return NULL;
    PyObject *result = NULL, *text;
    Span *spans = NULL;
    Table *t = PyCapsule_GetPointer(capsule, CAPSULE);
    if (t == NULL)
        goto done;
    const char *base = data.buf, *end = base + data.len;
    if (start < 0 || start > data.len) {
        PyErr_SetString(PyExc_IndexError, "start out of range");
        goto done;
    }
    /* The items, in one pass over the bytes (a pass to count them first cost 2% of the rendering): spans grown as
       they come, from a guess of one item per 256 bytes. */
    Py_ssize_t count = 0, cap = (data.len - start) / 256 + 16, longest = 0, done = 0;
    spans = PyMem_Malloc((size_t)cap * sizeof(Span));
    if (spans == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    /* (items: one more than the separators after start, when there is a byte after start) */
    for (const char *p = base + start; start < data.len;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *stop = nl != NULL ? nl : end;
        if (count == cap) {
            cap *= 2;
            Span *grown = PyMem_Realloc(spans, (size_t)cap * sizeof(Span));
            if (grown == NULL) {
                PyErr_NoMemory();
                goto done;
            }
            spans = grown;
        }
        spans[count++] = (Span){p, stop - p};
        if (stop - p > longest)
            longest = stop - p;
        if (nl == NULL)
            break;
        p = nl + 1;
    }
    /* (the buffer is held until the call returns: bytes, which nothing changes) */
    if ((text = render(t, spans, count, longest, &done)) != NULL)
        result = Py_BuildValue("(Nn)", text, done < count ? spans[done].p - base : data.len);
done:
    PyMem_Free(spans);
    PyBuffer_Release(&data);
    return result;
}

static PyMethodDef methods[] = {
    {"prepare", prepare, METH_VARARGS, "prepare(columns, delimiter): the table lines() takes, or None."},
    {"lines", lines, METH_VARARGS, "lines(table, items, start): (csv lines of items[start:stop], stop)."},
    {"joined_lines", joined_lines, METH_VARARGS,
     "joined_lines(table, data, start): (csv lines of the items of data[start:stop] (items joined by b'\\n'), stop)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_ccsv", "csv lines of stored dataset items (see _ccsv.c).", -1, methods, NULL, NULL,
    NULL, NULL,
};

PyMODINIT_FUNC PyInit__ccsv(void)
{
    return PyModule_Create(&module);
}
