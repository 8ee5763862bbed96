/* Tests gateway/src/cache.c: hits, misses, TTL, LRU bounds, single flight, stale while
 * revalidate, drop_user. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "gw/cache.h"
#include "rp/clock.h"

static gw_cache_key key(uint64_t user, uint64_t fp, uint64_t ver)
{
    return (gw_cache_key){.user_id = user, .fingerprint = fp, .state_version = ver, .generation = 1};
}

static void test_miss_fill_hit_and_version(void **state)
{
    (void)state;
    gw_cache *c;
    rp_arena *a;
    assert_int_equal(gw_cache_create(NULL, &c), RP_OK);
    assert_int_equal(rp_arena_create(0, &a), RP_OK);
    gw_cache_key k = key(1, 42, 7);
    void *v;
    size_t len;
    uint64_t t = 1000;
    assert_int_equal(gw_cache_get(c, &k, t, UINT64_MAX, a, &v, &len), GW_CACHE_LEAD);
    gw_cache_fill(c, &k, t, "answer", 7);
    assert_int_equal(gw_cache_get(c, &k, t + 1, UINT64_MAX, a, &v, &len), GW_CACHE_HIT);
    assert_int_equal(len, 7);
    assert_string_equal(v, "answer");
    /* A new state version (after Feedback) or bundle is a different key. */
    gw_cache_key k2 = key(1, 42, 8);
    assert_int_equal(gw_cache_get(c, &k2, t, UINT64_MAX, a, &v, &len), GW_CACHE_LEAD);
    gw_cache_abandon(c, &k2);
    k2 = k;
    k2.generation = 2;
    assert_int_equal(gw_cache_get(c, &k2, t, UINT64_MAX, a, &v, &len), GW_CACHE_LEAD);
    gw_cache_abandon(c, &k2);
    /* An abandoned flight leaves nothing: the next lookup leads again. */
    assert_int_equal(gw_cache_get(c, &k2, t, UINT64_MAX, a, &v, &len), GW_CACHE_LEAD);
    gw_cache_abandon(c, &k2);
    gw_cache_stats s;
    gw_cache_get_stats(c, &s);
    assert_int_equal(s.hits, 1);
    assert_int_equal(s.misses, 4);
    assert_int_equal(s.entries, 1);
    assert_int_equal(s.bytes, 7);
    rp_arena_destroy(a);
    gw_cache_destroy(c);
    gw_cache_destroy(NULL);
}

static void test_ttl_expires(void **state)
{
    (void)state;
    gw_cache *c;
    rp_arena *a;
    gw_cache_config cfg = {.ttl_s = 0.5};
    assert_int_equal(gw_cache_create(&cfg, &c), RP_OK);
    assert_int_equal(rp_arena_create(0, &a), RP_OK);
    gw_cache_key k = key(1, 1, 1);
    void *v;
    size_t len;
    uint64_t t = 5000000000ull;
    assert_int_equal(gw_cache_get(c, &k, t, UINT64_MAX, a, &v, &len), GW_CACHE_LEAD);
    gw_cache_fill(c, &k, t, "x", 1);
    assert_int_equal(gw_cache_get(c, &k, t + 400000000ull, UINT64_MAX, a, &v, &len), GW_CACHE_HIT);
    assert_int_equal(gw_cache_get(c, &k, t + 600000000ull, UINT64_MAX, a, &v, &len), GW_CACHE_LEAD);
    gw_cache_stats s;
    gw_cache_get_stats(c, &s);
    assert_int_equal(s.expired, 1);
    assert_int_equal(s.entries, 1); /* kept as the fallback while it is recomputed */
    gw_cache_abandon(c, &k);
    /* Past TTL + stale (0.5 + 0.5 s) it is dropped, not served: the lookup leads and a
     * second one waits for it. */
    assert_int_equal(gw_cache_get(c, &k, t + 1100000000ull, UINT64_MAX, a, &v, &len), GW_CACHE_LEAD);
    uint64_t t0 = rp_now_ns();
    assert_int_equal(gw_cache_get(c, &k, t + 1100000000ull, t0 + 5000000ull, a, &v, &len),
                     RP_ETIMEDOUT);
    gw_cache_get_stats(c, &s);
    assert_int_equal(s.entries, 0);
    assert_int_equal(s.stale, 0);
    gw_cache_abandon(c, &k);
    rp_arena_destroy(a);
    gw_cache_destroy(c);
}

static void test_lru_bounds_evict_least_recent(void **state)
{
    (void)state;
    gw_cache *c;
    rp_arena *a;
    gw_cache_config cfg = {.max_entries = 3, .max_bytes = 1000};
    assert_int_equal(gw_cache_create(&cfg, &c), RP_OK);
    assert_int_equal(rp_arena_create(0, &a), RP_OK);
    void *v;
    size_t len;
    for (uint64_t u = 1; u <= 3; u++) {
        gw_cache_key k = key(u, 0, 0);
        assert_int_equal(gw_cache_get(c, &k, 1, UINT64_MAX, a, &v, &len), GW_CACHE_LEAD);
        gw_cache_fill(c, &k, 1, "abc", 3);
    }
    gw_cache_key k1 = key(1, 0, 0), k2 = key(2, 0, 0), k4 = key(4, 0, 0);
    assert_int_equal(gw_cache_get(c, &k1, 2, UINT64_MAX, a, &v, &len), GW_CACHE_HIT); /* 1 recent */
    assert_int_equal(gw_cache_get(c, &k4, 2, UINT64_MAX, a, &v, &len), GW_CACHE_LEAD);
    gw_cache_fill(c, &k4, 2, "abc", 3); /* evicts 2, the least recently used */
    assert_int_equal(gw_cache_get(c, &k1, 3, UINT64_MAX, a, &v, &len), GW_CACHE_HIT);
    assert_int_equal(gw_cache_get(c, &k2, 3, UINT64_MAX, a, &v, &len), GW_CACHE_LEAD);
    gw_cache_abandon(c, &k2);
    /* A value bigger than the byte bound pushes everything else out. */
    char big[900];
    memset(big, 'z', sizeof big);
    gw_cache_key k5 = key(5, 0, 0);
    assert_int_equal(gw_cache_get(c, &k5, 4, UINT64_MAX, a, &v, &len), GW_CACHE_LEAD);
    gw_cache_fill(c, &k5, 4, big, sizeof big);
    gw_cache_stats s;
    gw_cache_get_stats(c, &s);
    assert_true(s.bytes <= 1000);
    assert_true(s.evictions >= 2);
    assert_int_equal(gw_cache_get(c, &k5, 5, UINT64_MAX, a, &v, &len), GW_CACHE_HIT);
    assert_int_equal(len, 900);
    /* drop_user removes only that user's answers. */
    assert_int_equal(gw_cache_drop_user(c, 5), 1);
    assert_int_equal(gw_cache_get(c, &k5, 6, UINT64_MAX, a, &v, &len), GW_CACHE_LEAD);
    gw_cache_abandon(c, &k5);
    rp_arena_destroy(a);
    gw_cache_destroy(c);
}

typedef struct flight_ctx {
    gw_cache *c;
    atomic_int computed;
    atomic_int hits;
} flight_ctx;

static void *flyer(void *arg)
{
    flight_ctx *f = arg;
    rp_arena *a;
    rp_arena_create(0, &a);
    gw_cache_key k = key(3, 3, 3);
    void *v;
    size_t len;
    int rc = gw_cache_get(f->c, &k, rp_now_ns(), UINT64_MAX, a, &v, &len);
    if (rc == GW_CACHE_LEAD) {
        atomic_fetch_add(&f->computed, 1);
        rp_sleep_ns(100000000ull); /* a slow computation: everyone else arrives meanwhile */
        gw_cache_fill(f->c, &k, rp_now_ns(), "result", 7);
    } else if (rc == GW_CACHE_HIT && len == 7 && !strcmp(v, "result")) {
        atomic_fetch_add(&f->hits, 1);
    }
    rp_arena_destroy(a);
    return NULL;
}

static void test_identical_concurrent_misses_computed_once(void **state)
{
    (void)state;
    flight_ctx f = {0};
    assert_int_equal(gw_cache_create(NULL, &f.c), RP_OK);
    enum { N = 8 };
    pthread_t t[N];
    for (int i = 0; i < N; i++) pthread_create(&t[i], NULL, flyer, &f);
    for (int i = 0; i < N; i++) pthread_join(t[i], NULL);
    assert_int_equal(atomic_load(&f.computed), 1);
    assert_int_equal(atomic_load(&f.hits), N - 1);
    gw_cache_stats s;
    gw_cache_get_stats(f.c, &s);
    assert_int_equal(s.misses, 1);
    assert_true(s.coalesced >= 1);
    gw_cache_destroy(f.c);
}

static void test_waiter_times_out_and_abandon_hands_over(void **state)
{
    (void)state;
    gw_cache *c;
    rp_arena *a;
    assert_int_equal(gw_cache_create(NULL, &c), RP_OK);
    assert_int_equal(rp_arena_create(0, &a), RP_OK);
    gw_cache_key k = key(9, 9, 9);
    void *v;
    size_t len;
    uint64_t now = rp_now_ns();
    assert_int_equal(gw_cache_get(c, &k, now, UINT64_MAX, a, &v, &len), GW_CACHE_LEAD);
    /* A second caller waits at most until its deadline. */
    uint64_t t0 = rp_now_ns();
    assert_int_equal(gw_cache_get(c, &k, now, t0 + 20000000ull, a, &v, &len), RP_ETIMEDOUT);
    uint64_t waited = rp_now_ns() - t0;
    assert_true(waited >= 19000000ull && waited < 500000000ull);
    gw_cache_abandon(c, &k);
    assert_int_equal(gw_cache_get(c, &k, now, t0 + 20000000ull, a, &v, &len), GW_CACHE_LEAD);
    gw_cache_abandon(c, &k);
    rp_arena_destroy(a);
    gw_cache_destroy(c);
}

static void test_stale_while_revalidate(void **state)
{
    (void)state;
    gw_cache *c;
    rp_arena *a;
    gw_cache_config cfg = {.ttl_s = 1, .stale_s = 2};
    assert_int_equal(gw_cache_create(&cfg, &c), RP_OK);
    assert_int_equal(rp_arena_create(0, &a), RP_OK);
    void *v;
    size_t len;
    uint64_t t = 10000000000ull, never = 0; /* wait_until 0: a waiter would time out */
    gw_cache_key g1 = key(4, 4, 4), g2 = g1;
    g2.generation = 2;
    assert_int_equal(gw_cache_get(c, &g1, t, UINT64_MAX, a, &v, &len), GW_CACHE_LEAD);
    gw_cache_fill(c, &g1, t, "old", 4);

    /* A reload: the first caller computes with the new bundle; while it does, the
     * others get the previous answer instead of waiting. */
    assert_int_equal(gw_cache_get(c, &g2, t + 1, UINT64_MAX, a, &v, &len), GW_CACHE_LEAD);
    assert_int_equal(gw_cache_get(c, &g2, t + 2, never, a, &v, &len), GW_CACHE_STALE);
    assert_string_equal(v, "old");
    /* Never across a state version: after Feedback everyone waits for the new answer. */
    gw_cache_key v5 = g2;
    v5.state_version = 5;
    assert_int_equal(gw_cache_get(c, &v5, t + 3, UINT64_MAX, a, &v, &len), GW_CACHE_LEAD);
    assert_int_equal(gw_cache_get(c, &v5, t + 3, never, a, &v, &len), RP_ETIMEDOUT);
    gw_cache_abandon(c, &v5);
    /* The fill supersedes the previous generation. */
    gw_cache_fill(c, &g2, t + 4, "new", 4);
    gw_cache_stats s;
    gw_cache_get_stats(c, &s);
    assert_int_equal(s.entries, 1);
    assert_int_equal(s.stale, 1);
    assert_int_equal(gw_cache_get(c, &g2, t + 5, UINT64_MAX, a, &v, &len), GW_CACHE_HIT);
    assert_string_equal(v, "new");

    /* Past the TTL: the first caller recomputes, the others get the answer meanwhile,
     * for up to stale_s past the TTL. */
    uint64_t t2 = t + 1500000000ull;
    assert_int_equal(gw_cache_get(c, &g2, t2, UINT64_MAX, a, &v, &len), GW_CACHE_LEAD);
    assert_int_equal(gw_cache_get(c, &g2, t2, never, a, &v, &len), GW_CACHE_STALE);
    assert_string_equal(v, "new");
    assert_int_equal(gw_cache_get(c, &g2, t + 3100000000ull, never, a, &v, &len), RP_ETIMEDOUT);
    gw_cache_abandon(c, &g2);
    gw_cache_get_stats(c, &s);
    assert_int_equal(s.entries, 0); /* too old for anything: dropped */

    /* ForgetUser drops the answer a flight kept as its fallback. */
    assert_int_equal(gw_cache_get(c, &g1, t2, UINT64_MAX, a, &v, &len), GW_CACHE_LEAD);
    gw_cache_fill(c, &g1, t2, "mine", 5);
    assert_int_equal(gw_cache_get(c, &g2, t2 + 1, UINT64_MAX, a, &v, &len), GW_CACHE_LEAD);
    assert_int_equal(gw_cache_drop_user(c, 4), 1);
    assert_int_equal(gw_cache_get(c, &g2, t2 + 2, never, a, &v, &len), RP_ETIMEDOUT);
    gw_cache_fill(c, &g2, t2 + 3, "again", 6);
    assert_int_equal(gw_cache_get(c, &g2, t2 + 4, UINT64_MAX, a, &v, &len), GW_CACHE_HIT);
    assert_string_equal(v, "again");

    /* The size bound evicts a flight's fallback, not its flight. */
    gw_cache_config one = {.max_entries = 1, .ttl_s = 1};
    gw_cache *c1;
    assert_int_equal(gw_cache_create(&one, &c1), RP_OK);
    gw_cache_key u1 = key(1, 0, 0), u2 = key(2, 0, 0);
    assert_int_equal(gw_cache_get(c1, &u1, t, UINT64_MAX, a, &v, &len), GW_CACHE_LEAD);
    gw_cache_fill(c1, &u1, t, "a", 2);
    assert_int_equal(gw_cache_get(c1, &u1, t2, UINT64_MAX, a, &v, &len), GW_CACHE_LEAD);
    assert_int_equal(gw_cache_get(c1, &u2, t2, UINT64_MAX, a, &v, &len), GW_CACHE_LEAD);
    gw_cache_fill(c1, &u2, t2, "b", 2); /* pushes u1's stale answer out */
    assert_int_equal(gw_cache_get(c1, &u1, t2, never, a, &v, &len), RP_ETIMEDOUT);
    gw_cache_fill(c1, &u1, t2 + 1, "c", 2); /* the flight still ends with a fill */
    assert_int_equal(gw_cache_get(c1, &u1, t2 + 2, UINT64_MAX, a, &v, &len), GW_CACHE_HIT);
    assert_string_equal(v, "c");
    gw_cache_get_stats(c1, &s);
    assert_int_equal(s.entries, 1);
    gw_cache_destroy(c1);

    /* stale_s < 0: waiters wait, as before. */
    gw_cache_config off = {.ttl_s = 1, .stale_s = -1};
    gw_cache *c2;
    assert_int_equal(gw_cache_create(&off, &c2), RP_OK);
    assert_int_equal(gw_cache_get(c2, &g1, t, UINT64_MAX, a, &v, &len), GW_CACHE_LEAD);
    gw_cache_fill(c2, &g1, t, "old", 4);
    assert_int_equal(gw_cache_get(c2, &g2, t + 1, UINT64_MAX, a, &v, &len), GW_CACHE_LEAD);
    assert_int_equal(gw_cache_get(c2, &g2, t + 2, never, a, &v, &len), RP_ETIMEDOUT);
    gw_cache_abandon(c2, &g2);
    gw_cache_destroy(c2);
    rp_arena_destroy(a);
    gw_cache_destroy(c);
}

static void test_refreshes_are_capped(void **state)
{
    (void)state;
    gw_cache *c;
    rp_arena *a;
    gw_cache_config cfg = {.ttl_s = 10, .max_refresh = 1};
    assert_int_equal(gw_cache_create(&cfg, &c), RP_OK);
    assert_int_equal(rp_arena_create(0, &a), RP_OK);
    void *v;
    size_t len;
    uint64_t t = 1000;
    gw_cache_key a1 = key(1, 0, 0), b1 = key(2, 0, 0), c2 = key(3, 0, 0);
    assert_int_equal(gw_cache_get(c, &a1, t, UINT64_MAX, a, &v, &len), GW_CACHE_LEAD);
    gw_cache_fill(c, &a1, t, "a1", 3);
    assert_int_equal(gw_cache_get(c, &b1, t, UINT64_MAX, a, &v, &len), GW_CACHE_LEAD);
    gw_cache_fill(c, &b1, t, "b1", 3);
    /* A reload: every key changes. One refresh at a time; the others get the old answer. */
    gw_cache_key a2 = a1, b2 = b1;
    a2.generation = b2.generation = c2.generation = 2;
    assert_int_equal(gw_cache_get(c, &a2, t + 1, UINT64_MAX, a, &v, &len), GW_CACHE_LEAD);
    assert_int_equal(gw_cache_get(c, &b2, t + 1, UINT64_MAX, a, &v, &len), GW_CACHE_STALE);
    assert_string_equal(v, "b1");
    /* A user with no older answer is never held back by the cap. */
    assert_int_equal(gw_cache_get(c, &c2, t + 1, UINT64_MAX, a, &v, &len), GW_CACHE_LEAD);
    gw_cache_abandon(c, &c2);
    /* The refresh ends (filled): the next one may start. */
    gw_cache_fill(c, &a2, t + 2, "a2", 3);
    assert_int_equal(gw_cache_get(c, &b2, t + 3, UINT64_MAX, a, &v, &len), GW_CACHE_LEAD);
    assert_int_equal(gw_cache_get(c, &a2, t + 3, UINT64_MAX, a, &v, &len), GW_CACHE_HIT);
    assert_string_equal(v, "a2");
    /* Abandoned, it frees its place too. */
    gw_cache_abandon(c, &b2);
    gw_cache_key a3 = a2;
    a3.generation = 3;
    assert_int_equal(gw_cache_get(c, &a3, t + 4, UINT64_MAX, a, &v, &len), GW_CACHE_LEAD);
    assert_int_equal(gw_cache_get(c, &b2, t + 4, UINT64_MAX, a, &v, &len), GW_CACHE_STALE);
    gw_cache_abandon(c, &a3);
    assert_int_equal(gw_cache_get(c, &b2, t + 5, UINT64_MAX, a, &v, &len), GW_CACHE_LEAD);
    gw_cache_fill(c, &b2, t + 5, "b2", 3);
    gw_cache_stats s;
    gw_cache_get_stats(c, &s);
    assert_int_equal(s.stale, 2);
    assert_int_equal(s.entries, 2); /* a2 and b2: a1 and b1 were superseded */
    rp_arena_destroy(a);
    gw_cache_destroy(c);
}

/* GW_CACHE_BEHIND: a refresh that can wait does, even with no refresh running; a miss
 * with nothing older, a new state version, and an answer too old to serve compute
 * whatever the flag. */
static void test_behind_defers_refreshes(void **state)
{
    (void)state;
    gw_cache *c;
    rp_arena *a;
    gw_cache_config cfg = {.ttl_s = 10, .stale_s = 5, .max_refresh = 4};
    assert_int_equal(gw_cache_create(&cfg, &c), RP_OK);
    assert_int_equal(rp_arena_create(0, &a), RP_OK);
    void *v;
    size_t len;
    const uint64_t s1 = 1000000000ull, t = 1000;
    gw_cache_key a1 = key(1, 0, 0), b1 = key(2, 0, 0);
    assert_int_equal(gw_cache_lookup(c, &a1, t, UINT64_MAX, GW_CACHE_BEHIND, a, &v, &len),
                     GW_CACHE_LEAD);
    gw_cache_fill(c, &a1, t, "a1", 3);
    assert_int_equal(gw_cache_get(c, &b1, t, UINT64_MAX, a, &v, &len), GW_CACHE_LEAD);
    gw_cache_fill(c, &b1, t, "b1", 3);
    /* A hit is a hit. */
    assert_int_equal(gw_cache_lookup(c, &a1, t + 1, UINT64_MAX, GW_CACHE_BEHIND, a, &v, &len),
                     GW_CACHE_HIT);
    /* A reload: behind, the old answer, though no refresh runs; keeping up, a refresh. */
    gw_cache_key a2 = a1, b2 = b1;
    a2.generation = b2.generation = 2;
    assert_int_equal(gw_cache_lookup(c, &a2, t + 2, UINT64_MAX, GW_CACHE_BEHIND, a, &v, &len),
                     GW_CACHE_STALE);
    assert_string_equal(v, "a1");
    assert_int_equal(gw_cache_lookup(c, &a2, t + 3, UINT64_MAX, 0, a, &v, &len), GW_CACHE_LEAD);
    gw_cache_fill(c, &a2, t + 3, "a2", 3);
    assert_int_equal(gw_cache_lookup(c, &a2, t + 4, UINT64_MAX, GW_CACHE_BEHIND, a, &v, &len),
                     GW_CACHE_HIT);
    assert_string_equal(v, "a2");
    /* Past its TTL, within the stale window: the same. */
    assert_int_equal(gw_cache_lookup(c, &a2, t + 11 * s1, UINT64_MAX, GW_CACHE_BEHIND, a, &v,
                                     &len),
                     GW_CACHE_STALE);
    /* Past the stale window (TTL 10 s + 5 s): computed, behind or not. */
    assert_int_equal(gw_cache_lookup(c, &b2, t + 16 * s1, UINT64_MAX, GW_CACHE_BEHIND, a, &v,
                                     &len),
                     GW_CACHE_LEAD);
    gw_cache_abandon(c, &b2);
    /* A new state version (Feedback) never falls back. */
    gw_cache_key a3 = key(1, 0, 1);
    a3.generation = 2;
    assert_int_equal(gw_cache_lookup(c, &a3, t + 16 * s1, UINT64_MAX, GW_CACHE_BEHIND, a, &v,
                                     &len),
                     GW_CACHE_LEAD);
    gw_cache_abandon(c, &a3);
    gw_cache_stats st;
    gw_cache_get_stats(c, &st);
    assert_int_equal(st.stale, 2);
    assert_int_equal(st.deferred, 2);
    rp_arena_destroy(a);
    gw_cache_destroy(c);
}

static void test_hash_is_fnv1a(void **state)
{
    (void)state;
    /* FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c. */
    assert_true(gw_hash(GW_HASH_INIT, "a", 1) == 0xaf63dc4c8601ec8cull);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_miss_fill_hit_and_version),
        cmocka_unit_test(test_ttl_expires),
        cmocka_unit_test(test_lru_bounds_evict_least_recent),
        cmocka_unit_test(test_identical_concurrent_misses_computed_once),
        cmocka_unit_test(test_waiter_times_out_and_abandon_hands_over),
        cmocka_unit_test(test_stale_while_revalidate),
        cmocka_unit_test(test_refreshes_are_capped),
        cmocka_unit_test(test_behind_defers_refreshes),
        cmocka_unit_test(test_hash_is_fnv1a),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
