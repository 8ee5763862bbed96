/*
 * Tests ranking/src/service.c over real gRPC on loopback: bundles with a ranker are built
 * with the real bundle builder; Ranking.Rank answers scores in request order equal to the
 * model's own, shares one OOV embedding among unknown items, explains with a history item,
 * refuses more than 5,000 candidates and duplicates naming the field, answers an empty
 * list with an empty answer; Admin.Reload swaps bundles (a corrupt one is refused and the
 * old one keeps serving) and a hot swap under load drops no request.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "idx/bundle.h"
#include "idx/fsutil.h"
#include "rank/build.h"
#include "rank/model.h"
#include "rank/service.h"
#include "recpipe/v1/admin.pb-c.h"
#include "recpipe/v1/ranking.pb-c.h"
#include "rp/clock.h"
#include "rp/log.h"
#include "rp/rpc.h"
#include "rp/threads.h"

#define E(expr)                                                                            \
    do {                                                                                   \
        int rc_ = (expr);                                                                  \
        if (rc_ != RP_OK) fail_msg("%s: %s (%s)", #expr, rp_err_name(rc_), err.msg);       \
    } while (0)

#define NI 300
#define DIM 8

static char root[PATH_MAX];
static char b1[PATH_MAX + 8], b2[PATH_MAX + 8], bad[PATH_MAX + 8];
static rank_service *svc;
static rp_server *srv;
static rp_client *cli;
static char target[64];

/* A bundle of NI items (ids 10, 20, ...) with a ranker created from seed. */
static void make_bundle(const char *path, uint64_t seed, const char *version)
{
    rp_error err = {0};
    static uint64_t ids[NI];
    static float vecs[NI * DIM], popr[NI], popt[NI];
    static uint32_t cnt[NI], off[NI + 1];
    static uint16_t cats[NI];
    for (uint32_t i = 0; i < NI; i++) {
        ids[i] = 10ull * (i + 1);
        for (int k = 0; k < DIM; k++) vecs[i * DIM + k] = (float)((i * 7 + k * 3) % 11) - 5.0f;
        popr[i] = (float)(i % 7);
        popt[i] = (float)(i % 9);
        cnt[i] = i;
        off[i] = i;
        cats[i] = (uint16_t)(i % 4);
    }
    off[NI] = NI;
    idx_builder *b;
    E(idx_builder_create(path, DIM, IDX_METRIC_IP, &b, &err));
    E(idx_builder_set_version(b, version, &err));
    E(idx_builder_add_vectors(b, NI, ids, vecs, &err));
    idx_index_opts io = {.factory = "Flat", .n_shards = 1};
    E(idx_builder_set_index(b, &io, &err));
    rank_shape s = rank_shape_default();
    s.dim = 8;
    s.max_hist = 20;
    s.n_items = NI;
    s.n_cats = 4;
    s.sim_dim = DIM;
    rank_items it = {NI, ids, off, cats, popr, popt, cnt, vecs};
    rank_model *m;
    E(rank_model_create(&s, &it, vecs, DIM, seed, &m, &err));
    char file[PATH_MAX];
    E(idx_builder_file(b, RANK_BUNDLE_FILE, file, sizeof file, &err));
    E(rank_model_save(m, file, &err));
    rank_model_free(m);
    E(idx_builder_commit(b, 0, NULL, &err));
}

static int setup(void **state)
{
    (void)state;
    rp_error err = {0};
    rp_log_set_level(RP_LOG_WARN);
    rp_compute_threads(1);
    const char *base = getenv("TMPDIR");
    snprintf(root, sizeof root, "%s/recpipe-rank-svc-XXXXXX", base ? base : "/tmp");
    if (!mkdtemp(root)) return -1;
    snprintf(b1, sizeof b1, "%s/b1", root);
    snprintf(b2, sizeof b2, "%s/b2", root);
    snprintf(bad, sizeof bad, "%s/bad", root);
    make_bundle(b1, 1, "v1");
    make_bundle(b2, 2, "v2");
    make_bundle(bad, 3, "v3");
    /* damage the third bundle's ranker after commit: its checksum no longer matches */
    char f[PATH_MAX + 32];
    snprintf(f, sizeof f, "%s/%s", bad, RANK_BUNDLE_FILE);
    FILE *fp = fopen(f, "r+b");
    fseek(fp, 1000, SEEK_SET);
    int c = fgetc(fp);
    fseek(fp, 1000, SEEK_SET);
    fputc(c ^ 1, fp);
    fclose(fp);

    E(rank_service_create(b1, &svc, &err));
    E(rank_service_watch_sighup(svc, &err));
    size_t n;
    const rp_method *methods = rank_service_methods(svc, &n);
    rp_server_config cfg = {.service = "ranking", .version = "test", .listen = "127.0.0.1:0",
                            .threads = 2, .status_hook = rank_service_status_hook,
                            .status_user = svc};
    E(rp_server_start(&cfg, methods, n, &srv, &err));
    rp_server_set_serving(srv, true);
    snprintf(target, sizeof target, "127.0.0.1:%d", rp_server_port(srv));
    E(rp_client_create(NULL, &cli, &err));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    rp_client_destroy(cli);
    rp_server_destroy(srv);
    rank_service_destroy(svc);
    idx_rmtree(root);
    return 0;
}

/* A request: history of nh events over items 10,20,..; candidates given by ids. */
typedef struct req_buf {
    Recpipe__V1__RankRequest req;
    Recpipe__V1__Event ev[64], *evp[64];
    Recpipe__V1__RankCandidate c[6000], *cp[6000];
} req_buf;

static void fill(req_buf *r, size_t nh, const uint64_t *cand, size_t nc, int explain)
{
    recpipe__v1__rank_request__init(&r->req);
    for (size_t i = 0; i < nh; i++) {
        recpipe__v1__event__init(&r->ev[i]);
        r->ev[i].item_id = 10ull * (1 + (i * 13) % NI);
        r->ev[i].type = RECPIPE__V1__EVENT_TYPE__EVENT_TYPE_RATING;
        r->ev[i].value = 4.0f;
        r->ev[i].timestamp = 1600000000 + 3600 * (int64_t)i;
        r->evp[i] = &r->ev[i];
    }
    for (size_t i = 0; i < nc; i++) {
        recpipe__v1__rank_candidate__init(&r->c[i]);
        r->c[i].item_id = cand[i];
        r->c[i].retrieval_score = 0.5f;
        r->c[i].source = RECPIPE__V1__SOURCE__SOURCE_ANN;
        r->cp[i] = &r->c[i];
    }
    r->req.n_history = nh;
    r->req.history = r->evp;
    r->req.n_candidates = nc;
    r->req.candidates = r->cp;
    r->req.explain = explain;
    r->req.now = 1600000000 + 3600 * 100;
}

static int call_rank(const req_buf *r, rp_arena *a, Recpipe__V1__RankResponse **out, rp_status *st)
{
    rp_call_opts o = {.timeout_ms = 10000};
    return rp_client_unary(cli, target, "/recpipe.v1.Ranking/Rank", &r->req.base,
                           &recpipe__v1__rank_response__descriptor, a, (ProtobufCMessage **)out,
                           &o, st);
}

static void test_rank_scores_explains_and_oov(void **state)
{
    (void)state;
    rp_error err = {0};
    static req_buf r;
    /* 12 and 999999 are unknown: both use the OOV embedding; same source and score, so
     * they must score the same */
    uint64_t cand[5] = {20, 12, 3000, 999999, 150};
    fill(&r, 30, cand, 5, 1);
    rp_arena *a;
    E(rp_arena_create(0, &a));
    Recpipe__V1__RankResponse *resp;
    rp_status st;
    E(call_rank(&r, a, &resp, &st));
    assert_int_equal(resp->n_scores, 5);
    assert_string_equal(resp->bundle_version, "v1");
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(resp->scores[i]->item_id, cand[i]);
        assert_true(resp->scores[i]->score > 0 && resp->scores[i]->score < 1);
        /* the explanation is an item of the (last 20 events of the) history */
        uint64_t because = resp->scores[i]->because_item_id;
        int found = 0;
        for (size_t h = 10; h < 30; h++) found |= r.ev[h].item_id == because;
        assert_true(found);
        assert_true(resp->scores[i]->attention_weight > 0 && resp->scores[i]->attention_weight <= 1);
    }
    assert_float_equal(resp->scores[1]->score, resp->scores[3]->score, 1e-6);
    assert_true(resp->scores[0]->score != resp->scores[1]->score);

    /* the same scores as the model computes in-process */
    char file[PATH_MAX + 32];
    snprintf(file, sizeof file, "%s/%s", b1, RANK_BUNDLE_FILE);
    rank_model *m;
    E(rank_model_load(file, &m, &err));
    rank_ws *ws;
    E(rank_ws_create(m, &ws));
    rank_event hist[30];
    for (int i = 0; i < 30; i++)
        hist[i] = (rank_event){rank_model_item(m, r.ev[i].item_id), 5, 4.0f, r.ev[i].timestamp};
    rank_cand rc[5];
    for (int i = 0; i < 5; i++) rc[i] = (rank_cand){rank_model_item(m, cand[i]), 1, 0.5f};
    float sc[5];
    rank_score(m, ws, hist, 30, r.req.now, rc, 5, sc, NULL, NULL);
    for (int i = 0; i < 5; i++) assert_float_equal(sc[i], resp->scores[i]->score, 1e-6);
    rank_ws_free(ws);
    rank_model_free(m);

    /* without explain: no explanation */
    rp_arena_reset(a);
    r.req.explain = 0;
    E(call_rank(&r, a, &resp, &st));
    assert_int_equal(resp->scores[0]->because_item_id, 0);
    rp_arena_destroy(a);
}

static void test_limits_and_empty(void **state)
{
    (void)state;
    rp_error err = {0};
    static req_buf r;
    static uint64_t cand[5001];
    for (int i = 0; i < 5001; i++) cand[i] = 10ull * (i + 1);
    rp_arena *a;
    E(rp_arena_create(0, &a));
    Recpipe__V1__RankResponse *resp;
    rp_status st;
    /* 5,000 candidates (most unknown) are fine */
    fill(&r, 10, cand, 5000, 0);
    E(call_rank(&r, a, &resp, &st));
    assert_int_equal(resp->n_scores, 5000);
    /* 5,001 are not */
    rp_arena_reset(a);
    fill(&r, 10, cand, 5001, 0);
    assert_int_equal(call_rank(&r, a, &resp, &st), RP_EINVAL);
    assert_int_equal(st.code, RP_GRPC_INVALID_ARGUMENT);
    assert_non_null(strstr(st.msg, "candidates"));
    assert_non_null(strstr(st.msg, "5000"));
    /* a duplicate is named */
    rp_arena_reset(a);
    uint64_t dup[3] = {20, 30, 20};
    fill(&r, 10, dup, 3, 0);
    assert_int_equal(call_rank(&r, a, &resp, &st), RP_EINVAL);
    assert_non_null(strstr(st.msg, "candidates[2]"));
    /* a non-finite retrieval score is named */
    rp_arena_reset(a);
    fill(&r, 10, cand, 3, 0);
    r.c[1].retrieval_score = NAN;
    assert_int_equal(call_rank(&r, a, &resp, &st), RP_EINVAL);
    assert_non_null(strstr(st.msg, "candidates[1].retrieval_score"));
    /* empty list: empty answer */
    rp_arena_reset(a);
    fill(&r, 10, cand, 0, 0);
    E(call_rank(&r, a, &resp, &st));
    assert_int_equal(resp->n_scores, 0);
    assert_string_equal(resp->bundle_version, "v1");
    /* empty history: still scores */
    rp_arena_reset(a);
    fill(&r, 0, cand, 3, 1);
    E(call_rank(&r, a, &resp, &st));
    assert_int_equal(resp->n_scores, 3);
    assert_int_equal(resp->scores[0]->because_item_id, 0);
    rp_arena_destroy(a);
}

static int reload(const char *path, rp_arena *a, Recpipe__V1__ReloadResponse **out, rp_status *st)
{
    Recpipe__V1__ReloadRequest rq = RECPIPE__V1__RELOAD_REQUEST__INIT;
    rq.bundle_path = (char *)path;
    rp_call_opts o = {.timeout_ms = 20000};
    return rp_client_unary(cli, target, "/recpipe.v1.Admin/Reload", &rq.base,
                           &recpipe__v1__reload_response__descriptor, a, (ProtobufCMessage **)out,
                           &o, st);
}

typedef struct load_ctx {
    atomic_bool stop;
    atomic_int ok, failed;
} load_ctx;

static void *hammer(void *arg)
{
    load_ctx *lc = arg;
    static _Thread_local req_buf r;
    uint64_t cand[50];
    for (int i = 0; i < 50; i++) cand[i] = 10ull * (1 + (i * 17) % NI);
    fill(&r, 30, cand, 50, 1);
    rp_arena *a;
    if (rp_arena_create(0, &a)) return NULL;
    while (!atomic_load(&lc->stop)) {
        Recpipe__V1__RankResponse *resp;
        rp_status st;
        int rc = call_rank(&r, a, &resp, &st);
        if (rc == RP_OK && resp->n_scores == 50) atomic_fetch_add(&lc->ok, 1);
        else {
            atomic_fetch_add(&lc->failed, 1);
            fprintf(stderr, "call failed: %s %s\n", rp_grpc_status_name(st.code), st.msg);
        }
        rp_arena_reset(a);
    }
    rp_arena_destroy(a);
    return NULL;
}

static void test_reload_and_hot_swap(void **state)
{
    (void)state;
    rp_error err = {0};
    rp_arena *a;
    E(rp_arena_create(0, &a));
    Recpipe__V1__ReloadResponse *rr;
    rp_status st;
    /* a damaged bundle is refused, the old one keeps serving */
    assert_int_not_equal(reload(bad, a, &rr, &st), RP_OK);
    assert_int_equal(st.code, RP_GRPC_DATA_LOSS);
    assert_non_null(strstr(st.msg, RANK_BUNDLE_FILE));
    rp_arena_reset(a);
    assert_int_not_equal(reload("/nonexistent/bundle", a, &rr, &st), RP_OK);
    rp_arena_reset(a);
    static req_buf r;
    uint64_t cand[2] = {20, 30};
    fill(&r, 5, cand, 2, 0);
    Recpipe__V1__RankResponse *resp;
    E(call_rank(&r, a, &resp, &st));
    assert_string_equal(resp->bundle_version, "v1");
    float s1 = resp->scores[0]->score;
    rp_arena_reset(a);
    /* swap to v2: other weights, other scores */
    E(reload(b2, a, &rr, &st));
    assert_string_equal(rr->previous_version, "v1");
    assert_string_equal(rr->bundle_version, "v2");
    rp_arena_reset(a);
    E(call_rank(&r, a, &resp, &st));
    assert_string_equal(resp->bundle_version, "v2");
    assert_true(resp->scores[0]->score != s1);
    rp_arena_reset(a);

    /* hot swaps under load: two client threads, eight swaps, no request dropped */
    load_ctx lc;
    atomic_init(&lc.stop, false);
    atomic_init(&lc.ok, 0);
    atomic_init(&lc.failed, 0);
    pthread_t th[2];
    for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, hammer, &lc);
    for (int k = 0; k < 8; k++) {
        rp_sleep_ns(50 * 1000 * 1000);
        E(reload(k % 2 ? b2 : b1, a, &rr, &st));
        rp_arena_reset(a);
    }
    rp_sleep_ns(50 * 1000 * 1000);
    atomic_store(&lc.stop, true);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    printf("hot swap: %d calls answered, %d failed, 8 reloads\n", atomic_load(&lc.ok),
           atomic_load(&lc.failed));
    assert_int_equal(atomic_load(&lc.failed), 0);
    assert_true(atomic_load(&lc.ok) > 8);

    /* SIGHUP re-reads the path the service started with (b1, version v1) */
    E(reload(b2, a, &rr, &st));
    rp_arena_reset(a);
    kill(getpid(), SIGHUP);
    const char *ver = "";
    for (int i = 0; i < 200; i++) {
        rp_sleep_ns(20 * 1000 * 1000);
        E(call_rank(&r, a, &resp, &st));
        ver = resp->bundle_version;
        if (!strcmp(ver, "v1")) break;
        rp_arena_reset(a);
    }
    assert_string_equal(ver, "v1");
    rp_arena_destroy(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rank_scores_explains_and_oov),
        cmocka_unit_test(test_limits_and_empty),
        cmocka_unit_test(test_reload_and_hot_swap),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
