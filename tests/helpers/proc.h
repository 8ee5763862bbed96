/*
 * tests/helpers/proc.h — run a server as a real child process in a test.
 *
 *   tproc p;
 *   char *argv[] = {getenv("RECPIPE_BIN"), "retrieval", "--listen", "127.0.0.1:0", NULL};
 *   if (tproc_start(&p, argv, 10000) != 0) fail_msg("%s", p.error);
 *   ... call 127.0.0.1:p.port ...
 *   int status = tproc_stop(&p, SIGTERM, 15000);   // 0 = exited with code 0
 *   tproc_cleanup(&p);
 *
 * The child's stderr goes to a file in a private temporary directory; its port is read
 * from the "listening" log line every rp_server prints (`"port":N`), so any service built
 * on the RPC layer works with port 0 and no extra flag. When the child dies before
 * listening, tproc_start fails and p.error quotes its log. Children are killed when the
 * test process exits or dies, even if a failed assertion skipped tproc_cleanup (the
 * kernel's parent-death signal follows the thread that started the child: call
 * tproc_start from the test's main thread). Not thread-safe.
 */
#ifndef TESTS_HELPERS_PROC_H
#define TESTS_HELPERS_PROC_H

#include <stddef.h>
#include <sys/types.h>

typedef struct tproc {
    pid_t pid;            /* 0 when not running */
    int port;             /* the bound port, once started */
    char dir[256];        /* private temporary directory (removed by tproc_cleanup) */
    char log_path[300];   /* the child's stderr */
    char error[1024];     /* why tproc_start failed */
} tproc;

/*
 * Starts argv[0] with argv (NULL-terminated; argv[0] must be a path), stdout to
 * /dev/null and stderr to p->log_path, and waits up to timeout_ms for the listening
 * line. Returns 0, or -1 with p->error set (the child is then killed and reaped).
 */
int tproc_start(tproc *p, char *const argv[], int timeout_ms);

/*
 * Sends sig (0 = none) and waits up to timeout_ms for the child to exit; after that it
 * is killed with SIGKILL. Returns the exit code (0..255), or -N when signal N ended it,
 * or -1000 when it had to be killed after the timeout.
 */
int tproc_stop(tproc *p, int sig, int timeout_ms);

/* The child's stderr so far, NUL-terminated, malloc'd (caller frees); NULL on error. */
char *tproc_log(const tproc *p);
/* Prints the child's log to stderr, prefixed (for failure diagnostics). */
void tproc_dump_log(const tproc *p);
/* Kills the child if still running, removes the temporary directory. */
void tproc_cleanup(tproc *p);

/* "127.0.0.1:<port>" into buf. */
const char *tproc_target(const tproc *p, char *buf, size_t cap);

#endif
