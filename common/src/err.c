#include "rp/err.h"

#include <grpc/status.h>
#include <stdio.h>
#include <string.h>

#define RP__ERR_MSG(name, msg, status) [RP__IDX_##name] = "RP_" #name ": " msg,
static const char *const err_msgs[RP__ERR_COUNT] = {RP_ERRNO_MAP(RP__ERR_MSG)};
#undef RP__ERR_MSG

#define RP__ERR_NAME(name, msg, status) [RP__IDX_##name] = "RP_" #name,
static const char *const err_names[RP__ERR_COUNT] = {RP_ERRNO_MAP(RP__ERR_NAME)};
#undef RP__ERR_NAME

#define RP__ERR_STATUS(name, msg, status) [RP__IDX_##name] = GRPC_STATUS_##status,
static const int err_status[RP__ERR_COUNT] = {RP_ERRNO_MAP(RP__ERR_STATUS)};
#undef RP__ERR_STATUS

static int err_index(int code)
{
    if (code >= 0 || -code >= RP__ERR_COUNT) return -1;
    return -code;
}

const char *rp_strerror(int code)
{
    if (code == RP_OK) return "RP_OK: success";
    int i = err_index(code);
    return i < 0 ? "unknown error" : err_msgs[i];
}

const char *rp_err_name(int code)
{
    if (code == RP_OK) return "RP_OK";
    int i = err_index(code);
    return i < 0 ? "RP_UNKNOWN" : err_names[i];
}

int rp_err_grpc_status(int code)
{
    if (code == RP_OK) return GRPC_STATUS_OK;
    int i = err_index(code);
    return i < 0 ? GRPC_STATUS_UNKNOWN : err_status[i];
}

int rp_verrorf(rp_error *err, int code, const char *fmt, va_list ap)
{
    if (err) {
        err->code = code;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    }
    return code;
}

int rp_errorf(rp_error *err, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    rp_verrorf(err, code, fmt, ap);
    va_end(ap);
    return code;
}

int rp_error_prefix(rp_error *err, const char *fmt, ...)
{
    if (!err) return RP_EINTERNAL;
    char prefix[256], old[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    snprintf(err->msg, sizeof err->msg, "%s: %s", prefix, old[0] ? old : rp_strerror(err->code));
    return err->code;
}

void rp_error_clear(rp_error *err)
{
    if (!err) return;
    err->code = RP_OK;
    err->msg[0] = '\0';
}

const char *rp_error_text(const rp_error *err)
{
    if (!err) return "";
    return err->msg[0] ? err->msg : rp_strerror(err->code);
}
