/*
 * gw/supervise.h — child processes for `recpipe serve` and `recpipe demo`: start
 * `recpipe <subcommand>` children, wait until they report SERVING over gRPC health,
 * forward stop signals, and reap them.
 *
 * Children stay in the caller's process group, so a Ctrl-C on the terminal reaches
 * every one of them at once; each child also gets SIGTERM when its parent dies
 * (PR_SET_PDEATHSIG), so nothing outlives a killed supervisor.
 */
#ifndef GW_SUPERVISE_H
#define GW_SUPERVISE_H

#include "rp/err.h"

#include <stddef.h>
#include <sys/types.h>

/* The path of the running recpipe binary (/proc/self/exe), for re-executing it.
 * Static storage; "" when it cannot be read. */
const char *gw_self_exe(void);

/* A loopback TCP port that nobody listens on right now (bind to port 0, then close). 0 on
 * failure. */
int gw_free_port(void);

/* Starts `exe argv[0] argv[1] ...` (argv NULL-terminated, argv[0] the subcommand). When
 * log_path is non-NULL, stdout and stderr go to that file (appended). Returns RP_OK and
 * *pid, or RP_EIO naming what failed. */
int gw_spawn(const char *exe, const char *const *argv, const char *log_path, pid_t *pid,
             rp_error *err);

/* Waits until addr answers grpc.health.v1 Check with SERVING. Returns RP_OK, RP_EUNAVAIL
 * when pid (if > 0) exited first (err says how), or RP_ETIMEDOUT after timeout_s. */
int gw_wait_serving(const char *addr, pid_t pid, double timeout_s, rp_error *err);

/* Runs `exe argv...` to completion with inherited stdio. Returns the exit status (0..255),
 * or -1 when it could not start or died of a signal. */
int gw_run(const char *exe, const char *const *argv);

/* Sends sig to every pid > 0 in pids[0..n), waits up to grace_s for all of them, then
 * SIGKILLs the rest and reaps them. Entries are set to 0 once reaped. */
void gw_stop_all(pid_t *pids, size_t n, int sig, double grace_s);

/* Describes a wait status: "exited with status 2", "killed by signal 9". */
void gw_describe_status(int status, char *buf, size_t cap);

#endif
