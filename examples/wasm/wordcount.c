/* Word count over every file in /inputs, like `wc`.
 *
 * Writes /outputs/wc.txt with one "lines words bytes path" line per file
 * (sorted by path) and a final "lines words bytes total" line, and prints the
 * total line on stdout. Words are runs of non-whitespace bytes, whitespace
 * being the six ASCII characters " \t\n\v\f\r". */
#include "common.h"

typedef struct {
    unsigned long long lines, words, bytes;
} counts;

static int is_space(int c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

static counts count_file(const char *path) {
    counts c = {0, 0, 0};
    FILE *f = fopen(path, "rb");
    if (f == NULL) die("cannot read", path);
    static unsigned char buf[65536];
    int in_word = 0;
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        c.bytes += n;
        for (size_t i = 0; i < n; i++) {
            if (buf[i] == '\n') c.lines++;
            if (is_space(buf[i])) {
                in_word = 0;
            } else if (!in_word) {
                in_word = 1;
                c.words++;
            }
        }
    }
    if (ferror(f)) die("cannot read", path);
    fclose(f);
    return c;
}

int main(void) {
    str_list files = {0};
    collect_files(inputs_dir(), "", &files);
    FILE *out = open_output("wc.txt");
    counts total = {0, 0, 0};
    for (size_t i = 0; i < files.len; i++) {
        char path[PATH_BUF];
        snprintf(path, sizeof path, "%s/%s", inputs_dir(), files.items[i]);
        counts c = count_file(path);
        fprintf(out, "%llu %llu %llu %s\n", c.lines, c.words, c.bytes, files.items[i]);
        total.lines += c.lines;
        total.words += c.words;
        total.bytes += c.bytes;
    }
    fprintf(out, "%llu %llu %llu total\n", total.lines, total.words, total.bytes);
    if (fclose(out) != 0) die("cannot write", "wc.txt");
    printf("%llu %llu %llu total\n", total.lines, total.words, total.bytes);
    return 0;
}
