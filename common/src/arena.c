#include "rp/arena.h"
#include "rp/err.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARENA_ALIGN 16
#define ARENA_DEFAULT_BLOCK (16 * 1024)

typedef struct block {
    struct block *next;
    size_t cap;
    size_t used;
    _Alignas(ARENA_ALIGN) unsigned char data[];
} block;

struct rp_arena {
    block *head;  /* current block (most recent) */
    block *first; /* kept across resets */
    size_t block_size;
    size_t used;
    size_t limit;
};

static block *block_new(size_t cap)
{
    block *b = malloc(sizeof *b + cap);
    if (!b) return NULL;
    b->next = NULL;
    b->cap = cap;
    b->used = 0;
    return b;
}

int rp_arena_create(size_t block_size, rp_arena **out)
{
    *out = NULL;
    rp_arena *a = calloc(1, sizeof *a);
    if (!a) return RP_ENOMEM;
    a->block_size = block_size ? block_size : ARENA_DEFAULT_BLOCK;
    a->first = block_new(a->block_size);
    if (!a->first) {
        free(a);
        return RP_ENOMEM;
    }
    a->head = a->first;
    *out = a;
    return RP_OK;
}

static void free_chain(block *b, block *stop)
{
    while (b && b != stop) {
        block *next = b->next;
        free(b);
        b = next;
    }
}

void rp_arena_destroy(rp_arena *a)
{
    if (!a) return;
    free_chain(a->head, NULL);
    free(a);
}

void rp_arena_reset(rp_arena *a)
{
    /* Blocks are pushed at the head, so everything before `first` is newer. */
    free_chain(a->head, a->first);
    a->head = a->first;
    a->first->used = 0;
    a->first->next = NULL;
    a->used = 0;
}

void *rp_arena_alloc(rp_arena *a, size_t n)
{
    size_t need = (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (need < n) return NULL;
    if (need == 0) need = ARENA_ALIGN;
    if (a->limit && (need > a->limit || a->used > a->limit - need)) return NULL;
    block *b = a->head;
    if (b->cap - b->used < need) {
        size_t cap = need > a->block_size ? need : a->block_size;
        block *nb = block_new(cap);
        if (!nb) return NULL;
        nb->next = a->head;
        a->head = nb;
        b = nb;
    }
    void *p = b->data + b->used;
    b->used += need;
    a->used += need;
    return p;
}

void *rp_arena_calloc(rp_arena *a, size_t n, size_t sz)
{
    if (sz && n > SIZE_MAX / sz) return NULL;
    void *p = rp_arena_alloc(a, n * sz);
    if (p) memset(p, 0, n * sz);
    return p;
}

char *rp_arena_strdup(rp_arena *a, const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = rp_arena_alloc(a, n);
    if (p) memcpy(p, s, n);
    return p;
}

char *rp_arena_sprintf(rp_arena *a, const char *fmt, ...)
{
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *p = NULL;
    if (n >= 0 && (p = rp_arena_alloc(a, (size_t)n + 1))) vsnprintf(p, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    return p;
}

void rp_arena_set_limit(rp_arena *a, size_t max_bytes)
{
    a->limit = max_bytes;
}

size_t rp_arena_used(const rp_arena *a)
{
    return a->used;
}

static void *pb_alloc(void *ud, size_t n)
{
    return rp_arena_alloc(ud, n);
}

static void pb_free(void *ud, void *p)
{
    (void)ud;
    (void)p;
}

void rp_arena_pb_allocator(rp_arena *a, ProtobufCAllocator *out)
{
    out->alloc = pb_alloc;
    out->free = pb_free;
    out->allocator_data = a;
}
