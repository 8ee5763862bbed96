/*
 * rp/ops.h — the operational flags every recpipe process shares: the Prometheus
 * endpoint, the admin bearer token, TLS / mutual TLS material, the in-flight cap, and
 * the key that pseudonymizes user ids in logs.
 *
 * A command adds the rows to its rp_opt table with the RP_OPS_*_OPTS macros, then calls
 * rp_ops_apply once after parsing: it reads the files and sets PROCESS-WIDE DEFAULTS
 * that rp_server_start and rp_client_create use whenever their config leaves the
 * corresponding field unset (so services need no other change), and starts the metrics
 * endpoint. Tests that run servers in-process set the fields of rp_server_config /
 * rp_client_config instead.
 *
 * Environment: RECPIPE_ADMIN_TOKEN (the token itself) when --admin-token-file is not
 * given; RECPIPE_LOG_KEY (the key itself) when --log-key-file is not given; without
 * either, a random per-process log key.
 */
#ifndef RP_OPS_H
#define RP_OPS_H

#include "rp/config.h"
#include "rp/err.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct rp_ops_flags {
    const char *metrics_listen;   /* NULL: no metrics endpoint */
    const char *admin_token_file; /* first line = the token */
    const char *log_key_file;
    const char *tls_cert, *tls_key, *tls_client_ca;        /* listeners */
    const char *tls_ca, *tls_client_cert, *tls_client_key; /* clients */
    int64_t max_in_flight; /* 0: 4 x threads x 64 */
    int64_t max_streams;   /* per connection; 0: 100 */
    double queue_target_ms;   /* waiting for a worker under sustained overload; 0: off */
    double queue_interval_ms; /* ... otherwise; also how long "sustained" is */
    int64_t worker_nice;      /* request threads run this much nicer; 0: as the rest */
} rp_ops_flags;

#define RP_OPS_METRICS_OPTS(f)                                                                 \
    {"metrics-listen", RP_OPT_STR, &(f).metrics_listen, NULL, 0, 0,                            \
     "serve Prometheus metrics over HTTP on host:port at /metrics (port 0 picks one)", false}, \
    {"log-key-file", RP_OPT_STR, &(f).log_key_file, NULL, 0, 0,                                \
     "key of the HMAC that pseudonymizes user ids in logs (else $RECPIPE_LOG_KEY, else "       \
     "random per process)", false}
#define RP_OPS_TOKEN_OPTS(f)                                                                   \
    {"admin-token-file", RP_OPT_STR, &(f).admin_token_file, NULL, 0, 0,                        \
     "file whose first line is the bearer token admin RPCs then require (else "                \
     "$RECPIPE_ADMIN_TOKEN)", false}
#define RP_OPS_SERVER_OPTS(f)                                                                  \
    {"tls-cert", RP_OPT_STR, &(f).tls_cert, NULL, 0, 0,                                        \
     "PEM certificate chain of the listener (TLS on; with --tls-key)", false},                 \
    {"tls-key", RP_OPT_STR, &(f).tls_key, NULL, 0, 0, "PEM private key of the listener", false}, \
    {"tls-client-ca", RP_OPT_STR, &(f).tls_client_ca, NULL, 0, 0,                              \
     "PEM CA bundle: clients must present a certificate it signed (mutual TLS)", false},       \
    {"max-in-flight", RP_OPT_INT, &(f).max_in_flight, "0", 0, 100000000,                       \
     "calls handled at once by the process; more get RESOURCE_EXHAUSTED (0 = 4 x threads x "   \
     "64)", false},                                                                            \
    {"max-streams", RP_OPT_INT, &(f).max_streams, "0", 0, 1000000,                             \
     "concurrent calls per client connection (0 = 100)", false},                               \
    {"queue-target-ms", RP_OPT_DOUBLE, &(f).queue_target_ms, "0", 0, 60000,                     \
     "load shedding (5 is a good value): once calls have waited for a worker longer than "     \
     "this for --queue-interval-ms, a call that waited longer gets RESOURCE_EXHAUSTED and "   \
     "the newest calls are served first (0 = off: first come, first served, calls wait up "  \
     "to their deadline)", false},                                                             \
    {"queue-interval-ms", RP_OPT_DOUBLE, &(f).queue_interval_ms, "100", 1, 600000,             \
     "load shedding: how long calls must wait above --queue-target-ms before the target "      \
     "applies (a burst may wait this long)", false},                                           \
    {"worker-nice", RP_OPT_INT, &(f).worker_nice, "0", 0, 19,                                  \
     "request threads run at this nice value above the admission thread, so that under CPU "  \
     "saturation calls are still read, shed and answered promptly (0 = same priority)", false}
#define RP_OPS_CLIENT_OPTS(f)                                                                  \
    {"tls-ca", RP_OPT_STR, &(f).tls_ca, NULL, 0, 0,                                            \
     "PEM CA bundle that signed the servers' certificates (client TLS on)", false},            \
    {"tls-client-cert", RP_OPT_STR, &(f).tls_client_cert, NULL, 0, 0,                          \
     "PEM client certificate for servers requiring mutual TLS (with --tls-client-key)", false}, \
    {"tls-client-key", RP_OPT_STR, &(f).tls_client_key, NULL, 0, 0,                            \
     "PEM private key of --tls-client-cert", false}

/*
 * Reads the token, key and certificate files named in f (errors name the flag and the
 * file), sets the process-wide defaults, and starts the metrics endpoint when
 * f->metrics_listen is set. Call once, before starting servers or clients.
 */
int rp_ops_apply(const rp_ops_flags *f, rp_error *err);
/* Stops the metrics endpoint and forgets the defaults (secrets are wiped). */
void rp_ops_shutdown(void);

/* TLS material as PEM text (not file names). */
typedef struct rp_tls_pem {
    const char *cert; /* server: its chain; client: its certificate (mTLS), may be NULL */
    const char *key;  /* private key of cert */
    const char *ca;   /* server: CA of client certs (mTLS on); client: CA of servers */
} rp_tls_pem;

/* Reads a whole file into a malloc'd NUL-terminated string; errors name `flag`. */
int rp_read_file_text(const char *flag, const char *path, size_t max_bytes, char **out,
                      rp_error *err);

/* Process defaults (NULL / 0 when not configured). The strings live until
 * rp_ops_shutdown. */
const char *rp_ops_admin_token(void);
const rp_tls_pem *rp_ops_server_tls(void);
const rp_tls_pem *rp_ops_client_tls(void);
int64_t rp_ops_max_in_flight(void);
int64_t rp_ops_max_streams(void);
/* The queue limits in ms (rp_server_config): false when rp_ops_apply did not run. */
bool rp_ops_queue_limits(double *target_ms, double *interval_ms);
int rp_ops_worker_nice(void);

struct grpc_channel_credentials;
/* New channel credentials for raw gRPC users (the load generator): ssl with the process
 * client TLS default, else insecure. The caller releases them
 * (grpc_channel_credentials_release). NULL when gRPC refuses the PEM material. */
struct grpc_channel_credentials *rp_ops_channel_credentials(void);

/*
 * "Bearer <token>" (header value `auth`, may be NULL) against `token`, in constant time
 * over the token (CRYPTO_memcmp). RP_OK, RP_EUNAUTH without a bearer value, RP_EDENIED
 * with a wrong one; err names `what`.
 */
int rp_check_bearer(const char *auth, const char *token, const char *what, rp_error *err);

/* The pseudonym of a user id for logs: HMAC-SHA256(log key, decimal id) truncated to
 * 16 hex digits, written to out (17 bytes with the NUL). Same id, same key: same
 * pseudonym. Thread-safe. Returns out. */
char *rp_log_user_id(uint64_t user_id, char out[17]);
/* Sets the log key (copied); NULL or empty = a fresh random key. RP_OK or RP_EINTERNAL. */
int rp_log_set_user_key(const void *key, size_t len);

#endif
