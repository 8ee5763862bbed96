/*
 * bench_als — iALS training time on a ratings CSV (MovieLens layout:
 * userId,movieId,rating,timestamp with one header line).
 *
 *   bench_als RATINGS.csv [factors=64] [iters=10] [repeats=3]
 *
 * Prints one line per run and a summary with the core count and OPENBLAS_CORETYPE.
 * Reads the CSV itself so that it measures the trainer alone.
 */
#include "ret/als.h"
#include "rp/clock.h"
#include "rp/threads.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_als RATINGS.csv [factors] [iters] [repeats]\n");
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
    double best = 1e30;
    for (int rep = 0; rep < repeats; rep++) {
        ret_als_model *model = NULL;
        if (ret_als_train(m, &p, &model, &err)) {
            fprintf(stderr, "bench_als: %s\n", rp_error_text(&err));
            return 1;
        }
        printf("run %d: %.3f s\n", rep + 1, model->train_seconds);
        if (model->train_seconds < best) best = model->train_seconds;
        ret_als_model_free(model);
    }
    const char *ct = getenv("OPENBLAS_CORETYPE");
    printf("ials ml-latest-small: users=%zu items=%zu nnz=%llu factors=%u iters=%u "
           "best=%.3f s cores=%d OPENBLAS_CORETYPE=%s\n",
           nu, ni, (unsigned long long)m->nnz, factors, iters, best, rp_ncores(),
           ct ? ct : "(unset)");
    ret_als_matrix_free(m);
    free(rows);
    free(uids);
    free(iids);
    free(off);
    free(ev);
    return 0;
}
