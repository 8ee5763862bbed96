/*
 * Faults: what recpipe does when the machine says no.
 *
 * - Allocation failure, the SQLite way: the Retrieve, Rank and UpsertItems handlers run
 *   in-process (tests/fuzz/inproc.h: request bytes unpacked into a call arena as the RPC
 *   layer does, the service's own handler) with the Nth allocation failing, for every N
 *   up to the handler's total. Allocations are counted at link time (-Wl,--wrap of
 *   malloc, calloc, realloc and the arena's allocators), so only calls made by recpipe's
 *   code fail. Each call must answer an error with a message (or an answer identical to
 *   the one without failures), the service must answer the next good call, and every block
 *   allocated during the call must have been freed (no leak).
 * - LMDB map full while storing Feedback (a real gateway with --state-map-size 1):
 *   RESOURCE_EXHAUSTED, nothing of the refused batch stored, and once space is made
 *   (users forgotten) the same gateway stores again.
 * - Ctrl-C during `recpipe build`: no bundle appears at a new path, a previous bundle at
 *   the same path is untouched (byte for byte, and still verifies), no temporary
 *   directory is left behind.
 * (A corrupt bundle offered to Admin.Reload is a row of test_bad_input's table, whose
 * last test checks that the old bundle is still served.)
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "hard_common.h"
#include "inproc.h"

#include "gw/state.h"
#include "rank/service.h"
#include "recpipe/v1/admin.pb-c.h"
#include "recpipe/v1/ranking.pb-c.h"
#include "recpipe/v1/recommender.pb-c.h"
#include "recpipe/v1/retrieval.pb-c.h"
#include "ret/service.h"
#include "rp/log.h"

#include <dirent.h>
#include <execinfo.h>

/* ------------------------------------------------------------------ the allocation hook */

static long fail_at = -1, calls;

/* With FAULTS_TRACE set, the stack of each failed allocation is printed. */
static int should_fail(void)
{
    if (fail_at < 0 || ++calls != fail_at) return 0;
    static int trace = -1;
    if (trace < 0) trace = getenv("FAULTS_TRACE") != NULL;
    if (trace) {
        void *bt[16];
        int n = backtrace(bt, 16);
        fprintf(stderr, "-- allocation %ld fails:\n", fail_at);
        backtrace_symbols_fd(bt, n, 2);
    }
    return 1;
}

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);
void *__real_rp_arena_alloc(rp_arena *a, size_t n);
void *__real_rp_arena_calloc(rp_arena *a, size_t n, size_t sz);
char *__real_rp_arena_strdup(rp_arena *a, const char *s);

void __real_free(void *p);

/* Leak accounting: while `tracking`, every block recpipe's code gets from malloc, calloc
 * or realloc is remembered until it is freed; what is left when the call is over leaked. */
#define LIVE_MAX 65536
static void *live[LIVE_MAX];
static size_t nlive;
static bool tracking, live_overflow;

static void live_add(void *p)
{
    if (!tracking || !p) return;
    if (nlive == LIVE_MAX) {
        live_overflow = true;
        return;
    }
    live[nlive++] = p;
}

static void live_del(void *p)
{
    if (!tracking || !p) return;
    for (size_t i = nlive; i-- > 0;)
        if (live[i] == p) {
            live[i] = live[--nlive];
            return;
        }
}

void *__wrap_malloc(size_t n)
{
    void *p = should_fail() ? NULL : __real_malloc(n);
    live_add(p);
    return p;
}
void *__wrap_calloc(size_t n, size_t m)
{
    void *p = should_fail() ? NULL : __real_calloc(n, m);
    live_add(p);
    return p;
}
void *__wrap_realloc(void *p, size_t n)
{
    if (should_fail()) return NULL;
    void *q = __real_realloc(p, n);
    if (q || n == 0) {
        live_del(p);
        live_add(q);
    }
    return q;
}
void __wrap_free(void *p)
{
    live_del(p);
    __real_free(p);
}
void *__wrap_rp_arena_alloc(rp_arena *a, size_t n)
{
    return should_fail() ? NULL : __real_rp_arena_alloc(a, n);
}
void *__wrap_rp_arena_calloc(rp_arena *a, size_t n, size_t sz)
{
    return should_fail() ? NULL : __real_rp_arena_calloc(a, n, sz);
}
char *__wrap_rp_arena_strdup(rp_arena *a, const char *s)
{
    return should_fail() ? NULL : __real_rp_arena_strdup(a, s);
}

static struct {
    char *dir;
    char bundle[300];
} T;

static uint64_t fnv(const uint8_t *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

/* The packed response of a good call (to compare answers given under failures). */
static uint64_t answer_hash(const rp_method *m, const uint8_t *req, size_t n, int *rc)
{
    /* ip_call packs into a malloc'd buffer and frees it; pack here to hash it. */
    rp__method pm = {.m = *m, .kind = RP__UNARY};
    struct rp_call c;
    memset(&c, 0, sizeof c);
    c.method = &pm;
    c.deadline_ns = UINT64_MAX;
    grpc_metadata_array_init(&c.md);
    rp_arena_create(0, &c.arena);
    rp_arena_pb_allocator(c.arena, &c.alloc);
    ProtobufCMessage *q = protobuf_c_message_unpack(m->request, &c.alloc, n, req);
    ProtobufCMessage *resp = NULL;
    rp_error err = {0};
    uint64_t h = 0;
    *rc = q ? m->handler(&c, q, &resp, &err) : RP_EINVAL;
    if (*rc == RP_OK && resp) {
        size_t len = protobuf_c_message_get_packed_size(resp);
        uint8_t *buf = __real_malloc(len + 1);
        protobuf_c_message_pack(resp, buf);
        /* The response echoes nothing time-dependent for these requests. */
        h = fnv(buf, len);
        free(buf);
    }
    rp_arena_destroy(c.arena);
    grpc_metadata_array_destroy(&c.md);
    return h;
}

/* Runs m on req with allocation N failing for N = 1, 2, ... until a run makes fewer
 * than N allocations. Returns the number of runs. */
static long every_allocation_fails(const rp_method *m, const ProtobufCMessage *msg)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    uint8_t *req = __real_malloc(n + 1);
    protobuf_c_message_pack(msg, req);
    int rc;
    /* Warm up: per-thread workspaces and lazily built tables exist from here on. */
    uint64_t want = answer_hash(m, req, n, &rc);
    if (rc != RP_OK) fail_msg("%s: the good request fails (%d)", m->path, rc);
    answer_hash(m, req, n, &rc);
    long N;
    for (N = 1;; N++) {
        ip_result r;
        calls = 0;
        nlive = 0;
        tracking = true;
        fail_at = N;
        ip_call(m, req, n, &r);
        fail_at = -1;
        tracking = false;
        /* A call that failed keeps nothing (one that succeeded may have stored state). */
        if (r.rc != RP_OK && (nlive || live_overflow))
            fail_msg("%s: allocation %ld failed (%s: %s): %zu blocks allocated during the call "
                     "were not freed",
                     m->path, N, rp_err_name(r.rc), r.err.msg, nlive);
        long made = calls;
        if (r.rc != RP_OK && !r.err.msg[0])
            fail_msg("%s: allocation %ld failed: error %s without a message", m->path, N,
                     rp_err_name(r.rc));
        if (r.rc == RP_OK && made >= N) {
            /* It coped without the allocation: the answer must be the full one. */
            uint64_t h = 0;
            int rc2;
            (void)rc2;
            fail_at = N;
            calls = 0;
            h = answer_hash(m, req, n, &rc2);
            fail_at = -1;
            if (rc2 == RP_OK && h != want)
                fail_msg("%s: allocation %ld failed and the handler answered OK with a different "
                         "answer",
                         m->path, N);
        }
        /* The service goes on serving. */
        if (answer_hash(m, req, n, &rc) != want || rc != RP_OK)
            fail_msg("%s: after allocation %ld failed, a good request no longer gets its answer",
                     m->path, N);
        if (made < N) break; /* nothing failed: every allocation has had its turn */
    }
    free(req);
    return N;
}

static void test_alloc_retrieve(void **state)
{
    (void)state;
    ret_service_opts o = {.bundle_path = T.bundle};
    ret_service *s;
    rp_error err = {0};
    if (ret_service_create(&o, &s, &err)) fail_msg("%s", err.msg);
    size_t nm;
    const rp_method *ms = ret_service_methods(s, &nm);
    const rp_method *m = ip_find(ms, nm, "/Retrieve");
    assert_non_null(m);

    /* A history fold-in with a filter and exclusions, and seed items. */
    Recpipe__V1__RetrieveRequest q = RECPIPE__V1__RETRIEVE_REQUEST__INIT;
    Recpipe__V1__Event ev[6], *evp[6];
    for (int i = 0; i < 6; i++) {
        recpipe__v1__event__init(&ev[i]);
        ev[i].item_id = th_item(i % 2, i);
        ev[i].type = RECPIPE__V1__EVENT_TYPE__EVENT_TYPE_CLICK;
        ev[i].timestamp = 1700000000 + i;
        evp[i] = &ev[i];
    }
    q.history = evp;
    q.n_history = 6;
    q.k = 20;
    q.now = 1700001000;
    uint64_t excl[3] = {th_item(0, 7), th_item(1, 8), 999999};
    q.exclude_ids = excl;
    q.n_exclude_ids = 3;
    Recpipe__V1__Filter f = RECPIPE__V1__FILTER__INIT;
    char *cats[2] = {"Action", "Animation"};
    f.include_categories = cats;
    f.n_include_categories = 2;
    q.filter = &f;
    long runs = every_allocation_fails(m, &q.base);
    fprintf(stderr, "Retrieve (history + filter): %ld runs\n", runs);
    assert_true(runs > 3);

    Recpipe__V1__RetrieveRequest q2 = RECPIPE__V1__RETRIEVE_REQUEST__INIT;
    uint64_t seeds[2] = {th_item(3, 1), th_item(4, 2)};
    q2.seed_items = seeds;
    q2.n_seed_items = 2;
    q2.k = 15;
    runs = every_allocation_fails(m, &q2.base);
    fprintf(stderr, "Retrieve (seeds): %ld runs\n", runs);

    const rp_method *up = ip_find(ms, nm, "/UpsertItems");
    assert_non_null(up);
    Recpipe__V1__UpsertItemsRequest uq = RECPIPE__V1__UPSERT_ITEMS_REQUEST__INIT;
    Recpipe__V1__Item it = RECPIPE__V1__ITEM__INIT, *itp = &it;
    it.item_id = 777777;
    it.title = "A new film";
    char *icats[1] = {"Drama"};
    it.categories = icats;
    it.n_categories = 1;
    uq.items = &itp;
    uq.n_items = 1;
    runs = every_allocation_fails(up, &uq.base);
    fprintf(stderr, "UpsertItems (content embedding): %ld runs\n", runs);
    ret_service_destroy(s);
}

static void test_alloc_rank(void **state)
{
    (void)state;
    rank_service *s;
    rp_error err = {0};
    if (rank_service_create(T.bundle, &s, &err)) fail_msg("%s", err.msg);
    size_t nm;
    const rp_method *m = ip_find(rank_service_methods(s, &nm), nm, "/Rank");
    assert_non_null(m);
    Recpipe__V1__RankRequest q = RECPIPE__V1__RANK_REQUEST__INIT;
    Recpipe__V1__Event ev[5], *evp[5];
    for (int i = 0; i < 5; i++) {
        recpipe__v1__event__init(&ev[i]);
        ev[i].item_id = th_item(2, i);
        ev[i].type = RECPIPE__V1__EVENT_TYPE__EVENT_TYPE_RATING;
        ev[i].value = 4.0f;
        ev[i].timestamp = 1700000000 + i;
        evp[i] = &ev[i];
    }
    Recpipe__V1__RankCandidate c[12], *cp[12];
    for (int i = 0; i < 12; i++) {
        recpipe__v1__rank_candidate__init(&c[i]);
        c[i].item_id = th_item(i % 3, 10 + i);
        c[i].retrieval_score = 0.1f * (float)i;
        c[i].source = RECPIPE__V1__SOURCE__SOURCE_ANN;
        cp[i] = &c[i];
    }
    q.history = evp;
    q.n_history = 5;
    q.candidates = cp;
    q.n_candidates = 12;
    q.explain = 1;
    q.now = 1700005000;
    long runs = every_allocation_fails(m, &q.base);
    fprintf(stderr, "Rank (12 candidates, explain): %ld runs\n", runs);
    assert_true(runs > 3);
    rank_service_destroy(s);
}

/* ------------------------------------------------------------------ LMDB map full */

static int feedback(rp_client *c, const char *target, uint64_t user0, size_t nusers,
                    size_t per_user, rp_status *st)
{
    size_t n = nusers * per_user;
    Recpipe__V1__FeedbackEvent *ev = calloc(n, sizeof *ev);
    Recpipe__V1__FeedbackEvent **evp = calloc(n, sizeof *evp);
    for (size_t i = 0; i < n; i++) {
        recpipe__v1__feedback_event__init(&ev[i]);
        ev[i].user_id = user0 + i / per_user;
        ev[i].item_id = th_item((int)(i % TH_GENRES), (int)(i % TH_PER_GENRE));
        ev[i].type = RECPIPE__V1__EVENT_TYPE__EVENT_TYPE_VIEW;
        ev[i].timestamp = 1700000000 + (int64_t)i;
        evp[i] = &ev[i];
    }
    Recpipe__V1__FeedbackRequest q = RECPIPE__V1__FEEDBACK_REQUEST__INIT;
    q.events = evp;
    q.n_events = n;
    rp_arena *a;
    rp_arena_create(0, &a);
    ProtobufCMessage *resp;
    rp_call_opts o = {.timeout_ms = 10000};
    int rc = rp_client_unary(c, target, "/recpipe.v1.Recommender/Feedback", &q.base,
                             &recpipe__v1__feedback_response__descriptor, a, &resp, &o, st);
    rp_arena_destroy(a);
    free(ev);
    free(evp);
    return rc;
}

static int forget(rp_client *c, const char *target, uint64_t user)
{
    Recpipe__V1__ForgetUserRequest q = RECPIPE__V1__FORGET_USER_REQUEST__INIT;
    q.user_id = user;
    rp_arena *a;
    rp_arena_create(0, &a);
    ProtobufCMessage *resp;
    rp_call_opts o = {.timeout_ms = 10000};
    int rc = rp_client_unary(c, target, "/recpipe.v1.Recommender/ForgetUser", &q.base,
                             &recpipe__v1__forget_user_response__descriptor, a, &resp, &o, NULL);
    rp_arena_destroy(a);
    return rc;
}

static void test_map_full(void **state)
{
    (void)state;
    char sdir[400], log[400], addr[64];
    snprintf(sdir, sizeof sdir, "%s/state-full", T.dir);
    snprintf(log, sizeof log, "%s/gw-full.log", T.dir);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", th_free_port());
    const char *gv[] = {"gateway", "--bundle", T.bundle, "--state", sdir, "--listen", addr,
                        "--state-map-size", "1", "--history", "50", "--log-level", "warn", NULL};
    pid_t pid = th_spawn(gv, log);
    rp_client *c;
    assert_int_equal(rp_client_create(NULL, &c, NULL), RP_OK);
    if (!th_wait_serving(c, addr, pid, 30)) {
        th_dump_log(log);
        fail_msg("gateway did not start");
    }
    /* Batches of 20 new users x 50 events until the 1 MiB map is full. */
    rp_status st;
    uint64_t user = 1;
    int batches = 0, rc = RP_OK;
    while (batches < 1000) {
        rc = feedback(c, addr, user, 20, 50, &st);
        if (rc != RP_OK) break;
        user += 20;
        batches++;
    }
    fprintf(stderr, "map full after %d batches (%llu users): %s %s\n", batches,
            (unsigned long long)user - 1, rp_grpc_status_name(st.code), st.msg);
    assert_true(batches > 0);
    assert_int_equal(st.code, RP_GRPC_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(st.msg, "map"));
    uint64_t refused0 = user;
    /* Still serving while full: another full-size batch is refused the same way. */
    assert_int_equal(feedback(c, addr, refused0 + 1000, 20, 50, &st), RP_EOVERLOAD);

    /* Make space: forget the first users; the same process stores again. */
    for (uint64_t u = 1; u <= 200 && u < refused0; u++)
        if (forget(c, addr, u) != RP_OK) fail_msg("ForgetUser %llu failed", (unsigned long long)u);
    int again = feedback(c, addr, refused0 + 5000, 5, 10, &st);
    if (again != RP_OK) fail_msg("after ForgetUser made space, Feedback still fails: %s", st.msg);
    assert_true(hc_alive(pid));
    int ws = th_stop(pid, SIGTERM);
    assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
    rp_client_destroy(c);

    /* Nothing of the refused batches was stored; the last batch was, whole. */
    gw_state *gs;
    rp_error err = {0};
    gw_state_opts so = {.map_size = 1u << 20, .history_len = 50};
    if (gw_state_open(sdir, &so, &gs, &err)) fail_msg("%s", err.msg);
    gw_event h[64];
    size_t n;
    uint64_t v;
    for (uint64_t u = refused0; u < refused0 + 20; u++) {
        assert_int_equal(gw_state_history(gs, u, h, 64, &n, &v, &err), RP_OK);
        if (n) fail_msg("user %llu of the refused batch has %zu events stored", (unsigned long long)u, n);
        assert_int_equal(gw_state_history(gs, u + 1000, h, 64, &n, &v, &err), RP_OK);
        assert_int_equal(n, 0);
    }
    for (uint64_t u = refused0 + 5000; u < refused0 + 5005; u++) {
        assert_int_equal(gw_state_history(gs, u, h, 64, &n, &v, &err), RP_OK);
        assert_int_equal(n, 10);
    }
    /* A user stored before the map filled, and not forgotten, is whole. */
    assert_int_equal(gw_state_history(gs, refused0 - 1, h, 64, &n, &v, &err), RP_OK);
    assert_int_equal(n, 50);
    gw_state_close(gs);
}

/* ------------------------------------------------------------------ Ctrl-C during build */

static char *tree_listing(const char *dir)
{
    char cmd[700], out[400];
    snprintf(out, sizeof out, "%s/listing.txt", T.dir);
    snprintf(cmd, sizeof cmd, "cd '%s' && find . -type f -exec sha256sum {} + | sort > '%s'", dir,
             out);
    if (system(cmd) != 0) return strdup("");
    return hc_slurp(out);
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.') n++;
    if (d) closedir(d);
    return n;
}

/* Starts `recpipe build` and sends SIGINT after delay_ms; returns the exit status. */
static int interrupted_build(const char *data, const char *out, int delay_ms, const char *log)
{
    const char *bv[] = {"build", "--data", data, "--out", out, "--force", "--factors", "32",
                        "--iters", "200", "--eval=false", NULL};
    pid_t pid = th_spawn(bv, log);
    rp_sleep_ns((uint64_t)delay_ms * 1000000ull);
    kill(pid, SIGINT);
    int st;
    waitpid(pid, &st, 0);
    return st;
}

static void test_sigint_build(void **state)
{
    (void)state;
    char build_dir[400], data[400], out[400], fresh[400], log[400];
    const char *src = getenv("RECPIPE_SOURCE_DIR");
    snprintf(build_dir, sizeof build_dir, "%s/builds", T.dir);
    mkdir(build_dir, 0755);
    snprintf(data, sizeof data, "%s/data", T.dir);
    snprintf(out, sizeof out, "%s/bundle", build_dir);
    snprintf(fresh, sizeof fresh, "%s/fresh", build_dir);
    snprintf(log, sizeof log, "%s/build.log", T.dir);
    char ratings[400], movies[400];
    snprintf(ratings, sizeof ratings, "%s/data/ml-latest-small/ratings.csv", src ? src : ".");
    snprintf(movies, sizeof movies, "%s/data/ml-latest-small/movies.csv", src ? src : ".");
    const char *iv[] = {"import", "--ratings", ratings, "--items", movies, "--out", data, NULL};
    assert_int_equal(hc_run(iv, log, 120), 0);
    const char *bv[] = {"build", "--data", data, "--out", out, "--factors", "8", "--iters", "2",
                        "--eval=false", NULL};
    if (hc_run(bv, log, 120) != 0) {
        th_dump_log(log);
        fail_msg("the first build failed");
    }
    char *before = tree_listing(out);
    assert_true(strlen(before) > 0);

    /* Interrupt at several moments of a long build: replacing the bundle, and to a new
     * path. */
    int delays[] = {150, 500, 1200};
    for (size_t i = 0; i < sizeof delays / sizeof delays[0]; i++) {
        int st = interrupted_build(data, out, delays[i], log);
        assert_false(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        char *now = tree_listing(out);
        if (strcmp(before, now) != 0) {
            th_dump_log(log);
            fail_msg("interrupted after %d ms: the previous bundle changed", delays[i]);
        }
        free(now);
        st = interrupted_build(data, fresh, delays[i], log);
        assert_false(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        struct stat sb;
        if (stat(fresh, &sb) == 0) fail_msg("interrupted after %d ms: %s appeared", delays[i], fresh);
        /* Nothing else left next to the bundle (no temporary directories). */
        if (count_entries(build_dir) != 1) {
            char cmd[500];
            snprintf(cmd, sizeof cmd, "ls -la '%s' >&2", build_dir);
            if (system(cmd)) {}
            fail_msg("interrupted after %d ms: something was left in %s", delays[i], build_dir);
        }
    }
    const char *vv[] = {"index", "verify", out, NULL};
    assert_int_equal(hc_run(vv, log, 60), 0);
    free(before);
}

static int setup(void **state)
{
    (void)state;
    rp_log_set_level(RP_LOG_ERROR);
    T.dir = th_tmpdir("faults");
    snprintf(T.bundle, sizeof T.bundle, "%s/bundle", T.dir);
    rp_error err = {0};
    if (hc_build_bundle(T.bundle, "faults-v1", &err)) {
        fprintf(stderr, "bundle: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (!getenv("FAULTS_KEEP")) th_rmtree(T.dir);
    free(T.dir);
    return 0;
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alloc_retrieve),
        cmocka_unit_test(test_alloc_rank),
        cmocka_unit_test(test_map_full),
        cmocka_unit_test(test_sigint_build),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
