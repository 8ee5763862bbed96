/* Tests loadtest/src/report.c and svg.c: the JSON parses back with every figure, the
 * SVG is well-formed XML (xmllint) and holds both charts, the table names the figures. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lt/report.h"

static char dir[64];

static int setup(void **state)
{
    (void)state;
    strcpy(dir, "/tmp/lt_report_XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* A result as a 10 s open-loop run at 100/s would give: 1..100 ms latencies. */
static lt_result *fake_result(uint64_t calls, const char *target)
{
    lt_result *r = calloc(1, sizeof *r);
    lt_config_defaults(&r->cfg);
    r->cfg.target = target;
    r->cfg.rate = 100;
    r->cfg.duration_s = 10;
    r->cfg.warmup_s = 2;
    r->open_loop = true;
    rp_hist_reset(&r->latency);
    for (int k = 0; k < LT_RPC_COUNT; k++) rp_hist_reset(&r->by_rpc[k]);
    for (uint64_t i = 0; i < calls; i++) {
        uint64_t ns = (1 + i % 100) * 1000000ull;
        rp_hist_record(&r->latency, ns);
        lt_rpc rpc = i % 10 == 0 ? LT_RPC_FEEDBACK : LT_RPC_RECOMMEND;
        rp_hist_record(&r->by_rpc[rpc], ns);
        r->calls_by_rpc[rpc]++;
    }
    r->measured = calls;
    r->errors = calls / 100;
    r->ok = calls - r->errors;
    r->status[0] = r->ok;
    r->status[4] = r->errors; /* DEADLINE_EXCEEDED */
    r->sent = r->completed = calls + 200;
    r->achieved_rate = (double)calls / 10;
    r->nseconds = calls ? 12 : 0;
    r->seconds = calloc(12, sizeof *r->seconds);
    for (size_t s = 0; s < r->nseconds; s++) {
        r->seconds[s].completed = 100;
        r->seconds[s].p50_ns = 50000000;
        r->seconds[s].p99_ns = s == 6 ? 900000000 : 99000000;
        r->seconds[s].max_ns = 1000000000;
        r->seconds[s].warmup = s < 2;
    }
    return r;
}

static void test_json(void **state)
{
    (void)state;
    lt_result *r = fake_result(1000, "127.0.0.1:50051");
    lt_find_result fm = {.slo_p99_ms = 50, .best_rate = 400, .nsteps = 2};
    fm.steps[0] = (lt_step){.rate = 400, .achieved = 399, .p99_ns = 20000000, .pass = true};
    fm.steps[1] = (lt_step){.rate = 800, .achieved = 700, .p99_ns = 90000000, .pass = false};
    char path[128];
    snprintf(path, sizeof path, "%s/r.json", dir);
    rp_error err = {0};
    assert_int_equal(lt_report_json(path, r, &fm, &err), RP_OK);

    json_object *o = json_object_from_file(path);
    assert_non_null(o);
    json_object *v, *x;
    assert_true(json_object_object_get_ex(o, "summary", &v));
    assert_true(json_object_object_get_ex(v, "measured", &x));
    assert_int_equal(json_object_get_int64(x), 1000);
    assert_true(json_object_object_get_ex(v, "latency_from", &x));
    assert_string_equal(json_object_get_string(x), "intended_start");
    assert_true(json_object_object_get_ex(o, "latency_ms", &v));
    assert_true(json_object_object_get_ex(v, "p99", &x));
    assert_true(fabs(json_object_get_double(x) - 99.0) / 99.0 < 0.01);
    assert_true(json_object_object_get_ex(v, "p99.9", &x));
    assert_true(json_object_object_get_ex(v, "max", &x));
    assert_true(fabs(json_object_get_double(x) - 100.0) < 1e-9);
    assert_true(json_object_object_get_ex(o, "status", &v));
    assert_true(json_object_object_get_ex(v, "DEADLINE_EXCEEDED", &x));
    assert_int_equal(json_object_get_int64(x), 10);
    assert_true(json_object_object_get_ex(o, "by_rpc", &v));
    assert_true(json_object_object_get_ex(v, "feedback", &x));
    assert_true(json_object_object_get_ex(o, "timeline", &v));
    assert_int_equal(json_object_array_length(v), 12);
    x = json_object_array_get_idx(v, 6);
    json_object *p99;
    assert_true(json_object_object_get_ex(x, "p99_ms", &p99));
    assert_true(fabs(json_object_get_double(p99) - 900.0) < 1e-9);
    assert_true(json_object_object_get_ex(o, "spectrum", &v));
    assert_true(json_object_array_length(v) > 10);
    assert_true(json_object_object_get_ex(o, "histogram", &v));
    int64_t total = 0;
    for (size_t i = 0; i < json_object_array_length(v); i++) {
        json_object *c;
        assert_true(json_object_object_get_ex(json_object_array_get_idx(v, i), "count", &c));
        total += json_object_get_int64(c);
    }
    assert_int_equal(total, 1000);
    assert_true(json_object_object_get_ex(o, "find_max", &v));
    assert_true(json_object_object_get_ex(v, "best_rate", &x));
    assert_true(json_object_get_double(x) == 400);
    json_object_put(o);

    /* An unwritable path is named in the error. */
    assert_int_equal(lt_report_json("/nonexistent/dir/r.json", r, NULL, &err), RP_EIO);
    assert_non_null(strstr(err.msg, "/nonexistent/dir/r.json"));
    lt_result_free(r);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = '\0';
    fclose(f);
    return s;
}

static void check_svg(const lt_result *r, const char *name)
{
    char path[128], cmd[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    rp_error err = {0};
    assert_int_equal(lt_report_svg(path, r, &err), RP_OK);
    snprintf(cmd, sizeof cmd, "xmllint --noout %s", path);
    if (system(cmd) != 0) fail_msg("xmllint rejects %s", path);
    char *s = slurp(path);
    assert_non_null(strstr(s, "<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert_non_null(strstr(s, "<g id=\"spectrum\">"));
    assert_non_null(strstr(s, "<g id=\"timeline\">"));
    /* Self-contained: no scripts, no external references. */
    assert_null(strstr(s, "<script"));
    assert_null(strstr(s, "href"));
    free(s);
}

static void test_svg(void **state)
{
    (void)state;
    lt_result *r = fake_result(1000, "gateway&co:50051 <x>");
    check_svg(r, "full.svg");
    char path[128];
    snprintf(path, sizeof path, "%s/full.svg", dir);
    char *s = slurp(path);
    /* Both charts carry data: the latency curve and the rate and p99 series. */
    assert_non_null(strstr(s, "class=\"lat\" points=\""));
    assert_non_null(strstr(s, "class=\"rate\" points=\""));
    assert_non_null(strstr(s, "class=\"p99\" points=\""));
    assert_non_null(strstr(s, "gateway&amp;co:50051 &lt;x&gt;"));
    free(s);
    lt_result_free(r);

    /* A run that measured nothing still gives a valid picture. */
    r = fake_result(0, "127.0.0.1:1");
    check_svg(r, "empty.svg");
    lt_result_free(r);
}

static void test_text(void **state)
{
    (void)state;
    lt_result *r = fake_result(1000, "127.0.0.1:50051");
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    lt_report_text(f, r);
    fclose(f);
    for (const char *want = "p50\0p90\0p99\0p99.9\0max\0DEADLINE_EXCEEDED 10\0achieved\0feedback\0";
         *want; want += strlen(want) + 1)
        if (!strstr(buf, want)) fail_msg("the table lacks '%s':\n%s", want, buf);
    free(buf);
    lt_result_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_svg),
        cmocka_unit_test(test_text),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
