/* A push body's items as they are stored, straight from the body's bytes (issue 13's push goal).

What it replaces, for a push to a dataset without a fields schema: api/items.py ``prepare_push_body``'s orjson
parse, its walk of the items' shapes (shape_labels), itemjson.floats_as_parsed and orjson.dumps of each item, ~34,600
instructions an item (BENCHMARKS.md). This reads the body once, writes each item's stored bytes (itemjson.py: what
``stdlib_encode`` gives of ``jsontext.loads``' value: compact, ensure_ascii=False, Python's float repr) and the
item's skeleton (its keys, nesting and array lengths, each scalar as "0"), and numbers the distinct skeletons, so
that the Python side works out paths, keys and the clean flag once per skeleton, from an item parsed back.

The Python path stays the reference (tests/datasets/test_cpush.py compares the two) and the fallback: wherever this
code is not sure its answer is the Python path's, it returns None and the whole body goes through Python, which
gives today's items or today's 400. It returns None for: anything that is not strict JSON, a body that is not an
object or an array of objects, invalid UTF-8 (and UTF-8 of surrogates), a lone surrogate escape, a duplicate key
in an object (the parsed dict keeps one value at the first key's place), nesting deeper than MAX_DEPTH, an integer
of more than MAX_INT_DIGITS digits (Python's int/str limit may refuse it), a number that is not finite as a float.

It holds the GIL (PyOS_string_to_double and PyOS_double_to_string, Python's own float parse and repr, allocate with
PyMem), as the Python path it replaces does.

Python API (api/items.py wraps it):
    split(body: bytes) -> (items: list[bytes], kinds: list[int], firsts: list[int], clean: int) | None
        items: each item's stored bytes; kinds: each item's skeleton number (0, 1, ... in order of first
        appearance); firsts: the index of the first item of each skeleton; clean: how many items have a top-level
        key that does not start with '#'.
*/

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "_jsonbytes.h"

#define MAX_DEPTH 128      /* levels of a whole body (api/items.py ITEM_MAX_DEPTH) */
#define MAX_INT_DIGITS 640 /* the least int/str digit limit Python can be set to (sys.set_int_max_str_digits) */
#define FEW_KEYS 16        /* an object of at most this many keys is checked for duplicates pairwise */


typedef struct {
    char *buf;
    Py_ssize_t len, cap;
} Buf;

typedef struct {
    Py_ssize_t off, len; /* a key's encoded text (between its quotes) in a skeleton */
} Span;

typedef struct {
    uint64_t hash;
    Py_ssize_t off, len; /* the skeleton's bytes in the arena */
    Py_ssize_t kind;     /* -1: an empty slot */
    int clean;           /* whether one of its top-level keys does not start with '#' */
} Slot;

typedef struct {
    const unsigned char *p, *end;
    Buf out;             /* the current item's stored bytes */
    Buf skel;            /* the current item's skeleton */
    Buf arena;           /* the distinct skeletons, one after the other */
    Buf num;             /* a float's text, NUL-terminated for PyOS_string_to_double */
    Span *keys;          /* the keys of a skeleton's open objects (kind()'s check), outermost first */
    Py_ssize_t nkeys, keys_cap;
    Py_ssize_t *seen;    /* scratch of the duplicate check of a large object */
    Py_ssize_t seen_cap;
    Slot *slots;         /* the distinct skeletons, open addressing */
    size_t mask;
    Py_ssize_t nkinds;
    Slot last;           /* the previous item's skeleton's (kind -1: none yet) */
} Walk;

static int grow(Buf *b, Py_ssize_t more)
{
    if (b->len + more <= b->cap)
        return OK;
    Py_ssize_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more)
        cap *= 2;
    char *buf = PyMem_Realloc(b->buf, (size_t)cap);
    if (buf == NULL)
        return ERROR;
    b->buf = buf;
    b->cap = cap;
    return OK;
}

static inline int room(Buf *b, Py_ssize_t n)
{
    return b->cap - b->len >= n ? OK : grow(b, n);
}

static int put(Buf *b, const void *s, Py_ssize_t n)
{
    if (room(b, n) != OK)
        return ERROR;
    memcpy(b->buf + b->len, s, (size_t)n);
    b->len += n;
    return OK;
}

static inline int put1(Buf *b, char c)
{
    if (b->len >= b->cap && grow(b, 1) != OK)
        return ERROR;
    b->buf[b->len++] = c;
    return OK;
}

/* o, a place in b's (allocated) buffer past its len, with n bytes of room after it: the buffer grown (b->len set to
   o's offset) where it has not; NULL: out of memory. */
static inline char *reserve(Buf *b, char *o, Py_ssize_t n)
{
    if (b->buf + b->cap - o >= n)
        return o;
    b->len = o - b->buf;
    return grow(b, n) == OK ? b->buf + b->len : NULL;
}

/* (A test first: a body written compact has no whitespace between tokens.) */
static inline void skip_ws(Walk *w)
{
    const unsigned char *p = w->p, *end = w->end;
    while (p < end && *p <= ' ' && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    w->p = p;
}

/* -- strings -------------------------------------------------------------------------------------------------- */

/* A code point as json.dumps(ensure_ascii=False) writes it inside a string, at o (6 bytes of room): the short
   escapes, \u00XX (lowercase) for the other controls, '"' and '\' escaped, anything else as UTF-8 (U+007F, U+2028
   and U+2029 too). After it, o. */
static char *code_point(char *o, unsigned cp)
{
    static const char hex[] = "0123456789abcdef";
    if (cp < 0x20) {
        *o++ = '\\';
        switch (cp) {
        case '\b': *o++ = 'b'; return o;
        case '\f': *o++ = 'f'; return o;
        case '\n': *o++ = 'n'; return o;
        case '\r': *o++ = 'r'; return o;
        case '\t': *o++ = 't'; return o;
        default:
            o[0] = 'u', o[1] = '0', o[2] = '0', o[3] = hex[cp >> 4], o[4] = hex[cp & 15];
            return o + 5;
        }
    }
    if (cp == '"' || cp == '\\') {
        o[0] = '\\', o[1] = (char)cp;
        return o + 2;
    }
    if (cp < 0x80) {
        *o = (char)cp;
        return o + 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | (cp >> 6)), o[1] = (char)(0x80 | (cp & 0x3f));
        return o + 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | (cp >> 12)), o[1] = (char)(0x80 | ((cp >> 6) & 0x3f)), o[2] = (char)(0x80 | (cp & 0x3f));
        return o + 3;
    }
    o[0] = (char)(0xf0 | (cp >> 18)), o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f)), o[3] = (char)(0x80 | (cp & 0x3f));
    return o + 4;
}

#ifndef __SSE2__
/* Whether a byte of a word is one that a string's fast copy stops at: a control character, '"', '\\' or a byte of
   UTF-8 (bit tricks on 8 bytes at once: "determine if a word has a byte less than n", with n = 0x20, and "has a zero
   byte" of the word xor '"' and xor '\\'). Exact about whether one is there, not about which. */
#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL
static int stops(uint64_t v)
{
    uint64_t control = (v - ONES * 0x20) & ~v;
    uint64_t quote = v ^ (ONES * '"'), backslash = v ^ (ONES * '\\');
    return ((control | ((quote - ONES) & ~quote) | ((backslash - ONES) & ~backslash) | v) & HIGHS) != 0;
}
#endif

/* The 16 bytes at s copied to o (16 bytes of room), and the index of the first of them that a string's copy stops
   at: a control character, '"', '\\' or a byte of UTF-8; 16 if none. One SSE2 compare of each kind for the 16 (SSE2
   is part of x86-64; a byte under ' ' as a signed byte is a control or non-ASCII); elsewhere word tests, then bytes. */
static inline unsigned copy16(char *o, const unsigned char *s)
{
#ifdef __SSE2__
    __m128i v = _mm_loadu_si128((const __m128i *)s);
    _mm_storeu_si128((__m128i *)o, v);
    __m128i stop = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')),
                                             _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'))),
                                _mm_cmplt_epi8(v, _mm_set1_epi8(' ')));
    return (unsigned)__builtin_ctz((unsigned)_mm_movemask_epi8(stop) | 0x10000u);
#else
    memcpy(o, s, 16);
    for (unsigned i = 0; i < 16; i += 8) {
        uint64_t v;
        memcpy(&v, s + i, 8);
        if (stops(v)) {
            while (s[i] >= 0x20 && s[i] < 0x80 && s[i] != '"' && s[i] != '\\')
                i++;
            return i;
        }
    }
    return 16;
#endif
}

/* The string at p (its opening quote) written to the output as json.dumps writes its value, quotes included.
   Never longer than the string's own text (an escape is never shorter than what it is written as), but the text's
   end is not known before it is found: the room is made as the copy goes. */
static int long_string(Walk *w)
{
    const unsigned char *p = w->p + 1, *end = w->end;
    Buf *out = &w->out;
    if (put1(out, '"') != OK)
        return ERROR;
    char *o = out->buf + out->len;
    for (;;) {
        if ((o = reserve(out, o, 16)) == NULL)
            return ERROR;
        unsigned k;
        if (end - p >= 16)
            k = copy16(o, p);
        else { /* the body's last bytes, padded with NULs: the copy stops at the first of them as at a control */
            unsigned char last[16] = {0};
            memcpy(last, p, (size_t)(end - p));
            k = copy16(o, last);
        }
        p += k;
        o += k;
        if (k == 16)
            continue;
        if (p >= end || *p < 0x20) /* unterminated; a raw control character (json's strict mode refuses it) */
            return BAIL;
        if (*p == '"')
            break; /* (the room for the closing quote: 16 - k) */
        if (*p >= 0x80) {
            do {
                int n = utf8_len(p, end);
                if (n == 0)
                    return BAIL;
                if ((o = reserve(out, o, 4)) == NULL)
                    return ERROR;
                for (int i = 0; i < n; i++)
                    o[i] = (char)p[i];
                p += n;
                o += n;
            } while (p < end && *p >= 0x80);
            continue;
        }
        /* an escape */
        if (end - p < 2)
            return BAIL;
        if ((o = reserve(out, o, 6)) == NULL)
            return ERROR;
        unsigned cp;
        switch (p[1]) {
        case '"': case '\\': case 'b': case 'f': case 'n': case 'r': case 't': /* json.dumps writes these so */
            o[0] = '\\', o[1] = (char)p[1];
            o += 2;
            p += 2;
            continue;
        case '/':
            *o++ = '/';
            p += 2;
            continue;
        case 'u':
            if (!hex4(p + 2, end, &cp))
                return BAIL;
            if (cp >= 0xdc00 && cp <= 0xdfff) /* a lone low surrogate */
                return BAIL;
            if (cp >= 0xd800 && cp <= 0xdbff) {
                unsigned lo;
                if (end - p < 12 || p[6] != '\\' || p[7] != 'u' || !hex4(p + 8, end, &lo) || lo < 0xdc00 ||
                    lo > 0xdfff)
                    return BAIL; /* a lone high surrogate */
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                p += 6;
            }
            p += 6;
            o = code_point(o, cp);
            continue;
        default:
            return BAIL;
        }
    }
    *o++ = '"';
    out->len = o - out->buf;
    w->p = p + 1;
    return OK;
}

/* long_string(), where the string's text ends in its first 16 bytes (most keys, many values) without a stop before
   its closing quote: inline, in a few instructions. */
static inline int string(Walk *w)
{
    const unsigned char *p = w->p + 1;
    Buf *out = &w->out;
    if (w->end - p >= 16 && out->cap - out->len >= 17) {
        char *o = out->buf + out->len;
        unsigned k = copy16(o + 1, p);
        if (k < 16 && p[k] == '"') {
            o[0] = '"', o[k + 1] = '"';
            out->len += k + 2;
            w->p = p + k + 1;
            return OK;
        }
    }
    return long_string(w);
}

/* -- numbers and literals ------------------------------------------------------------------------------------- */

static int digits(const unsigned char **pp, const unsigned char *end)
{
    const unsigned char *p = *pp;
    while (p < end && *p >= '0' && *p <= '9')
        p++;
    int any = p > *pp;
    *pp = p;
    return any;
}

/* Python's repr of the float written as s[0:end], a plain decimal (-?D+.D+, no exponent; its dot at ``dot``),
   where it is that text's own digits: at most 15 significant ones (then the nearest double reads back as them, and
   no shorter text does: two decimals of at most 15 digits are never the same double, DBL_DIG), and repr's fixed
   notation (the decimal exponent from -4 to 15). Written without trailing zeros of the fraction but one. 0: not
   such a text. */
static int plain_float(Buf *out, const unsigned char *s, const unsigned char *dot, const unsigned char *end)
{
    const unsigned char *first = NULL, *last = NULL;
    for (const unsigned char *p = s; p < end; p++)
        if (*p >= '1' && *p <= '9') {
            if (first == NULL)
                first = p;
            last = p;
        }
    if (first != NULL) {
        Py_ssize_t digits = last - first + 1 - (first < dot && last > dot); /* (the dot between them) */
        Py_ssize_t exponent = first < dot ? dot - first - 1 : -(first - dot);
        if (digits > 15 || exponent < -4 || exponent > 15)
            return 0;
    }
    const unsigned char *stop = last != NULL && last > dot ? last + 1 : dot + 2; /* "x.0" at least */
    return put(out, s, stop - s) == OK ? 1 : -1;
}

/* A number token (JSON's grammar, as json's scanner reads it) written as Python writes the value: an integer's
   digits ("-0" as "0"), a float's repr. */
static int number(Walk *w)
{
    const unsigned char *start = w->p, *p = start, *end = w->end;
    if (p < end && *p == '-')
        p++;
    const unsigned char *int_start = p;
    if (p < end && *p == '0')
        p++;
    else if (!digits(&p, end))
        return BAIL;
    Py_ssize_t int_digits = p - int_start;
    const unsigned char *dot = NULL, *exponent = NULL;
    if (p < end && *p == '.') {
        dot = p++;
        if (!digits(&p, end))
            return BAIL;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        exponent = p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (!digits(&p, end))
            return BAIL;
    }
    w->p = p;
    if (dot == NULL && exponent == NULL) {
        if (int_digits > MAX_INT_DIGITS)
            return BAIL;
        if (p - start == 2 && start[0] == '-' && start[1] == '0')
            return put1(&w->out, '0');
        return put(&w->out, start, p - start);
    }
    int plain = exponent == NULL ? plain_float(&w->out, start, dot, p) : 0;
    if (plain != 0)
        return plain > 0 ? OK : ERROR;
    Buf *num = &w->num;
    num->len = 0;
    if (put(num, start, p - start) != OK || put1(num, '\0') != OK)
        return ERROR;
    char *stop;
    double x = PyOS_string_to_double(num->buf, &stop, NULL);
    if (x == -1.0 && PyErr_Occurred())
        return ERROR; /* (only MemoryError: a text it can't read is not a number token) */
    if (stop != num->buf + (p - start) || !isfinite(x)) /* 1e400: json's parse_float refuses it */
        return BAIL;
    char *repr = PyOS_double_to_string(x, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (repr == NULL)
        return ERROR;
    int r = put(&w->out, repr, (Py_ssize_t)strlen(repr));
    PyMem_Free(repr);
    return r;
}

static int literal(Walk *w, const char *word, Py_ssize_t n)
{
    const unsigned char *past = after_word(w->p, w->end, word, n);
    if (past == NULL)
        return BAIL;
    w->p = past;
    return put(&w->out, word, n);
}

/* -- containers ----------------------------------------------------------------------------------------------- */

static int object(Walk *w, int depth);
static int array(Walk *w, int depth);

/* A byte of structure, in the item's stored bytes and in its skeleton. */
static inline int put_both(Walk *w, char c)
{
    return put1(&w->out, c) == OK && put1(&w->skel, c) == OK ? OK : ERROR;
}

/* Whether the next byte other than whitespace is c (then w->p is after it). (c first: a body written compact has
   no whitespace.) */
static inline int take(Walk *w, char c)
{
    if (w->p < w->end && *w->p == c) {
        w->p++;
        return 1;
    }
    skip_ws(w);
    if (w->p < w->end && *w->p == c) {
        w->p++;
        return 1;
    }
    return 0;
}

#define MORE 3 /* separator() only: another member or element follows */

/* After a member or an element: OK after ``close``, MORE after a comma (written, and the space after it skipped),
   BAIL at anything else. */
static inline int separator(Walk *w, char close)
{
    if (take(w, ',')) {
        if (put_both(w, ',') != OK)
            return ERROR;
        skip_ws(w);
        return MORE;
    }
    return take(w, close) ? OK : BAIL;
}

/* The value at p (no whitespace before it), inside a container at level ``depth``. */
static inline int value(Walk *w, int depth)
{
    if (w->p >= w->end)
        return BAIL;
    int r;
    switch (*w->p) {
    case '{': return object(w, depth + 1);
    case '[': return array(w, depth + 1);
    case '"': r = string(w); break;
    case 't': r = literal(w, "true", 4); break;
    case 'f': r = literal(w, "false", 5); break;
    case 'n': r = literal(w, "null", 4); break;
    default: r = number(w);
    }
    return r == OK ? put1(&w->skel, '0') : r;
}

/* The object at p (its '{'), at nesting level ``depth``. Its keys go to the skeleton, which is checked for an
   object with two equal keys once per distinct skeleton (kind()), not here once per item. */
static int object(Walk *w, int depth)
{
    if (depth > MAX_DEPTH)
        return BAIL;
    int r;
    w->p++;
    if (put_both(w, '{') != OK)
        return ERROR;
    skip_ws(w);
    if (w->p < w->end && *w->p == '}') {
        w->p++;
        return put_both(w, '}');
    }
    do {
        if (w->p >= w->end || *w->p != '"')
            return BAIL;
        Py_ssize_t at = w->out.len;
        if ((r = string(w)) != OK)
            return r;
        if (!take(w, ':'))
            return BAIL;
        /* (the key and the colon to the skeleton in one copy) */
        if (put1(&w->out, ':') != OK || put(&w->skel, w->out.buf + at, w->out.len - at) != OK)
            return ERROR;
        skip_ws(w);
        if ((r = value(w, depth)) != OK)
            return r;
    } while ((r = separator(w, '}')) == MORE);
    return r == OK ? put_both(w, '}') : r;
}

static int array(Walk *w, int depth)
{
    if (depth > MAX_DEPTH)
        return BAIL;
    int r;
    w->p++;
    if (put_both(w, '[') != OK)
        return ERROR;
    skip_ws(w);
    if (w->p < w->end && *w->p == ']') {
        w->p++;
        return put_both(w, ']');
    }
    do {
        if ((r = value(w, depth)) != OK)
            return r;
    } while ((r = separator(w, ']')) == MORE);
    return r == OK ? put_both(w, ']') : r;
}

/* -- skeletons ------------------------------------------------------------------------------------------------ */

/* Whether the keys of one object, keys[from:nkeys] (spans of ``text``), hold two equal ones (large objects: by a
   hash table). 1: they do, -1: out of memory. */
static int duplicates(Walk *w, const char *text, Py_ssize_t from)
{
    Py_ssize_t n = w->nkeys - from;
    const Span *keys = w->keys + from;
    if (n <= FEW_KEYS) {
        for (Py_ssize_t k = 1; k < n; k++)
            for (Py_ssize_t j = 0; j < k; j++)
                if (keys[j].len == keys[k].len && memcmp(text + keys[j].off, text + keys[k].off, (size_t)keys[k].len) == 0)
                    return 1;
        return 0;
    }
    size_t size = 1;
    while (size < (size_t)n * 2)
        size *= 2;
    if ((Py_ssize_t)size > w->seen_cap) {
        Py_ssize_t *seen = PyMem_Realloc(w->seen, size * sizeof(Py_ssize_t));
        if (seen == NULL)
            return -1;
        w->seen = seen;
        w->seen_cap = (Py_ssize_t)size;
    }
    for (size_t i = 0; i < size; i++)
        w->seen[i] = -1;
    for (Py_ssize_t k = 0; k < n; k++) {
        size_t i = (size_t)fnv(FNV_OFFSET, text + keys[k].off, keys[k].len) & (size - 1);
        for (; w->seen[i] >= 0; i = (i + 1) & (size - 1)) {
            const Span *o = keys + w->seen[i];
            if (o->len == keys[k].len && memcmp(text + o->off, text + keys[k].off, (size_t)o->len) == 0)
                return 1;
        }
        w->seen[i] = k;
    }
    return 0;
}

/* The value of the current item's skeleton at *sp (well formed: written by the walk) checked for an object with two
   equal keys (the dict parsed of it would keep one value at the first key's place: BAIL); ``clean``: not NULL at the
   item's top level, set when a key does not start with '#'. *sp: after the value. (Keys are compared as written,
   and json.dumps writes equal keys alike.) */
static int check(Walk *w, const char **sp, int *clean)
{
    const char *s = *sp, *text = w->skel.buf;
    if (*s == '0') {
        *sp = s + 1;
        return OK;
    }
    char close = *s == '{' ? '}' : ']';
    Py_ssize_t from = w->nkeys;
    int r;
    if (*++s != close)
        for (;;) {
            if (close == '}') {
                const char *k = ++s; /* (s was at the key's opening quote) */
                while (*s != '"')
                    s += *s == '\\' ? 2 : 1;
                Span key = {k - text, s - k};
                if (clean != NULL && (key.len == 0 || *k != '#'))
                    *clean = 1;
                if (w->nkeys >= w->keys_cap) {
                    Py_ssize_t cap = w->keys_cap ? w->keys_cap * 2 : 64;
                    Span *keys = PyMem_Realloc(w->keys, (size_t)cap * sizeof(Span));
                    if (keys == NULL)
                        return ERROR;
                    w->keys = keys;
                    w->keys_cap = cap;
                }
                w->keys[w->nkeys++] = key;
                s += 2; /* the closing quote and ':' */
            }
            if ((r = check(w, &s, NULL)) != OK)
                return r;
            if (*s == close)
                break;
            s++; /* ',' */
        }
    *sp = s + 1;
    if (close == ']')
        return OK;
    switch (duplicates(w, text, from)) {
    case 1: return BAIL;
    case -1: return ERROR;
    }
    w->nkeys = from;
    return OK;
}

/* The number of the current item's skeleton (the one of an equal skeleton met before, else the next) in *k, and
   whether items of it are clean in *clean: OK, BAIL (an object with two equal keys), ERROR. */
static int kind(Walk *w, Py_ssize_t *k, int *clean)
{
    const char *s = w->skel.buf;
    Py_ssize_t n = w->skel.len;
    const Slot *last = &w->last;
    /* (most items are of the previous item's skeleton: a comparison, no hash) */
    if (last->kind >= 0 && last->len == n && memcmp(w->arena.buf + last->off, s, (size_t)n) == 0) {
        *k = last->kind;
        *clean = last->clean;
        return OK;
    }
    uint64_t h = fnv(FNV_OFFSET, s, n);
    size_t i = (size_t)h & w->mask;
    for (; w->slots[i].kind >= 0; i = (i + 1) & w->mask) {
        const Slot *o = &w->slots[i];
        if (o->hash == h && o->len == n && memcmp(w->arena.buf + o->off, s, (size_t)n) == 0) {
            w->last = *o;
            *k = o->kind;
            *clean = o->clean;
            return OK;
        }
    }
    int c = 0, r;
    const char *at = s;
    if ((r = check(w, &at, &c)) != OK)
        return r;
    if (put(&w->arena, s, n) != OK)
        return ERROR;
    w->slots[i] = w->last = (Slot){h, w->arena.len - n, n, w->nkinds, c};
    *k = w->nkinds;
    *clean = c;
    if ((size_t)++w->nkinds * 2 > w->mask) { /* more than half full: twice the slots */
        size_t size = (w->mask + 1) * 2;
        Slot *slots = PyMem_Malloc(size * sizeof(Slot));
        if (slots == NULL)
            return ERROR;
        for (size_t j = 0; j < size; j++)
            slots[j].kind = -1;
        for (size_t j = 0; j <= w->mask; j++) {
            if (w->slots[j].kind < 0)
                continue;
            size_t t = (size_t)w->slots[j].hash & (size - 1);
            while (slots[t].kind >= 0)
                t = (t + 1) & (size - 1);
            slots[t] = w->slots[j];
        }
        PyMem_Free(w->slots);
        w->slots = slots;
        w->mask = size - 1;
    }
    return OK;
}

/* -- the body ------------------------------------------------------------------------------------------------- */

/* One item (the object at p, at level ``depth``) appended to the lists. */
static int item(Walk *w, int depth, PyObject *items, PyObject *kinds, PyObject *firsts, Py_ssize_t *clean)
{
    int is_clean;
    Py_ssize_t k, before = w->nkinds;
    w->out.len = 0;
    w->skel.len = 0;
    int r = object(w, depth);
    if (r != OK || (r = kind(w, &k, &is_clean)) != OK)
        return r;
    PyObject *bytes = PyBytes_FromStringAndSize(w->out.buf, w->out.len);
    if (bytes == NULL)
        return ERROR;
    r = PyList_Append(items, bytes);
    Py_DECREF(bytes);
    if (r < 0)
        return ERROR;
    PyObject *n = PyLong_FromSsize_t(k);
    if (n == NULL)
        return ERROR;
    r = PyList_Append(kinds, n);
    Py_DECREF(n);
    if (r < 0)
        return ERROR;
    if (w->nkinds > before) {
        n = PyLong_FromSsize_t(PyList_GET_SIZE(items) - 1);
        if (n == NULL)
            return ERROR;
        r = PyList_Append(firsts, n);
        Py_DECREF(n);
        if (r < 0)
            return ERROR;
    }
    *clean += is_clean;
    return OK;
}

static int body(Walk *w, PyObject *items, PyObject *kinds, PyObject *firsts, Py_ssize_t *clean)
{
    int r;
    skip_ws(w);
    if (w->p >= w->end)
        return BAIL;
    if (*w->p == '{') {
        if ((r = item(w, 1, items, kinds, firsts, clean)) != OK)
            return r;
    }
    else if (*w->p == '[') {
        w->p++;
        skip_ws(w);
        if (w->p < w->end && *w->p == ']')
            w->p++;
        else
            for (;;) {
                if (w->p >= w->end || *w->p != '{') /* not an object: Python's 400 names the item */
                    return BAIL;
                if ((r = item(w, 2, items, kinds, firsts, clean)) != OK)
                    return r;
                skip_ws(w);
                if (w->p >= w->end)
                    return BAIL;
                if (*w->p == ']') {
                    w->p++;
                    break;
                }
                if (*w->p != ',')
                    return BAIL;
                w->p++;
                skip_ws(w);
            }
    }
    else
        return BAIL;
    skip_ws(w);
    return w->p == w->end ? OK : BAIL;
}

static PyObject *split(PyObject *Py_UNUSED(self), PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    Walk w = {0};
    w.p = view.buf;
    w.end = w.p + view.len;
    PyObject *items = PyList_New(0), *kinds = PyList_New(0), *firsts = PyList_New(0), *result = NULL;
    Py_ssize_t clean = 0;
    int r = ERROR;
    w.mask = 63;
    w.last.kind = -1;
    w.slots = PyMem_Malloc((w.mask + 1) * sizeof(Slot));
    if (items != NULL && kinds != NULL && firsts != NULL && w.slots != NULL) {
        for (size_t i = 0; i <= w.mask; i++)
            w.slots[i].kind = -1;
        r = body(&w, items, kinds, firsts, &clean);
    }
    if (r == OK)
        result = Py_BuildValue("(OOOn)", items, kinds, firsts, clean);
    else if (r == BAIL)
        result = Py_NewRef(Py_None);
    else if (!PyErr_Occurred())
        PyErr_NoMemory();
    Py_XDECREF(items);
    Py_XDECREF(kinds);
    Py_XDECREF(firsts);
    PyMem_Free(w.out.buf);
    PyMem_Free(w.skel.buf);
    PyMem_Free(w.arena.buf);
    PyMem_Free(w.num.buf);
    PyMem_Free(w.keys);
    PyMem_Free(w.seen);
    PyMem_Free(w.slots);
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"split", split, METH_O, "split(body): (items, kinds, firsts, clean) of a push body, or None (see _cpush.c)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_cpush", "a push body's items as stored (see _cpush.c).", -1, methods, NULL, NULL,
    NULL, NULL,
};

PyMODINIT_FUNC PyInit__cpush(void)
{
    return PyModule_Create(&module);
}
