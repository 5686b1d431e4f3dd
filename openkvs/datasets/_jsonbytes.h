/* What the C extensions that read JSON bytes share (_ccsv.c: csv lines of stored items; _cpush.c: a push body's
   stored items): the walk's result codes, FNV-1a, and the checks of a UTF-8 sequence and of a \uXXXX escape.
   Static functions in a header: each extension is its own shared object, compiled with its own copy. */

#ifndef OPENKVS_JSONBYTES_H
#define OPENKVS_JSONBYTES_H

#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Results of a walk: go on, leave this to Python (which is sure of the answer), or out of memory. */
#define OK 0
#define BAIL 1
#define ERROR 2

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

static inline uint64_t fnv(uint64_t h, const char *s, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= FNV_PRIME;
    }
    return h;
}

/* Past the word (true, false, null) at p, or NULL where another text is there. */
static inline const unsigned char *after_word(const unsigned char *p, const unsigned char *end, const char *word,
                                              Py_ssize_t n)
{
    return end - p >= n && memcmp(p, word, (size_t)n) == 0 ? p + n : NULL;
}

/* The length of the valid UTF-8 sequence of a non-ASCII lead byte at p (surrogates excluded), or 0. */
static inline int utf8_len(const unsigned char *p, const unsigned char *end)
{
    unsigned char c = p[0];
    Py_ssize_t room = end - p;
    if (c >= 0xc2 && c <= 0xdf)
        return room >= 2 && (p[1] & 0xc0) == 0x80 ? 2 : 0;
    if (c >= 0xe0 && c <= 0xef) {
        if (room < 3 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80)
            return 0;
        if ((c == 0xe0 && p[1] < 0xa0) || (c == 0xed && p[1] >= 0xa0)) /* overlong; a surrogate */
            return 0;
        return 3;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        if (room < 4 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80 || (p[3] & 0xc0) != 0x80)
            return 0;
        if ((c == 0xf0 && p[1] < 0x90) || (c == 0xf4 && p[1] >= 0x90)) /* overlong; past U+10FFFF */
            return 0;
        return 4;
    }
    return 0;
}

/* The four hex digits of a \u escape at p into *out; 0 if they are not four hex digits. */
static inline int hex4(const unsigned char *p, const unsigned char *end, unsigned *out)
{
    if (end - p < 4)
        return 0;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= c - '0';
        else if (c >= 'a' && c <= 'f')
            v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            v |= c - 'A' + 10;
        else
            return 0;
    }
    *out = v;
    return 1;
}

#endif
