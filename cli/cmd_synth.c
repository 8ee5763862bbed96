/* recpipe synth: a synthetic dataset + item vectors of any size (idx/synth.h). */
#include "cli.h"
#include "idx/synth.h"

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* Ctrl-C or SIGTERM asks the synth to stop and remove its temporary directory. */
static void catch_signals(void)
{
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

static void progress(void *ctx, const char *phase, uint64_t done, uint64_t total)
{
    (void)ctx;
    fprintf(stderr, "\rrecpipe: synth: %-8s %3d%%", phase, (int)(100 * done / (total ? total : 1)));
    fflush(stderr);
}

int cmd_synth(int argc, char **argv)
{
    int64_t items = 0, users = 0, dim = 0, seed = 42, categories = 20, clusters = 0;
    double zipf = 1.0, epu = 20, spread = 0.5, pref = 0.8;
    const char *out = NULL;
    bool force = false;
    const rp_opt opts[] = {
        {"items", RP_OPT_INT, &items, NULL, 1, 100000000, "number of items", true},
        {"users", RP_OPT_INT, &users, NULL, 1, 100000000, "number of users", true},
        {"dim", RP_OPT_INT, &dim, NULL, 1, 4096, "item vector dimension", true},
        {"out", RP_OPT_STR, &out, NULL, 0, 0, "DATA_DIR to create", true},
        {"seed", RP_OPT_INT, &seed, "42", 0, 9.2e18, "random seed (same seed, same output)",
         false},
        {"categories", RP_OPT_INT, &categories, "20", 1, 65536, "number of categories", false},
        {"clusters", RP_OPT_INT, &clusters, "0", 0, 100000000,
         "embedding clusters (0 = sqrt(items)/2 within 4..1024)", false},
        {"zipf", RP_OPT_DOUBLE, &zipf, "1.0", 0.01, 10, "popularity exponent: weight 1/rank^s",
         false},
        {"events-per-user", RP_OPT_DOUBLE, &epu, "20", 5, 5000, "mean events per user (min 5)",
         false},
        {"spread", RP_OPT_DOUBLE, &spread, "0.5", 0.001, 100,
         "cluster noise norm relative to the unit centre", false},
        {"pref-share", RP_OPT_DOUBLE, &pref, "0.8", 0, 1,
         "share of a user's events drawn from their preferred clusters", false},
        {"force", RP_OPT_BOOL, &force, "false", 0, 0, "replace an existing DATA_DIR", false},
    };
    int rc = cli_parse("synth", "synth --items N --users U --dim D --out DATA_DIR [options]",
                       "Generates a synthetic dataset: clustered unit item vectors (Gaussian "
                       "clusters), Zipf popularity,\ncategories that follow clusters, creation "
                       "times, users whose events follow cluster preferences.\nWrites a normal "
                       "DATA_DIR plus DATA_DIR/" IDX_SYNTH_VECTORS_FILE " (row i = dense item i).",
                       opts, sizeof opts / sizeof opts[0], argc, argv, NULL, 0, NULL);
    if (rc != RP_OK) return cli_parse_exit(rc);

    idx_synth_params p = {
        .n_items = (uint32_t)items,
        .n_users = (uint32_t)users,
        .dim = (uint32_t)dim,
        .seed = (uint64_t)seed,
        .n_categories = (uint32_t)categories,
        .n_clusters = (uint32_t)clusters,
        .zipf = zipf,
        .events_per_user = epu,
        .spread = spread,
        .pref_share = pref > 0 ? pref : -1, /* the API reads 0 as "default" */
        .out = out,
        .force = force,
        .progress = cli_progress_enabled() ? progress : NULL,
        .cancel = &interrupted,
    };
    idx_synth_stats st;
    rp_error err = {0};
    catch_signals();
    rc = idx_synth(&p, &st, &err);
    if (p.progress) fprintf(stderr, "\r%40s\r", "");
    if (rc != RP_OK) return cli_fail("synth", &err);
    printf("synthesized %s\n", out);
    printf("  users       %u\n", st.users);
    printf("  items       %u (%u clusters, %u categories)\n", st.items, st.clusters,
           st.categories);
    printf("  events      %" PRIu64 " (top 1%% of items: %.1f%% of events)\n", st.events,
           100 * st.top1pct_share);
    printf("  vectors     %s (%u x %u float32)\n", IDX_SYNTH_VECTORS_FILE, st.items, st.dim);
    printf("  time        %.2f s generate, %.2f s write\n", st.seconds_generate, st.seconds_write);
    return RP_EXIT_OK;
}
