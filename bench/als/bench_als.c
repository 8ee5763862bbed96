/*
 * bench_als — iALS training time on a ratings CSV (MovieLens layout:
 * userId,movieId,rating,timestamp with one header line).
 *
 *   bench_als RATINGS.csv [factors=64] [iters=10] [repeats=3] [OUT.json]
 *
 * Prints one line per run and a summary with the core count and OPENBLAS_CORETYPE;
 * with OUT.json also writes the figures there as one JSON object.
 * Reads the CSV itself so that it measures the trainer alone.
 */
#include "ret/als.h"
#include "rp/clock.h"
#include "rp/threads.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

typedef struct row {
    uint64_t user, item;
    int64_t ts;
    float value;
    uint64_t line;
} row;

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static int cmp_row(const void *a, const void *b)
{
    const row *x = a, *y = b;
    if (x->user != y->user) return (x->user > y->user) - (x->user < y->user);
    if (x->ts != y->ts) return (x->ts > y->ts) - (x->ts < y->ts);
    return (x->line > y->line) - (x->line < y->line);
}

static size_t uniq(uint64_t *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_u64);
    size_t w = 0;
    for (size_t i = 0; i < n; i++)
        if (w == 0 || v[i] != v[w - 1]) v[w++] = v[i];
    return w;
}

static uint32_t find(const uint64_t *v, size_t n, uint64_t x)
{
    const uint64_t *p = bsearch(&x, v, n, sizeof *v, cmp_u64);
    return (uint32_t)(p - v);
}

/* CPU seconds (user + system) of the whole process so far: with other work on the
 * machine, CPU time / cores is a steadier figure than wall time. */
static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* The 1-minute load average, to say how busy the machine was. */
static double load1(void)
{
    double l[1] = {0};
    return getloadavg(l, 1) == 1 ? l[0] : -1;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const double *t, int n)
{
    double s[64];
    memcpy(s, t, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/* Fold-in, as the retrieval service runs it per request (one thread, scratch given):
 * microseconds per call for histories of FOLD_N[i] distinct items, mean of many calls. */
#define FOLD_SIZES 4
static const uint32_t FOLD_N[FOLD_SIZES] = {5, 20, 50, 200};

static void foldin_bench(const ret_als_model *model, double *us)
{
    rp_error err = {0};
    ret_als_gram *g = NULL;
    if (ret_als_gram_create(model->item_factors, model->n_items, model->k, model->reg, &g, &err)) {
        fprintf(stderr, "bench_als: %s\n", rp_error_text(&err));
        exit(1);
    }
    void *scratch = malloc(ret_als_fold_in_scratch(model->k, 200));
    uint32_t items[200];
    float out[RET_ALS_MAX_FACTORS];
    uint64_t s = 12345;
    for (int i = 0; i < FOLD_SIZES; i++) {
        int calls = 2000;
        uint64_t t0 = rp_now_ns();
        for (int c = 0; c < calls; c++) {
            for (uint32_t j = 0; j < FOLD_N[i]; j++) {
                s = s * 6364136223846793005ull + 1442695040888963407ull;
                items[j] = (uint32_t)((s >> 33) % model->n_items);
            }
            if (ret_als_fold_in(model->item_factors, model->n_items, g, items, NULL, FOLD_N[i],
                                model->alpha, scratch, out, &err)) {
                fprintf(stderr, "bench_als: %s\n", rp_error_text(&err));
                exit(1);
            }
        }
        us[i] = (double)(rp_now_ns() - t0) / 1e3 / calls;
    }
    free(scratch);
    ret_als_gram_free(g);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_als RATINGS.csv [factors] [iters] [repeats] [OUT.json]\n");
        return 2;
    }
    uint32_t factors = argc > 2 ? (uint32_t)atoi(argv[2]) : 64;
    uint32_t iters = argc > 3 ? (uint32_t)atoi(argv[3]) : 10;
    int repeats = argc > 4 ? atoi(argv[4]) : 3;
    FILE *f = fopen(argv[1], "r");
    if (!f) {
        perror(argv[1]);
        return 1;
    }
    size_t cap = 1 << 17, n = 0;
    row *rows = malloc(cap * sizeof *rows);
    char line[512];
    uint64_t lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        unsigned long long u, i;
        double r;
        long long ts;
        if (sscanf(line, "%llu,%llu,%lf,%lld", &u, &i, &r, &ts) != 4) continue; /* header */
        if (n == cap) rows = realloc(rows, (cap *= 2) * sizeof *rows);
        rows[n++] = (row){u, i, ts, (float)r, lineno};
    }
    fclose(f);
    qsort(rows, n, sizeof *rows, cmp_row);
    uint64_t *uids = malloc(n * sizeof *uids), *iids = malloc(n * sizeof *iids);
    for (size_t j = 0; j < n; j++) {
        uids[j] = rows[j].user;
        iids[j] = rows[j].item;
    }
    size_t nu = uniq(uids, n), ni = uniq(iids, n);
    uint64_t *off = calloc(nu + 1, sizeof *off);
    idx_event *ev = malloc(n * sizeof *ev);
    for (size_t j = 0; j < n; j++) {
        uint32_t u = find(uids, nu, rows[j].user);
        off[u + 1]++;
        ev[j] = (idx_event){find(iids, ni, rows[j].item), 5, rows[j].value, rows[j].ts};
    }
    for (size_t u = 0; u < nu; u++) off[u + 1] += off[u];
    idx_dataset ds = {.n_users = (uint32_t)nu, .n_items = (uint32_t)ni, .n_events = n,
                      .user_ids = uids, .item_ids = iids, .user_off = off, .events = ev};

    rp_compute_threads(0);
    rp_error err = {0};
    ret_als_matrix *m = NULL;
    if (ret_als_matrix_from_dataset(&ds, NULL, 0, &m, &err)) {
        fprintf(stderr, "bench_als: %s\n", rp_error_text(&err));
        return 1;
    }
    ret_als_params p;
    ret_als_params_default(&p);
    p.factors = factors;
    p.iters = iters;
    if (repeats < 1) repeats = 1;
    if (repeats > 64) repeats = 64;
    double best = 1e30, times[64], cpu_best = 1e30, fold_us[FOLD_SIZES];
    for (int rep = 0; rep < repeats; rep++) {
        double c0 = cpu_seconds();
        ret_als_model *model = NULL;
        if (ret_als_train(m, &p, &model, &err)) {
            fprintf(stderr, "bench_als: %s\n", rp_error_text(&err));
            return 1;
        }
        double cpu = cpu_seconds() - c0;
        if (cpu < cpu_best) cpu_best = cpu;
        printf("run %d: %.3f s wall, %.3f s CPU\n", rep + 1, model->train_seconds, cpu);
        times[rep] = model->train_seconds;
        if (model->train_seconds < best) best = model->train_seconds;
        if (rep == repeats - 1) foldin_bench(model, fold_us);
        ret_als_model_free(model);
    }
    const char *ct = getenv("OPENBLAS_CORETYPE");
    printf("ials ml-latest-small: users=%zu items=%zu nnz=%llu factors=%u iters=%u "
           "best=%.3f s median=%.3f s cpu=%.3f s cores=%d OPENBLAS_CORETYPE=%s load1=%.2f\n",
           nu, ni, (unsigned long long)m->nnz, factors, iters, best, median(times, repeats),
           cpu_best, rp_ncores(), ct ? ct : "(unset)", load1());
    printf("fold-in (one thread, k=%u): %.1f us for 5 items, %.1f for 20, %.1f for 50, %.1f "
           "for 200\n",
           factors, fold_us[0], fold_us[1], fold_us[2], fold_us[3]);
    if (argc > 5) {
        FILE *o = fopen(argv[5], "w");
        if (!o) {
            perror(argv[5]);
            return 1;
        }
        fprintf(o,
                "{\"benchmark\":\"ials_train\",\"dataset\":\"ml-latest-small\",\"users\":%zu,"
                "\"items\":%zu,\"interactions\":%llu,\"factors\":%u,\"iters\":%u,"
                "\"repeats\":%d,\"best_s\":%.4f,\"median_s\":%.4f,\"cores\":%d,"
                "\"cpu_s\":%.4f,\"openblas_coretype\":\"%s\",\"load1\":%.2f,"
                "\"numpy_reference_s\":9.0,\"goal_s\":1.0,\"foldin_us\":{\"5\":%.2f,"
                "\"20\":%.2f,\"50\":%.2f,\"200\":%.2f}}\n",
                nu, ni, (unsigned long long)m->nnz, factors, iters, repeats, best,
                median(times, repeats), rp_ncores(), cpu_best, ct ? ct : "(unset)", load1(),
                fold_us[0], fold_us[1], fold_us[2], fold_us[3]);
        fclose(o);
    }
    ret_als_matrix_free(m);
    free(rows);
    free(uids);
    free(iids);
    free(off);
    free(ev);
    return 0;
}
