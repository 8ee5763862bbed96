/*
 * Durability under kill -9: a real gateway receives a stream of Feedback batches and is
 * killed with SIGKILL at a random moment; then the state it left (its LMDB files, read
 * through the gateway's own state store API after the process is dead) must hold every
 * acknowledged batch whole, nothing of a refused batch, and the batch whose answer the
 * kill cut off either whole or not at all. The gateway is restarted on the same state
 * directory for the next round; 20 rounds, acknowledged batches of earlier rounds are
 * checked again each time. DURABILITY_SEED=N replays the kill moments of a run.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "hard_common.h"

#include "gw/state.h"
#include "recpipe/v1/recommender.pb-c.h"
#include "rp/log.h"

#include <pthread.h>
#include <time.h>

#define ROUNDS 20
#define USERS_PER_BATCH 8
#define EVENTS_PER_USER 4
#define MAX_BATCHES 20000

enum { B_NONE = 0, B_ACKED, B_REFUSED, B_UNKNOWN };

static struct {
    char *dir;
    char bundle[300], state[300], log[300];
    uint8_t outcome[MAX_BATCHES];
    uint32_t nbatches;
} T;

static uint64_t user_of(uint32_t batch, int j)
{
    return 1000000ull + (uint64_t)batch * USERS_PER_BATCH + (uint64_t)j;
}

static int64_t ts_of(uint32_t batch, int e)
{
    return 1600000000 + (int64_t)batch * 10 + e;
}

/* Sends batch b; every 7th batch is invalid as a whole (its last event has no type). */
static int send_batch(rp_client *c, const char *target, uint32_t b, rp_status *st)
{
    enum { N = USERS_PER_BATCH * EVENTS_PER_USER };
    Recpipe__V1__FeedbackEvent ev[N], *evp[N];
    for (int i = 0; i < N; i++) {
        recpipe__v1__feedback_event__init(&ev[i]);
        ev[i].user_id = user_of(b, i / EVENTS_PER_USER);
        ev[i].item_id = th_item((int)(b % TH_GENRES), i % TH_PER_GENRE);
        ev[i].type = RECPIPE__V1__EVENT_TYPE__EVENT_TYPE_CLICK;
        ev[i].timestamp = ts_of(b, i % EVENTS_PER_USER);
        evp[i] = &ev[i];
    }
    if (b % 7 == 3) ev[N - 1].type = RECPIPE__V1__EVENT_TYPE__EVENT_TYPE_UNSPECIFIED;
    Recpipe__V1__FeedbackRequest q = RECPIPE__V1__FEEDBACK_REQUEST__INIT;
    q.events = evp;
    q.n_events = N;
    rp_arena *a;
    rp_arena_create(0, &a);
    ProtobufCMessage *resp;
    rp_call_opts o = {.timeout_ms = 3000};
    int rc = rp_client_unary(c, target, "/recpipe.v1.Recommender/Feedback", &q.base,
                             &recpipe__v1__feedback_response__descriptor, a, &resp, &o, st);
    if (rc == RP_OK && ((Recpipe__V1__FeedbackResponse *)resp)->stored != N) rc = RP_EINTERNAL;
    rp_arena_destroy(a);
    return rc;
}

typedef struct killer {
    pid_t pid;
    uint64_t delay_ns;
    volatile int done;
} killer;

static void *kill_later(void *arg)
{
    killer *k = arg;
    rp_sleep_ns(k->delay_ns);
    kill(k->pid, SIGKILL);
    k->done = 1;
    return NULL;
}

/* How many of batch b's users hold exactly its events (the rest must hold none). */
static int users_whole(gw_state *gs, uint32_t b, int *partial)
{
    int whole = 0;
    *partial = 0;
    for (int j = 0; j < USERS_PER_BATCH; j++) {
        gw_event h[16];
        size_t n;
        uint64_t v;
        rp_error err = {0};
        if (gw_state_history(gs, user_of(b, j), h, 16, &n, &v, &err))
            fail_msg("read user %llu: %s", (unsigned long long)user_of(b, j), err.msg);
        if (n == 0) continue;
        int ok = n == EVENTS_PER_USER;
        for (size_t e = 0; ok && e < n; e++)
            ok = h[e].ts == ts_of(b, (int)e) && h[e].type == RECPIPE__V1__EVENT_TYPE__EVENT_TYPE_CLICK;
        if (ok) whole++;
        else (*partial)++;
    }
    return whole;
}

static void check_state(int round)
{
    gw_state *gs;
    rp_error err = {0};
    if (gw_state_open(T.state, NULL, &gs, &err)) fail_msg("round %d: state: %s", round, err.msg);
    uint32_t acked = 0, refused = 0, unknown_stored = 0, unknown = 0;
    for (uint32_t b = 0; b < T.nbatches; b++) {
        int partial, whole = users_whole(gs, b, &partial);
        if (partial) fail_msg("round %d: batch %u is partly stored (%d users with other events)",
                              round, b, partial);
        switch (T.outcome[b]) {
        case B_ACKED:
            acked++;
            if (whole != USERS_PER_BATCH)
                fail_msg("round %d: acknowledged batch %u: only %d of %d users stored", round, b,
                         whole, USERS_PER_BATCH);
            break;
        case B_REFUSED:
            refused++;
            if (whole) fail_msg("round %d: refused batch %u: %d users stored", round, b, whole);
            break;
        case B_UNKNOWN:
            unknown++;
            if (whole != 0 && whole != USERS_PER_BATCH)
                fail_msg("round %d: batch %u cut off by the kill is half stored (%d of %d users)",
                         round, b, whole, USERS_PER_BATCH);
            unknown_stored += whole != 0;
            break;
        default:
            if (whole) fail_msg("round %d: batch %u was never sent but is stored", round, b);
        }
    }
    gw_state_close(gs);
    if (getenv("DURABILITY_VERBOSE"))
        fprintf(stderr, "round %d: %u acknowledged, %u refused, %u cut off (%u of them stored)\n",
                round, acked, refused, unknown, unknown_stored);
}

static void test_kill9_rounds(void **state)
{
    (void)state;
    unsigned seed = getenv("DURABILITY_SEED") ? (unsigned)atoi(getenv("DURABILITY_SEED"))
                                              : (unsigned)time(NULL);
    fprintf(stderr, "DURABILITY_SEED=%u\n", seed);
    srand(seed);
    uint64_t t0 = rp_now_ns();
    uint32_t acked_total = 0;
    for (int round = 0; round < ROUNDS; round++) {
        char addr[64];
        snprintf(addr, sizeof addr, "127.0.0.1:%d", th_free_port());
        const char *gv[] = {"gateway", "--bundle", T.bundle, "--state", T.state, "--listen", addr,
                            "--threads", "4", "--log-level", "warn", NULL};
        pid_t pid = th_spawn(gv, T.log);
        rp_client *c;
        rp_client_config cc = {.own_connections = true};
        assert_int_equal(rp_client_create(&cc, &c, NULL), RP_OK);
        if (!th_wait_serving(c, addr, pid, 30)) {
            th_dump_log(T.log);
            fail_msg("round %d: the gateway did not come up on the state the last one left",
                     round);
        }
        killer k = {.pid = pid, .delay_ns = (uint64_t)(20 + rand() % 400) * 1000000ull};
        pthread_t th;
        pthread_create(&th, NULL, kill_later, &k);
        for (;;) {
            if (T.nbatches >= MAX_BATCHES) fail_msg("too many batches");
            uint32_t b = T.nbatches++;
            rp_status st = {0};
            int rc = send_batch(c, addr, b, &st);
            if (rc == RP_OK) {
                T.outcome[b] = B_ACKED;
                acked_total++;
            } else if (st.code == RP_GRPC_INVALID_ARGUMENT) {
                if (b % 7 != 3) fail_msg("batch %u refused: %s", b, st.msg);
                T.outcome[b] = B_REFUSED;
            } else {
                /* The kill cut this call off (UNAVAILABLE, CANCELLED, ...). */
                T.outcome[b] = B_UNKNOWN;
                if (!k.done) {
                    /* Only the kill may fail a call. */
                    pthread_join(th, NULL);
                    if (!k.done) fail_msg("batch %u failed before the kill: %s", b, st.msg);
                }
                break;
            }
            if (b % 7 == 3 && T.outcome[b] != B_REFUSED) fail_msg("invalid batch %u was accepted", b);
        }
        pthread_join(th, NULL);
        int ws;
        waitpid(pid, &ws, 0);
        assert_true(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL);
        rp_client_destroy(c);
        check_state(round);
    }
    fprintf(stderr, "%d kill -9 rounds, %u batches sent, %u acknowledged, all present (%.1f s)\n",
            ROUNDS, T.nbatches, acked_total, (double)(rp_now_ns() - t0) / 1e9);
    assert_true(acked_total > ROUNDS);
}

static int setup(void **state)
{
    (void)state;
    rp_log_set_level(RP_LOG_ERROR);
    T.dir = th_tmpdir("durability");
    snprintf(T.bundle, sizeof T.bundle, "%s/bundle", T.dir);
    snprintf(T.state, sizeof T.state, "%s/state", T.dir);
    snprintf(T.log, sizeof T.log, "%s/gateway.log", T.dir);
    rp_error err = {0};
    if (hc_build_bundle(T.bundle, "durability-v1", &err)) {
        fprintf(stderr, "bundle: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (!getenv("DURABILITY_KEEP")) th_rmtree(T.dir);
    free(T.dir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_kill9_rounds)};
    return cmocka_run_group_tests(tests, setup, teardown);
}
