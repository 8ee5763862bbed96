/* Tests common/src/log.c: every line is one JSON object with the documented members. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rp/clock.h"

#include "rp/err.h"
#include "rp/log.h"

/* Logs through a pipe and returns the parsed lines. */
static int capture(char *buf, size_t cap, void (*emit)(void))
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    rp_log_set_fd(fds[1]);
    emit();
    rp_log_set_fd(2);
    close(fds[1]);
    ssize_t n = read(fds[0], buf, cap - 1);
    close(fds[0]);
    assert_true(n > 0);
    buf[n] = '\0';
    return (int)n;
}

static void emit_basic(void)
{
    rp_log_set_level(RP_LOG_INFO);
    rp_log_set_request_id("req-1");
    rp_info("rpc", "call \"%s\" done\n", "x");
    rp_debug("rpc", "not shown");
    rp_log_set_request_id(NULL);
    rp_logx(RP_LOG_WARN, "gw", "\"status\":3", "degraded");
}

static void test_lines_are_json(void **state)
{
    (void)state;
    char buf[8192];
    capture(buf, sizeof buf, emit_basic);
    char *save = NULL;
    char *l1 = strtok_r(buf, "\n", &save);
    char *l2 = strtok_r(NULL, "\n", &save);
    assert_non_null(l1);
    assert_non_null(l2);
    assert_null(strtok_r(NULL, "\n", &save)); /* the debug line was filtered */

    json_object *o = json_tokener_parse(l1);
    assert_non_null(o);
    json_object *v;
    assert_true(json_object_object_get_ex(o, "level", &v));
    assert_string_equal(json_object_get_string(v), "info");
    assert_true(json_object_object_get_ex(o, "component", &v));
    assert_string_equal(json_object_get_string(v), "rpc");
    assert_true(json_object_object_get_ex(o, "msg", &v));
    assert_string_equal(json_object_get_string(v), "call \"x\" done\n");
    assert_true(json_object_object_get_ex(o, "request_id", &v));
    assert_string_equal(json_object_get_string(v), "req-1");
    assert_true(json_object_object_get_ex(o, "ts", &v));
    json_object_put(o);

    o = json_tokener_parse(l2);
    assert_non_null(o);
    assert_false(json_object_object_get_ex(o, "request_id", &v));
    assert_true(json_object_object_get_ex(o, "status", &v));
    assert_int_equal(json_object_get_int(v), 3);
    json_object_put(o);
}

static void test_parse_level(void **state)
{
    (void)state;
    rp_log_level l;
    assert_int_equal(rp_log_parse_level("debug", &l), RP_OK);
    assert_int_equal(l, RP_LOG_DEBUG);
    assert_int_equal(rp_log_parse_level("WARN", &l), RP_OK);
    assert_int_equal(l, RP_LOG_WARN);
    assert_int_equal(rp_log_parse_level("loud", &l), RP_EINVAL);
}

/* The log thread: with nobody reading the log, callers still return at once (lines past
 * the 1 MiB ring are dropped); once the reader reads, every kept line arrives whole and
 * in order, then the count of dropped ones. Runs last: the log thread stays on. */
static void test_async_never_blocks(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    rp_log_set_fd(fds[1]);
    rp_log_set_level(RP_LOG_INFO);
    assert_int_equal(rp_log_async_start(), RP_OK);
    assert_int_equal(rp_log_async_start(), RP_OK); /* idempotent */
    /* ~200-byte lines: 3 MB in all, against a 64 KiB pipe nobody reads yet. */
    enum { N = 15000 };
    uint64_t t0 = rp_now_ns();
    for (int i = 0; i < N; i++) rp_info("test", "line %06d %0150d", i, 0);
    double secs = (double)(rp_now_ns() - t0) / 1e9;
    fprintf(stderr, "%d lines logged in %.3f s with the reader stopped\n", N, secs);
    assert_true(secs < 5.0); /* a blocking write would hang here for good */

    /* Read everything while the log thread catches up. */
    size_t cap = 8u << 20, len = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    int fl = fcntl(fds[0], F_GETFL);
    fcntl(fds[0], F_SETFL, fl | O_NONBLOCK);
    uint64_t quiet_since = rp_now_ns();
    while (rp_now_ns() - quiet_since < 500000000ull && len < cap - 1) {
        ssize_t n = read(fds[0], buf + len, cap - 1 - len);
        if (n > 0) {
            len += (size_t)n;
            quiet_since = rp_now_ns();
        } else {
            rp_sleep_ns(5000000ull);
        }
    }
    buf[len] = '\0';
    rp_log_set_fd(2);
    int lines = 0, last = -1, dropped_notes = 0;
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        json_object *o = json_tokener_parse(line);
        if (!o) fail_msg("not a whole JSON line: %.80s", line);
        json_object *msg, *ts;
        assert_true(json_object_object_get_ex(o, "msg", &msg));
        /* every line, the log thread's own note too, says when */
        assert_true(json_object_object_get_ex(o, "ts", &ts));
        assert_int_equal(strlen(json_object_get_string(ts)), strlen("2026-01-02T03:04:05.678Z"));
        int k;
        if (sscanf(json_object_get_string(msg), "line %d", &k) == 1) {
            if (k <= last) fail_msg("line %d after line %d", k, last);
            last = k;
            lines++;
        } else if (strstr(json_object_get_string(msg), "log lines dropped")) {
            dropped_notes++;
        }
        json_object_put(o);
    }
    fprintf(stderr, "%d of %d lines written, %d drop notes\n", lines, N, dropped_notes);
    assert_true(lines >= 4000);     /* the ring and the pipe were full */
    assert_true(lines < N);         /* ... so some were dropped */
    assert_true(dropped_notes >= 1); /* and that was said */
    free(buf);
    close(fds[0]);
    close(fds[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lines_are_json),
        cmocka_unit_test(test_parse_level),
        cmocka_unit_test(test_async_never_blocks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
