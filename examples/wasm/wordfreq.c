/* Word frequencies over every file in /inputs: the map step of a MapReduce
 * word count (merge.c is the reduce step).
 *
 * Reads every regular file under /inputs, recursively, in byte-wise sorted
 * path order. A word is a maximal run of ASCII letters, digits and
 * apostrophes, lowercased (ASCII only); every other byte, including every
 * byte >= 128, separates words, and so does the end of a file. A run made
 * only of apostrophes is not a word.
 *
 * Writes /outputs/counts.tsv, one "word<TAB>count" line per distinct word
 * sorted byte-wise by word, and prints
 * "<distinct> distinct words, <total> words in <files> files" on stdout.
 * Exits 1 with a message on stderr when a file cannot be read or written. */
#include "words.h"

typedef struct {
    word_table table;
    unsigned long long total;
    char *word; /* the word being read, lowercased */
    size_t cap;
} counter;

/* Byte to its lowercase form when it belongs in a word, else 0. */
static unsigned char word_byte[256];

static void init_word_bytes(void) {
    for (int b = 'a'; b <= 'z'; b++) word_byte[b] = (unsigned char)b;
    for (int b = 'A'; b <= 'Z'; b++) word_byte[b] = (unsigned char)(b - 'A' + 'a');
    for (int b = '0'; b <= '9'; b++) word_byte[b] = (unsigned char)b;
    word_byte['\''] = '\'';
}

static void count_word(counter *c, size_t len, uint64_t hash, int letters) {
    if (len == 0 || !letters) return; /* nothing, or only apostrophes */
    word_table_add(&c->table, c->word, len, hash, 1);
    c->total++;
}

static void count_file(counter *c, const char *path) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) die("cannot read", path);
    static unsigned char buf[65536];
    /* The word in progress lives in locals; a word may span reads. */
    size_t len = 0;
    uint64_t hash = WORD_HASH_INIT;
    int letters = 0;
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        for (size_t i = 0; i < n; i++) {
            unsigned char b = word_byte[buf[i]];
            if (b == 0) {
                count_word(c, len, hash, letters);
                len = 0;
                hash = WORD_HASH_INIT;
                letters = 0;
                continue;
            }
            if (len == c->cap) {
                c->cap = c->cap ? c->cap * 2 : 64;
                c->word = (char *)xrealloc(c->word, c->cap);
            }
            c->word[len++] = (char)b;
            hash = word_hash_byte(hash, b);
            letters |= b != '\'';
        }
    }
    if (ferror(f)) die("cannot read", path);
    fclose(f);
    count_word(c, len, hash, letters); /* the end of a file ends a word */
}

int main(void) {
    str_list files = {0};
    collect_files(inputs_dir(), "", &files);
    init_word_bytes();
    counter c = {0};
    for (size_t i = 0; i < files.len; i++) {
        char path[PATH_BUF];
        snprintf(path, sizeof path, "%s/%s", inputs_dir(), files.items[i]);
        count_file(&c, path);
    }
    word_entry **items = word_table_sorted(&c.table);
    write_counts(items, c.table.len);
    printf("%zu distinct words, %llu words in %zu files\n", c.table.len, c.total, files.len);
    return 0;
}
