/*
 * The gateway with ranking, over real processes and a bundle made by the real offline
 * path: a synthetic catalogue and interactions as CSV → `recpipe import` → `recpipe
 * build --shards 2` (which trains the ranker when that step exists) → two retrieval
 * shards, two ranking replicas (round robin), the gateway.
 *
 * Ranking tests skip, saying so, while `recpipe ranking --bundle` does not serve the
 * bundle; the retrieval-only part runs regardless.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "test_gateway_harness.h"

#include "recpipe/v1/recommender.pb-c.h"

#define NG 6
#define PER 40
#define NUSERS 300

static struct {
    char *dir;
    char data[300], bundle[300], state[300], log[300];
    rp_client *client;
    char shard[2][64], rank[2][64], gw[64];
    pid_t shard_pid[2], rank_pid[2], gw_pid;
    int nrank;
} T;

static const char *genres[NG] = {"Action", "Animation", "Comedy", "Drama", "Horror", "Romance"};

static uint64_t item_of(int g, int i)
{
    return 100ull * (uint64_t)(g + 1) + (uint64_t)i;
}

/* Each user likes two genres and rates 30 of their items over time. */
static int write_csv(void)
{
    char p[400];
    snprintf(p, sizeof p, "%s/movies.csv", T.dir);
    FILE *f = fopen(p, "w");
    if (!f) return -1;
    fprintf(f, "movieId,title,genres\n");
    for (int g = 0; g < NG; g++)
        for (int i = 0; i < PER; i++)
            fprintf(f, "%llu,%s Film %d (199%d),%s\n", (unsigned long long)item_of(g, i), genres[g],
                    i, i % 10, genres[g]);
    fclose(f);
    snprintf(p, sizeof p, "%s/ratings.csv", T.dir);
    f = fopen(p, "w");
    if (!f) return -1;
    fprintf(f, "userId,movieId,rating,timestamp\n");
    uint64_t seed = 12345;
    for (int u = 1; u <= NUSERS; u++) {
        int g1 = u % NG, g2 = (u / NG) % NG;
        for (int e = 0; e < 30; e++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            int g = (seed >> 33) % 4 == 0 ? g2 : g1;
            /* Popular items of a genre come up more often. */
            int i = (int)(((seed >> 40) % PER) * ((seed >> 20) % PER) / PER);
            fprintf(f, "%d,%llu,%.1f,%d\n", u, (unsigned long long)item_of(g, i),
                    3.0 + (double)((seed >> 50) % 5) / 2, 1500000000 + u * 1000 + e);
        }
    }
    fclose(f);
    return 0;
}

static int run(const char *const *argv)
{
    pid_t p = th_spawn(argv, T.log);
    int st;
    waitpid(p, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int setup(void **state)
{
    (void)state;
    T.dir = th_tmpdir("gw-rank");
    snprintf(T.data, sizeof T.data, "%s/data", T.dir);
    snprintf(T.bundle, sizeof T.bundle, "%s/bundle", T.dir);
    snprintf(T.state, sizeof T.state, "%s/state", T.dir);
    snprintf(T.log, sizeof T.log, "%s/run.log", T.dir);
    if (write_csv()) return -1;
    char ratings[400], movies[400];
    snprintf(ratings, sizeof ratings, "%s/ratings.csv", T.dir);
    snprintf(movies, sizeof movies, "%s/movies.csv", T.dir);
    const char *imp[] = {"import", "--ratings", ratings, "--items", movies, "--out", T.data, NULL};
    const char *bld[] = {"build", "--data", T.data, "--out", T.bundle, "--shards", "2",
                         "--factors", "16", "--iters", "8", "--eval=false", NULL};
    if (run(imp) != 0 || run(bld) != 0) {
        th_dump_log(T.log);
        return -1;
    }
    if (rp_client_create(NULL, &T.client, NULL)) return -1;
    for (int i = 0; i < 2; i++) {
        char sh[4];
        snprintf(sh, sizeof sh, "%d", i);
        snprintf(T.shard[i], sizeof T.shard[i], "127.0.0.1:%d", th_free_port());
        const char *av[] = {"retrieval", "--bundle", T.bundle, "--shard", sh, "--listen",
                            T.shard[i], "--log-level", "warn", NULL};
        T.shard_pid[i] = th_spawn(av, T.log);
        snprintf(T.rank[i], sizeof T.rank[i], "127.0.0.1:%d", th_free_port());
        const char *rv[] = {"ranking", "--bundle", T.bundle, "--listen", T.rank[i], "--log-level",
                            "warn", NULL};
        T.rank_pid[i] = th_spawn(rv, T.log);
    }
    for (int i = 0; i < 2; i++)
        if (!th_wait_serving(T.client, T.shard[i], T.shard_pid[i], 30)) {
            th_dump_log(T.log);
            return -1;
        }
    T.nrank = th_wait_serving(T.client, T.rank[0], T.rank_pid[0], 30) &&
              th_wait_serving(T.client, T.rank[1], T.rank_pid[1], 30) ? 2 : 0;
    if (!T.nrank)
        fprintf(stderr, "NOTE: `recpipe ranking --bundle` does not serve this bundle yet: the "
                        "ranking tests are skipped\n");
    char rk[140] = "", rt[140];
    if (T.nrank) snprintf(rk, sizeof rk, "%s,%s", T.rank[0], T.rank[1]);
    snprintf(rt, sizeof rt, "%s,%s", T.shard[0], T.shard[1]);
    snprintf(T.gw, sizeof T.gw, "127.0.0.1:%d", th_free_port());
    const char *gv[] = {"gateway", "--bundle", T.bundle, "--state", T.state, "--listen", T.gw,
                        "--retrieval", rt, "--ranking", rk, "--default-deadline", "2s",
                        "--cache-ttl", "1ms", "--log-level", "warn", NULL};
    T.gw_pid = th_spawn(gv, T.log);
    if (!th_wait_serving(T.client, T.gw, T.gw_pid, 30)) {
        th_dump_log(T.log);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    th_stop(T.gw_pid, SIGTERM);
    for (int i = 0; i < 2; i++) {
        th_stop(T.shard_pid[i], SIGTERM);
        th_stop(T.rank_pid[i], SIGTERM);
    }
    rp_client_destroy(T.client);
    th_rmtree(T.dir);
    free(T.dir);
    return 0;
}

static Recpipe__V1__RecommendResponse *rec(rp_arena *a, uint64_t user, uint32_t count)
{
    Recpipe__V1__RecommendRequest r = RECPIPE__V1__RECOMMEND_REQUEST__INIT;
    r.user_id = user;
    r.count = count;
    ProtobufCMessage *resp = NULL;
    rp_call_opts o = {.timeout_ms = 5000};
    rp_status st;
    if (rp_client_unary(T.client, T.gw, "/recpipe.v1.Recommender/Recommend", &r.base,
                        &recpipe__v1__recommend_response__descriptor, a, &resp, &o, &st) != RP_OK)
        fail_msg("Recommend: %s %s", rp_grpc_status_name(st.code), st.msg);
    return (Recpipe__V1__RecommendResponse *)resp;
}

static void give_history(rp_arena *a, uint64_t user, int g)
{
    Recpipe__V1__FeedbackEvent ev[6], *pev[6];
    for (int i = 0; i < 6; i++) {
        Recpipe__V1__FeedbackEvent e = RECPIPE__V1__FEEDBACK_EVENT__INIT;
        e.user_id = user;
        e.item_id = item_of(g, i);
        e.type = RECPIPE__V1__EVENT_TYPE__EVENT_TYPE_CLICK;
        e.timestamp = rp_wall_s() - 100 + i;
        ev[i] = e;
        pev[i] = &ev[i];
    }
    Recpipe__V1__FeedbackRequest req = RECPIPE__V1__FEEDBACK_REQUEST__INIT;
    req.events = pev;
    req.n_events = 6;
    ProtobufCMessage *resp;
    rp_call_opts o = {.timeout_ms = 5000};
    assert_int_equal(rp_client_unary(T.client, T.gw, "/recpipe.v1.Recommender/Feedback", &req.base,
                                     &recpipe__v1__feedback_response__descriptor, a, &resp, &o,
                                     NULL),
                     RP_OK);
}

static bool flagged(const Recpipe__V1__RecommendResponse *r, int f)
{
    for (size_t i = 0; i < r->n_degraded; i++)
        if ((int)r->degraded[i] == f) return true;
    return false;
}

static void test_built_bundle_serves_genre_neighbours(void **state)
{
    (void)state;
    rp_arena *a;
    rp_arena_create(0, &a);
    give_history(a, 90001, 1); /* Animation */
    Recpipe__V1__RecommendResponse *r = rec(a, 90001, 10);
    assert_int_equal(r->n_items, 10);
    assert_false(flagged(r, RECPIPE__V1__DEGRADATION__DEGRADATION_SHARD_PARTIAL));
    size_t anim = 0;
    for (size_t i = 0; i < r->n_items; i++) anim += r->items[i]->item_id / 100 == 2;
    fprintf(stderr, "built bundle: %zu of 10 recommendations are Animation\n", anim);
    assert_true(anim >= 5);
    rp_arena_destroy(a);
}

static void test_ranked_then_replicas_die(void **state)
{
    (void)state;
    if (!T.nrank) {
        fprintf(stderr, "SKIPPED: needs `recpipe ranking --bundle`\n");
        skip();
    }
    rp_arena *a;
    rp_arena_create(0, &a);
    give_history(a, 90002, 4);
    Recpipe__V1__RecommendResponse *r = rec(a, 90002, 8);
    assert_false(flagged(r, RECPIPE__V1__DEGRADATION__DEGRADATION_RANKING_SKIPPED));
    assert_true(r->ranking_bundle_version[0] != '\0');
    for (size_t i = 0; i < r->n_items; i++) {
        assert_true(r->items[i]->score >= 0 && r->items[i]->score <= 1);
        assert_true(r->items[i]->explanation[0] != '\0');
    }
    /* One replica gone: a call the round robin sends to it is retried on the other, so
     * every answer is still ranked. */
    th_stop(T.rank_pid[0], SIGKILL);
    T.rank_pid[0] = 0;
    for (int i = 0; i < 6; i++) {
        r = rec(a, 90002, 8);
        assert_int_equal(r->n_items, 8);
        assert_false(flagged(r, RECPIPE__V1__DEGRADATION__DEGRADATION_RANKING_SKIPPED));
    }
    /* Both gone: retrieval order, flagged. */
    th_stop(T.rank_pid[1], SIGKILL);
    T.rank_pid[1] = 0;
    r = rec(a, 90002, 8);
    assert_int_equal(r->n_items, 8);
    assert_true(flagged(r, RECPIPE__V1__DEGRADATION__DEGRADATION_RANKING_SKIPPED));
    rp_arena_destroy(a);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_built_bundle_serves_genre_neighbours),
        cmocka_unit_test(test_ranked_then_replicas_die),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
