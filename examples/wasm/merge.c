/* Sums word counts: the reduce step of a MapReduce word count (wordfreq.c
 * is the map step).
 *
 * Usage: merge [TOP]   (default 10)
 *
 * Reads every file named counts.tsv anywhere under /inputs (a workflow
 * mounts each parent job's results at /inputs/<parent>/outputs/), in
 * byte-wise sorted path order; each line is "word<TAB>count". Writes the sums
 * to /outputs/counts.tsv in the same format, sorted by word, and the TOP most
 * frequent words to /outputs/top.txt as "count<TAB>word" lines, highest count
 * first and ties by word; prints the top.txt lines on stdout.
 *
 * Exits 1 naming the file and line when a line is malformed (no tab, an
 * empty word, a count that is not a decimal number below 2^64) or when a sum
 * overflows; exits 2 with usage on bad arguments. */
#include "words.h"

#define USAGE "usage: merge [TOP]   (TOP: how many words top.txt lists, a positive integer, default 10)\n"

static int is_counts_file(const char *rel) {
    const char *name = strrchr(rel, '/');
    name = name == NULL ? rel : name + 1;
    return strcmp(name, "counts.tsv") == 0;
}

static void malformed(const char *path, unsigned long long line, const char *why) {
    fprintf(stderr, "merge: %s:%llu: %s; expected \"word<TAB>count\" lines as wordfreq writes them\n", path,
            line, why);
    exit(1);
}

/* Parses the decimal count in [s, end); returns 0, or -1 when it is not one. */
static int parse_count(const char *s, const char *end, uint64_t *out) {
    if (s == end) return -1;
    uint64_t v = 0;
    for (; s < end; s++) {
        if (*s < '0' || *s > '9') return -1;
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10) return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

static void merge_file(word_table *table, const char *path) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) die("cannot read", path);
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    unsigned long long lineno = 0;
    while ((n = getline(&line, &cap, f)) > 0) {
        lineno++;
        const char *end = line + n;
        if (end[-1] == '\n') end--;
        const char *tab = memchr(line, '\t', (size_t)(end - line));
        if (tab == NULL) malformed(path, lineno, "no tab");
        if (tab == line) malformed(path, lineno, "empty word");
        uint64_t count;
        if (parse_count(tab + 1, end, &count) != 0) malformed(path, lineno, "the count is not a number");
        size_t len = (size_t)(tab - line);
        if (word_table_add(table, line, len, word_hash(line, len), count) != 0) {
            malformed(path, lineno, "the sum of the counts overflows 64 bits");
        }
    }
    if (ferror(f)) die("cannot read", path);
    free(line);
    fclose(f);
}

int main(int argc, char **argv) {
    unsigned long long top = 10;
    if (argc > 2) {
        fputs(USAGE, stderr);
        return 2;
    }
    if (argc == 2) {
        char *end = NULL;
        errno = 0;
        top = strtoull(argv[1], &end, 10);
        if (argv[1][0] < '0' || argv[1][0] > '9' || *end != '\0' || errno != 0 || top == 0) {
            fprintf(stderr, "merge: bad TOP %s\n" USAGE, argv[1]);
            return 2;
        }
    }
    str_list files = {0};
    collect_files(inputs_dir(), "", &files);
    word_table table = {0};
    size_t merged = 0;
    for (size_t i = 0; i < files.len; i++) {
        if (!is_counts_file(files.items[i])) continue;
        char path[PATH_BUF];
        snprintf(path, sizeof path, "%s/%s", inputs_dir(), files.items[i]);
        merge_file(&table, path);
        merged++;
    }
    if (merged == 0) fprintf(stderr, "merge: no counts.tsv under %s; the outputs are empty\n", inputs_dir());

    word_entry **items = word_table_sorted(&table);
    write_counts(items, table.len);

    word_entry **tmp = (word_entry **)xrealloc(NULL, (table.len ? table.len : 1) * sizeof(word_entry *));
    sort_entries(items, tmp, table.len, word_entry_cmp_count);
    size_t shown = top < table.len ? (size_t)top : table.len;
    FILE *out = open_output("top.txt");
    for (size_t i = 0; i < shown; i++) {
        for (int pass = 0; pass < 2; pass++) {
            FILE *f = pass == 0 ? out : stdout;
            write_u64(f, items[i]->count);
            putc('\t', f);
            fwrite(items[i]->word, 1, items[i]->len, f);
            fputc('\n', f);
        }
    }
    if (ferror(out) || fclose(out) != 0) die("cannot write", "top.txt");
    return 0;
}
