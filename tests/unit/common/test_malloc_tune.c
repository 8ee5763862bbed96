/* Tests rp_malloc_tune (common/src/rpc_server.c): blocks of 128 KiB and more are mmapped
 * (and so go back to the kernel when freed) even after glibc raised its dynamic mmap
 * threshold, which it does when an mmapped block is freed, as a bundle load does before
 * the server starts. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include "rp/rpc.h"

#if defined(__SANITIZE_ADDRESS__)
#define RP_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RP_ASAN 1
#endif
#endif

static void test_big_blocks_are_mmapped(void **state)
{
    (void)state;
#ifdef RP_ASAN
    skip(); /* the sanitizer's allocator replaces glibc's: mallinfo2 says nothing */
#endif
    const char *tun = getenv("GLIBC_TUNABLES");
    if (tun && strstr(tun, "malloc")) skip(); /* the operator's settings win */
    /* What a load does: an mmapped 4 MiB buffer freed raises glibc's threshold to 4 MiB. */
    char *big = malloc(4u << 20);
    assert_non_null(big);
    memset(big, 1, 4u << 20);
    free(big);
    rp_malloc_tune();
    struct mallinfo2 before = mallinfo2();
    char *p = malloc(256u << 10);
    assert_non_null(p);
    memset(p, 2, 256u << 10);
    struct mallinfo2 during = mallinfo2();
    assert_int_equal(during.hblks, before.hblks + 1);
    assert_true(during.hblkhd >= before.hblkhd + (256u << 10));
    free(p);
    struct mallinfo2 after = mallinfo2();
    assert_int_equal(after.hblks, before.hblks);
    assert_int_equal(after.hblkhd, before.hblkhd);
    /* Below 128 KiB: the heap. */
    char *small = malloc(64u << 10);
    assert_non_null(small);
    assert_int_equal(mallinfo2().hblks, before.hblks);
    free(small);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_big_blocks_are_mmapped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
