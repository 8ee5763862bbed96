/*
 * gw/state.h — the gateway's user state store (LMDB).
 *
 * One LMDB environment in STATE_DIR holds, per user, a ring of the last N events and
 * a state version; per item, popularity counters; and a store-wide sequence number
 * from which state versions are drawn (so a version is never reused, not even after
 * ForgetUser). Every write is one LMDB transaction committed with fsync before the
 * call returns: a batch is stored whole or not at all, and an acknowledged batch
 * survives kill -9. Readers never block writers.
 *
 * Thread-safe: any number of threads may call any function concurrently (writes are
 * serialised by LMDB's writer lock).
 */
#ifndef GW_STATE_H
#define GW_STATE_H

#include "rp/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The event types of recpipe.v1.EventType that Feedback accepts (1..6). */
#define GW_EVENT_TYPE_MIN 1
#define GW_EVENT_TYPE_MAX 6
#define GW_EVENT_TYPE_DISMISS 6

/* One stored event. */
typedef struct gw_event {
    uint64_t item_id;
    int64_t ts;    /* Unix seconds */
    float value;   /* rating or weight; 0 = unset */
    uint8_t type;  /* recpipe.v1.EventType value */
} gw_event;

/* One event of a Feedback batch: an event and the user it belongs to. */
typedef struct gw_user_event {
    uint64_t user_id;
    gw_event ev;
} gw_user_event;

typedef struct gw_state_opts {
    size_t map_size;        /* LMDB map size in bytes; 0 = 1 GiB */
    uint32_t history_len;   /* events kept per user (ring); 0 = 200; at most 10,000 */
} gw_state_opts;

/* Per-item counters (anonymous aggregates: ForgetUser does not subtract from them). */
typedef struct gw_item_counts {
    uint64_t events;            /* events of every type except DISMISS */
    uint64_t by_type[GW_EVENT_TYPE_MAX + 1];
    int64_t last_ts;            /* newest event timestamp */
} gw_item_counts;

typedef struct gw_state gw_state;

/* Opens (creating when missing) the store in dir, which is created if needed. A store
 * written with a different history_len keeps its own (recorded at creation) and this
 * one is ignored with a log line. Errors: RP_EIO (directory), RP_ELMDB, RP_ECORRUPT.
 * On error *out is NULL. */
int gw_state_open(const char *dir, const gw_state_opts *opts, gw_state **out, rp_error *err);
/* Closes the environment. NULL is a no-op. No call may be in progress. */
void gw_state_close(gw_state *st);

/* The ring length in use. */
uint32_t gw_state_history_len(const gw_state *st);

/*
 * Reads the user's history, oldest first, into out[0..cap) (the newest cap events when
 * the ring holds more), sets *n, and sets *version to the user's state version (0 for
 * a user the store does not know, who then has *n == 0). Returns RP_OK or RP_ELMDB.
 */
int gw_state_history(gw_state *st, uint64_t user_id, gw_event *out, size_t cap, size_t *n,
                     uint64_t *version, rp_error *err);

/*
 * Appends a batch in ONE durable transaction: each event goes to its user's ring (the
 * oldest falls out when full), item counters are bumped, and every user touched gets a
 * new state version. Events are appended in the order given; the caller validates
 * them first. Errors: RP_EFULL when the map is full (nothing of the batch is stored),
 * RP_ELMDB (nothing stored either).
 */
int gw_state_append(gw_state *st, const gw_user_event *events, size_t n, rp_error *err);

/*
 * Deletes everything held about the user (ring and version) in one durable
 * transaction. *existed and *events_deleted (either may be NULL) report what was there.
 */
int gw_state_forget(gw_state *st, uint64_t user_id, bool *existed, uint32_t *events_deleted,
                    rp_error *err);

/* Reads an item's counters (zeros for an item never seen). RP_OK or RP_ELMDB. */
int gw_state_item_counts(gw_state *st, uint64_t item_id, gw_item_counts *out, rp_error *err);

/* Store-wide figures: users with state, events stored in rings. */
int gw_state_stats(gw_state *st, uint64_t *users, uint64_t *events, rp_error *err);

#endif
