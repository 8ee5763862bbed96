/*
 * The production topology on one machine, over real processes: a dataset from `recpipe
 * synth`, a bundle from `recpipe build --shards 4 --index Flat` (ranker trained), four
 * retrieval shards, two ranking replicas (round robin) and the gateway. Beside it, for
 * reference, an unsharded bundle built from the same data and seed (`--shards 1 --index
 * Flat`) behind its own gateway.
 *
 *  (a) exact index, sharded == unsharded: the same histories sent to a gateway over the
 *      four shards and to one over the single shard, both without ranking (retrieval
 *      order, then the gateway's diversification), answer the same item lists in the
 *      same order. With ranking the comparison would be between two separately trained
 *      rankers, so the ranked path is not compared for equality.
 *  (b) a ranking replica killed (SIGKILL) during a stream of Recommend calls: no call
 *      fails and every answer is still ranked (no RANKING_SKIPPED).
 *  (c) a shard killed: answers carry DEGRADATION_SHARD_PARTIAL.
 *  (d) that shard restarted on the same address: the flag disappears within a bound.
 *  (e) `recpipe serve --ranking-replicas 2` on the 4-shard bundle starts 4 shards and 2
 *      replicas, hands both replica addresses to the gateway, answers ranked, and stops
 *      every child on SIGTERM.
 *  (f) `recpipe gateway` without --bundle: Health NOT_SERVING, Admin.Status answers,
 *      Recommend UNAVAILABLE "no bundle is loaded".
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>

#include "test_gateway_harness.h"

#include "recpipe/v1/admin.pb-c.h"
#include "recpipe/v1/recommender.pb-c.h"

#define NSHARDS 4
#define NRANK 2
#define NUSERS 12
#define POOL 60
#define NOW 1700000000

static struct {
    char *dir;
    char data[300], b4[300], b1[300], log[300];
    char st_rank[300], st_plain[300], st_ref[300];
    rp_client *client;
    char shard[NSHARDS][64], rank[NRANK][64], ref_shard[64];
    char gw_rank[64], gw_plain[64], gw_ref[64];
    pid_t shard_pid[NSHARDS], rank_pid[NRANK], ref_pid, gw_rank_pid, gw_plain_pid, gw_ref_pid;
    uint64_t pool[POOL];
    size_t npool;
} T;

static int run(const char *const *argv)
{
    pid_t p = th_spawn(argv, T.log);
    int st;
    waitpid(p, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static pid_t start_shard(int i)
{
    char sh[4];
    snprintf(sh, sizeof sh, "%d", i);
    const char *av[] = {"retrieval", "--bundle", T.b4, "--shard", sh, "--listen", T.shard[i],
                        "--log-level", "warn", NULL};
    return th_spawn(av, T.log);
}

static pid_t start_gateway(const char *bundle, const char *state, const char *listen,
                           const char *retrieval, const char *ranking)
{
    const char *av[] = {"gateway", "--bundle", bundle, "--state", state, "--listen", listen,
                        "--retrieval", retrieval, "--ranking", ranking, "--default-deadline",
                        "3s", "--cache-ttl", "1ms", "--log-level", "warn", NULL};
    return th_spawn(av, T.log);
}

static int setup(void **state)
{
    (void)state;
    T.dir = th_tmpdir("topo");
    snprintf(T.data, sizeof T.data, "%s/data", T.dir);
    snprintf(T.b4, sizeof T.b4, "%s/bundle4", T.dir);
    snprintf(T.b1, sizeof T.b1, "%s/bundle1", T.dir);
    snprintf(T.log, sizeof T.log, "%s/run.log", T.dir);
    snprintf(T.st_rank, sizeof T.st_rank, "%s/state-rank", T.dir);
    snprintf(T.st_plain, sizeof T.st_plain, "%s/state-plain", T.dir);
    snprintf(T.st_ref, sizeof T.st_ref, "%s/state-ref", T.dir);
    const char *syn[] = {"synth", "--items", "400", "--users", "300", "--dim", "16", "--out",
                         T.data, "--seed", "7", NULL};
    const char *b4[] = {"build", "--data", T.data, "--out", T.b4, "--shards", "4", "--index",
                        "Flat", "--factors", "16", "--iters", "5", "--seed", "3", "--eval=false",
                        "--version", "topo-4", NULL};
    const char *b1[] = {"build", "--data", T.data, "--out", T.b1, "--shards", "1", "--index",
                        "Flat", "--factors", "16", "--iters", "5", "--seed", "3", "--eval=false",
                        "--ranker=false", "--version", "topo-1", NULL};
    th_trace("build", NULL);
    if (run(syn) != 0 || run(b4) != 0 || run(b1) != 0) {
        th_dump_log(T.log);
        return -1;
    }
    th_trace("built", NULL);
    if (rp_client_create(NULL, &T.client, NULL)) return -1;
    char rt[NSHARDS * 64] = "", rk[NRANK * 64] = "";
    for (int i = 0; i < NSHARDS; i++) {
        snprintf(T.shard[i], sizeof T.shard[i], "127.0.0.1:%d", th_free_port());
        T.shard_pid[i] = start_shard(i);
        size_t len = strlen(rt);
        snprintf(rt + len, sizeof rt - len, "%s%s", i ? "," : "", T.shard[i]);
    }
    for (int i = 0; i < NRANK; i++) {
        snprintf(T.rank[i], sizeof T.rank[i], "127.0.0.1:%d", th_free_port());
        const char *av[] = {"ranking", "--bundle", T.b4, "--listen", T.rank[i], "--log-level",
                            "warn", NULL};
        T.rank_pid[i] = th_spawn(av, T.log);
        size_t len = strlen(rk);
        snprintf(rk + len, sizeof rk - len, "%s%s", i ? "," : "", T.rank[i]);
    }
    snprintf(T.ref_shard, sizeof T.ref_shard, "127.0.0.1:%d", th_free_port());
    const char *rv[] = {"retrieval", "--bundle", T.b1, "--shard", "0", "--listen", T.ref_shard,
                        "--log-level", "warn", NULL};
    T.ref_pid = th_spawn(rv, T.log);
    for (int i = 0; i < NSHARDS; i++)
        if (!th_wait_serving(T.client, T.shard[i], T.shard_pid[i], 30)) goto fail;
    for (int i = 0; i < NRANK; i++)
        if (!th_wait_serving(T.client, T.rank[i], T.rank_pid[i], 30)) goto fail;
    if (!th_wait_serving(T.client, T.ref_shard, T.ref_pid, 30)) goto fail;
    snprintf(T.gw_rank, sizeof T.gw_rank, "127.0.0.1:%d", th_free_port());
    snprintf(T.gw_plain, sizeof T.gw_plain, "127.0.0.1:%d", th_free_port());
    snprintf(T.gw_ref, sizeof T.gw_ref, "127.0.0.1:%d", th_free_port());
    T.gw_rank_pid = start_gateway(T.b4, T.st_rank, T.gw_rank, rt, rk);
    T.gw_plain_pid = start_gateway(T.b4, T.st_plain, T.gw_plain, rt, "");
    T.gw_ref_pid = start_gateway(T.b1, T.st_ref, T.gw_ref, T.ref_shard, "");
    if (!th_wait_serving(T.client, T.gw_rank, T.gw_rank_pid, 30) ||
        !th_wait_serving(T.client, T.gw_plain, T.gw_plain_pid, 30) ||
        !th_wait_serving(T.client, T.gw_ref, T.gw_ref_pid, 30))
        goto fail;
    return 0;
fail:
    th_dump_log(T.log);
    return -1;
}

static int teardown(void **state)
{
    (void)state;
    th_stop(T.gw_rank_pid, SIGTERM);
    th_stop(T.gw_plain_pid, SIGTERM);
    th_stop(T.gw_ref_pid, SIGTERM);
    for (int i = 0; i < NSHARDS; i++) th_stop(T.shard_pid[i], SIGTERM);
    for (int i = 0; i < NRANK; i++) th_stop(T.rank_pid[i], SIGTERM);
    th_stop(T.ref_pid, SIGTERM);
    rp_client_destroy(T.client);
    th_rmtree(T.dir);
    free(T.dir);
    return 0;
}

/* Recommend on gw; returns the rp code, the response in *out (NULL unless RP_OK). */
static int rec_try(rp_arena *a, const char *gw, uint64_t user, uint32_t count,
                   Recpipe__V1__RecommendResponse **out, rp_status *st)
{
    Recpipe__V1__RecommendRequest r = RECPIPE__V1__RECOMMEND_REQUEST__INIT;
    r.user_id = user;
    r.count = count;
    r.now = NOW;
    ProtobufCMessage *resp = NULL;
    rp_call_opts o = {.timeout_ms = 6000};
    int rc = rp_client_unary(T.client, gw, "/recpipe.v1.Recommender/Recommend", &r.base,
                             &recpipe__v1__recommend_response__descriptor, a, &resp, &o, st);
    *out = (Recpipe__V1__RecommendResponse *)resp;
    return rc;
}

static Recpipe__V1__RecommendResponse *rec(rp_arena *a, const char *gw, uint64_t user,
                                           uint32_t count)
{
    Recpipe__V1__RecommendResponse *r;
    rp_status st = {0};
    if (rec_try(a, gw, user, count, &r, &st) != RP_OK)
        fail_msg("Recommend %s user %llu: %s %s", gw, (unsigned long long)user,
                 rp_grpc_status_name(st.code), st.msg);
    return r;
}

static bool flagged(const Recpipe__V1__RecommendResponse *r, int f)
{
    for (size_t i = 0; i < r->n_degraded; i++)
        if ((int)r->degraded[i] == f) return true;
    return false;
}

/* The same five clicks of user u (items from the cold-start pool) sent to gw. */
static void give_history(rp_arena *a, const char *gw, uint64_t u)
{
    Recpipe__V1__FeedbackEvent ev[5], *pev[5];
    for (int i = 0; i < 5; i++) {
        Recpipe__V1__FeedbackEvent e = RECPIPE__V1__FEEDBACK_EVENT__INIT;
        e.user_id = u;
        e.item_id = T.pool[(u * 7 + (uint64_t)i * 11) % T.npool];
        e.type = RECPIPE__V1__EVENT_TYPE__EVENT_TYPE_CLICK;
        e.timestamp = NOW - 100 + i;
        ev[i] = e;
        pev[i] = &ev[i];
    }
    Recpipe__V1__FeedbackRequest req = RECPIPE__V1__FEEDBACK_REQUEST__INIT;
    req.events = pev;
    req.n_events = 5;
    ProtobufCMessage *resp;
    rp_call_opts o = {.timeout_ms = 5000};
    rp_status st = {0};
    if (rp_client_unary(T.client, gw, "/recpipe.v1.Recommender/Feedback", &req.base,
                        &recpipe__v1__feedback_response__descriptor, a, &resp, &o, &st) != RP_OK)
        fail_msg("Feedback %s: %s %s", gw, rp_grpc_status_name(st.code), st.msg);
}

static void load_pool(rp_arena *a)
{
    if (T.npool) return;
    /* A user with no history gets the cold-start mix: real item ids of the bundle. */
    Recpipe__V1__RecommendResponse *r = rec(a, T.gw_ref, 999999, POOL);
    assert_true(flagged(r, RECPIPE__V1__DEGRADATION__DEGRADATION_COLD_START));
    assert_true(r->n_items >= 20);
    for (size_t i = 0; i < r->n_items && i < POOL; i++) T.pool[T.npool++] = r->items[i]->item_id;
}

static void test_sharded_equals_unsharded(void **state)
{
    (void)state;
    rp_arena *a;
    rp_arena_create(0, &a);
    load_pool(a);
    size_t compared = 0;
    for (uint64_t u = 1; u <= NUSERS; u++) {
        give_history(a, T.gw_plain, u);
        give_history(a, T.gw_ref, u);
        Recpipe__V1__RecommendResponse *s = rec(a, T.gw_plain, u, 20);
        Recpipe__V1__RecommendResponse *o = rec(a, T.gw_ref, u, 20);
        assert_false(flagged(s, RECPIPE__V1__DEGRADATION__DEGRADATION_SHARD_PARTIAL));
        assert_false(flagged(s, RECPIPE__V1__DEGRADATION__DEGRADATION_COLD_START));
        assert_false(flagged(o, RECPIPE__V1__DEGRADATION__DEGRADATION_COLD_START));
        assert_int_equal(s->n_items, 20);
        assert_int_equal(o->n_items, s->n_items);
        for (size_t i = 0; i < s->n_items; i++) {
            if (s->items[i]->item_id != o->items[i]->item_id)
                fail_msg("user %llu position %zu: 4 shards answer item %llu, 1 shard %llu",
                         (unsigned long long)u, i, (unsigned long long)s->items[i]->item_id,
                         (unsigned long long)o->items[i]->item_id);
            compared++;
        }
        rp_arena_reset(a);
    }
    fprintf(stderr, "sharded == unsharded: %zu positions of %d users identical\n", compared,
            NUSERS);
    rp_arena_destroy(a);
}

/* ---- (b) a stream of calls across a ranking replica's death ---- */

static struct {
    volatile int stop;
    int calls, errors, skipped, unranked, after_kill;
    volatile int killed;
    char first_error[600];
} S;

static void *stream(void *arg)
{
    (void)arg;
    rp_arena *a;
    rp_arena_create(0, &a);
    while (!S.stop) {
        Recpipe__V1__RecommendResponse *r;
        rp_status st = {0};
        int k = S.killed;
        int rc = rec_try(a, T.gw_rank, 1 + (uint64_t)(S.calls % NUSERS), 10, &r, &st);
        S.calls++;
        if (k) S.after_kill++;
        if (rc != RP_OK) {
            if (!S.errors++)
                snprintf(S.first_error, sizeof S.first_error, "%s %s",
                         rp_grpc_status_name(st.code), st.msg);
        } else {
            if (flagged(r, RECPIPE__V1__DEGRADATION__DEGRADATION_RANKING_SKIPPED)) S.skipped++;
            if (!r->ranking_bundle_version[0]) S.unranked++;
        }
        rp_arena_reset(a);
    }
    rp_arena_destroy(a);
    return NULL;
}

static void test_ranking_replica_killed_mid_stream(void **state)
{
    (void)state;
    rp_arena *a;
    rp_arena_create(0, &a);
    load_pool(a);
    for (uint64_t u = 1; u <= NUSERS; u++) give_history(a, T.gw_rank, u);
    Recpipe__V1__RecommendResponse *r = rec(a, T.gw_rank, 1, 10);
    assert_false(flagged(r, RECPIPE__V1__DEGRADATION__DEGRADATION_RANKING_SKIPPED));
    assert_string_equal(r->ranking_bundle_version, "topo-4");
    pthread_t t;
    memset(&S, 0, sizeof S);
    assert_int_equal(pthread_create(&t, NULL, stream, NULL), 0);
    rp_sleep_ns(500000000ull);
    th_stop(T.rank_pid[0], SIGKILL);
    T.rank_pid[0] = 0;
    S.killed = 1;
    rp_sleep_ns(1500000000ull);
    S.stop = 1;
    pthread_join(t, NULL);
    fprintf(stderr, "ranking replica killed mid-stream: %d calls (%d after the kill), %d errors, "
                    "%d RANKING_SKIPPED, %d without a ranking version\n",
            S.calls, S.after_kill, S.errors, S.skipped, S.unranked);
    if (S.errors) fail_msg("%d calls failed; first: %s", S.errors, S.first_error);
    assert_true(S.after_kill >= 5);
    assert_int_equal(S.skipped, 0);
    assert_int_equal(S.unranked, 0);
    rp_arena_destroy(a);
}

static void test_shard_killed_then_restarted(void **state)
{
    (void)state;
    rp_arena *a;
    rp_arena_create(0, &a);
    load_pool(a);
    give_history(a, T.gw_rank, 5);
    Recpipe__V1__RecommendResponse *r = rec(a, T.gw_rank, 5, 10);
    assert_false(flagged(r, RECPIPE__V1__DEGRADATION__DEGRADATION_SHARD_PARTIAL));
    th_stop(T.shard_pid[2], SIGKILL);
    T.shard_pid[2] = 0;
    for (int i = 0; i < 3; i++) {
        r = rec(a, T.gw_rank, 5, 10);
        assert_true(flagged(r, RECPIPE__V1__DEGRADATION__DEGRADATION_SHARD_PARTIAL));
        assert_false(flagged(r, RECPIPE__V1__DEGRADATION__DEGRADATION_RETRIEVAL_FAILED));
        assert_int_equal(r->n_items, 10);
        rp_arena_reset(a);
    }
    uint64_t t0 = rp_now_ns();
    T.shard_pid[2] = start_shard(2);
    assert_true(th_wait_serving(T.client, T.shard[2], T.shard_pid[2], 20));
    double serving_s = (double)(rp_now_ns() - t0) / 1e9, recovered_s = -1;
    while (rp_now_ns() - t0 < 30000000000ull) {
        r = rec(a, T.gw_rank, 5, 10);
        bool partial = flagged(r, RECPIPE__V1__DEGRADATION__DEGRADATION_SHARD_PARTIAL);
        rp_arena_reset(a);
        if (!partial) {
            recovered_s = (double)(rp_now_ns() - t0) / 1e9;
            break;
        }
        rp_sleep_ns(100000000ull);
    }
    fprintf(stderr, "shard restarted: SERVING after %.2f s, SHARD_PARTIAL gone after %.2f s\n",
            serving_s, recovered_s);
    if (recovered_s < 0) fail_msg("SHARD_PARTIAL still set 30 s after the shard restarted");
    rp_arena_destroy(a);
}

static void test_serve_ranking_replicas(void **state)
{
    (void)state;
    char st[400], log[400], gw[64];
    snprintf(st, sizeof st, "%s/state-serve", T.dir);
    snprintf(log, sizeof log, "%s/serve.log", T.dir);
    snprintf(gw, sizeof gw, "127.0.0.1:%d", th_free_port());
    const char *av[] = {"serve", "--bundle", T.b4, "--state", st, "--listen", gw,
                        "--ranking-replicas", "2", "--log-level", "warn", NULL};
    pid_t pid = th_spawn(av, log);
    if (!th_wait_serving(T.client, gw, pid, 60)) {
        th_dump_log(log);
        fail_msg("recpipe serve --ranking-replicas 2: the gateway on %s never served", gw);
    }
    /* The ready line names the shards and every ranking replica. */
    char line[1024] = "", ranks[2][64] = {"", ""};
    FILE *f = NULL;
    for (int i = 0; i < 50 && !strstr(line, "ready:"); i++) {
        f = fopen(log, "r");
        while (f && fgets(line, sizeof line, f) && !strstr(line, "ready:")) {}
        if (f) fclose(f);
        if (!strstr(line, "ready:")) rp_sleep_ns(100000000ull);
    }
    fprintf(stderr, "%s", line);
    assert_non_null(strstr(line, "4 retrieval shard(s)"));
    const char *rk = strstr(line, "), ranking ");
    assert_non_null(rk);
    assert_int_equal(sscanf(rk + 11, "%63[^,],%63[^\n]", ranks[0], ranks[1]), 2);
    assert_null(strchr(ranks[1], ','));
    for (int i = 0; i < 2; i++) assert_int_equal(th_health(T.client, ranks[i]), 1);
    rp_arena *a;
    rp_arena_create(0, &a);
    load_pool(a);
    give_history(a, gw, 3);
    Recpipe__V1__RecommendResponse *r = rec(a, gw, 3, 10);
    assert_int_equal(r->n_items, 10);
    assert_false(flagged(r, RECPIPE__V1__DEGRADATION__DEGRADATION_RANKING_SKIPPED));
    assert_string_equal(r->ranking_bundle_version, "topo-4");
    rp_arena_destroy(a);
    int status = th_stop(pid, SIGTERM);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    /* Its children went with it. */
    for (int i = 0; i < 2; i++) assert_int_equal(th_health(T.client, ranks[i]), 0);
    assert_int_equal(th_health(T.client, gw), 0);
}

static void test_gateway_without_bundle(void **state)
{
    (void)state;
    char st[400], gw[64];
    snprintf(st, sizeof st, "%s/state-nobundle", T.dir);
    snprintf(gw, sizeof gw, "127.0.0.1:%d", th_free_port());
    const char *av[] = {"gateway", "--state", st, "--listen", gw, "--log-level", "warn", NULL};
    pid_t pid = th_spawn(av, T.log);
    int h = 0;
    for (int i = 0; i < 100 && (h = th_health(T.client, gw)) == 0; i++) {
        int s;
        if (waitpid(pid, &s, WNOHANG) == pid) {
            th_dump_log(T.log);
            fail_msg("gateway without --bundle exited");
        }
        rp_sleep_ns(100000000ull);
    }
    assert_int_equal(h, 2); /* NOT_SERVING */
    rp_arena *a;
    rp_arena_create(0, &a);
    Recpipe__V1__StatusRequest sreq = RECPIPE__V1__STATUS_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    rp_call_opts o = {.timeout_ms = 3000};
    rp_status rs = {0};
    if (rp_client_unary(T.client, gw, "/recpipe.v1.Admin/Status", &sreq.base,
                        &recpipe__v1__status_response__descriptor, a, &resp, &o, &rs) != RP_OK)
        fail_msg("Admin.Status without a bundle: %s %s", rp_grpc_status_name(rs.code), rs.msg);
    assert_false(((Recpipe__V1__StatusResponse *)resp)->serving);
    Recpipe__V1__RecommendResponse *r;
    memset(&rs, 0, sizeof rs);
    assert_int_equal(rec_try(a, gw, 1, 10, &r, &rs), RP_EUNAVAIL);
    fprintf(stderr, "gateway without a bundle: Recommend %s \"%s\"\n",
            rp_grpc_status_name(rs.code), rs.msg);
    assert_string_equal(rp_grpc_status_name(rs.code), "UNAVAILABLE");
    assert_non_null(strstr(rs.msg, "no bundle is loaded"));
    rp_arena_destroy(a);
    assert_true(WIFEXITED(th_stop(pid, SIGTERM)));
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sharded_equals_unsharded),
        cmocka_unit_test(test_ranking_replica_killed_mid_stream),
        cmocka_unit_test(test_shard_killed_then_restarted),
        cmocka_unit_test(test_serve_ranking_replicas),
        cmocka_unit_test(test_gateway_without_bundle),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
