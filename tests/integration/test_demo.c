/*
 * `recpipe demo` and `recpipe serve` end to end, as a user runs them: the demo on the
 * bundled ml-latest-small (import, build, serve, recommendations, real-time feedback)
 * within two minutes; then `serve` on the demo's bundle called by the Python example
 * client (Debian python3-grpcio) and the Node example client (@grpc/grpc-js, from
 * examples/node/node_modules, which scripts/setup-deps.sh installs); one SIGINT stops
 * every service.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "test_gateway_harness.h"

static char *work;

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return strdup("");
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return strdup(buf);
}

/* Runs a shell command; returns its exit status. */
static int sh(const char *cmd)
{
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_demo_ready_within_two_minutes(void **state)
{
    (void)state;
    char out[400], cmd[1400], port[16];
    snprintf(out, sizeof out, "%s/demo.out", work);
    snprintf(port, sizeof port, "%d", th_free_port());
    snprintf(cmd, sizeof cmd, "'%s' demo --no-wait --listen 127.0.0.1:%s --work '%s/demo' > '%s' 2>&1",
             th_bin(), port, work, out);
    uint64_t t0 = rp_now_ns();
    int rc = sh(cmd);
    double secs = (double)(rp_now_ns() - t0) / 1e9;
    char *text = slurp(out);
    if (rc != 0) {
        fprintf(stderr, "%s\n", text);
        fail_msg("recpipe demo exited %d", rc);
    }
    fprintf(stderr, "demo: %.1f s end to end\n", secs);
    assert_true(secs < 120);
    assert_non_null(strstr(text, "[4/4]"));
    assert_non_null(strstr(text, " user 3\n"));
    assert_non_null(strstr(text, " user 68\n"));
    assert_non_null(strstr(text, "because you rated"));
    assert_non_null(strstr(text, "Horror movies in the top 10:"));
    assert_non_null(strstr(text, "Ready in"));
    /* The list changed toward the genre: "N before the feedback, M after" with M > N. */
    const char *p = strstr(text, "Horror movies in the top 10:");
    int before = -1, after = -1;
    assert_int_equal(sscanf(p, "Horror movies in the top 10: %d before the feedback, %d after", &before,
                            &after),
                     2);
    assert_true(after > before);
    free(text);
}

static void test_serve_with_python_and_node_clients(void **state)
{
    (void)state;
    char bundle[400], st[400], log[400], addr[64], cmd[2400], out[400];
    snprintf(bundle, sizeof bundle, "%s/demo/bundle", work);
    snprintf(st, sizeof st, "%s/demo/state", work);
    snprintf(log, sizeof log, "%s/serve.log", work);
    snprintf(out, sizeof out, "%s/client.out", work);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", th_free_port());
    const char *argv[] = {"serve", "--bundle", bundle, "--state", st, "--listen", addr, NULL};
    pid_t serve = th_spawn(argv, log);
    rp_client *c;
    assert_int_equal(rp_client_create(NULL, &c, NULL), RP_OK);
    if (!th_wait_serving(c, addr, serve, 60)) {
        th_dump_log(log);
        fail_msg("serve did not become ready");
    }
    /* serve prints its ready line once it has seen the gateway healthy itself. */
    bool ready = false;
    for (int i = 0; i < 100 && !ready; i++) {
        char *l = slurp(log);
        ready = strstr(l, "recpipe serve: ready: gateway on") != NULL;
        free(l);
        if (!ready) rp_sleep_ns(100000000ull);
    }
    assert_true(ready);

    const char *src = getenv("RECPIPE_SOURCE_DIR");
    assert_non_null(src);
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 '%s/examples/python/recommend.py' --target %s --user 3 "
             "--feedback 1,2,3 --type click --count 5 > '%s' 2>&1",
             src, addr, out);
    int rc = sh(cmd);
    char *text = slurp(out);
    if (rc != 0) fail_msg("python client exited %d:\n%s", rc, text);
    assert_non_null(strstr(text, "feedback: stored 3 event(s)"));
    assert_non_null(strstr(text, "user 3: 5 item(s)"));
    assert_non_null(strstr(text, "  1. "));
    free(text);

    /* The Node client's packages come from scripts/setup-deps.sh (npm ci into
     * examples/node/node_modules, pinned by its package-lock.json): nothing is fetched here. */
    snprintf(cmd, sizeof cmd, "test -d '%s/examples/node/node_modules/@grpc/grpc-js'", src);
    if (sh(cmd) != 0)
        fail_msg("examples/node/node_modules is missing: run scripts/setup-deps.sh (make test does)");
    snprintf(cmd, sizeof cmd,
             "node '%s/examples/node/recommend.js' --target %s --user 68 --feedback 1,2 "
             "--type view --count 4 > '%s' 2>&1",
             src, addr, out);
    rc = sh(cmd);
    text = slurp(out);
    if (rc != 0) fail_msg("node client exited %d:\n%s", rc, text);
    assert_non_null(strstr(text, "feedback: stored 2 event(s)"));
    assert_non_null(strstr(text, "user 68: 4 item(s)"));
    free(text);

    /* One SIGINT stops everything: serve exits 0 and the gateway no longer answers. */
    int status = th_stop(serve, SIGINT);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(th_health(c, addr), 0);
    snprintf(cmd, sizeof cmd, "pgrep -f -- '[-]-state %s' >/dev/null", st);
    assert_int_not_equal(sh(cmd), 0); /* no service of this serve is left */
    rp_client_destroy(c);
}

static int setup(void **state)
{
    (void)state;
    work = th_tmpdir("demo-it");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    th_rmtree(work);
    free(work);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_demo_ready_within_two_minutes),
        cmocka_unit_test(test_serve_with_python_and_node_clients),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
