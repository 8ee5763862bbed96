/*
 * tests/integration/test_gateway_harness.h — real child processes for the gateway's
 * integration tests: free loopback ports, spawning `recpipe <subcommand>` with its log
 * in a file, waiting for Health SERVING, stopping, and a synthetic genre-clustered
 * bundle built with the real bundle builder.
 */
#ifndef TEST_GATEWAY_HARNESS_H
#define TEST_GATEWAY_HARNESS_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "grpc/health/v1/health.pb-c.h"
#include "idx/bundle.h"
#include "rp/clock.h"
#include "rp/rpc.h"

/* With TH_TRACE set in the environment, harness steps are printed with timestamps. */
static inline void th_trace(const char *what, const char *detail)
{
    static uint64_t t0;
    if (!getenv("TH_TRACE")) return;
    if (!t0) t0 = rp_now_ns();
    fprintf(stderr, "[%7.3fs] %s %s\n", (double)(rp_now_ns() - t0) / 1e9, what, detail ? detail : "");
}

static inline const char *th_bin(void)
{
    const char *b = getenv("RECPIPE_BIN");
    return b ? b : "./recpipe";
}

static inline char *th_tmpdir(const char *tag)
{
    char *d = malloc(256);
    snprintf(d, 256, "/tmp/rp-%s-XXXXXX", tag);
    if (!mkdtemp(d)) {
        perror("mkdtemp");
        exit(1);
    }
    return d;
}

static inline void th_rmtree(const char *d)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", d);
}

/* A loopback port for a server this test starts, reserved for the life of the test:
 * the socket that found it stays bound (SO_REUSEADDR, never listening, close-on-exec),
 * so that no other bind(0) of this process or of a test running next to it gets the
 * same port, while the server (gRPC sets SO_REUSEADDR too) can bind and listen on it.
 * Closing it at once let two servers (of this test or of parallel ones) race for one
 * port; the loser exits and the health probe reaches the winner. A test_topology failure
 * under the parallel sanitizer run looked like that: its gateway with ranking answered
 * as a gateway without ranking over one shard would. */
static inline int th_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        perror("free port");
        exit(1);
    }
    return ntohs(a.sin_port); /* fd stays open until the test exits */
}

/* Starts `recpipe argv...` with stdout and stderr appended to log. The child dies with
 * the test (PR_SET_PDEATHSIG). Returns the pid. */
static inline pid_t th_spawn(const char *const *argv, const char *log)
{
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(1);
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        size_t n = 0;
        while (argv[n]) n++;
        char **args = calloc(n + 2, sizeof *args);
        args[0] = (char *)th_bin();
        for (size_t i = 0; i < n; i++) args[i + 1] = (char *)argv[i];
        execv(args[0], args);
        _exit(127);
    }
    return pid;
}

/* Health status of target: 1 SERVING, 2 NOT_SERVING, 0 no answer. Each probe uses a
 * fresh client with its own connection: a channel that failed to connect waits out
 * gRPC's reconnect backoff (seconds) before it tries again. */
static inline int th_health(rp_client *shared, const char *target)
{
    (void)shared;
    rp_arena *a;
    rp_client *c;
    rp_client_config cc = {.own_connections = true};
    if (rp_client_create(&cc, &c, NULL) != RP_OK) return 0;
    rp_arena_create(0, &a);
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    rp_call_opts o = {.timeout_ms = 500};
    int st = 0;
    if (rp_client_unary(c, target, "/grpc.health.v1.Health/Check", &req.base,
                        &grpc__health__v1__health_check_response__descriptor, a, &resp, &o,
                        NULL) == RP_OK)
        st = ((Grpc__Health__V1__HealthCheckResponse *)resp)->status;
    rp_arena_destroy(a);
    rp_client_destroy(c);
    return st;
}

/* Waits until target reports SERVING, or pid exits, or timeout_s passes. Returns 1 when
 * serving. */
static inline int th_wait_serving(rp_client *c, const char *target, pid_t pid, double timeout_s)
{
    uint64_t end = rp_now_ns() + (uint64_t)(timeout_s * 1e9);
    th_trace("wait", target);
    while (rp_now_ns() < end) {
        if (th_health(c, target) == 1) {
            th_trace("serving", target);
            return 1;
        }
        if (pid > 0) {
            int status;
            if (waitpid(pid, &status, WNOHANG) == pid) return 0;
        }
        rp_sleep_ns(50000000ull);
    }
    return 0;
}

/* Sends sig and waits up to 10 s for the exit; SIGKILL after that. Returns the wait
 * status. */
static inline int th_stop(pid_t pid, int sig)
{
    int status = 0;
    if (pid <= 0) return 0;
    th_trace("stop", sig == SIGKILL ? "SIGKILL" : "signal");
    kill(pid, sig);
    for (int i = 0; i < 200; i++) {
        if (waitpid(pid, &status, WNOHANG) == pid) {
            th_trace("stopped", NULL);
            return status;
        }
        rp_sleep_ns(50000000ull);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return status;
}

static inline void th_dump_log(const char *log)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "tail -n 30 '%s' >&2", log);
    if (system(cmd) != 0) fprintf(stderr, "(no log %s)\n", log);
}

/* ---- a synthetic bundle: TH_GENRES genres of TH_PER_GENRE items each; an item's
 * embedding is its genre's axis plus a small deterministic offset, so nearest
 * neighbours stay within a genre. Item ids: genre g, index i → 1000 * (g + 1) + i. */
#define TH_GENRES 6
#define TH_PER_GENRE 40
#define TH_DIM 16

static const char *const th_genre_names[TH_GENRES] __attribute__((unused)) = {"Action", "Animation", "Comedy",
                                                "Drama",  "Horror",    "Romance"};

static inline uint64_t th_item(int g, int i)
{
    return 1000ull * (uint64_t)(g + 1) + (uint64_t)i;
}

static inline int th_build_bundle(const char *path, uint32_t shards, rp_error *err)
{
    idx_builder *b;
    int rc = idx_builder_create(path, TH_DIM, IDX_METRIC_IP, &b, err);
    if (rc) return rc;
    idx_builder_set_version(b, "test-v1", NULL);
    for (int g = 0; g < TH_GENRES; g++) {
        for (int i = 0; i < TH_PER_GENRE; i++) {
            char title[64];
            snprintf(title, sizeof title, "%s Movie %d (20%02d)", th_genre_names[g], i, i % 25);
            const char *cats[2] = {th_genre_names[g], th_genre_names[(g + 1) % TH_GENRES]};
            idx_item it = {.id = th_item(g, i),
                           .title = title,
                           .categories = cats,
                           .n_categories = (i % 5 == 0) ? 2 : 1,
                           .created = 1600000000 + (int64_t)(g * TH_PER_GENRE + i) * 3600,
                           .popularity = (uint64_t)(1000 - i * 20 + g)};
            float v[TH_DIM] = {0};
            v[g] = 1.0f;
            /* Small spread inside the genre over the spare dimensions. */
            v[TH_GENRES + (i % (TH_DIM - TH_GENRES))] = 0.05f * (float)(1 + i % 7);
            if ((rc = idx_builder_add_item(b, &it, v, err))) {
                idx_builder_abort(b);
                return rc;
            }
        }
    }
    idx_index_opts o = {.factory = "Flat", .n_shards = shards};
    if ((rc = idx_builder_set_index(b, &o, err))) {
        idx_builder_abort(b);
        return rc;
    }
    return idx_builder_commit(b, 0, NULL, err);
}

#endif
