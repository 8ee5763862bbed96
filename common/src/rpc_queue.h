/* rpc_queue.h — the server's queue of calls waiting for a worker, and its policy.
 *
 * Pure bookkeeping: no locks (the server holds its own around every call), no clock
 * (times are passed in), no gRPC, so the policy is tested on its own
 * (tests/unit/common/test_rpc_queue.c).
 *
 * With target_ns == 0 it is first come, first served and sheds nothing. With a target
 * it follows "Fail at Scale" (Maurer 2015), CoDel for RPC queues, with hysteresis and
 * adaptive LIFO:
 *   - every take looks at the oldest call's wait. The queue turns *standing* once some
 *     call has waited above target for a whole interval without a break (a call that
 *     waited w proves it for w - target, whether anyone looked or not), and stops being
 *     standing once the oldest wait stayed within target, or the queue was empty, for a
 *     whole interval. Emptying the queue by shedding does not end a standing queue, so
 *     an overloaded server does not swing back to letting calls wait a whole interval;
 *   - the oldest call is shed when it waited longer than target (standing) or the
 *     interval (a burst, served first come, first served);
 *   - while the queue is standing the newest call is served first: admitted calls have
 *     barely waited and keep their normal latency; the old ones are shed at target.
 */
#ifndef RP_RPC_QUEUE_H
#define RP_RPC_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct rp__qnode rp__qnode;
struct rp__qnode {
    rp__qnode *prev, *next;
    uint64_t arrived_ns; /* set by the caller before the push */
    bool exempt;         /* never shed (admin calls): served when its turn comes */
};

typedef struct rp__queue {
    rp__qnode *head, *tail; /* oldest, newest */
    size_t len;
    uint64_t target_ns;   /* 0: FIFO, no shedding */
    uint64_t interval_ns; /* >= target_ns */
    bool standing;
    uint64_t above_since; /* every wait seen since then was above target (0: not) */
    uint64_t below_since; /* every wait seen since then was within target (0: not) */
} rp__queue;

/* What a take decided. */
typedef struct rp__qtake {
    bool shed;          /* answer RESOURCE_EXHAUSTED: it waited `waited`, over `limit` */
    uint64_t waited_ns; /* of the node taken */
    uint64_t limit_ns;  /* the wait allowed now (0 without a target) */
} rp__qtake;

void rp__queue_init(rp__queue *q, uint64_t target_ns, uint64_t interval_ns);
void rp__queue_push(rp__queue *q, rp__qnode *n, uint64_t now_ns);
/* The node whose turn it is (removed), or NULL when the queue is empty. */
rp__qnode *rp__queue_take(rp__queue *q, uint64_t now_ns, rp__qtake *out);
/* The oldest node (removed) if it waited past the limit a take would apply now, with
 * out->shed set; else NULL. Lets whoever appends shed what no worker has come to yet:
 * when every worker is busy, expired calls are answered at once, not at the next turn. */
rp__qnode *rp__queue_expire(rp__queue *q, uint64_t now_ns, rp__qtake *out);
/* Removes the newest node (NULL when empty). */
rp__qnode *rp__queue_pop_tail(rp__queue *q);

#endif
