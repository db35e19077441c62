/* SHA-256 of every file in /inputs, like `sha256sum`.
 *
 * Writes /outputs/sha256sums.txt with one "<hex digest>  <path>" line per
 * file (sorted by path) and prints the SHA-256 of that listing on stdout, a
 * single digest for the whole input set. */
#include "common.h"
#include "sha256.h"

static void hash_file(const char *path, uint8_t digest[32]) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) die("cannot read", path);
    static unsigned char buf[65536];
    sha256_ctx ctx;
    sha256_init(&ctx);
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) sha256_update(&ctx, buf, n);
    if (ferror(f)) die("cannot read", path);
    fclose(f);
    sha256_final(&ctx, digest);
}

int main(void) {
    str_list files = {0};
    collect_files(inputs_dir(), "", &files);
    FILE *out = open_output("sha256sums.txt");
    sha256_ctx listing;
    sha256_init(&listing);
    for (size_t i = 0; i < files.len; i++) {
        char path[PATH_BUF], line[PATH_BUF + 80], hex[65];
        uint8_t digest[32];
        snprintf(path, sizeof path, "%s/%s", inputs_dir(), files.items[i]);
        hash_file(path, digest);
        sha256_hex(digest, hex);
        int len = snprintf(line, sizeof line, "%s  %s\n", hex, files.items[i]);
        fputs(line, out);
        sha256_update(&listing, line, (size_t)len);
    }
    if (fclose(out) != 0) die("cannot write", "sha256sums.txt");
    uint8_t digest[32];
    char hex[65];
    sha256_final(&listing, digest);
    sha256_hex(digest, hex);
    printf("%s\n", hex);
    return 0;
}
