/* The answer cache: hash table + LRU list under one mutex; entries mark flights too. */
#include "gw/cache.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* An entry holds an answer, marks a flight in progress, or both (its answer is past
 * the TTL and being recomputed). Entries with an answer are on the LRU list; an entry
 * with neither is freed. */
typedef struct entry {
    gw_cache_key key;
    struct entry *hnext;            /* hash chain (the bucket of the key's base) */
    struct entry *prev, *next;      /* LRU list (entries with an answer), most recent first */
    bool flight;                    /* its answer is being computed */
    bool refresh;                   /* ... and an older one exists (counted in refreshing) */
    bool has_val;
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
    uint64_t stale_ns; /* how long past the TTL an answer may still be a fallback; 0 = none */
    size_t max_refresh; /* refresh flights at once */
    size_t refreshing;
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

/* Every generation of a (user, fingerprint, state version) shares a bucket, so the
 * stale fallback is found on the chain the lookup walks anyway. */
static size_t key_bucket(const gw_cache *c, const gw_cache_key *k)
{
    uint64_t h = gw_hash(GW_HASH_INIT, &k->user_id, sizeof k->user_id);
    h = gw_hash(h, &k->fingerprint, sizeof k->fingerprint);
    h = gw_hash(h, &k->state_version, sizeof k->state_version);
    return (size_t)(h ^ (h >> 29)) & (c->nbuckets - 1);
}

static bool same_base(const gw_cache_key *a, const gw_cache_key *b)
{
    return a->user_id == b->user_id && a->fingerprint == b->fingerprint &&
           a->state_version == b->state_version;
}

static bool key_eq(const gw_cache_key *a, const gw_cache_key *b)
{
    return same_base(a, b) && a->generation == b->generation;
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
    double stale = cfg && cfg->stale_s != 0 ? cfg->stale_s : ttl;
    c->stale_ns = stale > 0 ? (uint64_t)(stale * 1e9) : 0;
    if (stale > 0 && c->stale_ns == 0) c->stale_ns = 1;
    c->max_refresh = cfg && cfg->max_refresh ? cfg->max_refresh : 1;
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

/* Age of an answer stored at stored_ns; a clock behind it (a caller's t0 taken before
 * the fill) reads as 0. */
static uint64_t age(uint64_t now_ns, uint64_t stored_ns)
{
    return now_ns > stored_ns ? now_ns - stored_ns : 0;
}

static void drop_val(gw_cache *c, entry *e)
{
    if (!e->has_val) return;
    lru_unlink(c, e);
    c->st.entries--;
    c->st.bytes -= e->len;
    free(e->val);
    e->val = NULL;
    e->len = 0;
    e->has_val = false;
}

/* Unlinks e from its hash chain and the LRU list, and frees it. */
static void remove_entry(gw_cache *c, entry *e)
{
    entry **pp = &c->buckets[key_bucket(c, &e->key)];
    while (*pp != e) pp = &(*pp)->hnext;
    *pp = e->hnext;
    drop_val(c, e);
    free(e);
}

/* Drops e's answer; frees e unless it marks a flight. */
static void drop_answer(gw_cache *c, entry *e)
{
    if (e->flight) drop_val(c, e);
    else remove_entry(c, e);
}

/* The newest answer of key's base (any generation, past its TTL by at most stale_ns),
 * or NULL. Drops the answers of the chain too old to be served at all. */
static entry *find_stale(gw_cache *c, const gw_cache_key *k, uint64_t now_ns)
{
    entry *best = NULL;
    entry *e = c->buckets[key_bucket(c, k)];
    while (e) {
        entry *n = e->hnext;
        if (e->has_val && age(now_ns, e->stored_ns) > c->ttl_ns + c->stale_ns) {
            drop_answer(c, e);
        } else if (e->has_val && same_base(&e->key, k) &&
                   (!best || e->stored_ns > best->stored_ns)) {
            best = e;
        }
        e = n;
    }
    return best;
}

static int copy_out(rp_arena *arena, const entry *e, void **val, size_t *len)
{
    void *copy = rp_arena_alloc(arena, e->len ? e->len : 1);
    if (!copy) return RP_ENOMEM;
    memcpy(copy, e->val, e->len);
    *val = copy;
    *len = e->len;
    return RP_OK;
}

/* Ends e's flight (the caller then fills or frees it). */
static void end_flight(gw_cache *c, entry *e)
{
    e->flight = false;
    if (e->refresh) c->refreshing--;
    e->refresh = false;
}

int gw_cache_get(gw_cache *c, const gw_cache_key *key, uint64_t now_ns, uint64_t wait_until_ns,
                 rp_arena *arena, void **val, size_t *len)
{
    return gw_cache_lookup(c, key, now_ns, wait_until_ns, 0, arena, val, len);
}

int gw_cache_lookup(gw_cache *c, const gw_cache_key *key, uint64_t now_ns,
                    uint64_t wait_until_ns, unsigned flags, rp_arena *arena, void **val,
                    size_t *len)
{
    bool waited = false;
    int rc;
    *val = NULL;
    *len = 0;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        entry *e = find(c, key);
        if (e && e->has_val && age(now_ns, e->stored_ns) <= c->ttl_ns) {
            if ((rc = copy_out(arena, e, val, len))) break;
            lru_unlink(c, e);
            lru_push_front(c, e);
            c->st.hits++;
            rc = GW_CACHE_HIT;
            break;
        }
        /* An older answer (this key's past its TTL, or another generation's). The walk
         * drops answers too old to serve: look the key up again after it. */
        entry *old = c->stale_ns ? find_stale(c, key, now_ns) : NULL;
        e = find(c, key);
        bool busy = c->refreshing >= c->max_refresh;
        bool behind = (flags & GW_CACHE_BEHIND) != 0;
        bool serve_old = old && ((e && e->flight) || busy || behind);
        if (serve_old) {
            /* Someone computes this answer, enough refreshes run already, or the
             * server is behind. */
            if ((rc = copy_out(arena, old, val, len))) break;
            c->st.stale++;
            if (behind && !busy && !(e && e->flight)) c->st.deferred++;
            rc = GW_CACHE_STALE;
            break;
        }
        if (!e || !e->flight) {
            /* The caller computes. An answer past its TTL stays as the others' fallback
             * until the fill replaces it. */
            if (e && e->has_val) {
                c->st.expired++;
            } else if (!e) {
                e = calloc(1, sizeof *e);
                if (!e) {
                    rc = RP_ENOMEM;
                    break;
                }
                e->key = *key;
                size_t b = key_bucket(c, key);
                e->hnext = c->buckets[b];
                c->buckets[b] = e;
            }
            e->flight = true;
            if (old) {
                e->refresh = true;
                c->refreshing++;
            }
            c->st.misses++;
            rc = GW_CACHE_LEAD;
            break;
        }
        /* Another thread is computing this answer and there is no older one: wait. */
        if (!waited) c->st.coalesced++;
        waited = true;
        if (wait_until_ns == UINT64_MAX) {
            pthread_cond_wait(&c->cv, &c->mu);
        } else {
            struct timespec ts = {(time_t)(wait_until_ns / 1000000000ull),
                                  (long)(wait_until_ns % 1000000000ull)};
            if (pthread_cond_timedwait(&c->cv, &c->mu, &ts) == ETIMEDOUT) {
                entry *again = find(c, key);
                if (again && again->flight) {
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

/* Answers go from the least recently used; a flight's old answer goes, its flight stays. */
static void evict(gw_cache *c)
{
    while (c->tail && (c->st.entries > c->max_entries || c->st.bytes > c->max_bytes)) {
        drop_answer(c, c->tail);
        c->st.evictions++;
    }
}

void gw_cache_fill(gw_cache *c, const gw_cache_key *key, uint64_t now_ns, const void *val,
                   size_t len)
{
    void *copy = malloc(len ? len : 1);
    pthread_mutex_lock(&c->mu);
    entry *e = find(c, key);
    if (e && e->flight) {
        end_flight(c, e);
        drop_val(c, e);
        if (!copy || len > c->max_bytes) {
            remove_entry(c, e);
        } else {
            memcpy(copy, val, len);
            e->val = copy;
            copy = NULL;
            e->len = len;
            e->has_val = true;
            e->stored_ns = now_ns;
            lru_push_front(c, e);
            c->st.entries++;
            c->st.bytes += len;
            /* Answers of other generations computed before this one are superseded. */
            entry *o = c->buckets[key_bucket(c, key)];
            while (o) {
                entry *n = o->hnext;
                if (o != e && o->has_val && same_base(&o->key, key) && o->stored_ns <= now_ns)
                    drop_answer(c, o);
                o = n;
            }
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
    if (e && e->flight) {
        end_flight(c, e);
        if (!e->has_val) remove_entry(c, e);
    }
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
            /* Flights in progress stay with their leader (their answers are dropped): their
             * key carries the old state version, which the next lookup no longer asks for. */
            if (e->key.user_id == user_id && e->has_val) {
                drop_answer(c, e);
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
