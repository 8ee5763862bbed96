/*
 * gw/cache.h — the gateway's answer cache: a bounded LRU with a time to live and
 * single-flight misses.
 *
 * A key is (user, request fingerprint, user state version, generation): a Feedback
 * bumps the state version, so answers computed before it are never served again; the
 * generation (a hash of the bundle versions) changes with a reload. Values are opaque byte strings (the packed answer), copied
 * in and copied out.
 *
 * Single flight: when several threads miss on the same key at once, the first one
 * (the leader) computes the answer and the others wait for it, so identical
 * concurrent misses are computed once. The leader must end its flight with
 * gw_cache_fill or gw_cache_abandon; waiters of an abandoned flight get GW_CACHE_LEAD
 * in turn (one of them becomes the new leader).
 *
 * Stale while revalidate: an answer for the same user, fingerprint and state version
 * from another generation, or past its TTL by at most stale_s, is an older answer. A
 * lookup that finds one gets it (GW_CACHE_STALE) instead of waiting while another
 * thread computes the current answer, and instead of computing when max_refresh such
 * recomputations are in flight already. So a reload (which changes every key at once)
 * or a TTL never makes every caller wait for a computation nor every request thread
 * compute at once: each waiter holds a request thread, and the storm of recomputations
 * after a reload held all of them while cheap hits queued behind. With fewer than
 * max_refresh in flight a lookup still leads: the first caller after a reload computes
 * with the new bundle, unless the server is behind (GW_CACHE_BEHIND): then the older
 * answer is served and the recomputation waits for a caller that finds the server
 * keeping up, so that the refreshes after a reload take only the capacity left over
 * (an answer too old to serve is recomputed whatever the load). A new state version
 * never falls back (Feedback shows at once), and a fill drops the answers it
 * supersedes.
 *
 * Thread-safe.
 */
#ifndef GW_CACHE_H
#define GW_CACHE_H

#include "rp/arena.h"
#include "rp/err.h"

#include <stddef.h>
#include <stdint.h>

typedef struct gw_cache_key {
    uint64_t user_id;
    uint64_t fingerprint;   /* hash of the request fields that shape the answer */
    uint64_t state_version; /* the user's state version when the answer was computed */
    uint64_t generation;    /* hash of the bundle versions that produce it */
} gw_cache_key;

typedef struct gw_cache_config {
    size_t max_entries; /* 0 = 10,000 */
    size_t max_bytes;   /* total value bytes; 0 = 64 MiB */
    double ttl_s;       /* 0 = 30 s; an entry older than this is a miss */
    double stale_s;     /* how long past its TTL an answer may be served while a fresh
                         * one is computed; 0 = ttl_s; < 0 = never */
    size_t max_refresh; /* recomputations of answers that have an older one, at once;
                         * 0 = 1 */
} gw_cache_config;

typedef struct gw_cache_stats {
    uint64_t hits;
    uint64_t misses;      /* lookups that led a computation */
    uint64_t coalesced;   /* lookups that waited for another thread's computation */
    uint64_t stale;       /* lookups answered GW_CACHE_STALE */
    uint64_t deferred;    /* ... of which with GW_CACHE_BEHIND, no refresh running */
    uint64_t evictions;   /* entries pushed out by the size bounds */
    uint64_t expired;     /* lookups that found their answer past its TTL */
    uint64_t entries;     /* answers held (stale ones included) */
    uint64_t bytes;
} gw_cache_stats;

typedef struct gw_cache gw_cache;

/* cfg may be NULL for defaults. *out is NULL on error (RP_ENOMEM). */
int gw_cache_create(const gw_cache_config *cfg, gw_cache **out);
/* Frees everything. No call may be in progress. NULL is a no-op. */
void gw_cache_destroy(gw_cache *c);

enum {
    GW_CACHE_HIT = 1,  /* *val / *len hold a copy of the answer, allocated from arena */
    GW_CACHE_LEAD = 2, /* a miss: the caller computes, then gw_cache_fill or _abandon */
    GW_CACHE_STALE = 3, /* *val / *len hold a copy of an older answer (see above) */
};

/*
 * Looks key up at monotonic time now_ns. A hit copies the value into arena. A miss is
 * answered with an older answer when the rules above allow (GW_CACHE_STALE); or else,
 * on a key another thread is computing, waits for that computation until
 * wait_until_ns (a monotonic deadline; UINT64_MAX = no limit) and reports its result;
 * or makes the caller the leader. Returns GW_CACHE_HIT, GW_CACHE_STALE, GW_CACHE_LEAD,
 * RP_ETIMEDOUT (waited until wait_until_ns; the caller should compute without caching)
 * or RP_ENOMEM.
 */
int gw_cache_get(gw_cache *c, const gw_cache_key *key, uint64_t now_ns, uint64_t wait_until_ns,
                 rp_arena *arena, void **val, size_t *len);

/* Flags of gw_cache_lookup. */
enum {
    /* The server is behind (a backlog made the caller wait): an older answer is served
     * rather than recomputed, even with fewer than max_refresh recomputations running. */
    GW_CACHE_BEHIND = 1u << 0,
};
/* gw_cache_get with flags (gw_cache_get is gw_cache_lookup with flags 0). */
int gw_cache_lookup(gw_cache *c, const gw_cache_key *key, uint64_t now_ns,
                    uint64_t wait_until_ns, unsigned flags, rp_arena *arena, void **val,
                    size_t *len);
/* Ends the caller's flight by storing val[0..len) (copied) and waking waiters. */
void gw_cache_fill(gw_cache *c, const gw_cache_key *key, uint64_t now_ns, const void *val,
                   size_t len);
/* Ends the caller's flight without a value (the computation failed or must not be
 * cached); waiters retry. */
void gw_cache_abandon(gw_cache *c, const gw_cache_key *key);
/* Drops every answer of a user (ForgetUser), stale ones included. Returns how many
 * were dropped. */
size_t gw_cache_drop_user(gw_cache *c, uint64_t user_id);

void gw_cache_get_stats(gw_cache *c, gw_cache_stats *out);

/* FNV-1a 64-bit, for building fingerprints: h = gw_hash(h, p, n), starting from
 * GW_HASH_INIT. */
#define GW_HASH_INIT 0xcbf29ce484222325ull
uint64_t gw_hash(uint64_t h, const void *p, size_t n);

#endif
