/*
 * lt/workload.h — what the load generator sends and when: random numbers, Zipf ranks,
 * the arrival schedule of an open-loop run, and the encoded requests of each RPC.
 *
 * Everything here is deterministic for a given seed, and allocation-free except
 * lt_workload_create. A workload is read-only once created and may be shared by
 * threads; each thread keeps its own lt_rng.
 */
#ifndef LT_WORKLOAD_H
#define LT_WORKLOAD_H

#include "rp/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------ random numbers */

/* xoshiro256** — small, fast, good enough for load shapes. Caller-owned. */
typedef struct lt_rng {
    uint64_t s[4];
} lt_rng;

void lt_rng_seed(lt_rng *r, uint64_t seed);
uint64_t lt_rng_next(lt_rng *r);
/* Uniform in (0, 1]: never 0, so log() of it is finite. */
double lt_rng_unif(lt_rng *r);

/* ------------------------------------------------------------------ Zipf ranks */

/*
 * Zipf over ranks 1..n with exponent s: P(k) proportional to 1 / k^s. s = 0 is uniform.
 * Drawn by rejection-inversion (Hörmann and Derflinger 1996), O(1) memory and time, so
 * n may be as large as 2^53. Caller-owned, read-only after init (shareable).
 */
typedef struct lt_zipf {
    uint64_t n;
    double s;
    double h_x1, h_n, sdiv;
} lt_zipf;

/* RP_EINVAL (naming "users"/"zipf") unless 1 <= n <= 2^53 and 0 <= s <= 10. */
int lt_zipf_init(lt_zipf *z, uint64_t n, double s, rp_error *err);
/* A rank in 1..n; rank 1 is the most frequent. */
uint64_t lt_zipf_draw(const lt_zipf *z, lt_rng *r);

/* ------------------------------------------------------------------ arrivals */

typedef enum lt_arrivals {
    LT_ARRIVALS_CONSTANT = 0, /* evenly spaced: one call every 1/rate seconds */
    LT_ARRIVALS_POISSON = 1,  /* exponential gaps with mean 1/rate (a Poisson process) */
} lt_arrivals;

/* "constant" / "poisson" → value; RP_EINVAL naming --arrivals otherwise. */
int lt_arrivals_parse(const char *s, lt_arrivals *out, rp_error *err);
const char *lt_arrivals_name(lt_arrivals a);

/*
 * The intended start times of an open-loop run, in nanoseconds from the start of the
 * run. Time is kept in double nanoseconds so that rates that do not divide a second
 * evenly do not drift. Caller-owned.
 */
typedef struct lt_schedule {
    lt_arrivals kind;
    double gap_ns;  /* mean gap */
    double next_ns; /* the next intended start */
    lt_rng rng;
} lt_schedule;

/* rate > 0 calls per second; the first call is intended at first_ns. */
void lt_schedule_init(lt_schedule *sc, lt_arrivals kind, double rate, double first_ns,
                      uint64_t seed);
/* Returns the next intended start (ns from the run's start) and advances. */
uint64_t lt_schedule_next(lt_schedule *sc);

/* ------------------------------------------------------------------ RPCs and requests */

typedef enum lt_rpc {
    LT_RPC_RECOMMEND = 0, /* /recpipe.v1.Recommender/Recommend */
    LT_RPC_FEEDBACK,      /* /recpipe.v1.Recommender/Feedback */
    LT_RPC_RETRIEVE,      /* /recpipe.v1.Retrieval/Retrieve */
    LT_RPC_RANK,          /* /recpipe.v1.Ranking/Rank */
    LT_RPC_STATUS,        /* /recpipe.v1.Admin/Status */
    LT_RPC_COUNT
} lt_rpc;

/* "recommend", ... Static strings. */
const char *lt_rpc_name(lt_rpc rpc);
/* The full method path. Static string. */
const char *lt_rpc_path(lt_rpc rpc);
/* Name → rpc; false when unknown. */
bool lt_rpc_parse(const char *name, lt_rpc *out);

/*
 * Parses a mix "recommend=0.9,feedback=0.1" into weights (unlisted RPCs get 0) and
 * normalises them to sum 1. RP_EINVAL naming the entry for an unknown RPC, a weight
 * that is negative or not a number, or weights that sum to 0.
 */
int lt_mix_parse(const char *spec, double w[LT_RPC_COUNT], rp_error *err);

/*
 * Ids to draw from. When a real catalogue is given, ids are taken from it: user_ids
 * in any order (the Zipf rank picks an index), item_ids most popular first (so Zipf
 * rank 1 is the most popular item). Arrays are borrowed: they must outlive the
 * workload. Without them, ids are synthetic: users 1..n_users, items 1..n_items.
 */
typedef struct lt_ids {
    const uint64_t *user_ids; /* NULL = synthetic */
    uint64_t n_users;
    const uint64_t *item_ids; /* NULL = synthetic */
    uint64_t n_items;
} lt_ids;

typedef struct lt_workload_config {
    lt_ids ids;         /* n_users, n_items must be >= 1 */
    double zipf_s;      /* exponent for users and items; 0 = uniform */
    double mix[LT_RPC_COUNT]; /* weights, need not be normalised; sum > 0 */
    uint32_t count;     /* Recommend.count (1..500) */
    uint32_t history;   /* events in Retrieve/Rank histories (0..1000) */
    uint32_t candidates; /* Rank candidates, also Retrieve.k (1..5000) */
} lt_workload_config;

typedef struct lt_workload lt_workload;

/* Copies cfg (not the id arrays). RP_EINVAL naming the field out of range. */
int lt_workload_create(const lt_workload_config *cfg, lt_workload **out, rp_error *err);
void lt_workload_destroy(lt_workload *w);

/* The mix as normalised weights (sum 1), indexed by lt_rpc; owned by w. */
const double *lt_workload_mix(const lt_workload *w);
/* Picks the RPC of the next call according to the mix. */
lt_rpc lt_workload_pick(const lt_workload *w, lt_rng *r);
/* A user id drawn Zipf over the users; an item id drawn Zipf over the items. */
uint64_t lt_workload_user(const lt_workload *w, lt_rng *r);
uint64_t lt_workload_item(const lt_workload *w, lt_rng *r);

/*
 * Encodes one request of rpc into buf[0..cap): the protobuf bytes of the method's
 * request message with ids drawn from the workload; *len receives the length (0 is a
 * valid length: StatusRequest is empty). Returns RP_OK, RP_ETOOBIG when cap is too
 * small, RP_ENOMEM. LT_REQUEST_MAX bytes always suffice within the limits above.
 * Thread-safe for distinct rngs.
 */
#define LT_REQUEST_MAX (256 * 1024)
int lt_workload_encode(const lt_workload *w, lt_rpc rpc, lt_rng *r, uint8_t *buf, size_t cap,
                       size_t *len);

#endif
