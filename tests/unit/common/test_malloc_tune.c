/* Tests rp_malloc_tune (common/src/rpc_server.c): blocks of 128 KiB and more are mmapped
 * (and so go back to the kernel when freed) even after glibc raised its dynamic mmap
 * threshold, which it does when an mmapped block is freed, as a bundle load does before
 * the server starts; and the threads share at most one malloc arena per two cores. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <malloc.h>
#include <pthread.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "rp/rpc.h"
#include "rp/threads.h"

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

enum { NTHREADS = 8 };
static pthread_barrier_t hold;
static void *block[NTHREADS];

static void *allocate_and_wait(void *arg)
{
    size_t i = (size_t)(uintptr_t)arg;
    block[i] = malloc(1000); /* a thread's first allocation picks (or makes) its arena */
    memset(block[i], 3, 1000);
    pthread_barrier_wait(&hold);
    pthread_barrier_wait(&hold);
    free(block[i]);
    return NULL;
}

/* The arenas the blocks came from: the main arena's blocks lie below the program break;
 * a thread arena's heap is aligned to its maximum size, 64 MiB on 64-bit glibc. */
static int arenas(void)
{
    uintptr_t brk_end = (uintptr_t)sbrk(0), seen[NTHREADS];
    int n = 0, main_arena = 0;
    for (int i = 0; i < NTHREADS; i++) {
        uintptr_t p = (uintptr_t)block[i];
        if (p < brk_end) {
            main_arena = 1;
            continue;
        }
        uintptr_t heap = p & ~(((uintptr_t)64 << 20) - 1);
        int known = 0;
        for (int j = 0; j < n && !known; j++) known = seen[j] == heap;
        if (!known) seen[n++] = heap;
    }
    return n + main_arena;
}

static void test_threads_share_arenas(void **state)
{
    (void)state;
#ifdef RP_ASAN
    skip();
#endif
    const char *tun = getenv("GLIBC_TUNABLES");
    if (tun && strstr(tun, "malloc")) skip();
    rp_malloc_tune();
    int cores = rp_ncores();
    int limit = cores / 2 > 1 ? cores / 2 : 1;
    pthread_t t[NTHREADS];
    assert_int_equal(pthread_barrier_init(&hold, NULL, NTHREADS + 1), 0);
    for (int i = 0; i < NTHREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, allocate_and_wait, (void *)(uintptr_t)i), 0);
    pthread_barrier_wait(&hold); /* every thread holds a block */
    int n = arenas();
    pthread_barrier_wait(&hold);
    for (int i = 0; i < NTHREADS; i++) pthread_join(t[i], NULL);
    pthread_barrier_destroy(&hold);
    /* glibc's default is up to 8 arenas per core: one per thread here. */
    assert_true(n >= 1);
    assert_true(n <= limit);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_big_blocks_are_mmapped),
        cmocka_unit_test(test_threads_share_arenas),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
