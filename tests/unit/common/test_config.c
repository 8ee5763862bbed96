/* Tests common/src/config.c: flags over environment over defaults, bounds, help. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rp/config.h"

static const char *listen_addr;
static int64_t k;
static double alpha, deadline;
static bool verbose;

static const rp_opt opts[] = {
    {"listen", RP_OPT_STR, &listen_addr, "127.0.0.1:7000", 0, 0, "address to listen on", false},
    {"k", RP_OPT_INT, &k, "10", 1, 10000, "how many", false},
    {"alpha", RP_OPT_DOUBLE, &alpha, "5", 0, 1000, "confidence scale", false},
    {"deadline", RP_OPT_DURATION, &deadline, "100ms", 0, 60, "deadline", false},
    {"verbose", RP_OPT_BOOL, &verbose, "false", 0, 0, "say more", false},
};
#define NOPTS (sizeof opts / sizeof opts[0])

static int parse(int argc, char **argv, rp_error *err)
{
    char *pos[4];
    size_t npos = 0;
    return rp_config_parse(opts, NOPTS, argc, argv, pos, 4, &npos, err);
}

static int clear_env(void **state)
{
    (void)state;
    unsetenv("RECPIPE_LISTEN");
    unsetenv("RECPIPE_K");
    return 0;
}

static void test_defaults(void **state)
{
    (void)state;
    rp_error err = {0};
    assert_int_equal(parse(0, NULL, &err), RP_OK);
    assert_string_equal(listen_addr, "127.0.0.1:7000");
    assert_int_equal(k, 10);
    assert_true(alpha == 5.0);
    assert_true(deadline > 0.0999 && deadline < 0.1001);
    assert_false(verbose);
}

static void test_env_then_flags(void **state)
{
    (void)state;
    rp_error err = {0};
    setenv("RECPIPE_K", "42", 1);
    setenv("RECPIPE_LISTEN", "0.0.0.0:1", 1);
    assert_int_equal(parse(0, NULL, &err), RP_OK);
    assert_int_equal(k, 42);
    assert_string_equal(listen_addr, "0.0.0.0:1");
    char *argv[] = {"--k", "7", "--listen=127.0.0.1:9", "--verbose", "--deadline", "2s"};
    assert_int_equal(parse(6, argv, &err), RP_OK);
    assert_int_equal(k, 7);
    assert_string_equal(listen_addr, "127.0.0.1:9");
    assert_true(verbose);
    assert_true(deadline == 2.0);
    char *argv2[] = {"--verbose=false"};
    assert_int_equal(parse(1, argv2, &err), RP_OK);
    assert_false(verbose);
}

static void test_bad_values_name_the_flag(void **state)
{
    (void)state;
    rp_error err = {0};
    char *a1[] = {"--k", "0"};
    assert_int_equal(parse(2, a1, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "--k"));
    assert_non_null(strstr(err.msg, "1..10000"));
    char *a2[] = {"--k", "ten"};
    assert_int_equal(parse(2, a2, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "not an integer"));
    char *a3[] = {"--alpha", "nan"};
    assert_int_equal(parse(2, a3, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "--alpha"));
    char *a4[] = {"--nope"};
    assert_int_equal(parse(1, a4, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "unknown option '--nope'"));
    char *a5[] = {"--k"};
    assert_int_equal(parse(1, a5, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "needs a value"));
    char *a6[] = {"--deadline", "soon"};
    assert_int_equal(parse(2, a6, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "not a duration"));
    setenv("RECPIPE_K", "99999", 1);
    assert_int_equal(parse(0, NULL, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "RECPIPE_K"));
}

static void test_help_and_positionals(void **state)
{
    (void)state;
    rp_error err = {0};
    char *a1[] = {"--help"};
    assert_int_equal(parse(1, a1, &err), RP_CONFIG_HELP);
    char *pos[1];
    size_t npos = 0;
    char *a2[] = {"one", "two"};
    assert_int_equal(rp_config_parse(opts, NOPTS, 2, a2, pos, 1, &npos, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "unexpected argument 'two'"));
    assert_int_equal(rp_config_parse(opts, NOPTS, 1, a2, pos, 1, &npos, &err), RP_OK);
    assert_int_equal(npos, 1);
    assert_string_equal(pos[0], "one");

    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    rp_config_help(f, opts, NOPTS);
    fclose(f);
    assert_non_null(strstr(buf, "--listen"));
    assert_non_null(strstr(buf, "RECPIPE_LISTEN"));
    assert_non_null(strstr(buf, "[default: 127.0.0.1:7000]"));
    assert_non_null(strstr(buf, "[range: 1..10000]"));
    free(buf);
}

static void test_durations(void **state)
{
    (void)state;
    double s;
    assert_int_equal(rp_parse_duration("250ms", &s), RP_OK);
    assert_true(s > 0.2499 && s < 0.2501);
    assert_int_equal(rp_parse_duration("5m", &s), RP_OK);
    assert_true(s == 300);
    assert_int_equal(rp_parse_duration("1.5", &s), RP_OK);
    assert_true(s == 1.5);
    assert_int_equal(rp_parse_duration("-1s", &s), RP_EINVAL);
    assert_int_equal(rp_parse_duration("3days", &s), RP_EINVAL);
    assert_int_equal(rp_parse_duration("", &s), RP_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_defaults, clear_env),
        cmocka_unit_test_setup(test_env_then_flags, clear_env),
        cmocka_unit_test_setup(test_bad_values_name_the_flag, clear_env),
        cmocka_unit_test_setup(test_help_and_positionals, clear_env),
        cmocka_unit_test(test_durations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
