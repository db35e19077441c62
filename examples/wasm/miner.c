/* Nonce search in the spirit of a miner.
 *
 * Usage: miner PREFIX BITS [START]
 *
 * Finds the smallest nonce >= START (default 0) such that
 * sha256(PREFIX || decimal(nonce)) starts with BITS zero bits. Writes
 * /outputs/nonce.json and prints "nonce hexdigest" on stdout. */
#include <stdint.h>

#include "common.h"
#include "sha256.h"

static int leading_zero_bits(const uint8_t digest[32]) {
    int bits = 0;
    for (int i = 0; i < 32; i++) {
        if (digest[i] == 0) {
            bits += 8;
            continue;
        }
        for (int b = 7; b >= 0 && !(digest[i] >> b & 1); b--) bits++;
        break;
    }
    return bits;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: miner PREFIX BITS [START]\n");
        return 2;
    }
    const char *prefix = argv[1];
    int bits = atoi(argv[2]);
    if (bits < 0 || bits > 256) {
        fprintf(stderr, "BITS must be between 0 and 256, got %s\n", argv[2]);
        return 2;
    }
    unsigned long long nonce = argc > 3 ? strtoull(argv[3], NULL, 10) : 0;
    sha256_ctx base;
    sha256_init(&base);
    sha256_update(&base, prefix, strlen(prefix));
    uint8_t digest[32];
    unsigned long long tries = 0;
    for (;; nonce++) {
        char text[24];
        int len = snprintf(text, sizeof text, "%llu", nonce);
        sha256_ctx ctx = base;
        sha256_update(&ctx, text, (size_t)len);
        sha256_final(&ctx, digest);
        tries++;
        if (leading_zero_bits(digest) >= bits) break;
    }
    char hex[65];
    sha256_hex(digest, hex);
    FILE *out = open_output("nonce.json");
    fprintf(out, "{\"bits\": %d, \"nonce\": %llu, \"hash\": \"%s\", \"tries\": %llu}\n", bits,
            nonce, hex, tries);
    if (fclose(out) != 0) die("cannot write", "nonce.json");
    printf("%llu %s\n", nonce, hex);
    return 0;
}
