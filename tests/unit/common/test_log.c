/* Tests common/src/log.c: every line is one JSON object with the documented members. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <json-c/json.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lines_are_json),
        cmocka_unit_test(test_parse_level),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
