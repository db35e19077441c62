/* One stage of a genetic-algorithm root finder for a polynomial.
 *
 * Usage: ga COEFFS [--lo L] [--hi H] [--pop N] [--gens G]
 *
 * COEFFS are comma-separated coefficients, highest degree first: "1,0,-2,-5"
 * is x^3 - 2x - 5. Defaults: --lo -10 --hi 10 --pop 64 --gens 40.
 *
 * Reads every file named population.txt anywhere under /inputs (byte-wise
 * sorted path order, one number per line, clamped to [L, H]) and pools them,
 * so the islands of an earlier stage merge; the best N of the pool (fewer:
 * topped up with uniform draws in [L, H]) start the run. With no such file
 * the N candidates are drawn uniformly in [L, H]. Then G generations of:
 * fitness |f(x)| (lower is better), tournament selection (3 candidates),
 * blend crossover (BLX-0.5), a near-gaussian mutation whose scale shrinks
 * over the generations (from a tenth of the interval, or of the starting
 * population's spread when that is narrower, by (1 - g/G)^4), children
 * clamped to [L, H], and elitism (the best survive unchanged, so a stage
 * never does worse than its inputs).
 *
 * The generator is xoshiro256** seeded from getentropy(), which the Wasm
 * executor answers from the job seed: replicas with the same seed and inputs
 * write the same bytes. No libm: only IEEE arithmetic, exact in Wasm.
 *
 * Writes /outputs/population.txt (the final population sorted by |f(x)|,
 * then x, "%.17g" per line) and /outputs/best.json; prints
 * "best x=... f(x)=..." on stdout. Exits 2 with usage on bad arguments and
 * 1 naming the file and line when an input line is not a finite number. */
#include <stdint.h>
#include <unistd.h>

#include "common.h"

#define USAGE                                                                                  \
    "usage: ga COEFFS [--lo L] [--hi H] [--pop N] [--gens G]\n"                                \
    "  COEFFS  comma-separated polynomial coefficients, highest degree first (\"1,0,-2,-5\")\n" \
    "  --lo L --hi H  search interval, L < H (default -10 10)\n"                               \
    "  --pop N        population size, 2..1000000 (default 64)\n"                              \
    "  --gens G       generations, 0..1000000 (default 40)\n"

#define MAX_COEFFS 64
#define TOURNAMENT 3
#define BLEND_ALPHA 0.5
#define MUTATION_RATE 0.5

typedef struct {
    double x;
    double fit; /* |f(x)|; +inf when f(x) is not finite */
} candidate;

static double coeffs[MAX_COEFFS];
static int n_coeffs;

/* -- random numbers --------------------------------------------------------- */

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

/* Uniform in [0, 1). */
static double uniform(void) { return (double)(next() >> 11) * 0x1.0p-53; }

/* Uniform in [0, n). The modulo bias is below n / 2^64. */
static size_t pick(size_t n) { return (size_t)(next() % n); }

/* Mean 0, variance 1: the sum of four uniforms, rescaled (Irwin-Hall). */
static double gaussish(void) {
    double s = uniform() + uniform() + uniform() + uniform();
    return (s - 2.0) * 1.7320508075688772;
}

/* -- the polynomial --------------------------------------------------------- */

static double poly(double x) {
    double acc = 0.0;
    for (int i = 0; i < n_coeffs; i++) acc = acc * x + coeffs[i];
    return acc;
}

static candidate make(double x, double lo, double hi) {
    if (x < lo) x = lo;
    if (x > hi) x = hi;
    candidate c;
    c.x = x + 0.0; /* -0 becomes +0, so it prints as "0" */
    double fx = poly(c.x);
    c.fit = __builtin_isfinite(fx) ? __builtin_fabs(fx) : __builtin_inf();
    return c;
}

static int candidate_cmp(const void *a, const void *b) {
    const candidate *x = (const candidate *)a, *y = (const candidate *)b;
    if (x->fit != y->fit) return x->fit < y->fit ? -1 : 1;
    return (x->x > y->x) - (x->x < y->x);
}

/* -- arguments -------------------------------------------------------------- */

static void usage_error(const char *what, const char *value) {
    fprintf(stderr, "ga: %s: %s\n" USAGE, what, value);
    exit(2);
}

static double parse_double(const char *s, const char *what) {
    char *end = NULL;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || !__builtin_isfinite(v)) usage_error(what, s);
    return v;
}

static long parse_long(const char *s, long lo, long hi, const char *what) {
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end != '\0' || errno != 0 || v < lo || v > hi) usage_error(what, s);
    return v;
}

static void parse_coeffs(const char *s) {
    const char *p = s;
    for (;;) {
        char *end = NULL;
        double v = strtod(p, &end);
        if (end == p || (*end != ',' && *end != '\0') || !__builtin_isfinite(v)) {
            usage_error("bad COEFFS (comma-separated finite numbers)", s);
        }
        if (n_coeffs == MAX_COEFFS) usage_error("too many coefficients (at most 64)", s);
        coeffs[n_coeffs++] = v;
        if (*end == '\0') break;
        p = end + 1;
    }
    if (n_coeffs < 2) usage_error("COEFFS needs at least two coefficients (degree >= 1)", s);
}

/* -- the pooled inputs ------------------------------------------------------ */

typedef struct {
    candidate *items;
    size_t len, cap;
} pool;

static void pool_push(pool *p, candidate c) {
    if (p->len == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 256;
        p->items = (candidate *)xrealloc(p->items, p->cap * sizeof(candidate));
    }
    p->items[p->len++] = c;
}

static int is_population_file(const char *rel) {
    const char *name = strrchr(rel, '/');
    name = name == NULL ? rel : name + 1;
    return strcmp(name, "population.txt") == 0;
}

static void read_population(pool *p, const char *path, double lo, double hi) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) die("cannot read", path);
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    unsigned long long lineno = 0;
    while ((n = getline(&line, &cap, f)) > 0) {
        lineno++;
        if (line[n - 1] == '\n') line[n - 1] = '\0';
        char *end = NULL;
        double x = strtod(line, &end);
        if (end == line || *end != '\0' || !__builtin_isfinite(x)) {
            fprintf(stderr, "ga: %s:%llu: not a finite number; expected one number per line as ga writes them\n",
                    path, lineno);
            exit(1);
        }
        pool_push(p, make(x, lo, hi));
    }
    if (ferror(f)) die("cannot read", path);
    free(line);
    fclose(f);
}

/* -- the search ------------------------------------------------------------- */

/* Tournament selection on a population sorted best first: the lowest of a
 * few random indices is the fittest of them. */
static const candidate *select_parent(const candidate *pop, size_t n) {
    size_t best = pick(n);
    for (int i = 1; i < TOURNAMENT; i++) {
        size_t j = pick(n);
        if (j < best) best = j;
    }
    return &pop[best];
}

static void write_number(FILE *f, double v) {
    if (__builtin_isfinite(v)) {
        fprintf(f, "%.17g", v);
    } else {
        fputs("null", f);
    }
}

int main(int argc, char **argv) {
    double lo = -10.0, hi = 10.0;
    long pop_size = 64, gens = 40;
    const char *coeffs_arg = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int is_option = a[0] == '-' && a[1] == '-';
        int known = strcmp(a, "--lo") == 0 || strcmp(a, "--hi") == 0 || strcmp(a, "--pop") == 0 ||
                    strcmp(a, "--gens") == 0;
        if (is_option && !known) usage_error("unknown option", a);
        if (known && i + 1 >= argc) usage_error("missing value for", a);
        if (strcmp(a, "--lo") == 0) {
            lo = parse_double(argv[++i], "bad --lo");
        } else if (strcmp(a, "--hi") == 0) {
            hi = parse_double(argv[++i], "bad --hi");
        } else if (strcmp(a, "--pop") == 0) {
            pop_size = parse_long(argv[++i], 2, 1000000, "bad --pop");
        } else if (strcmp(a, "--gens") == 0) {
            gens = parse_long(argv[++i], 0, 1000000, "bad --gens");
        } else if (coeffs_arg != NULL) {
            usage_error("unexpected argument", a);
        } else {
            coeffs_arg = a;
        }
    }
    if (coeffs_arg == NULL) usage_error("missing", "COEFFS");
    parse_coeffs(coeffs_arg);
    if (!(lo < hi) || !__builtin_isfinite(hi - lo)) {
        fprintf(stderr, "ga: --lo %.17g must be below --hi %.17g, by a finite width\n" USAGE, lo, hi);
        return 2;
    }
    size_t n = (size_t)pop_size;

    unsigned char seed[32];
    if (getentropy(seed, sizeof seed) != 0) die("cannot read", "the seed");
    memcpy(state, seed, sizeof state);
    if ((state[0] | state[1] | state[2] | state[3]) == 0) state[0] = 1;

    pool inputs = {0};
    str_list files = {0};
    collect_files(inputs_dir(), "", &files);
    for (size_t i = 0; i < files.len; i++) {
        if (!is_population_file(files.items[i])) continue;
        char path[PATH_BUF];
        snprintf(path, sizeof path, "%s/%s", inputs_dir(), files.items[i]);
        read_population(&inputs, path, lo, hi);
    }
    size_t n_read = inputs.len;

    candidate *pop = (candidate *)xrealloc(NULL, n * sizeof(candidate));
    candidate *next_pop = (candidate *)xrealloc(NULL, n * sizeof(candidate));
    qsort(inputs.items, inputs.len, sizeof(candidate), candidate_cmp);
    size_t kept = inputs.len < n ? inputs.len : n;
    if (kept) memcpy(pop, inputs.items, kept * sizeof(candidate));
    for (size_t i = kept; i < n; i++) pop[i] = make(lo + (hi - lo) * uniform(), lo, hi);
    qsort(pop, n, sizeof(candidate), candidate_cmp);

    size_t elite = 1 + n / 32;
    /* A tenth of the interval, or of the starting population's spread when
     * that is narrower (a later stage refines where the earlier converged). */
    double spread = 0.0;
    for (size_t i = 1; i < n; i++) {
        double d = __builtin_fabs(pop[i].x - pop[0].x);
        if (d > spread) spread = d;
    }
    if (spread == 0.0) spread = hi - lo; /* collapsed: explore again */
    double scale0 = (spread < hi - lo ? spread : hi - lo) / 10.0;
    for (long g = 0; g < gens; g++) {
        /* (1 - g/G)^4: from scale0 down to scale0 / G^4. */
        double t = (double)(gens - g) / (double)gens;
        double scale = scale0 * t * t * t * t;
        memcpy(next_pop, pop, elite * sizeof(candidate));
        for (size_t i = elite; i < n; i++) {
            const candidate *a = select_parent(pop, n);
            const candidate *b = select_parent(pop, n);
            double u = -BLEND_ALPHA + (1.0 + 2.0 * BLEND_ALPHA) * uniform();
            double x = a->x + u * (b->x - a->x);
            if (uniform() < MUTATION_RATE) x += scale * gaussish();
            next_pop[i] = make(x, lo, hi);
        }
        candidate *swap = pop;
        pop = next_pop;
        next_pop = swap;
        qsort(pop, n, sizeof(candidate), candidate_cmp);
    }

    FILE *out = open_output("population.txt");
    for (size_t i = 0; i < n; i++) fprintf(out, "%.17g\n", pop[i].x);
    if (ferror(out) || fclose(out) != 0) die("cannot write", "population.txt");

    double fx = poly(pop[0].x);
    out = open_output("best.json");
    fputs("{\"x\": ", out);
    write_number(out, pop[0].x);
    fputs(", \"fx\": ", out);
    write_number(out, fx);
    fputs(", \"abs_fx\": ", out);
    write_number(out, pop[0].fit);
    fprintf(out, ", \"generations\": %ld, \"population\": %zu, \"inputs\": %zu}\n", gens, n, n_read);
    if (ferror(out) || fclose(out) != 0) die("cannot write", "best.json");
    printf("best x=%.17g f(x)=%.17g\n", pop[0].x, fx);
    return 0;
}
