/* Tests common/src/arena.c: alignment, growth, reset, limits, the protobuf-c allocator. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "rp/arena.h"
#include "rp/err.h"
#include "recpipe/v1/retrieval.pb-c.h"

static void test_alloc_aligned_and_growing(void **state)
{
    (void)state;
    rp_arena *a;
    assert_int_equal(rp_arena_create(256, &a), RP_OK);
    void *prev = NULL;
    for (int i = 1; i < 200; i++) {
        unsigned char *p = rp_arena_alloc(a, (size_t)i);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % 16, 0);
        assert_ptr_not_equal(p, prev);
        memset(p, 0xab, (size_t)i); /* ASan catches overlap/overflow here */
        prev = p;
    }
    /* A request larger than the block size gets its own block. */
    char *big = rp_arena_alloc(a, 100000);
    assert_non_null(big);
    memset(big, 1, 100000);
    assert_true(rp_arena_used(a) >= 100000);
    rp_arena_reset(a);
    assert_int_equal(rp_arena_used(a), 0);
    assert_non_null(rp_arena_alloc(a, 10));
    rp_arena_destroy(a);
    rp_arena_destroy(NULL);
}

static void test_helpers_and_limit(void **state)
{
    (void)state;
    rp_arena *a;
    assert_int_equal(rp_arena_create(0, &a), RP_OK);
    assert_string_equal(rp_arena_strdup(a, "hello"), "hello");
    assert_string_equal(rp_arena_sprintf(a, "%d-%s", 42, "x"), "42-x");
    int *z = rp_arena_calloc(a, 10, sizeof(int));
    for (int i = 0; i < 10; i++) assert_int_equal(z[i], 0);
    assert_null(rp_arena_calloc(a, SIZE_MAX / 2, 4)); /* overflow refused */
    rp_arena_set_limit(a, 4096);
    assert_null(rp_arena_alloc(a, 8192));
    assert_non_null(rp_arena_alloc(a, 64));
    rp_arena_destroy(a);
}

static void test_protobuf_unpack_into_arena(void **state)
{
    (void)state;
    Recpipe__V1__RetrieveRequest req = RECPIPE__V1__RETRIEVE_REQUEST__INIT;
    uint64_t ex[3] = {5, 6, 7};
    req.k = 100;
    req.n_exclude_ids = 3;
    req.exclude_ids = ex;
    uint8_t buf[256];
    size_t n = recpipe__v1__retrieve_request__pack(&req, buf);

    rp_arena *a;
    assert_int_equal(rp_arena_create(0, &a), RP_OK);
    ProtobufCAllocator alloc;
    rp_arena_pb_allocator(a, &alloc);
    Recpipe__V1__RetrieveRequest *out = recpipe__v1__retrieve_request__unpack(&alloc, n, buf);
    assert_non_null(out);
    assert_int_equal(out->k, 100);
    assert_int_equal(out->n_exclude_ids, 3);
    assert_int_equal(out->exclude_ids[2], 7);
    assert_true(rp_arena_used(a) > 0);
    /* Garbage bytes fail to unpack without leaking: the arena owns everything. */
    uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
    assert_null(recpipe__v1__retrieve_request__unpack(&alloc, sizeof junk, junk));
    rp_arena_destroy(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alloc_aligned_and_growing),
        cmocka_unit_test(test_helpers_and_limit),
        cmocka_unit_test(test_protobuf_unpack_into_arena),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
