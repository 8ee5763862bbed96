/*
 * tests/fuzz/inproc.h — run a service's unary handler in-process, without sockets: the
 * request bytes are unpacked into a fresh call arena exactly as the RPC layer does
 * (rpc_server.c), the handler of the method row runs on an rp_call built here, and an OK
 * response is packed as the layer would send it. Used by the fuzz targets and by the
 * allocation-failure tests. Includes the RPC layer's internal header (common/src).
 */
#ifndef TESTS_FUZZ_INPROC_H
#define TESTS_FUZZ_INPROC_H

#include "rpc_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct ip_result {
    int rc;            /* the handler's return (RP_EINVAL for bytes that do not parse) */
    rp_error err;      /* its message */
    size_t resp_bytes; /* packed response size when rc == RP_OK */
} ip_result;

/* The row of methods[0..n) whose path ends with suffix ("/Retrieve"), or NULL. */
static inline const rp_method *ip_find(const rp_method *methods, size_t n, const char *suffix)
{
    size_t ls = strlen(suffix);
    for (size_t i = 0; i < n; i++) {
        size_t lp = strlen(methods[i].path);
        if (lp >= ls && !strcmp(methods[i].path + lp - ls, suffix)) return &methods[i];
    }
    return NULL;
}

/* Unpacks data as the method's request and runs its handler. Returns the handler's rc
 * (or RP_EINVAL / RP_ENOMEM before it), fills *out. */
static inline int ip_call(const rp_method *m, const uint8_t *data, size_t size, ip_result *out)
{
    memset(out, 0, sizeof *out);
    rp__method pm = {.m = *m, .kind = RP__UNARY};
    struct rp_call c;
    memset(&c, 0, sizeof c);
    c.method = &pm;
    c.deadline_ns = UINT64_MAX;
    snprintf(c.request_id, sizeof c.request_id, "inproc");
    grpc_metadata_array_init(&c.md);
    if (rp_arena_create(0, &c.arena) != RP_OK) {
        out->rc = rp_errorf(&out->err, RP_ENOMEM, "arena");
        return out->rc;
    }
    rp_arena_pb_allocator(c.arena, &c.alloc);
    ProtobufCMessage *req = protobuf_c_message_unpack(m->request, &c.alloc, size, data);
    if (!req) {
        out->rc = rp_errorf(&out->err, RP_EINVAL, "%s: the request does not parse", m->path);
    } else {
        ProtobufCMessage *resp = NULL;
        out->rc = m->handler(&c, req, &resp, &out->err);
        if (out->rc == RP_OK) {
            if (!resp) {
                fprintf(stderr, "%s: handler answered OK without a response\n", m->path);
                abort();
            }
            size_t n = protobuf_c_message_get_packed_size(resp);
            uint8_t *buf = malloc(n ? n : 1);
            if (buf) {
                out->resp_bytes = protobuf_c_message_pack(resp, buf);
                free(buf);
            }
        }
    }
    rp_arena_destroy(c.arena);
    grpc_metadata_array_destroy(&c.md);
    return out->rc;
}

#endif
