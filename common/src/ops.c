/*
 * ops.c — process-wide operational settings (rp/ops.h): token, TLS material, limits,
 * the log pseudonymization key, and the metrics endpoint.
 */
#include "rp/ops.h"

#include "rp/log.h"
#include "rp/metrics.h"

#include <errno.h>
#include <grpc/grpc_security.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static char *admin_token;
static rp_tls_pem server_tls, client_tls;
static bool server_tls_on, client_tls_on;
static int64_t max_in_flight, max_streams;
static double queue_target_ms, queue_interval_ms;
static int worker_nice;
static bool queue_set;

static pthread_mutex_t key_mu = PTHREAD_MUTEX_INITIALIZER;
static unsigned char log_key[64];
static size_t log_key_len;

int rp_read_file_text(const char *flag, const char *path, size_t max_bytes, char **out,
                      rp_error *err)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return rp_errorf(err, RP_EIO, "%s %s: %s", flag, path, strerror(errno));
    char *buf = malloc(max_bytes + 1);
    if (!buf) {
        fclose(f);
        return rp_errorf(err, RP_ENOMEM, "%s %s: out of memory", flag, path);
    }
    size_t n = fread(buf, 1, max_bytes + 1, f);
    bool bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return rp_errorf(err, RP_EIO, "%s %s: read error", flag, path);
    }
    if (n > max_bytes) {
        free(buf);
        return rp_errorf(err, RP_EINVAL, "%s %s: larger than %zu bytes", flag, path, max_bytes);
    }
    buf[n] = '\0';
    *out = buf;
    return RP_OK;
}

/* The first line of a secret file (trailing CR/LF and spaces cut). */
static int read_secret(const char *flag, const char *path, char **out, rp_error *err)
{
    int rc = rp_read_file_text(flag, path, 4096, out, err);
    if (rc) return rc;
    (*out)[strcspn(*out, "\r\n")] = '\0';
    size_t n = strlen(*out);
    while (n && (*out)[n - 1] == ' ') (*out)[--n] = '\0';
    if (!n) {
        free(*out);
        *out = NULL;
        return rp_errorf(err, RP_EINVAL, "%s %s: the first line is empty", flag, path);
    }
    return RP_OK;
}

static void wipe_free(char *s)
{
    if (!s) return;
    OPENSSL_cleanse(s, strlen(s));
    free(s);
}

static void free_pem(rp_tls_pem *p)
{
    free((char *)p->cert);
    wipe_free((char *)p->key);
    free((char *)p->ca);
    memset(p, 0, sizeof *p);
}

static int load_pem(const char *cert_flag, const char *cert, const char *key_flag,
                    const char *key, const char *ca_flag, const char *ca, rp_tls_pem *out,
                    rp_error *err)
{
    int rc = RP_OK;
    char *c = NULL, *k = NULL, *a = NULL;
    if (cert && (rc = rp_read_file_text(cert_flag, cert, 1 << 20, &c, err))) goto fail;
    if (key && (rc = rp_read_file_text(key_flag, key, 1 << 20, &k, err))) goto fail;
    if (ca && (rc = rp_read_file_text(ca_flag, ca, 1 << 20, &a, err))) goto fail;
    out->cert = c;
    out->key = k;
    out->ca = a;
    return RP_OK;
fail:
    free(c);
    wipe_free(k);
    free(a);
    return rc;
}

int rp_ops_apply(const rp_ops_flags *f, rp_error *err)
{
    int rc = RP_OK;
    char *key = NULL;
    rp_ops_shutdown();
    max_in_flight = f->max_in_flight;
    max_streams = f->max_streams;
    queue_target_ms = f->queue_target_ms;
    queue_interval_ms = f->queue_interval_ms;
    queue_set = true;
    worker_nice = (int)f->worker_nice;
    if (f->admin_token_file) {
        if ((rc = read_secret("--admin-token-file", f->admin_token_file, &admin_token, err)))
            goto fail;
    } else if (getenv("RECPIPE_ADMIN_TOKEN") && *getenv("RECPIPE_ADMIN_TOKEN")) {
        if (!(admin_token = strdup(getenv("RECPIPE_ADMIN_TOKEN")))) {
            rc = rp_errorf(err, RP_ENOMEM, "out of memory");
            goto fail;
        }
    }
    if (f->log_key_file) {
        if ((rc = read_secret("--log-key-file", f->log_key_file, &key, err))) goto fail;
        rp_log_set_user_key(key, strlen(key));
    } else if (getenv("RECPIPE_LOG_KEY") && *getenv("RECPIPE_LOG_KEY")) {
        const char *k = getenv("RECPIPE_LOG_KEY");
        rp_log_set_user_key(k, strlen(k));
    }
    if ((f->tls_cert != NULL) != (f->tls_key != NULL)) {
        rc = rp_errorf(err, RP_EINVAL, "--tls-cert and --tls-key go together (%s is missing)",
                       f->tls_cert ? "--tls-key" : "--tls-cert");
        goto fail;
    }
    if (f->tls_client_ca && !f->tls_cert) {
        rc = rp_errorf(err, RP_EINVAL, "--tls-client-ca needs --tls-cert and --tls-key "
                       "(mutual TLS is TLS first)");
        goto fail;
    }
    if (f->tls_cert) {
        if ((rc = load_pem("--tls-cert", f->tls_cert, "--tls-key", f->tls_key, "--tls-client-ca",
                           f->tls_client_ca, &server_tls, err)))
            goto fail;
        server_tls_on = true;
    }
    if ((f->tls_client_cert != NULL) != (f->tls_client_key != NULL)) {
        rc = rp_errorf(err, RP_EINVAL, "--tls-client-cert and --tls-client-key go together "
                       "(%s is missing)", f->tls_client_cert ? "--tls-client-key" : "--tls-client-cert");
        goto fail;
    }
    if (f->tls_client_cert && !f->tls_ca) {
        rc = rp_errorf(err, RP_EINVAL, "--tls-client-cert needs --tls-ca (client TLS)");
        goto fail;
    }
    if (f->tls_ca) {
        if ((rc = load_pem("--tls-client-cert", f->tls_client_cert, "--tls-client-key",
                           f->tls_client_key, "--tls-ca", f->tls_ca, &client_tls, err)))
            goto fail;
        client_tls_on = true;
    }
    if (f->metrics_listen && (rc = rp_metrics_http_start(f->metrics_listen, NULL, err))) goto fail;
    wipe_free(key);
    return RP_OK;
fail:
    wipe_free(key);
    rp_ops_shutdown();
    return rc;
}

void rp_ops_shutdown(void)
{
    rp_metrics_http_stop();
    wipe_free(admin_token);
    admin_token = NULL;
    free_pem(&server_tls);
    free_pem(&client_tls);
    server_tls_on = client_tls_on = false;
    max_in_flight = max_streams = 0;
    queue_set = false;
    worker_nice = 0;
}

const char *rp_ops_admin_token(void)
{
    return admin_token;
}

const rp_tls_pem *rp_ops_server_tls(void)
{
    return server_tls_on ? &server_tls : NULL;
}

const rp_tls_pem *rp_ops_client_tls(void)
{
    return client_tls_on ? &client_tls : NULL;
}

int64_t rp_ops_max_in_flight(void)
{
    return max_in_flight;
}

int64_t rp_ops_max_streams(void)
{
    return max_streams;
}

bool rp_ops_queue_limits(double *target_ms, double *interval_ms)
{
    *target_ms = queue_target_ms;
    *interval_ms = queue_interval_ms;
    return queue_set;
}

int rp_ops_worker_nice(void)
{
    return worker_nice;
}

struct grpc_channel_credentials *rp_ops_channel_credentials(void)
{
    const rp_tls_pem *t = rp_ops_client_tls();
    if (!t) return grpc_insecure_credentials_create();
    grpc_ssl_pem_key_cert_pair pair = {t->key, t->cert};
    return grpc_ssl_credentials_create(t->ca, t->cert ? &pair : NULL, NULL, NULL);
}

int rp_check_bearer(const char *auth, const char *token, const char *what, rp_error *err)
{
    if (!auth || strncmp(auth, "Bearer ", 7) != 0 || !auth[7])
        return rp_errorf(err, RP_EUNAUTH, "%s requires the admin bearer token "
                         "(authorization: Bearer ...)", what);
    /* Compare HMAC-free fixed-length digests so that the time depends on neither the
     * position of the first difference nor the presented length. */
    unsigned char da[32], dt[32];
    unsigned int la = 0, lt = 0;
    EVP_Digest(auth + 7, strlen(auth + 7), da, &la, EVP_sha256(), NULL);
    EVP_Digest(token, strlen(token), dt, &lt, EVP_sha256(), NULL);
    if (la != 32 || lt != 32 || CRYPTO_memcmp(da, dt, 32) != 0)
        return rp_errorf(err, RP_EDENIED, "%s: the bearer token is not the admin token", what);
    return RP_OK;
}

int rp_log_set_user_key(const void *key, size_t len)
{
    pthread_mutex_lock(&key_mu);
    int rc = RP_OK;
    if (!key || !len) {
        if (RAND_bytes(log_key, 32) != 1) rc = RP_EINTERNAL;
        log_key_len = 32;
    } else {
        if (len > sizeof log_key) {
            /* HMAC hashes long keys anyway; keep their digest. */
            unsigned int dl = 0;
            EVP_Digest(key, len, log_key, &dl, EVP_sha256(), NULL);
            log_key_len = dl;
        } else {
            memcpy(log_key, key, len);
            log_key_len = len;
        }
    }
    pthread_mutex_unlock(&key_mu);
    return rc;
}

char *rp_log_user_id(uint64_t user_id, char out[17])
{
    pthread_mutex_lock(&key_mu);
    if (!log_key_len) {
        if (RAND_bytes(log_key, 32) != 1) memset(log_key, 0x5a, 32);
        log_key_len = 32;
    }
    char msg[24];
    int n = snprintf(msg, sizeof msg, "%" PRIu64, user_id);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int ml = 0;
    HMAC(EVP_sha256(), log_key, (int)log_key_len, (const unsigned char *)msg, (size_t)n, mac, &ml);
    pthread_mutex_unlock(&key_mu);
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 8; i++) {
        out[2 * i] = hex[mac[i] >> 4];
        out[2 * i + 1] = hex[mac[i] & 15];
    }
    out[16] = '\0';
    return out;
}
