/*
 * rp/sighup.h — SIGHUP as a reload request.
 *
 * A service reloads its bundle on SIGHUP. The signal may land on any thread (OpenBLAS
 * and gRPC start their threads before main can block anything), so the handler only
 * writes one byte to a pipe; a dedicated thread reads it and runs the callback, where
 * taking locks and opening files is allowed.
 */
#ifndef RP_SIGHUP_H
#define RP_SIGHUP_H

#include "rp/err.h"

typedef struct rp_sighup rp_sighup;

/* Installs the SIGHUP handler and starts the thread that calls fn(user) once per signal
 * received (signals arriving while fn runs are coalesced into at most one more call).
 * One watcher per process: a second start while one runs is RP_EEXIST. fn runs on the
 * watcher's thread and must not call rp_sighup_stop. */
int rp_sighup_start(void (*fn)(void *user), void *user, rp_sighup **out, rp_error *err);
/* Restores SIGHUP to ignored, stops the thread (waiting for a running fn to return) and
 * frees. NULL is a no-op. */
void rp_sighup_stop(rp_sighup *w);

#endif
