/* recpipe index build | info | verify: bundles from vectors (idx/bundle.h). */
#include "cli.h"
#include "idx/bundle.h"
#include "idx/fvecs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void progress(void *ctx, const char *line)
{
    (void)ctx;
    fprintf(stderr, "recpipe index build: %s\n", line);
}

int cmd_index_build(int argc, char **argv)
{
    const char *vectors = NULL, *ids_path = NULL, *out = NULL, *factory = NULL, *metric_s = NULL;
    const char *queries_path = NULL, *version = NULL;
    double target = 0;
    int64_t shards = 1, threads = 0;
    bool replace = false;
    const rp_opt opts[] = {
        {"vectors", RP_OPT_STR, &vectors, NULL, 0, 0, "FILE.fvecs: one embedding per item", true},
        {"ids", RP_OPT_STR, &ids_path, NULL, 0, 0,
         "FILE: item ids, one unsigned integer per line, in the order of --vectors "
         "(default: 0, 1, 2, ...)", false},
        {"out", RP_OPT_STR, &out, NULL, 0, 0, "BUNDLE_DIR to create (appears only when complete)",
         true},
        {"index", RP_OPT_STR, &factory, "", 0, 0,
         "FAISS index factory string (Flat, IVF1024,Flat, IVF1024,PQ16, HNSW32, ...); default: "
         "Flat below 50,000 items per shard, else IVF<sqrt(n) rounded to a power of two>,Flat",
         false},
        {"metric", RP_OPT_STR, &metric_s, "ip", 0, 0, "ip (inner product) or l2", false},
        {"target-recall", RP_OPT_DOUBLE, &target, "0", 0, 1,
         "tune nprobe/efSearch to the smallest value reaching this recall@100 against exact "
         "search (0 = no tuning)", false},
        {"queries", RP_OPT_STR, &queries_path, NULL, 0, 0,
         "FILE.fvecs: held-out tuning queries (default: 1000 sampled item vectors)", false},
        {"shards", RP_OPT_INT, &shards, "1", 1, 4096, "split items by id hash into N shard indexes",
         false},
        {"version", RP_OPT_STR, &version, NULL, 0, 0, "bundle version string (default: v<UTC time>-<hex>)",
         false},
        {"replace", RP_OPT_BOOL, &replace, "false", 0, 0,
         "atomically replace an existing bundle at --out", false},
        {"threads", RP_OPT_INT, &threads, "0", 0, 1024, "build threads (0 = all cores)", false},
    };
    int rc = cli_parse("index build",
                       "index build --vectors FILE.fvecs [--ids FILE] --out BUNDLE_DIR "
                       "[--index FACTORY] [--metric ip|l2] [--target-recall R] [--shards N]",
                       "Builds a bundle (manifest, item store, one FAISS index per shard) from "
                       "vectors.\nThe bundle is written next to BUNDLE_DIR and renamed into "
                       "place when complete.",
                       opts, sizeof opts / sizeof opts[0], argc, argv, NULL, 0, NULL);
    if (rc != RP_OK) return cli_parse_exit(rc);
    rp_error err = {0};
    idx_metric metric;
    if (idx_metric_parse(metric_s, &metric, &err) != RP_OK) {
        fprintf(stderr, "recpipe index build: --%s\nTry 'recpipe index build --help'.\n", err.msg);
        return RP_EXIT_USAGE;
    }
    float *x = NULL, *q = NULL;
    uint64_t *ids = NULL;
    size_t n = 0, nq = 0, nids = 0;
    uint32_t dim = 0, qdim = 0;
    idx_builder *b = NULL;
    int code = RP_EXIT_OK;
    if ((rc = idx_fvecs_read(vectors, &x, &n, &dim, &err))) {
        code = cli_fail("index build: --vectors", &err);
        goto out;
    }
    if (ids_path) {
        if ((rc = idx_ids_read(ids_path, &ids, &nids, &err))) {
            code = cli_fail("index build: --ids", &err);
            goto out;
        }
        if (nids != n) {
            rp_errorf(&err, RP_EPARSE, "%s has %zu ids but %s has %zu vectors", ids_path, nids,
                      vectors, n);
            code = cli_fail("index build", &err);
            goto out;
        }
    } else {
        if (!(ids = malloc(n * sizeof *ids))) {
            rp_errorf(&err, RP_ENOMEM, "out of memory");
            code = cli_fail("index build", &err);
            goto out;
        }
        for (size_t i = 0; i < n; i++) ids[i] = i;
    }
    if (queries_path) {
        if ((rc = idx_fvecs_read(queries_path, &q, &nq, &qdim, &err))) {
            code = cli_fail("index build: --queries", &err);
            goto out;
        }
        if (qdim != dim) {
            rp_errorf(&err, RP_EINVAL, "%s has dimension %u but %s has %u", queries_path, qdim,
                      vectors, dim);
            code = cli_fail("index build", &err);
            goto out;
        }
    }
    if ((rc = idx_builder_create(out, dim, metric, &b, &err))) {
        code = cli_fail("index build", &err);
        goto out;
    }
    if (cli_progress_enabled()) idx_builder_set_progress(b, progress, NULL);
    idx_index_opts io = {.factory = factory, .n_shards = (uint32_t)shards, .target_recall = target,
                         .n_queries = nq, .queries = q, .threads = (int)threads};
    if ((version && (rc = idx_builder_set_version(b, version, &err))) ||
        (rc = idx_builder_add_vectors(b, n, ids, x, &err)) ||
        (rc = idx_builder_set_index(b, &io, &err))) {
        idx_builder_abort(b);
        code = cli_fail("index build", &err);
        goto out;
    }
    free(x);
    x = NULL;
    idx_build_report rep;
    if ((rc = idx_builder_commit(b, replace, &rep, &err))) {
        code = cli_fail("index build", &err);
        goto out;
    }
    printf("%s: %llu items, dimension %u, metric %s, %u shard%s, index %s, %.1f MB of index\n",
           out, (unsigned long long)rep.n_items, dim, idx_metric_name(metric), rep.n_shards,
           rep.n_shards == 1 ? "" : "s", rep.factory, rep.index_bytes / 1e6);
    if (target > 0) {
        if (rep.tune.param[0])
            printf("tuned: %s=%g, recall@100 %.4f (target %.4f%s)\n", rep.tune.param,
                   rep.tune.value, rep.tune.recall, target,
                   rep.tune.reached ? "" : ", NOT reached at the largest value");
        else
            printf("measured: recall@100 %.4f (target %.4f; %s has no search parameter)\n",
                   rep.tune.recall, target, rep.factory);
    }
    printf("build %.2f s, tuning %.2f s\n", rep.build_seconds, rep.tune_seconds);
out:
    free(x);
    free(q);
    free(ids);
    return code;
}

int cmd_index_info(int argc, char **argv)
{
    bool json = false;
    const rp_opt opts[] = {
        {"json", RP_OPT_BOOL, &json, "false", 0, 0, "print manifest.json as is", false},
    };
    char *pos[1];
    size_t npos = 0;
    int rc = cli_parse("index info", "index info BUNDLE_DIR [--json]",
                       "Prints a bundle's manifest: version, dimension, metric, items, shards, "
                       "index,\ntuning, files, training and evaluation figures. Does not verify "
                       "checksums\n(see `recpipe index verify`).",
                       opts, sizeof opts / sizeof opts[0], argc, argv, pos, 1, &npos);
    if (rc != RP_OK) return cli_parse_exit(rc);
    if (npos != 1) {
        fprintf(stderr, "recpipe index info: expected one BUNDLE_DIR\nTry 'recpipe index info --help'.\n");
        return RP_EXIT_USAGE;
    }
    rp_error err = {0};
    idx_bundle *b;
    if ((rc = idx_bundle_read_manifest(pos[0], &b, &err))) return cli_fail("index info", &err);
    const idx_manifest *m = idx_bundle_manifest(b);
    if (json) {
        char p[4200];
        snprintf(p, sizeof p, "%s/manifest.json", pos[0]);
        FILE *f = fopen(p, "r");
        char buf[65536];
        size_t got;
        while (f && (got = fread(buf, 1, sizeof buf, f)) > 0) fwrite(buf, 1, got, stdout);
        if (f) fclose(f);
        idx_bundle_release(b);
        return RP_EXIT_OK;
    }
    char when[32];
    time_t t = (time_t)m->created;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    printf("bundle     %s\nversion    %s (format %d)\ncreated    %s\n", pos[0], m->version,
           m->format, when);
    printf("items      %llu, dimension %u, metric %s\n", (unsigned long long)m->n_items, m->dim,
           idx_metric_name(m->metric));
    printf("shards     %u:", m->n_shards);
    for (uint32_t s = 0; s < m->n_shards && s < 16; s++)
        printf(" %llu", (unsigned long long)m->shard_items[s]);
    printf("%s items\n", m->n_shards > 16 ? " ..." : "");
    printf("index      %s", m->factory);
    if (m->param_name[0]) printf(", %s=%g", m->param_name, m->param_value);
    if (m->recall >= 0) printf(", recall@100 %.4f (target %.4f)", m->recall, m->target_recall);
    printf("\ntraining   %s\nevaluation %s\nfiles      %zu\n", m->training_json,
           m->evaluation_json, m->n_files);
    for (size_t i = 0; i < m->n_files; i++)
        printf("  %-20s %12llu bytes  sha256 %.16s...\n", m->files[i].name,
               (unsigned long long)m->files[i].size, m->files[i].sha256);
    idx_bundle_release(b);
    return RP_EXIT_OK;
}

int cmd_index_verify(int argc, char **argv)
{
    char *pos[1];
    size_t npos = 0;
    int rc = cli_parse("index verify", "index verify BUNDLE_DIR",
                       "Recomputes the SHA-256 of every file listed in the manifest. Exit 0 when "
                       "all match;\nexit 4 naming the first file that is corrupt or missing, or "
                       "when the format\nversion is newer than this recpipe reads.",
                       NULL, 0, argc, argv, pos, 1, &npos);
    if (rc != RP_OK) return cli_parse_exit(rc);
    if (npos != 1) {
        fprintf(stderr, "recpipe index verify: expected one BUNDLE_DIR\nTry 'recpipe index verify --help'.\n");
        return RP_EXIT_USAGE;
    }
    rp_error err = {0};
    if ((rc = idx_bundle_verify(pos[0], &err))) return cli_fail("index verify", &err);
    idx_bundle *b;
    if ((rc = idx_bundle_read_manifest(pos[0], &b, &err))) return cli_fail("index verify", &err);
    uint64_t bytes = 0;
    const idx_manifest *m = idx_bundle_manifest(b);
    for (size_t i = 0; i < m->n_files; i++) bytes += m->files[i].size;
    printf("%s: ok (%zu files, %.1f MB, every checksum matches)\n", pos[0], m->n_files, bytes / 1e6);
    idx_bundle_release(b);
    return RP_EXIT_OK;
}
