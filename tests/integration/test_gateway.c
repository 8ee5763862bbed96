/*
 * Integration tests of the gateway over real processes: `recpipe gateway`, two
 * `recpipe retrieval` shards and `recpipe ranking` as child processes on loopback, a
 * real bundle (built with the bundle builder), real LMDB state, real gRPC.
 *
 * Tests that need a downstream service skip (and say so) when `recpipe retrieval` or
 * `recpipe ranking` does not start on the test bundle.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "test_gateway_harness.h"

#include "recpipe/v1/admin.pb-c.h"
#include "recpipe/v1/recommender.pb-c.h"

typedef struct env {
    char *dir;
    char bundle[300], state[300], log[300];
    rp_client *client;
    char gw_addr[64];
    pid_t gw;
    char shard_addr[2][64];
    pid_t shard[2];
    bool have_retrieval;
    char rank_addr[64];
    pid_t rank;
    bool have_ranking;
} env;

static env E;

static const char *gw_arg_retrieval(char *buf, size_t cap, bool with_shards)
{
    if (!with_shards) {
        /* Ports nobody listens on: every shard fails at once. */
        snprintf(buf, cap, "127.0.0.1:%d,127.0.0.1:%d", th_free_port(), th_free_port());
    } else {
        snprintf(buf, cap, "%s,%s", E.shard_addr[0], E.shard_addr[1]);
    }
    return buf;
}

/* (Re)starts the gateway with the given downstream addresses. */
static void start_gateway(const char *retrieval, const char *ranking)
{
    snprintf(E.gw_addr, sizeof E.gw_addr, "127.0.0.1:%d", th_free_port());
    const char *argv[] = {"gateway",    "--listen",    E.gw_addr,  "--bundle",     E.bundle,
                          "--state",    E.state,       "--retrieval", retrieval,   "--ranking",
                          ranking,      "--threads",   "4",        "--default-deadline", "2s",
                          "--log-level", "warn",        NULL};
    E.gw = th_spawn(argv, E.log);
    if (!th_wait_serving(E.client, E.gw_addr, E.gw, 20)) {
        th_dump_log(E.log);
        fail_msg("the gateway did not start on %s", E.gw_addr);
    }
}

static void stop_gateway(int sig)
{
    th_stop(E.gw, sig);
    E.gw = 0;
}

static int setup(void **state)
{
    (void)state;
    rp_error err = {0};
    E.dir = th_tmpdir("gw-it");
    snprintf(E.bundle, sizeof E.bundle, "%s/bundle", E.dir);
    snprintf(E.state, sizeof E.state, "%s/state", E.dir);
    snprintf(E.log, sizeof E.log, "%s/services.log", E.dir);
    if (th_build_bundle(E.bundle, 2, &err)) {
        fprintf(stderr, "bundle: %s\n", rp_error_text(&err));
        return -1;
    }
    if (rp_client_create(NULL, &E.client, &err)) return -1;
    for (int i = 0; i < 2; i++) {
        char shard[8];
        snprintf(shard, sizeof shard, "%d", i);
        snprintf(E.shard_addr[i], sizeof E.shard_addr[i], "127.0.0.1:%d", th_free_port());
        const char *argv[] = {"retrieval", "--bundle", E.bundle, "--listen", E.shard_addr[i],
                              "--shard",   shard,      NULL};
        E.shard[i] = th_spawn(argv, E.log);
    }
    E.have_retrieval = th_wait_serving(E.client, E.shard_addr[0], E.shard[0], 20) &&
                       th_wait_serving(E.client, E.shard_addr[1], E.shard[1], 20);
    if (!E.have_retrieval) {
        fprintf(stderr, "NOTE: `recpipe retrieval` did not serve the test bundle; tests "
                        "that need retrieval are skipped\n");
        th_dump_log(E.log);
    }
    snprintf(E.rank_addr, sizeof E.rank_addr, "127.0.0.1:%d", th_free_port());
    const char *rargv[] = {"ranking", "--bundle", E.bundle, "--listen", E.rank_addr, NULL};
    E.rank = th_spawn(rargv, E.log);
    E.have_ranking = th_wait_serving(E.client, E.rank_addr, E.rank, 20);
    if (!E.have_ranking)
        fprintf(stderr, "NOTE: `recpipe ranking` did not serve the test bundle; tests that "
                        "need ranking are skipped\n");
    char rbuf[200];
    start_gateway(gw_arg_retrieval(rbuf, sizeof rbuf, E.have_retrieval),
                  E.have_ranking ? E.rank_addr : "");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    stop_gateway(SIGTERM);
    for (int i = 0; i < 2; i++) th_stop(E.shard[i], SIGTERM);
    th_stop(E.rank, SIGTERM);
    rp_client_destroy(E.client);
    th_rmtree(E.dir);
    free(E.dir);
    return 0;
}

/* ---------------------------------------------------------------- calls */

typedef struct call_out {
    int rc;
    rp_status st;
    uint64_t us;
} call_out;

static Recpipe__V1__RecommendResponse *recommend(rp_arena *a, const Recpipe__V1__RecommendRequest *r,
                                                int64_t timeout_ms, call_out *o)
{
    ProtobufCMessage *resp = NULL;
    rp_call_opts opts = {.timeout_ms = timeout_ms};
    uint64_t t0 = rp_now_ns();
    o->rc = rp_client_unary(E.client, E.gw_addr, "/recpipe.v1.Recommender/Recommend", &r->base,
                            &recpipe__v1__recommend_response__descriptor, a, &resp, &opts, &o->st);
    o->us = (rp_now_ns() - t0) / 1000;
    return (Recpipe__V1__RecommendResponse *)resp;
}

static Recpipe__V1__RecommendResponse *rec_ok(rp_arena *a, const Recpipe__V1__RecommendRequest *r)
{
    call_out o;
    Recpipe__V1__RecommendResponse *resp = recommend(a, r, 5000, &o);
    if (o.rc != RP_OK) fail_msg("Recommend: %s %s", rp_grpc_status_name(o.st.code), o.st.msg);
    return resp;
}

static int feedback(rp_arena *a, Recpipe__V1__FeedbackEvent *ev, size_t n,
                    Recpipe__V1__FeedbackResponse **out, rp_status *st)
{
    Recpipe__V1__FeedbackRequest req = RECPIPE__V1__FEEDBACK_REQUEST__INIT;
    Recpipe__V1__FeedbackEvent **p = rp_arena_alloc(a, (n + 1) * sizeof *p);
    for (size_t i = 0; i < n; i++) p[i] = &ev[i];
    req.events = p;
    req.n_events = n;
    ProtobufCMessage *resp = NULL;
    rp_call_opts opts = {.timeout_ms = 5000};
    int rc = rp_client_unary(E.client, E.gw_addr, "/recpipe.v1.Recommender/Feedback", &req.base,
                             &recpipe__v1__feedback_response__descriptor, a, &resp, &opts, st);
    if (out) *out = (Recpipe__V1__FeedbackResponse *)resp;
    return rc;
}

static Recpipe__V1__FeedbackEvent fev(uint64_t user, uint64_t item, int type)
{
    Recpipe__V1__FeedbackEvent e = RECPIPE__V1__FEEDBACK_EVENT__INIT;
    e.user_id = user;
    e.item_id = item;
    e.type = (Recpipe__V1__EventType)type;
    e.timestamp = rp_wall_s() - 60;
    return e;
}

static void feedback_ok(rp_arena *a, Recpipe__V1__FeedbackEvent *ev, size_t n)
{
    rp_status st;
    Recpipe__V1__FeedbackResponse *r;
    if (feedback(a, ev, n, &r, &st) != RP_OK)
        fail_msg("Feedback: %s %s", rp_grpc_status_name(st.code), st.msg);
    assert_int_equal(r->stored, n);
}

static Recpipe__V1__ForgetUserResponse *forget(rp_arena *a, uint64_t user, int *rc)
{
    Recpipe__V1__ForgetUserRequest req = RECPIPE__V1__FORGET_USER_REQUEST__INIT;
    req.user_id = user;
    ProtobufCMessage *resp = NULL;
    rp_call_opts opts = {.timeout_ms = 5000};
    *rc = rp_client_unary(E.client, E.gw_addr, "/recpipe.v1.Recommender/ForgetUser", &req.base,
                          &recpipe__v1__forget_user_response__descriptor, a, &resp, &opts, NULL);
    return (Recpipe__V1__ForgetUserResponse *)resp;
}

static Recpipe__V1__StatusResponse *status_of(rp_arena *a, const char *target)
{
    Recpipe__V1__StatusRequest req = RECPIPE__V1__STATUS_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    rp_call_opts opts = {.timeout_ms = 2000};
    rp_status st;
    if (rp_client_unary(E.client, target, "/recpipe.v1.Admin/Status", &req.base,
                        &recpipe__v1__status_response__descriptor, a, &resp, &opts, &st) != RP_OK)
        fail_msg("Admin.Status %s: %s", target, st.msg);
    return (Recpipe__V1__StatusResponse *)resp;
}

static bool has_flag(const Recpipe__V1__RecommendResponse *r, int flag)
{
    for (size_t i = 0; i < r->n_degraded; i++)
        if ((int)r->degraded[i] == flag) return true;
    return false;
}

static int genre_of(uint64_t item)
{
    return (int)(item / 1000) - 1;
}

static size_t count_genre(const Recpipe__V1__RecommendResponse *r, int g)
{
    size_t n = 0;
    for (size_t i = 0; i < r->n_items; i++) n += genre_of(r->items[i]->item_id) == g;
    return n;
}

#define SKIP_WITHOUT_RETRIEVAL()                                                           \
    do {                                                                                   \
        if (!E.have_retrieval) {                                                           \
            fprintf(stderr, "SKIPPED: needs `recpipe retrieval`\n");                       \
            skip();                                                                        \
        }                                                                                  \
    } while (0)

/* ---------------------------------------------------------------- tests */

static void test_bad_input_names_the_field(void **state)
{
    (void)state;
    rp_arena *a;
    rp_arena_create(0, &a);
    call_out o;
    Recpipe__V1__RecommendRequest r = RECPIPE__V1__RECOMMEND_REQUEST__INIT;
    /* user_id */
    recommend(a, &r, 2000, &o);
    assert_int_equal(o.st.code, RP_GRPC_INVALID_ARGUMENT);
    assert_non_null(strstr(o.st.msg, "user_id"));
    r.user_id = 1;
    r.count = 501;
    recommend(a, &r, 2000, &o);
    assert_int_equal(o.st.code, RP_GRPC_INVALID_ARGUMENT);
    assert_non_null(strstr(o.st.msg, "count"));
    r.count = 5;
    static uint64_t many[10001];
    for (int i = 0; i < 10001; i++) many[i] = (uint64_t)i + 1;
    r.exclude_ids = many;
    r.n_exclude_ids = 10001;
    recommend(a, &r, 2000, &o);
    assert_int_equal(o.st.code, RP_GRPC_INVALID_ARGUMENT);
    assert_non_null(strstr(o.st.msg, "exclude_ids"));
    r.n_exclude_ids = 0;
    Recpipe__V1__Filter f = RECPIPE__V1__FILTER__INIT;
    char *unknown[] = {"Western"};
    f.include_categories = unknown;
    f.n_include_categories = 1;
    r.filter = &f;
    recommend(a, &r, 2000, &o);
    assert_int_equal(o.st.code, RP_GRPC_INVALID_ARGUMENT);
    assert_non_null(strstr(o.st.msg, "filter.include_categories[0]"));
    assert_non_null(strstr(o.st.msg, "Western"));
    f.n_include_categories = 0;
    f.created_after = 200;
    f.created_before = 100;
    recommend(a, &r, 2000, &o);
    assert_int_equal(o.st.code, RP_GRPC_INVALID_ARGUMENT);
    assert_non_null(strstr(o.st.msg, "filter.created_before"));
    r.filter = NULL;
    Recpipe__V1__Diversity d = RECPIPE__V1__DIVERSITY__INIT;
    d.mmr_lambda = 2;
    r.diversity = &d;
    recommend(a, &r, 2000, &o);
    assert_int_equal(o.st.code, RP_GRPC_INVALID_ARGUMENT);
    assert_non_null(strstr(o.st.msg, "diversity.mmr_lambda"));
    d.mmr_lambda = 0.5f;
    d.max_per_category = 501;
    recommend(a, &r, 2000, &o);
    assert_int_equal(o.st.code, RP_GRPC_INVALID_ARGUMENT);
    assert_non_null(strstr(o.st.msg, "diversity.max_per_category"));
    r.diversity = NULL;
    r.now = -5;
    recommend(a, &r, 2000, &o);
    assert_int_equal(o.st.code, RP_GRPC_INVALID_ARGUMENT);
    assert_non_null(strstr(o.st.msg, "now"));

    /* Feedback: the bad event is named and nothing of the batch is stored. */
    Recpipe__V1__FeedbackEvent ev[8];
    for (int i = 0; i < 8; i++) ev[i] = fev(424242, th_item(0, i), 2);
    ev[5].type = 42;
    rp_status st;
    assert_int_equal(feedback(a, ev, 8, NULL, &st), RP_EINVAL);
    assert_non_null(strstr(st.msg, "events[5].type"));
    ev[5].type = 2;
    ev[6].timestamp = rp_wall_s() + 2 * 86400;
    assert_int_equal(feedback(a, ev, 8, NULL, &st), RP_EINVAL);
    assert_non_null(strstr(st.msg, "events[6].timestamp"));
    ev[6].timestamp = 0;
    ev[7].item_id = 0;
    assert_int_equal(feedback(a, ev, 8, NULL, &st), RP_EINVAL);
    assert_non_null(strstr(st.msg, "events[7].item_id"));
    assert_int_equal(feedback(a, ev, 0, NULL, &st), RP_EINVAL);
    assert_non_null(strstr(st.msg, "events"));
    static Recpipe__V1__FeedbackEvent big[1001];
    for (int i = 0; i < 1001; i++) big[i] = fev(424242, 5, 1);
    assert_int_equal(feedback(a, big, 1001, NULL, &st), RP_EINVAL);
    assert_non_null(strstr(st.msg, "1000"));
    int rc;
    Recpipe__V1__ForgetUserResponse *fr = forget(a, 424242, &rc);
    assert_int_equal(rc, RP_OK);
    assert_false(fr->existed); /* none of the rejected batches was stored */
    forget(a, 0, &rc);
    assert_int_equal(rc, RP_EINVAL);
    rp_arena_destroy(a);
}

static void test_expired_deadline_is_quick(void **state)
{
    (void)state;
    rp_arena *a;
    rp_arena_create(0, &a);
    Recpipe__V1__RecommendRequest r = RECPIPE__V1__RECOMMEND_REQUEST__INIT;
    r.user_id = 7;
    call_out o;
    recommend(a, &r, 1, &o);
    assert_int_equal(o.st.code, RP_GRPC_DEADLINE_EXCEEDED);
    assert_true(o.us < 100000);
    rp_arena_destroy(a);
}

static void test_feedback_durable_across_kill_and_forget(void **state)
{
    (void)state;
    rp_arena *a;
    rp_arena_create(0, &a);
    Recpipe__V1__FeedbackEvent ev[5];
    for (int i = 0; i < 4; i++) ev[i] = fev(555, th_item(2, i), 1);
    ev[4] = fev(555, 987654321, 4); /* not in the bundle: stored and counted */
    rp_status st;
    Recpipe__V1__FeedbackResponse *fr;
    assert_int_equal(feedback(a, ev, 5, &fr, &st), RP_OK);
    assert_int_equal(fr->stored, 5);
    assert_int_equal(fr->unknown_items, 1);
    Recpipe__V1__StatusResponse *s = status_of(a, E.gw_addr);
    assert_true(s->feedback_events >= 5);
    assert_string_equal(s->service, "gateway");
    assert_string_equal(s->bundle_version, "test-v1");
    /* The user state's size: user 555 and its 5 events are held. */
    assert_true(s->state_users >= 1);
    assert_true(s->state_events >= 5);
    uint64_t users0 = s->state_users, events0 = s->state_events;
#if !defined(__SANITIZE_ADDRESS__) /* a sanitizer's allocator replaces glibc's: mallinfo2 says nothing */
    assert_true(s->heap_in_use_bytes > 0);
#endif

    /* kill -9 right after the answer: the acknowledged events are on disk. */
    stop_gateway(SIGKILL);
    char rbuf[200];
    start_gateway(gw_arg_retrieval(rbuf, sizeof rbuf, E.have_retrieval),
                  E.have_ranking ? E.rank_addr : "");

    /* Seen items never come back; the user is no longer cold. */
    Recpipe__V1__RecommendRequest r = RECPIPE__V1__RECOMMEND_REQUEST__INIT;
    r.user_id = 555;
    r.count = 50;
    Recpipe__V1__RecommendResponse *resp = rec_ok(a, &r);
    assert_false(has_flag(resp, RECPIPE__V1__DEGRADATION__DEGRADATION_COLD_START));
    for (size_t i = 0; i < resp->n_items; i++)
        for (int j = 0; j < 4; j++) assert_int_not_equal(resp->items[i]->item_id, th_item(2, j));

    int rc;
    Recpipe__V1__ForgetUserResponse *f = forget(a, 555, &rc);
    assert_int_equal(rc, RP_OK);
    assert_true(f->existed);
    assert_int_equal(f->events_deleted, 5);
    s = status_of(a, E.gw_addr);
    assert_int_equal(s->state_users, users0 - 1);
    assert_int_equal(s->state_events, events0 - 5);
    resp = rec_ok(a, &r);
    assert_true(has_flag(resp, RECPIPE__V1__DEGRADATION__DEGRADATION_COLD_START));
    /* Forgetting is durable too. */
    stop_gateway(SIGKILL);
    start_gateway(gw_arg_retrieval(rbuf, sizeof rbuf, E.have_retrieval),
                  E.have_ranking ? E.rank_addr : "");
    f = forget(a, 555, &rc);
    assert_int_equal(rc, RP_OK);
    assert_false(f->existed);
    rp_arena_destroy(a);
}

static void test_all_shards_down_serves_popular_and_fresh(void **state)
{
    (void)state;
    rp_arena *a;
    rp_arena_create(0, &a);
    stop_gateway(SIGTERM);
    char rbuf[200];
    start_gateway(gw_arg_retrieval(rbuf, sizeof rbuf, false), "");
    Recpipe__V1__RecommendRequest r = RECPIPE__V1__RECOMMEND_REQUEST__INIT;
    r.user_id = 31337;
    r.count = 8;
    Recpipe__V1__RecommendResponse *resp = rec_ok(a, &r);
    assert_int_equal(resp->n_items, 8);
    assert_true(has_flag(resp, RECPIPE__V1__DEGRADATION__DEGRADATION_RETRIEVAL_FAILED));
    assert_true(has_flag(resp, RECPIPE__V1__DEGRADATION__DEGRADATION_COLD_START));
    for (size_t i = 0; i < resp->n_items; i++) {
        Recpipe__V1__RecommendedItem *it = resp->items[i];
        assert_true(it->title[0] != '\0');
        assert_true(it->n_categories >= 1);
        assert_true(it->source == RECPIPE__V1__SOURCE__SOURCE_POPULAR ||
                    it->source == RECPIPE__V1__SOURCE__SOURCE_FRESH);
    }
    /* A degraded answer is not cached. */
    resp = rec_ok(a, &r);
    assert_false(resp->cache_hit);
    assert_string_equal(resp->gateway_bundle_version, "test-v1");
    stop_gateway(SIGTERM);
    start_gateway(gw_arg_retrieval(rbuf, sizeof rbuf, E.have_retrieval),
                  E.have_ranking ? E.rank_addr : "");
    rp_arena_destroy(a);
}

static void test_fields_are_honoured(void **state)
{
    (void)state;
    SKIP_WITHOUT_RETRIEVAL();
    rp_arena *a;
    rp_arena_create(0, &a);
    const uint64_t user = 1001;
    Recpipe__V1__FeedbackEvent ev[6];
    for (int i = 0; i < 6; i++) ev[i] = fev(user, th_item(0, 10 + i), 5);
    feedback_ok(a, ev, 6);

    Recpipe__V1__RecommendRequest r = RECPIPE__V1__RECOMMEND_REQUEST__INIT;
    r.user_id = user;
    r.count = 7;
    r.debug = true;
    Recpipe__V1__RecommendResponse *resp = rec_ok(a, &r);
    assert_int_equal(resp->n_items, 7);
    assert_true(resp->request_id[0] != '\0');
    assert_string_equal(resp->gateway_bundle_version, "test-v1");
    assert_string_equal(resp->retrieval_bundle_version, "test-v1");
    assert_non_null(resp->timings);
    assert_true(resp->timings->total_us > 0);
    assert_true(resp->timings->total_us >= resp->timings->retrieval_us);
    assert_true(resp->candidates_considered >= 7);
    assert_false(has_flag(resp, RECPIPE__V1__DEGRADATION__DEGRADATION_COLD_START));
    assert_false(has_flag(resp, RECPIPE__V1__DEGRADATION__DEGRADATION_SHARD_PARTIAL));
    size_t explained = 0;
    for (size_t i = 0; i < resp->n_items; i++) {
        Recpipe__V1__RecommendedItem *it = resp->items[i];
        assert_true(it->title[0] != '\0');
        assert_true(it->item_id < 10000 && it->item_id >= 1000);
        for (int j = 0; j < 6; j++) assert_int_not_equal(it->item_id, th_item(0, 10 + j));
        if (it->because_item_id) {
            explained++;
            assert_non_null(strstr(it->explanation, "because you"));
            assert_non_null(strstr(it->explanation, "Action Movie"));
        }
    }
    assert_true(explained > 0);
    /* The history is all Action: ANN candidates lead with Action. */
    assert_true(count_genre(resp, 0) >= 3);

    /* count, exclusions. */
    uint64_t ex[3] = {resp->items[0]->item_id, resp->items[1]->item_id, resp->items[2]->item_id};
    r.exclude_ids = ex;
    r.n_exclude_ids = 3;
    r.count = 12;
    r.debug = false;
    Recpipe__V1__RecommendResponse *r2 = rec_ok(a, &r);
    assert_int_equal(r2->n_items, 12);
    assert_int_equal(r2->candidates_considered, 0);
    for (size_t i = 0; i < r2->n_items; i++)
        for (int j = 0; j < 3; j++) assert_int_not_equal(r2->items[i]->item_id, ex[j]);
    r.n_exclude_ids = 0;

    /* Filters: only Comedy; then everything but Action. */
    Recpipe__V1__Filter f = RECPIPE__V1__FILTER__INIT;
    char *comedy[] = {"Comedy"}, *action[] = {"Action"};
    f.include_categories = comedy;
    f.n_include_categories = 1;
    r.filter = &f;
    r.count = 5;
    r2 = rec_ok(a, &r);
    assert_true(r2->n_items > 0);
    for (size_t i = 0; i < r2->n_items; i++) {
        bool ok = false;
        for (size_t c = 0; c < r2->items[i]->n_categories; c++)
            ok |= !strcmp(r2->items[i]->categories[c], "Comedy");
        assert_true(ok);
    }
    f.n_include_categories = 0;
    f.exclude_categories = action;
    f.n_exclude_categories = 1;
    r2 = rec_ok(a, &r);
    for (size_t i = 0; i < r2->n_items; i++)
        for (size_t c = 0; c < r2->items[i]->n_categories; c++)
            assert_string_not_equal(r2->items[i]->categories[c], "Action");
    f.n_exclude_categories = 0;
    f.created_after = 1600000000 + 100 * 3600;
    r2 = rec_ok(a, &r);
    for (size_t i = 0; i < r2->n_items; i++) {
        uint64_t id = r2->items[i]->item_id;
        int64_t created = 1600000000 + (int64_t)(genre_of(id) * TH_PER_GENRE + (int)(id % 1000)) * 3600;
        assert_true(created >= f.created_after);
    }
    r.filter = NULL;

    /* Diversity: a per-category cap of 2. */
    Recpipe__V1__Diversity d = RECPIPE__V1__DIVERSITY__INIT;
    d.max_per_category = 2;
    r.diversity = &d;
    r.count = 10;
    r2 = rec_ok(a, &r);
    assert_true(r2->n_items > 0);
    for (int g = 0; g < TH_GENRES; g++) {
        size_t n = 0;
        for (size_t i = 0; i < r2->n_items; i++)
            for (size_t c = 0; c < r2->items[i]->n_categories; c++)
                n += !strcmp(r2->items[i]->categories[c], th_genre_names[g]);
        assert_true(n <= 2);
    }
    /* MMR with a low lambda spreads over more genres than no MMR. */
    d.max_per_category = 0;
    d.disable_mmr = true;
    r.count = 8;
    r2 = rec_ok(a, &r);
    Recpipe__V1__RecommendResponse *r3;
    d.disable_mmr = false;
    d.mmr_lambda = 0.05f;
    r3 = rec_ok(a, &r);
    int g2 = 0, g3 = 0;
    for (int g = 0; g < TH_GENRES; g++) {
        g2 += count_genre(r2, g) > 0;
        g3 += count_genre(r3, g) > 0;
    }
    assert_true(g3 >= g2);
    rp_arena_destroy(a);
}

static void test_cache_hit_skips_downstream_and_feedback_invalidates(void **state)
{
    (void)state;
    SKIP_WITHOUT_RETRIEVAL();
    rp_arena *a;
    rp_arena_create(0, &a);
    const uint64_t user = 2002;
    Recpipe__V1__FeedbackEvent ev[3];
    for (int i = 0; i < 3; i++) ev[i] = fev(user, th_item(3, i), 1);
    feedback_ok(a, ev, 3);
    Recpipe__V1__RecommendRequest r = RECPIPE__V1__RECOMMEND_REQUEST__INIT;
    r.user_id = user;
    r.count = 6;
    Recpipe__V1__RecommendResponse *first = rec_ok(a, &r);
    assert_false(first->cache_hit);

    uint64_t calls_before[2], rank_before = 0;
    for (int i = 0; i < 2; i++) calls_before[i] = status_of(a, E.shard_addr[i])->calls_total;
    if (E.have_ranking) rank_before = status_of(a, E.rank_addr)->calls_total;
    Recpipe__V1__StatusResponse *gs = status_of(a, E.gw_addr);
    uint64_t hits0 = gs->cache_hits;

    Recpipe__V1__RecommendResponse *second = rec_ok(a, &r);
    assert_true(second->cache_hit);
    assert_int_equal(second->n_items, first->n_items);
    for (size_t i = 0; i < first->n_items; i++)
        assert_int_equal(second->items[i]->item_id, first->items[i]->item_id);
    assert_string_not_equal(second->request_id, first->request_id);
    /* The Status calls themselves are the only new calls downstream: +1 each. */
    for (int i = 0; i < 2; i++)
        assert_int_equal(status_of(a, E.shard_addr[i])->calls_total, calls_before[i] + 1);
    if (E.have_ranking) assert_int_equal(status_of(a, E.rank_addr)->calls_total, rank_before + 1);
    gs = status_of(a, E.gw_addr);
    assert_int_equal(gs->cache_hits, hits0 + 1);
    assert_true(gs->cache_misses >= 1);
    /* The answer is held: the cache's size is in Status too. */
    assert_true(gs->cache_entries >= 1);
    assert_true(gs->cache_bytes >= gs->cache_entries * 8);

    /* Feedback bumps the state version: the next answer is computed afresh. */
    Recpipe__V1__FeedbackEvent more = fev(user, th_item(3, 5), 1);
    feedback_ok(a, &more, 1);
    Recpipe__V1__RecommendResponse *third = rec_ok(a, &r);
    assert_false(third->cache_hit);
    for (size_t i = 0; i < third->n_items; i++)
        assert_int_not_equal(third->items[i]->item_id, th_item(3, 5));
    rp_arena_destroy(a);
}

static void test_realtime_feedback_moves_toward_genre(void **state)
{
    (void)state;
    SKIP_WITHOUT_RETRIEVAL();
    rp_arena *a;
    rp_arena_create(0, &a);
    const uint64_t user = 3003;
    /* A Drama fan. */
    Recpipe__V1__FeedbackEvent ev[10];
    for (int i = 0; i < 6; i++) ev[i] = fev(user, th_item(3, 20 + i), 5);
    feedback_ok(a, ev, 6);
    Recpipe__V1__RecommendRequest r = RECPIPE__V1__RECOMMEND_REQUEST__INIT;
    r.user_id = user;
    r.count = 10;
    Recpipe__V1__RecommendResponse *before = rec_ok(a, &r);
    size_t horror_before = count_genre(before, 4);
    /* Several Horror movies in a row. */
    for (int i = 0; i < 10; i++) ev[i] = fev(user, th_item(4, 20 + i), 4);
    feedback_ok(a, ev, 10);
    Recpipe__V1__RecommendResponse *after = rec_ok(a, &r);
    size_t horror_after = count_genre(after, 4);
    fprintf(stderr, "real-time: Horror items in the top 10: %zu before, %zu after feedback\n",
            horror_before, horror_after);
    assert_false(after->cache_hit);
    assert_true(horror_after > horror_before);
    assert_true(horror_after >= 3);
    rp_arena_destroy(a);
}

static void test_late_shard_is_cut_at_its_deadline_share(void **state)
{
    (void)state;
    SKIP_WITHOUT_RETRIEVAL();
    rp_arena *a;
    rp_arena_create(0, &a);
    const uint64_t user = 6006;
    Recpipe__V1__FeedbackEvent ev[3];
    for (int i = 0; i < 3; i++) ev[i] = fev(user, th_item(2, i), 2);
    feedback_ok(a, ev, 3);
    Recpipe__V1__RecommendRequest r = RECPIPE__V1__RECOMMEND_REQUEST__INIT;
    r.user_id = user;
    r.count = 5;
    /* Shard 1 stops answering (SIGSTOP: the connection stays open, nothing comes back). */
    kill(E.shard[1], SIGSTOP);
    int wst;
    assert_int_equal(waitpid(E.shard[1], &wst, WUNTRACED), E.shard[1]); /* it has stopped */
    assert_true(WIFSTOPPED(wst));
    call_out o;
    Recpipe__V1__RecommendResponse *resp = recommend(a, &r, 1000, &o);
    kill(E.shard[1], SIGCONT);
    if (o.rc != RP_OK) fail_msg("Recommend: %s %s", rp_grpc_status_name(o.st.code), o.st.msg);
    if (!has_flag(resp, RECPIPE__V1__DEGRADATION__DEGRADATION_SHARD_PARTIAL)) {
        fprintf(stderr, "late shard: %zu flags, first %d, answered in %llu us, retrieval %u us, "
                        "cache hit %d\n",
                resp->n_degraded, resp->n_degraded ? (int)resp->degraded[0] : 0,
                (unsigned long long)o.us, resp->timings ? resp->timings->retrieval_us : 0,
                resp->cache_hit);
        fail_msg("no SHARD_PARTIAL flag with shard 1 stopped");
    }
    assert_int_equal(resp->n_items, 5);
    /* The shards get half of the 1000 ms; the answer comes well before the deadline. */
    fprintf(stderr, "late shard: answered in %llu us (deadline 1000 ms)\n", (unsigned long long)o.us);
    assert_true(o.us < 950000);
    assert_true(resp->timings->retrieval_us >= 400000);
    rp_arena_destroy(a);
}

static void test_full_state_map_is_resource_exhausted_and_atomic(void **state)
{
    (void)state;
    rp_arena *a;
    rp_arena_create(0, &a);
    /* A second gateway whose user state may hold 1 MiB. */
    char dir[400], addr[64], log[400];
    snprintf(dir, sizeof dir, "%s/small-state", E.dir);
    snprintf(log, sizeof log, "%s/small.log", E.dir);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", th_free_port());
    const char *argv[] = {"gateway", "--listen", addr, "--bundle", E.bundle, "--state", dir,
                          "--state-map-size", "1", "--log-level", "error", NULL};
    pid_t gw = th_spawn(argv, log);
    if (!th_wait_serving(E.client, addr, gw, 20)) {
        th_dump_log(log);
        fail_msg("small gateway did not start");
    }
    char saved[64];
    snprintf(saved, sizeof saved, "%s", E.gw_addr);
    snprintf(E.gw_addr, sizeof E.gw_addr, "%s", addr);
    static Recpipe__V1__FeedbackEvent ev[1000];
    int rc = RP_OK, batches = 0;
    uint64_t user = 100000;
    rp_status st;
    while (rc == RP_OK && batches < 200) {
        for (int i = 0; i < 1000; i++) ev[i] = fev(user + (uint64_t)i, th_item(i % TH_GENRES, i % 40), 1);
        rc = feedback(a, ev, 1000, NULL, &st);
        if (rc == RP_OK) {
            user += 1000;
            batches++;
        }
    }
    assert_int_equal(st.code, RP_GRPC_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(st.msg, "MDB_MAP_FULL"));
    assert_true(batches > 0);
    /* Nothing of the refused batch is there; the last accepted one is. */
    Recpipe__V1__ForgetUserResponse *f = forget(a, user, &rc);
    assert_int_equal(rc, RP_OK);
    assert_false(f->existed);
    f = forget(a, user + 999, &rc);
    assert_false(f->existed);
    f = forget(a, user - 1, &rc);
    assert_int_equal(rc, RP_OK);
    assert_true(f->existed);
    snprintf(E.gw_addr, sizeof E.gw_addr, "%s", saved);
    th_stop(gw, SIGTERM);
    rp_arena_destroy(a);
}

static void test_forget_user_requires_the_admin_token_when_configured(void **state)
{
    (void)state;
    rp_arena *a;
    rp_arena_create(0, &a);
    char tok[400], addr[64], log[400], sdir[400];
    snprintf(tok, sizeof tok, "%s/admin.token", E.dir);
    snprintf(sdir, sizeof sdir, "%s/token-state", E.dir);
    snprintf(log, sizeof log, "%s/token.log", E.dir);
    FILE *f = fopen(tok, "w");
    assert_non_null(f);
    fputs("s3cret-admin\n", f);
    fclose(f);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", th_free_port());
    const char *argv[] = {"gateway", "--listen", addr, "--bundle", E.bundle, "--state", sdir,
                          "--admin-token-file", tok, "--log-level", "error", NULL};
    pid_t gw = th_spawn(argv, log);
    if (!th_wait_serving(E.client, addr, gw, 20)) {
        th_dump_log(log);
        fail_msg("gateway with a token did not start");
    }
    Recpipe__V1__ForgetUserRequest req = RECPIPE__V1__FORGET_USER_REQUEST__INIT;
    req.user_id = 77;
    ProtobufCMessage *resp;
    rp_status st;
    rp_call_opts o = {.timeout_ms = 3000};
    assert_int_equal(rp_client_unary(E.client, addr, "/recpipe.v1.Recommender/ForgetUser", &req.base,
                                     &recpipe__v1__forget_user_response__descriptor, a, &resp, &o, &st),
                     RP_EUNAUTH);
    assert_non_null(strstr(st.msg, "admin bearer token"));
    rp_md bad = {"authorization", "Bearer wrong"};
    o.md = &bad;
    o.nmd = 1;
    rp_client_unary(E.client, addr, "/recpipe.v1.Recommender/ForgetUser", &req.base,
                    &recpipe__v1__forget_user_response__descriptor, a, &resp, &o, &st);
    assert_int_equal(st.code, RP_GRPC_PERMISSION_DENIED);
    rp_md good = {"authorization", "Bearer s3cret-admin"};
    o.md = &good;
    assert_int_equal(rp_client_unary(E.client, addr, "/recpipe.v1.Recommender/ForgetUser", &req.base,
                                     &recpipe__v1__forget_user_response__descriptor, a, &resp, &o, &st),
                     RP_OK);
    th_stop(gw, SIGTERM);
    rp_arena_destroy(a);
}

static void test_ranking_down_serves_retrieval_order(void **state)
{
    (void)state;
    SKIP_WITHOUT_RETRIEVAL();
    if (!E.have_ranking) {
        fprintf(stderr, "SKIPPED: needs `recpipe ranking`\n");
        skip();
    }
    rp_arena *a;
    rp_arena_create(0, &a);
    const uint64_t user = 4004;
    Recpipe__V1__FeedbackEvent ev[4];
    for (int i = 0; i < 4; i++) ev[i] = fev(user, th_item(1, i), 2);
    feedback_ok(a, ev, 4);
    Recpipe__V1__RecommendRequest r = RECPIPE__V1__RECOMMEND_REQUEST__INIT;
    r.user_id = user;
    r.count = 5;
    Recpipe__V1__RecommendResponse *resp = rec_ok(a, &r);
    assert_false(has_flag(resp, RECPIPE__V1__DEGRADATION__DEGRADATION_RANKING_SKIPPED));
    assert_true(resp->ranking_bundle_version[0] != '\0');
    th_stop(E.rank, SIGKILL);
    E.rank = 0;
    E.have_ranking = false;
    r.count = 6; /* not the cached answer */
    resp = rec_ok(a, &r);
    assert_true(has_flag(resp, RECPIPE__V1__DEGRADATION__DEGRADATION_RANKING_SKIPPED));
    assert_int_equal(resp->n_items, 6);
    rp_arena_destroy(a);
}

static void test_one_shard_down_merges_the_rest(void **state)
{
    (void)state;
    SKIP_WITHOUT_RETRIEVAL();
    rp_arena *a;
    rp_arena_create(0, &a);
    const uint64_t user = 5005;
    Recpipe__V1__FeedbackEvent ev[4];
    for (int i = 0; i < 4; i++) ev[i] = fev(user, th_item(5, i), 2);
    feedback_ok(a, ev, 4);
    Recpipe__V1__RecommendRequest r = RECPIPE__V1__RECOMMEND_REQUEST__INIT;
    r.user_id = user;
    r.count = 10;
    Recpipe__V1__RecommendResponse *resp = rec_ok(a, &r);
    assert_false(has_flag(resp, RECPIPE__V1__DEGRADATION__DEGRADATION_SHARD_PARTIAL));
    th_stop(E.shard[1], SIGKILL);
    E.shard[1] = 0;
    r.count = 9;
    resp = rec_ok(a, &r);
    assert_true(has_flag(resp, RECPIPE__V1__DEGRADATION__DEGRADATION_SHARD_PARTIAL));
    assert_false(has_flag(resp, RECPIPE__V1__DEGRADATION__DEGRADATION_RETRIEVAL_FAILED));
    assert_int_equal(resp->n_items, 9);
    /* Only shard 0's items come back from retrieval. */
    for (size_t i = 0; i < resp->n_items; i++)
        if (resp->items[i]->source == RECPIPE__V1__SOURCE__SOURCE_ANN)
            assert_int_equal(idx_shard_of(resp->items[i]->item_id, 2), 0);
    /* And with every shard gone: popular and fresh. */
    th_stop(E.shard[0], SIGKILL);
    E.shard[0] = 0;
    r.count = 8;
    resp = rec_ok(a, &r);
    assert_true(has_flag(resp, RECPIPE__V1__DEGRADATION__DEGRADATION_RETRIEVAL_FAILED));
    assert_int_equal(resp->n_items, 8);
    rp_arena_destroy(a);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    /* Order matters: the destructive tests (killing services) run last. */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_input_names_the_field),
        cmocka_unit_test(test_expired_deadline_is_quick),
        cmocka_unit_test(test_feedback_durable_across_kill_and_forget),
        cmocka_unit_test(test_all_shards_down_serves_popular_and_fresh),
        cmocka_unit_test(test_fields_are_honoured),
        cmocka_unit_test(test_cache_hit_skips_downstream_and_feedback_invalidates),
        cmocka_unit_test(test_realtime_feedback_moves_toward_genre),
        cmocka_unit_test(test_late_shard_is_cut_at_its_deadline_share),
        cmocka_unit_test(test_full_state_map_is_resource_exhausted_and_atomic),
        cmocka_unit_test(test_forget_user_requires_the_admin_token_when_configured),
        cmocka_unit_test(test_ranking_down_serves_retrieval_order),
        cmocka_unit_test(test_one_shard_down_merges_the_rest),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
