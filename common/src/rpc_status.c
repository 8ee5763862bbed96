/* rpc_status.c — gRPC status codes: names, and the mapping back to rp error codes. */
#include "rp/rpc.h"

static const char *const names[] = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};

const char *rp_grpc_status_name(int code)
{
    if (code < 0 || code >= (int)(sizeof names / sizeof names[0])) return "UNKNOWN_STATUS";
    return names[code];
}

int rp_err_from_grpc_status(int code)
{
    switch (code) {
    case RP_GRPC_OK: return RP_OK;
    case RP_GRPC_CANCELLED: return RP_ECANCELED;
    case RP_GRPC_INVALID_ARGUMENT: return RP_EINVAL;
    case RP_GRPC_OUT_OF_RANGE: return RP_EINVAL;
    case RP_GRPC_DEADLINE_EXCEEDED: return RP_ETIMEDOUT;
    case RP_GRPC_NOT_FOUND: return RP_ENOENT;
    case RP_GRPC_ALREADY_EXISTS: return RP_EEXIST;
    case RP_GRPC_PERMISSION_DENIED: return RP_EDENIED;
    case RP_GRPC_RESOURCE_EXHAUSTED: return RP_EOVERLOAD;
    case RP_GRPC_FAILED_PRECONDITION: return RP_EPRECOND;
    case RP_GRPC_ABORTED: return RP_EUNAVAIL;
    case RP_GRPC_UNIMPLEMENTED: return RP_EUNIMPL;
    case RP_GRPC_UNAVAILABLE: return RP_EUNAVAIL;
    case RP_GRPC_DATA_LOSS: return RP_ECORRUPT;
    case RP_GRPC_UNAUTHENTICATED: return RP_EUNAUTH;
    default: return RP_EINTERNAL;
    }
}
