/* Tests gateway/src/state.c over real LMDB files: rings, versions, atomic batches,
 * MAP_FULL, ForgetUser, reopen, concurrent readers. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gw/state.h"

#define E(expr)                                                                            \
    do {                                                                                   \
        rp_error e_;                                                                       \
        rp_error_clear(&e_);                                                               \
        int rc_ = (expr);                                                                  \
        if (rc_ != RP_OK) fail_msg("%s: %s", #expr, rp_error_text(&e_));                   \
    } while (0)

static char *mkdir_tmp(void)
{
    char *d = strdup("/tmp/rp-gw-state-XXXXXX");
    assert_non_null(mkdtemp(d));
    return d;
}

static void rm_tree(const char *d)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
    assert_int_equal(system(cmd), 0);
}

static gw_user_event ue(uint64_t user, uint64_t item, uint8_t type, int64_t ts)
{
    return (gw_user_event){.user_id = user, .ev = {.item_id = item, .ts = ts, .type = type}};
}

static void test_ring_keeps_last_n_oldest_first(void **state)
{
    (void)state;
    char *dir = mkdir_tmp();
    gw_state *st;
    rp_error err;
    gw_state_opts o = {.history_len = 5};
    assert_int_equal(gw_state_open(dir, &o, &st, &err), RP_OK);
    assert_int_equal(gw_state_history_len(st), 5);

    gw_event out[16];
    size_t n;
    uint64_t v0, v1, v2;
    assert_int_equal(gw_state_history(st, 7, out, 16, &n, &v0, &err), RP_OK);
    assert_int_equal(n, 0);
    assert_int_equal(v0, 0);

    for (int i = 1; i <= 3; i++) {
        gw_user_event b = ue(7, 100 + i, 1, 1000 + i);
        assert_int_equal(gw_state_append(st, &b, 1, &err), RP_OK);
    }
    assert_int_equal(gw_state_history(st, 7, out, 16, &n, &v1, &err), RP_OK);
    assert_int_equal(n, 3);
    assert_true(v1 > 0);
    for (int i = 0; i < 3; i++) assert_int_equal(out[i].item_id, 101 + i);

    /* Eight events into a ring of five: the last five remain, oldest first. */
    gw_user_event batch[5];
    for (int i = 0; i < 5; i++) batch[i] = ue(7, 104 + i, 2, 1004 + i);
    assert_int_equal(gw_state_append(st, batch, 5, &err), RP_OK);
    assert_int_equal(gw_state_history(st, 7, out, 16, &n, &v2, &err), RP_OK);
    assert_int_equal(n, 5);
    assert_true(v2 > v1);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(out[i].item_id, 104 + i);
        assert_int_equal(out[i].ts, 1004 + i);
        assert_int_equal(out[i].type, 2);
    }
    /* A smaller buffer gets the newest events. */
    assert_int_equal(gw_state_history(st, 7, out, 2, &n, &v2, &err), RP_OK);
    assert_int_equal(n, 2);
    assert_int_equal(out[0].item_id, 107);
    assert_int_equal(out[1].item_id, 108);

    uint64_t users, events;
    E(gw_state_stats(st, &users, &events, &e_));
    assert_int_equal(users, 1);
    assert_int_equal(events, 5);
    gw_state_close(st);
    gw_state_close(NULL);
    rm_tree(dir);
    free(dir);
}

static void test_batch_versions_counts_and_reopen(void **state)
{
    (void)state;
    char *dir = mkdir_tmp();
    gw_state *st;
    rp_error err;
    assert_int_equal(gw_state_open(dir, NULL, &st, &err), RP_OK);
    gw_user_event b[4] = {ue(1, 50, 1, 10), ue(2, 50, 4, 11), ue(1, 51, 6, 12), ue(3, 50, 2, 13)};
    b[1].ev.value = 2.5f;
    assert_int_equal(gw_state_append(st, b, 4, &err), RP_OK);
    gw_event out[8];
    size_t n;
    uint64_t v1, v2, v3;
    E(gw_state_history(st, 1, out, 8, &n, &v1, &e_));
    assert_int_equal(n, 2);
    assert_int_equal(out[1].type, GW_EVENT_TYPE_DISMISS);
    E(gw_state_history(st, 2, out, 8, &n, &v2, &e_));
    assert_int_equal(n, 1);
    assert_true(out[0].value == 2.5f);
    E(gw_state_history(st, 3, out, 8, &n, &v3, &e_));
    /* One batch, one new version for every user it touched. */
    assert_true(v1 > 0);
    assert_int_equal(v1, v2);
    assert_int_equal(v2, v3);

    gw_item_counts c;
    E(gw_state_item_counts(st, 50, &c, &e_));
    assert_int_equal(c.events, 3);
    assert_int_equal(c.by_type[4], 1);
    assert_int_equal(c.last_ts, 13);
    E(gw_state_item_counts(st, 51, &c, &e_));
    assert_int_equal(c.events, 0); /* a dismiss is not popularity */
    assert_int_equal(c.by_type[GW_EVENT_TYPE_DISMISS], 1);
    E(gw_state_item_counts(st, 999, &c, &e_));
    assert_int_equal(c.events, 0);
    gw_state_close(st);

    /* Reopen: everything is still there (the store is durable, not a cache), and a new
     * history length does not reshape existing rings. */
    gw_state_opts o = {.history_len = 3};
    assert_int_equal(gw_state_open(dir, &o, &st, &err), RP_OK);
    assert_int_equal(gw_state_history_len(st), 200);
    uint64_t v;
    E(gw_state_history(st, 1, out, 8, &n, &v, &e_));
    assert_int_equal(n, 2);
    assert_int_equal(v, v1);
    assert_int_equal(out[0].item_id, 50);
    gw_state_close(st);
    rm_tree(dir);
    free(dir);
}

static void test_forget_user_and_version_never_reused(void **state)
{
    (void)state;
    char *dir = mkdir_tmp();
    gw_state *st;
    rp_error err;
    assert_int_equal(gw_state_open(dir, NULL, &st, &err), RP_OK);
    gw_user_event b[3] = {ue(9, 1, 1, 1), ue(9, 2, 1, 2), ue(10, 3, 1, 3)};
    E(gw_state_append(st, b, 3, &e_));
    gw_event out[8];
    size_t n;
    uint64_t before, after, other;
    E(gw_state_history(st, 9, out, 8, &n, &before, &e_));
    bool existed;
    uint32_t deleted;
    E(gw_state_forget(st, 9, &existed, &deleted, &e_));
    assert_true(existed);
    assert_int_equal(deleted, 2);
    E(gw_state_history(st, 9, out, 8, &n, &after, &e_));
    assert_int_equal(n, 0);
    assert_int_equal(after, 0);
    E(gw_state_history(st, 10, out, 8, &n, &other, &e_));
    assert_int_equal(n, 1); /* other users untouched */
    E(gw_state_forget(st, 9, &existed, &deleted, &e_));
    assert_false(existed);
    assert_int_equal(deleted, 0);
    /* New events after forgetting get a version above every earlier one. */
    E(gw_state_append(st, b, 1, &e_));
    E(gw_state_history(st, 9, out, 8, &n, &after, &e_));
    assert_int_equal(n, 1);
    assert_true(after > before);
    uint64_t users, events;
    E(gw_state_stats(st, &users, &events, &e_));
    assert_int_equal(users, 2);
    assert_int_equal(events, 2);
    gw_state_close(st);
    /* Forgetting is durable. */
    assert_int_equal(gw_state_open(dir, NULL, &st, &err), RP_OK);
    E(gw_state_history(st, 9, out, 8, &n, &after, &e_));
    assert_int_equal(n, 1);
    gw_state_close(st);
    rm_tree(dir);
    free(dir);
}

static void test_map_full_stores_nothing_of_the_batch(void **state)
{
    (void)state;
    char *dir = mkdir_tmp();
    gw_state *st;
    rp_error err;
    gw_state_opts o = {.map_size = 256 * 1024, .history_len = 100};
    assert_int_equal(gw_state_open(dir, &o, &st, &err), RP_OK);
    /* Fill with batches of 50 users until the map is full. */
    enum { B = 50 };
    gw_user_event b[B];
    uint64_t user = 1;
    int rc = RP_OK, batches = 0;
    while (rc == RP_OK && batches < 10000) {
        for (int i = 0; i < B; i++) b[i] = ue(user + (uint64_t)i, 1000 + (uint64_t)i, 1, 5);
        rc = gw_state_append(st, b, B, &err);
        if (rc == RP_OK) {
            user += B;
            batches++;
        }
    }
    assert_int_equal(rc, RP_EFULL);
    assert_true(batches > 0);
    assert_non_null(strstr(err.msg, "MDB_MAP_FULL"));
    assert_non_null(strstr(err.msg, "nothing"));
    /* No user of the failed batch has anything; all earlier users are intact. */
    gw_event out[4];
    size_t n;
    uint64_t v;
    for (int i = 0; i < B; i++) {
        E(gw_state_history(st, user + (uint64_t)i, out, 4, &n, &v, &e_));
        assert_int_equal(n, 0);
        assert_int_equal(v, 0);
    }
    for (uint64_t u = 1; u < user; u++) {
        E(gw_state_history(st, u, out, 4, &n, &v, &e_));
        assert_int_equal(n, 1);
    }
    uint64_t users, events;
    E(gw_state_stats(st, &users, &events, &e_));
    assert_int_equal(users, user - 1);
    assert_int_equal(events, user - 1);
    /* The store still works: forgetting frees room for a small batch. */
    E(gw_state_forget(st, 1, NULL, NULL, &e_));
    E(gw_state_append(st, b, 1, &e_));
    gw_state_close(st);
    rm_tree(dir);
    free(dir);
}

typedef struct reader_ctx {
    gw_state *st;
    int failures;
    int reads;
} reader_ctx;

static void *reader(void *arg)
{
    reader_ctx *r = arg;
    gw_event out[64];
    for (int i = 0; i < 2000; i++) {
        size_t n;
        uint64_t v;
        if (gw_state_history(r->st, 77, out, 64, &n, &v, NULL) != RP_OK) r->failures++;
        /* Each batch appends 4 events of one user: a reader sees whole batches only. */
        if (n % 4 != 0) r->failures++;
        r->reads++;
    }
    return NULL;
}

static void test_readers_see_whole_batches(void **state)
{
    (void)state;
    char *dir = mkdir_tmp();
    gw_state *st;
    rp_error err;
    gw_state_opts o = {.history_len = 1000};
    assert_int_equal(gw_state_open(dir, &o, &st, &err), RP_OK);
    reader_ctx r[2] = {{st, 0, 0}, {st, 0, 0}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, reader, &r[i]);
    for (int k = 0; k < 10; k++) {
        gw_user_event b[4];
        for (int i = 0; i < 4; i++) b[i] = ue(77, (uint64_t)(k * 4 + i + 1), 1, k);
        E(gw_state_append(st, b, 4, &e_));
    }
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    assert_int_equal(r[0].failures + r[1].failures, 0);
    gw_state_close(st);
    rm_tree(dir);
    free(dir);
}

static void test_open_errors_name_the_path(void **state)
{
    (void)state;
    gw_state *st = (gw_state *)1;
    rp_error err;
    assert_int_equal(gw_state_open("/proc/no/such/dir", NULL, &st, &err), RP_EIO);
    assert_null(st);
    assert_non_null(strstr(err.msg, "/proc/no/such/dir"));
    gw_state_opts o = {.history_len = 20000};
    assert_int_equal(gw_state_open("/tmp", &o, &st, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "10000"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ring_keeps_last_n_oldest_first),
        cmocka_unit_test(test_batch_versions_counts_and_reopen),
        cmocka_unit_test(test_forget_user_and_version_never_reused),
        cmocka_unit_test(test_map_full_stores_nothing_of_the_batch),
        cmocka_unit_test(test_readers_see_whole_batches),
        cmocka_unit_test(test_open_errors_name_the_path),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
