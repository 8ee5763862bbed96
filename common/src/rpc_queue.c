/* rpc_queue.c — see rpc_queue.h. */
#include "rpc_queue.h"

void rp__queue_init(rp__queue *q, uint64_t target_ns, uint64_t interval_ns)
{
    *q = (rp__queue){.target_ns = target_ns,
                     .interval_ns = interval_ns < target_ns ? target_ns : interval_ns};
}

static void observe(rp__queue *q, uint64_t wait, uint64_t now)
{
    if (wait > q->target_ns) {
        uint64_t since = now - (wait - q->target_ns);
        q->below_since = 0;
        if (!q->above_since || since < q->above_since) q->above_since = since;
        if (now - q->above_since >= q->interval_ns) q->standing = true;
    } else {
        q->above_since = 0;
        if (!q->below_since) q->below_since = now;
        else if (q->standing && now - q->below_since >= q->interval_ns) q->standing = false;
    }
}

static void unlink_node(rp__queue *q, rp__qnode *n)
{
    if (n->prev) n->prev->next = n->next;
    else q->head = n->next;
    if (n->next) n->next->prev = n->prev;
    else q->tail = n->prev;
    n->prev = n->next = NULL;
    q->len--;
}

void rp__queue_push(rp__queue *q, rp__qnode *n, uint64_t now_ns)
{
    /* An empty queue is a wait of 0. */
    if (!q->head && q->target_ns) observe(q, 0, now_ns);
    n->next = NULL;
    n->prev = q->tail;
    if (q->tail) q->tail->next = n;
    else q->head = n;
    q->tail = n;
    q->len++;
}

/* Looks at the oldest call's wait (out: waited, limit); true when it is past the limit.
 * Past it, a call is shed unless it is exempt, which is then served in its turn. */
static bool head_past_limit(rp__queue *q, uint64_t now_ns, rp__qtake *out)
{
    rp__qnode *n = q->head;
    out->waited_ns = now_ns > n->arrived_ns ? now_ns - n->arrived_ns : 0;
    if (!q->target_ns) return false;
    observe(q, out->waited_ns, now_ns);
    out->limit_ns = q->standing ? q->target_ns : q->interval_ns;
    return out->waited_ns > out->limit_ns;
}

rp__qnode *rp__queue_take(rp__queue *q, uint64_t now_ns, rp__qtake *out)
{
    *out = (rp__qtake){0};
    rp__qnode *n = q->head;
    if (!n) return NULL;
    if (head_past_limit(q, now_ns, out)) {
        out->shed = !n->exempt;
    } else if (q->standing) {
        n = q->tail;
        out->waited_ns = now_ns > n->arrived_ns ? now_ns - n->arrived_ns : 0;
    }
    unlink_node(q, n);
    return n;
}

rp__qnode *rp__queue_expire(rp__queue *q, uint64_t now_ns, rp__qtake *out)
{
    *out = (rp__qtake){0};
    rp__qnode *n = q->head;
    if (!n || !head_past_limit(q, now_ns, out) || n->exempt) return NULL;
    out->shed = true;
    unlink_node(q, n);
    return n;
}

rp__qnode *rp__queue_pop_tail(rp__queue *q)
{
    rp__qnode *n = q->tail;
    if (n) unlink_node(q, n);
    return n;
}
