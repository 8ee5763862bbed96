/* The answer cache: hash table + LRU list under one mutex; pending entries mark flights. */
#include "gw/cache.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct entry {
    gw_cache_key key;
    struct entry *hnext;            /* hash chain */
    struct entry *prev, *next;      /* LRU list (filled entries only), most recent first */
    bool pending;                   /* a flight: no value yet */
    uint64_t stored_ns;
    void *val;
    size_t len;
} entry;

struct gw_cache {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* broadcast whenever a flight ends */
    entry **buckets;
    size_t nbuckets; /* power of two */
    entry *head, *tail;
    size_t max_entries, max_bytes;
    uint64_t ttl_ns;
    gw_cache_stats st;
};

uint64_t gw_hash(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static size_t key_bucket(const gw_cache *c, const gw_cache_key *k)
{
    uint64_t h = gw_hash(GW_HASH_INIT, k, sizeof *k);
    return (size_t)(h ^ (h >> 29)) & (c->nbuckets - 1);
}

static bool key_eq(const gw_cache_key *a, const gw_cache_key *b)
{
    return a->user_id == b->user_id && a->fingerprint == b->fingerprint &&
           a->state_version == b->state_version && a->bundles == b->bundles;
}

int gw_cache_create(const gw_cache_config *cfg, gw_cache **out)
{
    gw_cache *c = calloc(1, sizeof *c);
    *out = NULL;
    if (!c) return RP_ENOMEM;
    c->max_entries = cfg && cfg->max_entries ? cfg->max_entries : 10000;
    c->max_bytes = cfg && cfg->max_bytes ? cfg->max_bytes : (size_t)64 << 20;
    double ttl = cfg && cfg->ttl_s > 0 ? cfg->ttl_s : 30.0;
    c->ttl_ns = (uint64_t)(ttl * 1e9);
    c->nbuckets = 16;
    while (c->nbuckets < c->max_entries * 2 && c->nbuckets < ((size_t)1 << 24)) c->nbuckets <<= 1;
    c->buckets = calloc(c->nbuckets, sizeof *c->buckets);
    if (!c->buckets) {
        free(c);
        return RP_ENOMEM;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&c->mu, NULL);
    *out = c;
    return RP_OK;
}

void gw_cache_destroy(gw_cache *c)
{
    if (!c) return;
    for (size_t b = 0; b < c->nbuckets; b++) {
        entry *e = c->buckets[b];
        while (e) {
            entry *n = e->hnext;
            free(e->val);
            free(e);
            e = n;
        }
    }
    free(c->buckets);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static entry *find(gw_cache *c, const gw_cache_key *k)
{
    for (entry *e = c->buckets[key_bucket(c, k)]; e; e = e->hnext)
        if (key_eq(&e->key, k)) return e;
    return NULL;
}

static void lru_unlink(gw_cache *c, entry *e)
{
    if (e->prev) e->prev->next = e->next;
    else c->head = e->next;
    if (e->next) e->next->prev = e->prev;
    else c->tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push_front(gw_cache *c, entry *e)
{
    e->prev = NULL;
    e->next = c->head;
    if (c->head) c->head->prev = e;
    c->head = e;
    if (!c->tail) c->tail = e;
}

/* Unlinks e from its hash chain and (when filled) the LRU list, and frees it. */
static void remove_entry(gw_cache *c, entry *e)
{
    entry **pp = &c->buckets[key_bucket(c, &e->key)];
    while (*pp != e) pp = &(*pp)->hnext;
    *pp = e->hnext;
    if (!e->pending) {
        lru_unlink(c, e);
        c->st.entries--;
        c->st.bytes -= e->len;
    }
    free(e->val);
    free(e);
}

int gw_cache_get(gw_cache *c, const gw_cache_key *key, uint64_t now_ns, uint64_t wait_until_ns,
                 rp_arena *arena, void **val, size_t *len)
{
    bool waited = false;
    int rc;
    *val = NULL;
    *len = 0;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        entry *e = find(c, key);
        if (e && !e->pending && now_ns - e->stored_ns > c->ttl_ns && now_ns > e->stored_ns) {
            remove_entry(c, e);
            c->st.expired++;
            e = NULL;
        }
        if (!e) {
            e = calloc(1, sizeof *e);
            if (!e) {
                rc = RP_ENOMEM;
                break;
            }
            e->key = *key;
            e->pending = true;
            size_t b = key_bucket(c, key);
            e->hnext = c->buckets[b];
            c->buckets[b] = e;
            c->st.misses++;
            rc = GW_CACHE_LEAD;
            break;
        }
        if (!e->pending) {
            void *copy = rp_arena_alloc(arena, e->len);
            if (!copy) {
                rc = RP_ENOMEM;
                break;
            }
            memcpy(copy, e->val, e->len);
            *val = copy;
            *len = e->len;
            lru_unlink(c, e);
            lru_push_front(c, e);
            c->st.hits++;
            rc = GW_CACHE_HIT;
            break;
        }
        /* Another thread is computing this answer: wait for it. */
        if (!waited) c->st.coalesced++;
        waited = true;
        if (wait_until_ns == UINT64_MAX) {
            pthread_cond_wait(&c->cv, &c->mu);
        } else {
            struct timespec ts = {(time_t)(wait_until_ns / 1000000000ull),
                                  (long)(wait_until_ns % 1000000000ull)};
            if (pthread_cond_timedwait(&c->cv, &c->mu, &ts) == ETIMEDOUT) {
                entry *again = find(c, key);
                if (again && again->pending) {
                    rc = RP_ETIMEDOUT;
                    break;
                }
            }
        }
        /* The clock moved while waiting; a fresh fill is never expired by it. */
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

static void evict(gw_cache *c)
{
    while (c->tail && (c->st.entries > c->max_entries || c->st.bytes > c->max_bytes)) {
        remove_entry(c, c->tail);
        c->st.evictions++;
    }
}

void gw_cache_fill(gw_cache *c, const gw_cache_key *key, uint64_t now_ns, const void *val,
                   size_t len)
{
    void *copy = malloc(len ? len : 1);
    pthread_mutex_lock(&c->mu);
    entry *e = find(c, key);
    if (e && e->pending) {
        if (!copy || len > c->max_bytes) {
            remove_entry(c, e);
        } else {
            memcpy(copy, val, len);
            e->val = copy;
            copy = NULL;
            e->len = len;
            e->stored_ns = now_ns;
            e->pending = false;
            lru_push_front(c, e);
            c->st.entries++;
            c->st.bytes += len;
            evict(c);
        }
    }
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    free(copy);
}

void gw_cache_abandon(gw_cache *c, const gw_cache_key *key)
{
    pthread_mutex_lock(&c->mu);
    entry *e = find(c, key);
    if (e && e->pending) remove_entry(c, e);
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

size_t gw_cache_drop_user(gw_cache *c, uint64_t user_id)
{
    size_t dropped = 0;
    pthread_mutex_lock(&c->mu);
    for (size_t b = 0; b < c->nbuckets; b++) {
        entry *e = c->buckets[b];
        while (e) {
            entry *n = e->hnext;
            /* Flights in progress are left to their leader: their key carries the old
             * state version, which the next lookup no longer asks for. */
            if (e->key.user_id == user_id && !e->pending) {
                remove_entry(c, e);
                dropped++;
            }
            e = n;
        }
    }
    pthread_mutex_unlock(&c->mu);
    return dropped;
}

void gw_cache_get_stats(gw_cache *c, gw_cache_stats *out)
{
    pthread_mutex_lock(&c->mu);
    *out = c->st;
    pthread_mutex_unlock(&c->mu);
}
