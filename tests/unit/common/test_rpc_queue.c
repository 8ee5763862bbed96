/*
 * The wait queue's policy (common/src/rpc_queue.c) on synthetic clocks: first come,
 * first served without a target; a burst may wait the interval, in order; a standing
 * queue (a call above target for a whole interval) sheds the oldest past target and
 * serves the newest first; shedding a backlog does not end a standing queue; waits
 * within target for an interval do; the appender sheds what expired before a worker
 * comes to it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "rpc_queue.h"

#define MS 1000000ull

typedef struct item {
    rp__qnode node; /* first: a node is its item */
    char name;
} item;

static item items[16];

static void push(rp__queue *q, int i, uint64_t at_ms)
{
    items[i].name = (char)('a' + i);
    items[i].node.arrived_ns = at_ms * MS;
    rp__queue_push(q, &items[i].node, at_ms * MS);
}

/* The name of the item taken at now_ms ('-' if none), and whether it was shed. */
static char take(rp__queue *q, uint64_t now_ms, bool *shed, rp__qtake *tk)
{
    rp__qtake t;
    rp__qnode *n = rp__queue_take(q, now_ms * MS, &t);
    if (shed) *shed = t.shed;
    if (tk) *tk = t;
    return n ? ((item *)n)->name : '-';
}

static void test_fifo_without_target(void **state)
{
    (void)state;
    rp__queue q;
    rp__queue_init(&q, 0, 0);
    bool shed;
    for (int i = 0; i < 4; i++) push(&q, i, 1 + (uint64_t)i);
    assert_int_equal(q.len, 4);
    /* Ten seconds later: still in order, nothing shed. */
    for (int i = 0; i < 4; i++) {
        assert_int_equal(take(&q, 10000, &shed, NULL), 'a' + i);
        assert_false(shed);
    }
    assert_int_equal(take(&q, 10000, &shed, NULL), '-');
    assert_int_equal(q.len, 0);
}

static void test_burst_waits_the_interval_in_order(void **state)
{
    (void)state;
    rp__queue q;
    rp__queue_init(&q, 5 * MS, 100 * MS);
    bool shed;
    rp__qtake tk;
    push(&q, 0, 1000);
    push(&q, 1, 1001);
    push(&q, 2, 1002);
    /* 50 ms of waiting: above target, but for 45 ms only: a burst, first come first. */
    assert_int_equal(take(&q, 1050, &shed, &tk), 'a');
    assert_false(shed);
    assert_false(q.standing);
    assert_int_equal(tk.limit_ns, 100 * MS);
    assert_int_equal(tk.waited_ns, 50 * MS);
    assert_int_equal(take(&q, 1051, &shed, NULL), 'b');
    assert_false(shed);
    /* 150 ms: over the interval, shed (and the queue is standing by now). */
    assert_int_equal(take(&q, 1152, &shed, &tk), 'c');
    assert_true(shed);
    assert_true(q.standing);
    assert_int_equal(tk.waited_ns, 150 * MS);
}

static void test_standing_sheds_old_serves_new(void **state)
{
    (void)state;
    rp__queue q;
    rp__queue_init(&q, 5 * MS, 100 * MS);
    bool shed;
    rp__qtake tk;
    /* A call that waited 110 ms proves 105 ms above target: standing at once. */
    push(&q, 0, 0);
    for (int i = 1; i <= 4; i++) push(&q, i, 108 + (uint64_t)i); /* b..e at 109..112 */
    assert_int_equal(take(&q, 110, &shed, &tk), 'a');
    assert_true(shed);
    assert_true(q.standing);
    assert_int_equal(tk.limit_ns, 5 * MS);
    /* The rest waited 0-3 ms: within target, served newest first. */
    assert_int_equal(take(&q, 113, &shed, &tk), 'e');
    assert_false(shed);
    assert_int_equal(tk.waited_ns, 1 * MS);
    assert_int_equal(take(&q, 113, &shed, NULL), 'd');
    assert_false(shed);
    /* c and b are 8 and 9 ms old when next looked at: shed, oldest first. */
    assert_int_equal(take(&q, 118, &shed, NULL), 'b');
    assert_true(shed);
    assert_int_equal(take(&q, 118, &shed, NULL), 'c');
    assert_true(shed);
    assert_int_equal(q.len, 0);
}

static void test_standing_ends_after_an_interval_within_target(void **state)
{
    (void)state;
    rp__queue q;
    rp__queue_init(&q, 5 * MS, 100 * MS);
    bool shed;
    push(&q, 0, 0);
    assert_int_equal(take(&q, 200, &shed, NULL), 'a');
    assert_true(shed);
    assert_true(q.standing);
    /* The backlog is gone (by shedding): still standing for the next interval, so a call
     * that waits 20 ms is shed instead of allowed the interval. */
    push(&q, 1, 210);
    assert_int_equal(take(&q, 230, &shed, NULL), 'b');
    assert_true(shed);
    assert_true(q.standing);
    /* Calls served within target from 240 ms to 340 ms... */
    uint64_t t = 240;
    for (int i = 2; i < 13; i++, t += 10) {
        push(&q, i, t);
        assert_int_equal(take(&q, t + 1, &shed, NULL), 'a' + i);
        assert_false(shed);
    }
    /* ...for a whole interval: a burst may wait the interval again. */
    assert_false(q.standing);
    push(&q, 13, t);
    assert_int_equal(take(&q, t + 50, &shed, NULL), 'n');
    assert_false(shed);
}

/* The appender sheds expired calls itself: only past the limit a take would apply, oldest
 * first, and never without a target. */
static void test_expire(void **state)
{
    (void)state;
    rp__queue q;
    rp__qtake tk;
    rp__queue_init(&q, 0, 0);
    push(&q, 0, 0);
    assert_null(rp__queue_expire(&q, 100000 * MS, &tk));
    assert_false(tk.shed);
    assert_int_equal(q.len, 1);

    rp__queue_init(&q, 5 * MS, 100 * MS);
    push(&q, 0, 1000);
    push(&q, 1, 1040);
    push(&q, 2, 1050);
    /* A burst: 50 ms is within the interval, nothing expires. */
    assert_null(rp__queue_expire(&q, 1050 * MS, &tk));
    assert_false(q.standing);
    /* 120 ms: a is past the interval (and proves a standing queue); b waited 80 ms, past
     * the target that applies now; c waited 30 ms, past it too; the queue is empty. */
    assert_ptr_equal(rp__queue_expire(&q, 1120 * MS, &tk), &items[0].node);
    assert_true(tk.shed);
    assert_int_equal(tk.waited_ns, 120 * MS);
    assert_true(q.standing);
    assert_ptr_equal(rp__queue_expire(&q, 1120 * MS, &tk), &items[1].node);
    assert_int_equal(tk.limit_ns, 5 * MS);
    assert_ptr_equal(rp__queue_expire(&q, 1120 * MS, &tk), &items[2].node);
    assert_null(rp__queue_expire(&q, 1120 * MS, &tk));
    assert_int_equal(q.len, 0);
    /* A call within target stays for a worker. */
    push(&q, 3, 1121);
    assert_null(rp__queue_expire(&q, 1124 * MS, &tk));
    assert_false(tk.shed);
    assert_int_equal(take(&q, 1124, NULL, NULL), 'd');
}

/* An exempt call (admin) is never shed: past the limit it is served in its turn, and the
 * appender stops at it. */
static void test_exempt_is_served(void **state)
{
    (void)state;
    rp__queue q;
    rp__qtake tk;
    bool shed;
    rp__queue_init(&q, 5 * MS, 100 * MS);
    push(&q, 0, 0);
    items[0].node.exempt = true;
    push(&q, 1, 1);
    push(&q, 2, 200);
    assert_null(rp__queue_expire(&q, 201 * MS, &tk));
    assert_false(tk.shed);
    assert_true(q.standing);
    /* Standing, and the oldest waited 201 ms: exempt, so it is served (not the newest). */
    assert_int_equal(take(&q, 201, &shed, &tk), 'a');
    assert_false(shed);
    assert_int_equal(tk.waited_ns, 201 * MS);
    assert_int_equal(take(&q, 201, &shed, NULL), 'b');
    assert_true(shed);
    assert_int_equal(take(&q, 201, &shed, NULL), 'c');
    assert_false(shed);
    items[0].node.exempt = false;
}

static void test_pop_tail(void **state)
{
    (void)state;
    rp__queue q;
    rp__queue_init(&q, 5 * MS, 100 * MS);
    assert_null(rp__queue_pop_tail(&q));
    push(&q, 0, 1);
    push(&q, 1, 2);
    assert_ptr_equal(rp__queue_pop_tail(&q), &items[1].node);
    assert_int_equal(q.len, 1);
    assert_int_equal(take(&q, 3, NULL, NULL), 'a');
    assert_null(q.head);
    assert_null(q.tail);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fifo_without_target),
        cmocka_unit_test(test_burst_waits_the_interval_in_order),
        cmocka_unit_test(test_standing_sheds_old_serves_new),
        cmocka_unit_test(test_standing_ends_after_an_interval_within_target),
        cmocka_unit_test(test_expire),
        cmocka_unit_test(test_exempt_is_served),
        cmocka_unit_test(test_pop_tail),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
