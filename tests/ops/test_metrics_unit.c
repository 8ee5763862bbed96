/*
 * The metrics registry (rp/metrics.h) and the log pseudonyms (rp/ops.h) in process:
 * exposition text (types, help, label escaping, cumulative histogram buckets, +Inf,
 * hidden info series), the same family returned twice, a type clash refused, counts
 * exact under concurrent updates from several threads, the HTTP endpoint answering a
 * real socket, and HMAC pseudonyms that are stable for a key and change with it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rp/log.h"
#include "rp/metrics.h"
#include "rp/ops.h"

static void test_exposition(void **state)
{
    (void)state;
    rp_metric *c = rp_metric_family(RP_METRIC_COUNTER, "t_calls_total", "Calls.\nSecond line",
                                    "method,code", NULL, 0);
    assert_non_null(c);
    assert_ptr_equal(rp_metric_family(RP_METRIC_COUNTER, "t_calls_total", "x", "method,code", NULL, 0), c);
    assert_null(rp_metric_family(RP_METRIC_GAUGE, "t_calls_total", "x", "method,code", NULL, 0));
    assert_null(rp_metric_family(RP_METRIC_GAUGE, "bad name", "x", NULL, NULL, 0));
    rp_counter_add(rp_metric_series2(c, "/a\"b\\c", "OK"), 2);
    rp_counter_inc(rp_metric_series2(c, "/a\"b\\c", "OK"));
    const double b[] = {0.1, 1};
    rp_metric *h = rp_metric_family(RP_METRIC_HISTOGRAM, "t_seconds", "Latency.", NULL, b, 2);
    rp_series *hs = rp_metric_series0(h);
    rp_histogram_observe(hs, 0.05);
    rp_histogram_observe(hs, 0.5);
    rp_histogram_observe(hs, 0.5);
    rp_histogram_observe(hs, 7);
    rp_metric *info = rp_metric_family(RP_METRIC_GAUGE, "t_info", "Info.", "service,version", NULL, 0);
    rp_gauge_set(rp_metric_series2(info, "svc", "v1"), 1);
    rp_metric_hide_where(info, "svc");
    rp_gauge_set(rp_metric_series2(info, "svc", "v2"), 1);

    size_t len = 0;
    char *text = rp_metrics_render(&len);
    assert_non_null(text);
    assert_int_equal(strlen(text), len);
    assert_non_null(strstr(text, "# HELP t_calls_total Calls.\\nSecond line\n# TYPE t_calls_total counter\n"));
    assert_non_null(strstr(text, "t_calls_total{method=\"/a\\\"b\\\\c\",code=\"OK\"} 3\n"));
    assert_non_null(strstr(text, "# TYPE t_seconds histogram\n"));
    assert_non_null(strstr(text, "t_seconds_bucket{le=\"0.1\"} 1\n"));
    assert_non_null(strstr(text, "t_seconds_bucket{le=\"1\"} 3\n"));
    assert_non_null(strstr(text, "t_seconds_bucket{le=\"+Inf\"} 4\n"));
    assert_non_null(strstr(text, "t_seconds_sum 8.05\n"));
    assert_non_null(strstr(text, "t_seconds_count 4\n"));
    assert_non_null(strstr(text, "t_info{service=\"svc\",version=\"v2\"} 1\n"));
    assert_null(strstr(text, "version=\"v1\""));
    assert_non_null(strstr(text, "\nprocess_resident_memory_bytes "));
    free(text);
}

static rp_series *shared;
static void *adder(void *arg)
{
    (void)arg;
    for (int i = 0; i < 100000; i++) rp_counter_inc(shared);
    return NULL;
}

static void test_concurrent(void **state)
{
    (void)state;
    shared = rp_metric_series0(rp_metric_family(RP_METRIC_COUNTER, "t_race_total", "Race.", NULL, NULL, 0));
    pthread_t th[4];
    for (int i = 0; i < 4; i++) assert_int_equal(pthread_create(&th[i], NULL, adder, NULL), 0);
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    assert_true(rp_series_value(shared) == 400000.0);
}

static void test_http(void **state)
{
    (void)state;
    rp_error err = {0};
    int port = 0;
    assert_int_equal(rp_metrics_http_start("127.0.0.1:0", &port, &err), RP_OK);
    assert_true(port > 0);
    assert_int_equal(rp_metrics_http_port(), port);
    assert_int_equal(rp_metrics_http_start("127.0.0.1:0", NULL, &err), RP_EINVAL);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    const char req[] = "GET /metrics HTTP/1.0\r\n\r\n";
    assert_int_equal(write(fd, req, sizeof req - 1), (ssize_t)(sizeof req - 1));
    char buf[65536];
    size_t n = 0;
    ssize_t r;
    while (n < sizeof buf - 1 && (r = read(fd, buf + n, sizeof buf - 1 - n)) > 0) n += (size_t)r;
    buf[n] = '\0';
    close(fd);
    assert_non_null(strstr(buf, "200 OK"));
    assert_non_null(strstr(buf, "text/plain; version=0.0.4"));
    assert_non_null(strstr(buf, "process_cpu_seconds_total"));
    rp_metrics_http_stop();
    assert_int_equal(rp_metrics_http_port(), 0);
    assert_int_equal(rp_metrics_http_start("nonsense", NULL, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "--metrics-listen"));
}

static void test_pseudonyms(void **state)
{
    (void)state;
    char a[17], b[17], c[17];
    assert_int_equal(rp_log_set_user_key("k1", 2), RP_OK);
    rp_log_user_id(42, a);
    rp_log_user_id(42, b);
    rp_log_user_id(43, c);
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);
    assert_int_equal(strlen(a), 16);
    assert_int_equal(strspn(a, "0123456789abcdef"), 16);
    assert_null(strstr(a, "42"));
    assert_int_equal(rp_log_set_user_key("k2", 2), RP_OK);
    rp_log_user_id(42, b);
    assert_string_not_equal(a, b);
    /* HMAC-SHA256("k1", "42") — computed with `openssl dgst -sha256 -hmac k1`. */
    assert_int_equal(rp_log_set_user_key("k1", 2), RP_OK);
    FILE *p = popen("printf 42 | openssl dgst -sha256 -hmac k1 -r 2>/dev/null", "r");
    char line[200] = "";
    if (p && fgets(line, sizeof line, p)) {
        line[16] = '\0';
        assert_string_equal(rp_log_user_id(42, a), line);
    }
    if (p) pclose(p);
    /* Without a key: a random one, still stable within the process. */
    assert_int_equal(rp_log_set_user_key(NULL, 0), RP_OK);
    assert_string_equal(rp_log_user_id(7, a), rp_log_user_id(7, b));
}

static void test_bearer(void **state)
{
    (void)state;
    rp_error err = {0};
    assert_int_equal(rp_check_bearer("Bearer abc", "abc", "X", &err), RP_OK);
    assert_int_equal(rp_check_bearer(NULL, "abc", "X", &err), RP_EUNAUTH);
    assert_int_equal(rp_check_bearer("Basic abc", "abc", "X", &err), RP_EUNAUTH);
    assert_int_equal(rp_check_bearer("Bearer ", "abc", "X", &err), RP_EUNAUTH);
    assert_int_equal(rp_check_bearer("Bearer abd", "abc", "X", &err), RP_EDENIED);
    assert_int_equal(rp_check_bearer("Bearer abcd", "abc", "X", &err), RP_EDENIED);
    assert_null(strstr(err.msg, "abc"));
}

int main(void)
{
    rp_log_set_level(RP_LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exposition), cmocka_unit_test(test_concurrent),
        cmocka_unit_test(test_http),       cmocka_unit_test(test_pseudonyms),
        cmocka_unit_test(test_bearer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
