/*
 * The gateway's hot swap, over real processes: two bundle versions made by `recpipe
 * import` + `recpipe build --ranker=false`, one retrieval shard, the gateway started on a
 * symlink. A thread keeps calling Recommend while the gateway is reloaded 10 times
 * between the two versions (Admin.Reload with a path, with an empty path after the
 * symlink flips, and SIGHUP): no call fails and every answer names one of the two
 * versions. Callers of one user during reloads get the current bundle's answer or one
 * flagged STALE. A corrupt bundle is refused with the file named and the old one keeps
 * serving. Under a backlog, recomputations wait (--cache-refresh-wait) and callers get
 * the older answer flagged STALE; a lone caller recomputes.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>

#include "test_gateway_harness.h"

#include <json-c/json.h>

#include "recpipe/v1/admin.pb-c.h"
#include "recpipe/v1/recommender.pb-c.h"

#define NG 6
#define PER 40
#define NUSERS 200
#define RELOADS 10

static struct {
    char *dir;
    char data[300], bundle[2][300], bad[300], link[300], state[300], log[300];
    rp_client *client;
    char shard[64], gw[64];
    pid_t shard_pid, gw_pid, backlog_pid;
} T;

static const char *genres[NG] = {"Action", "Animation", "Comedy", "Drama", "Horror", "Romance"};
static const char *versions[2] = {"reload-a", "reload-b"};

static uint64_t item_of(int g, int i)
{
    return 100ull * (uint64_t)(g + 1) + (uint64_t)i;
}

/* Each user likes two genres and rates 20 of their items over time. */
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
    uint64_t seed = 777;
    for (int u = 1; u <= NUSERS; u++) {
        int g1 = u % NG, g2 = (u / NG) % NG;
        for (int e = 0; e < 20; e++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            int g = (seed >> 33) % 4 == 0 ? g2 : g1;
            int i = (int)((seed >> 40) % PER);
            fprintf(f, "%d,%llu,4.0,%d\n", u, (unsigned long long)item_of(g, i),
                    1500000000 + u * 1000 + e);
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

/* Points T.link at bundle (atomically: a new link renamed over the old). */
static int flip_link(const char *bundle)
{
    char tmp[320];
    snprintf(tmp, sizeof tmp, "%s.new", T.link);
    unlink(tmp);
    if (symlink(bundle, tmp) != 0 || rename(tmp, T.link) != 0) return -1;
    return 0;
}

/* Copies bundle A to T.bad and overwrites bytes in the middle of its largest file. */
static int make_corrupt(char *file, size_t cap)
{
    char cmd[1000];
    snprintf(cmd, sizeof cmd, "cp -r '%s' '%s'", T.bundle[0], T.bad);
    if (system(cmd) != 0) return -1;
    snprintf(cmd, sizeof cmd, "ls -S '%s' | head -n 1", T.bad);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    char name[200] = "";
    if (!fgets(name, sizeof name, p)) name[0] = '\0';
    pclose(p);
    name[strcspn(name, "\n")] = '\0';
    if (!name[0]) return -1;
    snprintf(file, cap, "%s", name);
    char path[600];
    snprintf(path, sizeof path, "%s/%s", T.bad, name);
    int fd = open(path, O_RDWR);
    if (fd < 0) return -1;
    off_t size = lseek(fd, 0, SEEK_END);
    unsigned char junk[64];
    memset(junk, 0xA5, sizeof junk);
    int rc = size > 256 && pwrite(fd, junk, sizeof junk, size / 2) == (ssize_t)sizeof junk ? 0 : -1;
    close(fd);
    return rc;
}

static int setup(void **state)
{
    (void)state;
    T.dir = th_tmpdir("gw-reload");
    snprintf(T.data, sizeof T.data, "%s/data", T.dir);
    snprintf(T.bundle[0], sizeof T.bundle[0], "%s/bundle-a", T.dir);
    snprintf(T.bundle[1], sizeof T.bundle[1], "%s/bundle-b", T.dir);
    snprintf(T.bad, sizeof T.bad, "%s/bundle-bad", T.dir);
    snprintf(T.link, sizeof T.link, "%s/current", T.dir);
    snprintf(T.state, sizeof T.state, "%s/state", T.dir);
    snprintf(T.log, sizeof T.log, "%s/run.log", T.dir);
    if (write_csv()) return -1;
    char ratings[400], movies[400];
    snprintf(ratings, sizeof ratings, "%s/ratings.csv", T.dir);
    snprintf(movies, sizeof movies, "%s/movies.csv", T.dir);
    const char *imp[] = {"import", "--ratings", ratings, "--items", movies, "--out", T.data, NULL};
    if (run(imp) != 0) {
        th_dump_log(T.log);
        return -1;
    }
    for (int v = 0; v < 2; v++) {
        const char *bld[] = {"build", "--data", T.data, "--out", T.bundle[v], "--version", versions[v],
                             "--seed", v ? "2" : "1", "--factors", "8", "--iters", "3",
                             "--eval=false", "--ranker=false", "--target-recall", "0", NULL};
        if (run(bld) != 0) {
            th_dump_log(T.log);
            return -1;
        }
    }
    if (flip_link(T.bundle[0])) return -1;
    if (rp_client_create(NULL, &T.client, NULL)) return -1;
    snprintf(T.shard, sizeof T.shard, "127.0.0.1:%d", th_free_port());
    const char *av[] = {"retrieval", "--bundle", T.bundle[0], "--listen", T.shard, "--log-level",
                        "warn", NULL};
    T.shard_pid = th_spawn(av, T.log);
    if (!th_wait_serving(T.client, T.shard, T.shard_pid, 30)) {
        th_dump_log(T.log);
        return -1;
    }
    snprintf(T.gw, sizeof T.gw, "127.0.0.1:%d", th_free_port());
    const char *gv[] = {"gateway", "--bundle", T.link, "--state", T.state, "--listen", T.gw,
                        "--retrieval", T.shard, "--default-deadline", "2s", "--cache-ttl", "1ms",
                        "--log-level", "warn", NULL};
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
    th_stop(T.backlog_pid, SIGTERM); /* 0 unless test_backlog_defers_refreshes failed */
    th_stop(T.gw_pid, SIGTERM);
    th_stop(T.shard_pid, SIGTERM);
    rp_client_destroy(T.client);
    th_rmtree(T.dir);
    free(T.dir);
    return 0;
}

/* Admin.Reload of path ("" = the start path). Returns the RPC's result; st is filled. */
static int reload(const char *path, char *now, rp_status *st)
{
    rp_arena *a;
    rp_arena_create(0, &a);
    Recpipe__V1__ReloadRequest r = RECPIPE__V1__RELOAD_REQUEST__INIT;
    r.bundle_path = (char *)path;
    ProtobufCMessage *resp = NULL;
    rp_call_opts o = {.timeout_ms = 20000};
    int rc = rp_client_unary(T.client, T.gw, "/recpipe.v1.Admin/Reload", &r.base,
                             &recpipe__v1__reload_response__descriptor, a, &resp, &o, st);
    if (rc == RP_OK && now)
        snprintf(now, 64, "%s", ((Recpipe__V1__ReloadResponse *)resp)->bundle_version);
    rp_arena_destroy(a);
    return rc;
}

/* Admin.Status of target, in a (NULL when the call fails; st says why). */
static const Recpipe__V1__StatusResponse *status_of(const char *target, rp_arena *a, rp_status *st)
{
    Recpipe__V1__StatusRequest r = RECPIPE__V1__STATUS_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    rp_call_opts o = {.timeout_ms = 5000};
    if (rp_client_unary(T.client, target, "/recpipe.v1.Admin/Status", &r.base,
                        &recpipe__v1__status_response__descriptor, a, &resp, &o, st) != RP_OK)
        return NULL;
    return (const Recpipe__V1__StatusResponse *)resp;
}

/* The version Admin.Status reports. */
static void status_version(char *out)
{
    rp_arena *a;
    rp_arena_create(0, &a);
    rp_status st;
    const Recpipe__V1__StatusResponse *s = status_of(T.gw, a, &st);
    snprintf(out, 64, "%s", s ? s->bundle_version : "");
    rp_arena_destroy(a);
}

/* ---- the stream of Recommend calls ---- */

typedef struct stream {
    atomic_bool stop;
    unsigned long calls, failed, wrong_version, seen[2];
    char first_error[600];
} stream;

static void *stream_main(void *arg)
{
    stream *s = arg;
    rp_client *c;
    if (rp_client_create(NULL, &c, NULL) != RP_OK) {
        snprintf(s->first_error, sizeof s->first_error, "cannot create a client");
        s->failed++;
        return NULL;
    }
    rp_arena *a;
    rp_arena_create(0, &a);
    uint64_t user = 1;
    while (!atomic_load(&s->stop)) {
        rp_arena_reset(a);
        Recpipe__V1__RecommendRequest r = RECPIPE__V1__RECOMMEND_REQUEST__INIT;
        r.user_id = user;
        r.count = 10;
        user = user % NUSERS + 1;
        ProtobufCMessage *resp = NULL;
        rp_call_opts o = {.timeout_ms = 5000};
        rp_status st;
        s->calls++;
        if (rp_client_unary(c, T.gw, "/recpipe.v1.Recommender/Recommend", &r.base,
                            &recpipe__v1__recommend_response__descriptor, a, &resp, &o, &st) != RP_OK) {
            if (!s->failed++)
                snprintf(s->first_error, sizeof s->first_error, "Recommend: %s %s",
                         rp_grpc_status_name(st.code), st.msg);
            continue;
        }
        const Recpipe__V1__RecommendResponse *rr = (const Recpipe__V1__RecommendResponse *)resp;
        const char *v = rr->gateway_bundle_version ? rr->gateway_bundle_version : "";
        if (strcmp(v, versions[0]) == 0) s->seen[0]++;
        else if (strcmp(v, versions[1]) == 0) s->seen[1]++;
        else if (!s->wrong_version++)
            snprintf(s->first_error, sizeof s->first_error, "gateway_bundle_version \"%s\"", v);
        if (rr->n_items == 0 && !s->failed++)
            snprintf(s->first_error, sizeof s->first_error, "an answer without items (user %llu)",
                     (unsigned long long)r.user_id);
    }
    rp_arena_destroy(a);
    rp_client_destroy(c);
    return NULL;
}

static void wait_version(const char *want, double timeout_s)
{
    char v[64];
    uint64_t end = rp_now_ns() + (uint64_t)(timeout_s * 1e9);
    do {
        status_version(v);
        if (strcmp(v, want) == 0) return;
        rp_sleep_ns(50000000ull);
    } while (rp_now_ns() < end);
    fail_msg("Status reports bundle version \"%s\", expected \"%s\" after SIGHUP", v, want);
}

static void test_reload_under_load(void **state)
{
    (void)state;
    char v[64];
    status_version(v);
    assert_string_equal(v, versions[0]);
    stream s = {0};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, stream_main, &s), 0);
    rp_sleep_ns(300000000ull);
    for (int i = 1; i <= RELOADS; i++) {
        int want = i % 2;
        rp_status st;
        char now[64] = "";
        if (i % 3 == 0) {
            /* The symlink flips, then SIGHUP re-reads the start path. */
            assert_int_equal(flip_link(T.bundle[want]), 0);
            kill(T.gw_pid, SIGHUP);
            wait_version(versions[want], 20);
        } else if (i % 3 == 1) {
            int rc = reload(T.bundle[want], now, &st);
            if (rc != RP_OK) fail_msg("reload %d: %s %s", i, rp_grpc_status_name(st.code), st.msg);
            assert_string_equal(now, versions[want]);
        } else {
            /* Empty path: the start path, after the symlink flips. */
            assert_int_equal(flip_link(T.bundle[want]), 0);
            int rc = reload("", now, &st);
            if (rc != RP_OK) fail_msg("reload %d: %s %s", i, rp_grpc_status_name(st.code), st.msg);
            assert_string_equal(now, versions[want]);
        }
        rp_sleep_ns(250000000ull);
    }
    atomic_store(&s.stop, true);
    pthread_join(th, NULL);
    fprintf(stderr, "%lu Recommend calls over %d reloads: %lu failed, %lu on %s, %lu on %s\n",
            s.calls, RELOADS, s.failed, s.seen[0], versions[0], s.seen[1], versions[1]);
    if (s.failed || s.wrong_version) fail_msg("%s", s.first_error);
    assert_true(s.calls >= 50);
    assert_true(s.seen[0] > 0);
    assert_true(s.seen[1] > 0);
}

static void test_corrupt_bundle_refused(void **state)
{
    (void)state;
    char cur[64];
    status_version(cur);
    assert_true(strcmp(cur, versions[0]) == 0 || strcmp(cur, versions[1]) == 0);
    char file[200];
    assert_int_equal(make_corrupt(file, sizeof file), 0);
    rp_status st;
    int rc = reload(T.bad, NULL, &st);
    assert_int_not_equal(rc, RP_OK);
    fprintf(stderr, "corrupt bundle (%s damaged): %s %s\n", file, rp_grpc_status_name(st.code), st.msg);
    if (!strstr(st.msg, file)) fail_msg("the refusal does not name %s: %s", file, st.msg);
    /* A directory that is no bundle at all. */
    rc = reload(T.dir, NULL, &st);
    assert_int_not_equal(rc, RP_OK);
    assert_non_null(strstr(st.msg, T.dir));
    /* The old bundle keeps serving. */
    char v[64];
    status_version(v);
    assert_string_equal(v, cur);
    stream s = {0};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, stream_main, &s), 0);
    rp_sleep_ns(300000000ull);
    atomic_store(&s.stop, true);
    pthread_join(th, NULL);
    if (s.failed || s.wrong_version) fail_msg("%s", s.first_error);
    assert_true(s.calls > 0);
    assert_int_equal(s.seen[strcmp(cur, versions[0]) == 0 ? 0 : 1], s.calls);
}

/* ---- callers of one user while the gateway reloads ---- */

#define HOT_THREADS 4
#define HOT_USER 7

typedef struct hot {
    atomic_bool stop;
    atomic_int current; /* index of the version whose Reload has returned */
    atomic_uint epoch;  /* odd while a Reload is in progress */
    atomic_ulong calls, stale, failed, unflagged_old;
    char first_error[600];
} hot;

static bool has_flag(const Recpipe__V1__RecommendResponse *r, Recpipe__V1__Degradation d)
{
    for (size_t i = 0; i < r->n_degraded; i++)
        if (r->degraded[i] == d) return true;
    return false;
}

static void *hot_main(void *arg)
{
    hot *h = arg;
    rp_client *c;
    if (rp_client_create(NULL, &c, NULL) != RP_OK) {
        atomic_fetch_add(&h->failed, 1);
        return NULL;
    }
    rp_arena *a;
    rp_arena_create(0, &a);
    while (!atomic_load(&h->stop)) {
        rp_arena_reset(a);
        unsigned e1 = atomic_load(&h->epoch);
        int cur = atomic_load(&h->current);
        Recpipe__V1__RecommendRequest r = RECPIPE__V1__RECOMMEND_REQUEST__INIT;
        r.user_id = HOT_USER;
        r.count = 10;
        ProtobufCMessage *resp = NULL;
        rp_call_opts o = {.timeout_ms = 5000};
        rp_status st;
        atomic_fetch_add(&h->calls, 1);
        if (rp_client_unary(c, T.gw, "/recpipe.v1.Recommender/Recommend", &r.base,
                            &recpipe__v1__recommend_response__descriptor, a, &resp, &o, &st) != RP_OK) {
            if (!atomic_fetch_add(&h->failed, 1))
                snprintf(h->first_error, sizeof h->first_error, "Recommend: %s %s",
                         rp_grpc_status_name(st.code), st.msg);
            continue;
        }
        const Recpipe__V1__RecommendResponse *rr = (const Recpipe__V1__RecommendResponse *)resp;
        bool stale = has_flag(rr, RECPIPE__V1__DEGRADATION__DEGRADATION_STALE);
        if (stale) atomic_fetch_add(&h->stale, 1);
        const char *v = rr->gateway_bundle_version ? rr->gateway_bundle_version : "";
        /* When no reload ran from before the call to after it, an answer of another
         * bundle than the current one must say that it is stale. */
        bool settled = e1 % 2 == 0 && atomic_load(&h->epoch) == e1;
        if (settled && !stale && strcmp(v, versions[cur]) != 0 &&
            !atomic_fetch_add(&h->unflagged_old, 1))
            snprintf(h->first_error, sizeof h->first_error,
                     "an answer of %s without the STALE flag after the reload to %s", v,
                     versions[cur]);
    }
    rp_arena_destroy(a);
    rp_client_destroy(c);
    return NULL;
}

static void test_callers_of_one_user_get_current_or_flagged_stale(void **state)
{
    (void)state;
    char v[64];
    status_version(v);
    int cur = strcmp(v, versions[0]) == 0 ? 0 : 1;
    assert_string_equal(v, versions[cur]);
    hot h = {0};
    atomic_store(&h.current, cur);
    pthread_t th[HOT_THREADS];
    for (int i = 0; i < HOT_THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, hot_main, &h), 0);
    rp_sleep_ns(200000000ull);
    for (int i = 0; i < 6; i++) {
        cur = !cur;
        rp_status st;
        char now[64] = "";
        atomic_fetch_add(&h.epoch, 1);
        int rc = reload(T.bundle[cur], now, &st);
        if (rc != RP_OK) fail_msg("reload %d: %s %s", i, rp_grpc_status_name(st.code), st.msg);
        assert_string_equal(now, versions[cur]);
        atomic_store(&h.current, cur);
        atomic_fetch_add(&h.epoch, 1);
        rp_sleep_ns(200000000ull);
    }
    atomic_store(&h.stop, true);
    for (int i = 0; i < HOT_THREADS; i++) pthread_join(th[i], NULL);
    fprintf(stderr, "%d callers of user %d over 6 reloads: %lu calls, %lu stale, %lu failed\n",
            HOT_THREADS, HOT_USER, atomic_load(&h.calls), atomic_load(&h.stale),
            atomic_load(&h.failed));
    if (atomic_load(&h.failed) || atomic_load(&h.unflagged_old)) fail_msg("%s", h.first_error);
    assert_true(atomic_load(&h.calls) >= 20);
}

/* ---- a backlog defers recomputations ---- */

/* The refreshes target's Admin.Status counts as deferred while behind. */
static uint64_t status_deferred(const char *target)
{
    rp_arena *a;
    rp_arena_create(0, &a);
    rp_status st;
    const Recpipe__V1__StatusResponse *s = status_of(target, a, &st);
    if (!s) {
        rp_arena_destroy(a);
        fail_msg("Status of %s: %s %s", target, rp_grpc_status_name(st.code), st.msg);
    }
    uint64_t d = s->cache_refreshes_deferred;
    rp_arena_destroy(a);
    return d;
}

/* One Recommend for user; returns whether the answer was flagged STALE. */
static bool recommend_stale(const char *target, uint64_t user)
{
    rp_arena *a;
    rp_arena_create(0, &a);
    Recpipe__V1__RecommendRequest r = RECPIPE__V1__RECOMMEND_REQUEST__INIT;
    r.user_id = user;
    r.count = 10;
    ProtobufCMessage *resp = NULL;
    rp_call_opts o = {.timeout_ms = 5000};
    rp_status st;
    if (rp_client_unary(T.client, target, "/recpipe.v1.Recommender/Recommend", &r.base,
                        &recpipe__v1__recommend_response__descriptor, a, &resp, &o, &st) != RP_OK)
        fail_msg("Recommend user %llu: %s %s", (unsigned long long)user, rp_grpc_status_name(st.code),
                 st.msg);
    bool stale = has_flag((const Recpipe__V1__RecommendResponse *)resp,
                          RECPIPE__V1__DEGRADATION__DEGRADATION_STALE);
    rp_arena_destroy(a);
    return stale;
}

/*
 * A gateway of 2 request threads whose answers expire after 1 ms (so that every call of
 * a known user has an older answer to fall back on). Called one at a time, each call
 * recomputes its answer: a lone caller is never "behind", nothing is deferred. Then the
 * load tool sends 2,000 calls/s and the gateway is stopped (SIGSTOP) for 300 ms, so that
 * ~600 calls wait for it when it resumes: calls that waited past --cache-refresh-wait
 * while others still wait get the older answer flagged STALE instead of recomputing
 * (Admin.Status counts them), and no call fails. The wait is 1 ms here, not the default
 * 5 ms: the server takes at most 64 calls per method from gRPC at a time, and stale
 * answers take ~0.1 ms each, so its own queue drains in a few ms; at 5 ms the count was
 * 0 in 5 of 8 runs.
 */
static void test_backlog_defers_refreshes(void **state)
{
    (void)state;
    char gw[64], st_dir[320], json[320];
    snprintf(gw, sizeof gw, "127.0.0.1:%d", th_free_port());
    snprintf(st_dir, sizeof st_dir, "%s/state-backlog", T.dir);
    snprintf(json, sizeof json, "%s/backlog.json", T.dir);
    const char *gv[] = {"gateway", "--bundle", T.bundle[0], "--state", st_dir, "--listen", gw,
                        "--retrieval", T.shard, "--threads", "2", "--cache-ttl", "1ms",
                        "--cache-stale", "60s", "--cache-refresh-wait", "1ms",
                        "--default-deadline", "5s", "--max-in-flight",
                        "10000", "--log-level", "warn", NULL};
    pid_t pid = T.backlog_pid = th_spawn(gv, T.log); /* teardown stops it if a check fails */
    if (!th_wait_serving(T.client, gw, pid, 30)) {
        th_dump_log(T.log);
        fail_msg("the backlog gateway did not start");
    }
    /* Every user once (an answer each), then once more, one call at a time. */
    for (uint64_t u = 1; u <= NUSERS; u++) recommend_stale(gw, u);
    uint64_t d0 = status_deferred(gw);
    int stale = 0;
    for (uint64_t u = 1; u <= 50; u++) {
        rp_sleep_ns(2000000ull); /* past the 1 ms TTL */
        stale += recommend_stale(gw, u);
    }
    uint64_t d1 = status_deferred(gw);
    fprintf(stderr, "sequential calls: %d of 50 stale, %llu deferred\n", stale,
            (unsigned long long)(d1 - d0));
    assert_int_equal(stale, 0);
    assert_int_equal(d1, d0);

    char cmd[1400];
    snprintf(cmd, sizeof cmd,
             "'%s' loadtest --target %s --rpc recommend --dataset '%s' --rate 2000 --warmup 0s "
             "--duration 3s --connections 2 --deadline-ms 20000 --json '%s' >>'%s' 2>&1",
             th_bin(), gw, T.data, json, T.log);
    FILE *lt = popen(cmd, "r");
    assert_non_null(lt);
    rp_sleep_ns(1000000000ull);
    assert_int_equal(kill(pid, SIGSTOP), 0);
    rp_sleep_ns(300000000ull);
    assert_int_equal(kill(pid, SIGCONT), 0);
    int rc = pclose(lt);
    uint64_t d2 = status_deferred(gw);
    th_stop(pid, SIGTERM);
    T.backlog_pid = 0;
    json_object *o = json_object_from_file(json);
    if (rc != 0 || !o) {
        th_dump_log(T.log);
        fail_msg("loadtest exited with %d", rc);
    }
    json_object *sum, *v;
    assert_true(json_object_object_get_ex(o, "summary", &sum));
    assert_true(json_object_object_get_ex(sum, "errors", &v));
    int64_t errors = json_object_get_int64(v);
    assert_true(json_object_object_get_ex(sum, "ok", &v));
    int64_t ok = json_object_get_int64(v);
    json_object_put(o);
    fprintf(stderr, "backlog: %lld calls ok, %lld failed, %llu refreshes deferred\n",
            (long long)ok, (long long)errors, (unsigned long long)(d2 - d1));
    assert_int_equal(errors, 0);
    assert_true(ok >= 2000);
    assert_true(d2 > d1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reload_under_load),
        cmocka_unit_test(test_callers_of_one_user_get_current_or_flagged_stale),
        cmocka_unit_test(test_corrupt_bundle_refused),
        cmocka_unit_test(test_backlog_defers_refreshes),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
