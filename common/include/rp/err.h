/*
 * rp/err.h — the one error table of recpipe.
 *
 * RP_ERRNO_MAP expands into the enum, rp_strerror, rp_err_name and the single mapping
 * to gRPC status codes. Zero is success; every error is negative. Functions that can
 * fail return one of these codes and, when given a non-NULL rp_error, fill it with a
 * message a user can act on (naming the field, file or limit).
 */
#ifndef RP_ERR_H
#define RP_ERR_H

#include <stdarg.h>
#include <stddef.h>

/* XX(name, message, grpc status name) */
#define RP_ERRNO_MAP(XX)                                                                   \
    XX(EINVAL, "invalid argument", INVALID_ARGUMENT)                                       \
    XX(ENOMEM, "out of memory", RESOURCE_EXHAUSTED)                                        \
    XX(ENOENT, "not found", NOT_FOUND)                                                     \
    XX(EEXIST, "already exists", ALREADY_EXISTS)                                           \
    XX(EIO, "input/output error", INTERNAL)                                                \
    XX(EPARSE, "malformed input", INVALID_ARGUMENT)                                        \
    XX(ECORRUPT, "data is corrupt", DATA_LOSS)                                             \
    XX(EVERSION, "unsupported format version", FAILED_PRECONDITION)                       \
    XX(ETOOBIG, "size limit exceeded", RESOURCE_EXHAUSTED)                                 \
    XX(EFULL, "storage is full", RESOURCE_EXHAUSTED)                                       \
    XX(EOVERLOAD, "overloaded, try again later", RESOURCE_EXHAUSTED)                       \
    XX(ENOBUNDLE, "no bundle is loaded", UNAVAILABLE)                                      \
    XX(EUNAVAIL, "service unavailable", UNAVAILABLE)                                       \
    XX(ESHUTDOWN, "shutting down", UNAVAILABLE)                                            \
    XX(ETIMEDOUT, "deadline exceeded", DEADLINE_EXCEEDED)                                  \
    XX(ECANCELED, "canceled", CANCELLED)                                                   \
    XX(EUNAUTH, "unauthenticated", UNAUTHENTICATED)                                        \
    XX(EDENIED, "permission denied", PERMISSION_DENIED)                                    \
    XX(EPRECOND, "failed precondition", FAILED_PRECONDITION)                               \
    XX(EUNIMPL, "not implemented", UNIMPLEMENTED)                                          \
    XX(EFAISS, "FAISS error", INTERNAL)                                                    \
    XX(ELMDB, "LMDB error", INTERNAL)                                                      \
    XX(EINTERNAL, "internal error", INTERNAL)

enum { RP_OK = 0 };

/* Codes are -1, -2, ... in table order. */
enum {
    RP__ERR_BASE = 0,
#define RP__ERR_ENUM(name, msg, status) RP__IDX_##name,
    RP_ERRNO_MAP(RP__ERR_ENUM)
#undef RP__ERR_ENUM
    RP__ERR_COUNT
};
#define RP__ERR_DEFINE(name, msg, status) RP_##name = -RP__IDX_##name,
enum { RP_ERRNO_MAP(RP__ERR_DEFINE) };
#undef RP__ERR_DEFINE

/* "RP_EINVAL: invalid argument"; "unknown error" for codes outside the table.
 * Returns a static string. */
const char *rp_strerror(int code);
/* "RP_EINVAL"; "RP_OK" for 0. Returns a static string. */
const char *rp_err_name(int code);
/* The gRPC status code (grpc_status_code values) for an error; 0 (OK) for RP_OK. */
int rp_err_grpc_status(int code);

/* An error with a message, filled by functions that take one. Caller-owned. */
typedef struct rp_error {
    int code;
    char msg[512];
} rp_error;

/* Records code and a printf-style message in err (which may be NULL); returns code,
 * so that `return rp_errorf(err, RP_EINVAL, "k: %u is out of range 1..10000", k);`
 * reads as one statement. */
int rp_errorf(rp_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int rp_verrorf(rp_error *err, int code, const char *fmt, va_list ap);
/* Prefixes err->msg with "prefix: " (for adding context on the way up). Returns code. */
int rp_error_prefix(rp_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Clears err to RP_OK with an empty message. */
void rp_error_clear(rp_error *err);
/* err->msg when set, else rp_strerror(err->code). */
const char *rp_error_text(const rp_error *err);

#endif
