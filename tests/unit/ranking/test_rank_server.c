/*
 * The Ranking service as a real child process (cmd_ranking_bundle, the body of
 * `recpipe ranking --bundle`): it serves Rank over gRPC on an ephemeral port, SIGHUP
 * re-reads --bundle (a symlink flipped to another bundle), SIGTERM drains and exits 0;
 * without --bundle Rank is UNAVAILABLE; a missing bundle exits 1 naming the path.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "idx/bundle.h"
#include "idx/fsutil.h"
#include "rank/build.h"
#include "rank/model.h"
#include "recpipe/v1/ranking.pb-c.h"
#include "rp/clock.h"
#include "rp/rpc.h"

#define E(expr)                                                                            \
    do {                                                                                   \
        int rc_ = (expr);                                                                  \
        if (rc_ != RP_OK) fail_msg("%s: %s (%s)", #expr, rp_err_name(rc_), err.msg);       \
    } while (0)

#define NI 50
#define DIM 4

static char root[PATH_MAX];

static void make_bundle(const char *path, uint64_t seed, const char *version)
{
    rp_error err = {0};
    uint64_t ids[NI];
    float vecs[NI * DIM], popr[NI] = {0}, popt[NI] = {0};
    uint32_t cnt[NI] = {0};
    for (uint32_t i = 0; i < NI; i++) {
        ids[i] = i + 1;
        for (int k = 0; k < DIM; k++) vecs[i * DIM + k] = (float)((i + k) % 5) - 2.0f;
    }
    idx_builder *b;
    E(idx_builder_create(path, DIM, IDX_METRIC_IP, &b, &err));
    E(idx_builder_set_version(b, version, &err));
    E(idx_builder_add_vectors(b, NI, ids, vecs, &err));
    rank_shape s = rank_shape_default();
    s.dim = 8;
    s.n_items = NI;
    s.sim_dim = DIM;
    rank_items it = {NI, ids, NULL, NULL, popr, popt, cnt, vecs};
    rank_model *m;
    E(rank_model_create(&s, &it, NULL, 0, seed, &m, &err));
    char file[PATH_MAX];
    E(idx_builder_file(b, RANK_BUNDLE_FILE, file, sizeof file, &err));
    E(rank_model_save(m, file, &err));
    rank_model_free(m);
    E(idx_builder_commit(b, 0, NULL, &err));
}

/* Starts `recpipe ranking` with args (NULL-terminated, after "ranking"); returns its pid
 * and, when port_file is given, the port it bound (waiting up to 30 s). */
static pid_t start(const char *const *args, const char *port_file, int *port)
{
    if (port_file) unlink(port_file);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        const char *bin = getenv("RECPIPE_BIN");
        if (!bin) _exit(126);
        const char *argv[16] = {bin, "ranking"};
        int n = 2;
        for (; args[n - 2] && n < 15; n++) argv[n] = args[n - 2];
        argv[n] = NULL;
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    if (port_file) {
        for (int i = 0; i < 300; i++) {
            FILE *f = fopen(port_file, "r");
            if (f) {
                int ok = fscanf(f, "%d", port) == 1;
                fclose(f);
                if (ok) return pid;
            }
            rp_sleep_ns(100 * 1000 * 1000);
        }
        kill(pid, SIGKILL);
        fail_msg("the ranking service did not write %s", port_file);
    }
    return pid;
}

static int wait_exit(pid_t pid, int seconds)
{
    for (int i = 0; i < seconds * 10; i++) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
        rp_sleep_ns(100 * 1000 * 1000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

static int rank_call(rp_client *c, int port, char *version, size_t cap, rp_status *st)
{
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", port);
    Recpipe__V1__RankCandidate c1 = RECPIPE__V1__RANK_CANDIDATE__INIT, c2 = c1;
    c1.item_id = 3;
    c2.item_id = 777; /* unknown */
    Recpipe__V1__RankCandidate *cp[2] = {&c1, &c2};
    Recpipe__V1__RankRequest req = RECPIPE__V1__RANK_REQUEST__INIT;
    req.n_candidates = 2;
    req.candidates = cp;
    rp_arena *a;
    rp_arena_create(0, &a);
    Recpipe__V1__RankResponse *resp = NULL;
    rp_call_opts o = {.timeout_ms = 5000};
    int rc = rp_client_unary(c, target, "/recpipe.v1.Ranking/Rank", &req.base,
                             &recpipe__v1__rank_response__descriptor, a, (ProtobufCMessage **)&resp,
                             &o, st);
    if (rc == RP_OK) {
        snprintf(version, cap, "%s", resp->bundle_version);
        if (resp->n_scores != 2) rc = RP_EINTERNAL;
    }
    rp_arena_destroy(a);
    return rc;
}

static void test_child_process(void **state)
{
    (void)state;
    rp_error err = {0};
    const char *base = getenv("TMPDIR");
    snprintf(root, sizeof root, "%s/recpipe-rank-srv-XXXXXX", base ? base : "/tmp");
    assert_non_null(mkdtemp(root));
    char b1[PATH_MAX + 8], b2[PATH_MAX + 8], link[PATH_MAX + 8], pf[PATH_MAX + 8];
    snprintf(b1, sizeof b1, "%s/b1", root);
    snprintf(b2, sizeof b2, "%s/b2", root);
    snprintf(link, sizeof link, "%s/current", root);
    snprintf(pf, sizeof pf, "%s/port", root);
    make_bundle(b1, 1, "v1");
    make_bundle(b2, 2, "v2");
    assert_int_equal(symlink(b1, link), 0);
    rp_client *c;
    E(rp_client_create(NULL, &c, &err));
    char ver[64] = "";
    rp_status st;

    /* with a bundle: serves; SIGHUP after the link flips serves the other bundle */
    int port = 0;
    const char *args[] = {"--bundle", link, "--listen", "127.0.0.1:0", "--port-file", pf,
                          "--threads", "2", "--log-level", "warn", NULL};
    pid_t pid = start(args, pf, &port);
    E(rank_call(c, port, ver, sizeof ver, &st));
    assert_string_equal(ver, "v1");
    char tmp[PATH_MAX + 16];
    snprintf(tmp, sizeof tmp, "%s.new", link);
    assert_int_equal(symlink(b2, tmp), 0);
    assert_int_equal(rename(tmp, link), 0);
    kill(pid, SIGHUP);
    for (int i = 0; i < 100 && strcmp(ver, "v2") != 0; i++) {
        rp_sleep_ns(50 * 1000 * 1000);
        E(rank_call(c, port, ver, sizeof ver, &st));
    }
    assert_string_equal(ver, "v2");
    kill(pid, SIGTERM);
    assert_int_equal(wait_exit(pid, 20), 0);

    /* without a bundle: Rank is UNAVAILABLE */
    const char *args2[] = {"--listen", "127.0.0.1:0", "--port-file", pf, "--log-level", "warn", NULL};
    pid = start(args2, pf, &port);
    assert_int_equal(rank_call(c, port, ver, sizeof ver, &st), RP_EUNAVAIL);
    assert_int_equal(st.code, RP_GRPC_UNAVAILABLE);
    kill(pid, SIGTERM);
    assert_int_equal(wait_exit(pid, 20), 0);

    /* a missing bundle: exit 1 */
    char missing[PATH_MAX + 16];
    snprintf(missing, sizeof missing, "%s/missing", root);
    const char *args3[] = {"--bundle", missing, "--listen", "127.0.0.1:0", NULL};
    pid = start(args3, NULL, NULL);
    assert_int_equal(wait_exit(pid, 20), 1);

    rp_client_destroy(c);
    idx_rmtree(root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_child_process),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
