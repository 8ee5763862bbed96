/* Tests common/src/err.c: the error table, its messages and its gRPC mapping. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <grpc/status.h>
#include <string.h>

#include "rp/err.h"

static void test_codes_are_negative_and_distinct(void **state)
{
    (void)state;
    int codes[] = {RP_EINVAL, RP_ENOMEM, RP_ENOENT, RP_ECORRUPT, RP_ENOBUNDLE, RP_EINTERNAL};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        assert_true(codes[i] < 0);
        for (size_t j = 0; j < i; j++) assert_int_not_equal(codes[i], codes[j]);
    }
}

static void test_messages_carry_the_name(void **state)
{
    (void)state;
    assert_string_equal(rp_strerror(RP_EINVAL), "RP_EINVAL: invalid argument");
    assert_string_equal(rp_err_name(RP_ENOBUNDLE), "RP_ENOBUNDLE");
    assert_string_equal(rp_strerror(RP_OK), "RP_OK: success");
    assert_string_equal(rp_strerror(-9999), "unknown error");
    assert_string_equal(rp_strerror(7), "unknown error");
}

static void test_grpc_mapping(void **state)
{
    (void)state;
    assert_int_equal(rp_err_grpc_status(RP_OK), GRPC_STATUS_OK);
    assert_int_equal(rp_err_grpc_status(RP_EINVAL), GRPC_STATUS_INVALID_ARGUMENT);
    assert_int_equal(rp_err_grpc_status(RP_EPARSE), GRPC_STATUS_INVALID_ARGUMENT);
    assert_int_equal(rp_err_grpc_status(RP_ENOBUNDLE), GRPC_STATUS_UNAVAILABLE);
    assert_int_equal(rp_err_grpc_status(RP_ETOOBIG), GRPC_STATUS_RESOURCE_EXHAUSTED);
    assert_int_equal(rp_err_grpc_status(RP_ETIMEDOUT), GRPC_STATUS_DEADLINE_EXCEEDED);
    assert_int_equal(rp_err_grpc_status(RP_ECORRUPT), GRPC_STATUS_DATA_LOSS);
    assert_int_equal(rp_err_grpc_status(RP_EUNAUTH), GRPC_STATUS_UNAUTHENTICATED);
    assert_int_equal(rp_err_grpc_status(-9999), GRPC_STATUS_UNKNOWN);
}

static void test_errorf_and_prefix(void **state)
{
    (void)state;
    rp_error e;
    rp_error_clear(&e);
    assert_int_equal(e.code, RP_OK);
    int rc = rp_errorf(&e, RP_EINVAL, "k: %u is out of range 1..%u", 0u, 10000u);
    assert_int_equal(rc, RP_EINVAL);
    assert_int_equal(e.code, RP_EINVAL);
    assert_string_equal(e.msg, "k: 0 is out of range 1..10000");
    rp_error_prefix(&e, "Retrieve");
    assert_string_equal(rp_error_text(&e), "Retrieve: k: 0 is out of range 1..10000");
    /* NULL error sinks are allowed everywhere. */
    assert_int_equal(rp_errorf(NULL, RP_ENOENT, "x"), RP_ENOENT);
    rp_error_clear(&e);
    e.code = RP_ENOMEM;
    assert_string_equal(rp_error_text(&e), "RP_ENOMEM: out of memory");
    /* Long messages are truncated, never overflow. */
    char big[2000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    rp_errorf(&e, RP_EINVAL, "%s", big);
    assert_int_equal(strlen(e.msg), sizeof e.msg - 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_codes_are_negative_and_distinct),
        cmocka_unit_test(test_messages_carry_the_name),
        cmocka_unit_test(test_grpc_mapping),
        cmocka_unit_test(test_errorf_and_prefix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
