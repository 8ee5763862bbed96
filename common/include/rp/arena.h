/*
 * rp/arena.h — a per-request arena, freed as a whole at the end of the call.
 *
 * Blocks are malloc'd as needed and chained; rp_arena_reset keeps the first block for
 * reuse. The arena is also a ProtobufCAllocator, so unpacking a request allocates from
 * it and nothing needs freeing one by one. Not thread-safe: one arena per call.
 */
#ifndef RP_ARENA_H
#define RP_ARENA_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

typedef struct rp_arena rp_arena;

/* Creates an arena whose blocks are at least block_size bytes (0 = 16 KiB).
 * Returns RP_OK or RP_ENOMEM; *out is NULL on error. */
int rp_arena_create(size_t block_size, rp_arena **out);
/* Frees every block. NULL is a no-op. */
void rp_arena_destroy(rp_arena *a);
/* Frees everything allocated since creation but keeps the first block. */
void rp_arena_reset(rp_arena *a);

/* Returns 16-byte aligned memory valid until reset/destroy, or NULL when out of memory
 * (or when rp_arena_set_limit would be exceeded). n = 0 returns a valid unique pointer. */
void *rp_arena_alloc(rp_arena *a, size_t n);
/* Zeroed array of n elements of size sz; NULL on overflow or out of memory. */
void *rp_arena_calloc(rp_arena *a, size_t n, size_t sz);
/* Copies s into the arena. */
char *rp_arena_strdup(rp_arena *a, const char *s);
/* printf into the arena. */
char *rp_arena_sprintf(rp_arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Caps the total bytes this arena may hold (0 = no cap); allocations past it fail. */
void rp_arena_set_limit(rp_arena *a, size_t max_bytes);
/* Bytes handed out since creation/reset. */
size_t rp_arena_used(const rp_arena *a);

/* A protobuf-c allocator that allocates from a (free is a no-op). The struct is
 * caller-owned and must not outlive a. */
void rp_arena_pb_allocator(rp_arena *a, ProtobufCAllocator *out);

#endif
