/* A word-to-count table shared by wordfreq (map) and merge (reduce), and the
 * counts.tsv format both of them write.
 *
 * counts.tsv holds one "word<TAB>count<LF>" line per distinct word, sorted
 * byte-wise by word, so the same counts always give the same bytes.
 *
 * The table is open addressing with linear probing, grown to stay at most
 * half full; memory is proportional to the number of distinct words, not
 * to the size of the input. */
#ifndef EXAMPLES_WORDS_H
#define EXAMPLES_WORDS_H

#include <stdint.h>

#include "common.h"

typedef struct {
    char *word; /* not NUL-terminated in general: use len */
    size_t len;
    uint64_t hash;
    uint64_t count;
} word_entry;

typedef struct {
    word_entry *slots; /* slots[i].word == NULL marks an empty slot */
    size_t cap;        /* a power of two */
    size_t len;
} word_table;

/* FNV-1a, 64 bits: start from WORD_HASH_INIT and feed it one byte at a time. */
#define WORD_HASH_INIT 0xcbf29ce484222325ULL

static uint64_t word_hash_byte(uint64_t hash, unsigned char byte) {
    return (hash ^ byte) * 0x100000001b3ULL;
}

static inline uint64_t word_hash(const char *word, size_t len) {
    uint64_t hash = WORD_HASH_INIT;
    for (size_t i = 0; i < len; i++) hash = word_hash_byte(hash, (unsigned char)word[i]);
    return hash;
}

static void word_table_grow(word_table *t) {
    size_t cap = t->cap ? t->cap * 2 : 1024;
    word_entry *slots = (word_entry *)xrealloc(NULL, cap * sizeof(word_entry));
    memset(slots, 0, cap * sizeof(word_entry));
    for (size_t i = 0; i < t->cap; i++) {
        if (t->slots[i].word == NULL) continue;
        size_t j = (size_t)t->slots[i].hash & (cap - 1);
        while (slots[j].word != NULL) j = (j + 1) & (cap - 1);
        slots[j] = t->slots[i];
    }
    free(t->slots);
    t->slots = slots;
    t->cap = cap;
}

/* Adds count to word (hash must be word_hash(word, len)); copies the word
 * the first time it is seen. Returns 0, or -1 when the sum would overflow
 * 64 bits (the table is left unchanged then). */
static int word_table_add(word_table *t, const char *word, size_t len, uint64_t hash, uint64_t count) {
    if (2 * (t->len + 1) > t->cap) word_table_grow(t);
    size_t j = (size_t)hash & (t->cap - 1);
    while (t->slots[j].word != NULL) {
        word_entry *e = &t->slots[j];
        if (e->hash == hash && e->len == len && memcmp(e->word, word, len) == 0) {
            if (e->count > UINT64_MAX - count) return -1;
            e->count += count;
            return 0;
        }
        j = (j + 1) & (t->cap - 1);
    }
    word_entry *e = &t->slots[j];
    e->word = (char *)xrealloc(NULL, len ? len : 1);
    memcpy(e->word, word, len);
    e->len = len;
    e->hash = hash;
    e->count = count;
    t->len++;
    return 0;
}

static int word_entry_cmp_word(const void *a, const void *b) {
    const word_entry *x = *(const word_entry *const *)a;
    const word_entry *y = *(const word_entry *const *)b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->word, y->word, n);
    if (c != 0) return c;
    return (x->len > y->len) - (x->len < y->len);
}

/* Highest count first, then by word: the order of top.txt. */
static inline int word_entry_cmp_count(const void *a, const void *b) {
    const word_entry *x = *(const word_entry *const *)a;
    const word_entry *y = *(const word_entry *const *)b;
    if (x->count != y->count) return x->count > y->count ? -1 : 1;
    return word_entry_cmp_word(a, b);
}

/* Sorts items[0, n) with cmp, stably: a merge sort through tmp (n slots).
 * qsort would do, but wasi-libc's (musl's smoothsort) burns several times
 * the fuel, and fuel is what a job is paid by. */
static void sort_entries(word_entry **items, word_entry **tmp, size_t n,
                         int (*cmp)(const void *, const void *)) {
    if (n < 2) return;
    size_t half = n / 2;
    sort_entries(items, tmp, half, cmp);
    sort_entries(items + half, tmp, n - half, cmp);
    if (cmp(&items[half - 1], &items[half]) <= 0) return; /* already in order */
    memcpy(tmp, items, half * sizeof(word_entry *));
    size_t i = 0, j = half, k = 0;
    while (i < half && j < n) items[k++] = cmp(&items[j], &tmp[i]) < 0 ? items[j++] : tmp[i++];
    while (i < half) items[k++] = tmp[i++];
}

/* The table's entries as a fresh array of t->len pointers, sorted by word. */
static word_entry **word_table_sorted(const word_table *t) {
    size_t size = (t->len ? t->len : 1) * sizeof(word_entry *);
    word_entry **items = (word_entry **)xrealloc(NULL, size);
    size_t n = 0;
    for (size_t i = 0; i < t->cap; i++) {
        if (t->slots[i].word != NULL) items[n++] = &t->slots[i];
    }
    word_entry **tmp = (word_entry **)xrealloc(NULL, size);
    sort_entries(items, tmp, n, word_entry_cmp_word);
    free(tmp);
    return items;
}

/* Writes v in decimal to f (printf costs many times the fuel). */
static void write_u64(FILE *f, uint64_t v) {
    char buf[20];
    size_t i = sizeof buf;
    do {
        buf[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    fwrite(buf + i, 1, sizeof buf - i, f);
}

/* Writes OUTPUTS/counts.tsv from entries sorted by word; exits 1 on error. */
static void write_counts(word_entry *const *items, size_t n) {
    FILE *out = open_output("counts.tsv");
    for (size_t i = 0; i < n; i++) {
        fwrite(items[i]->word, 1, items[i]->len, out);
        putc('\t', out);
        write_u64(out, items[i]->count);
        putc('\n', out);
    }
    if (ferror(out) || fclose(out) != 0) die("cannot write", "counts.tsv");
}

#endif
