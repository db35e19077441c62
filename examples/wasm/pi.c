/* Monte Carlo estimate of pi from the job's shared seed.
 *
 * Usage: pi [SAMPLES]   (default 1000000)
 *
 * The generator is seeded from getentropy(), which the Wasm executor answers
 * deterministically from the job seed, so every replica draws the same
 * points and reports the same estimate. Writes /outputs/pi.json and prints
 * the estimate on stdout. */
#include <stdint.h>
#include <unistd.h>

#include "common.h"

static uint64_t state[4];

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

/* xoshiro256** (Blackman and Vigna), public domain. */
static uint64_t next(void) {
    uint64_t result = rotl(state[1] * 5, 7) * 9;
    uint64_t t = state[1] << 17;
    state[2] ^= state[0];
    state[3] ^= state[1];
    state[1] ^= state[2];
    state[0] ^= state[3];
    state[2] ^= t;
    state[3] = rotl(state[3], 45);
    return result;
}

int main(int argc, char **argv) {
    unsigned long long samples = 1000000;
    if (argc > 1) samples = strtoull(argv[1], NULL, 10);
    unsigned char seed[32];
    if (getentropy(seed, sizeof seed) != 0) die("cannot read", "the seed");
    memcpy(state, seed, sizeof state);
    if ((state[0] | state[1] | state[2] | state[3]) == 0) state[0] = 1;
    unsigned long long inside = 0;
    for (unsigned long long i = 0; i < samples; i++) {
        double x = (double)(next() >> 11) * 0x1.0p-53;
        double y = (double)(next() >> 11) * 0x1.0p-53;
        if (x * x + y * y < 1.0) inside++;
    }
    double pi = samples ? 4.0 * (double)inside / (double)samples : 0.0;
    FILE *out = open_output("pi.json");
    fprintf(out, "{\"samples\": %llu, \"inside\": %llu, \"pi\": %.12f}\n", samples, inside, pi);
    if (fclose(out) != 0) die("cannot write", "pi.json");
    printf("%.12f\n", pi);
    return 0;
}
