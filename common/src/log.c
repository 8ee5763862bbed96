#include "rp/log.h"
#include "rp/err.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static atomic_int log_level = RP_LOG_INFO;
static atomic_int log_fd = 2;
static _Thread_local char request_id[64];

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

/* ------------------------------------------------------------------ the log thread
 *
 * Once rp_log_async_start has run, lines are copied into a ring and written by a thread
 * of their own: a thread that logs never waits for the disk or the log's reader. (A
 * server's every call writes an access line; with write(2) on the request threads, a
 * disk stall on the log file — a page under writeback holds the file's lock — stalled
 * every request thread at once: 0.3-0.6 s stalls in the soak, none without the access
 * log.) When the ring is full a line is dropped and counted; the thread reports the
 * count. */

#define RING_BYTES ((size_t)1 << 20)

static struct {
    pthread_mutex_t mu;
    pthread_cond_t more;  /* lines were added, or a flush is asked */
    pthread_cond_t empty; /* the writer emptied the ring */
    char *buf;
    size_t head, len; /* bytes [head, head + len) mod RING_BYTES are pending */
    uint64_t dropped;
    bool writing;     /* the writer is writing bytes still counted in len */
    atomic_bool on;
} ring = {.mu = PTHREAD_MUTEX_INITIALIZER,
          .more = PTHREAD_COND_INITIALIZER,
          .empty = PTHREAD_COND_INITIALIZER};

/* The current UTC time as a line's "ts": 2026-01-02T03:04:05.678Z. */
static void format_now(char *when, size_t size)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(when, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
}

static void write_all(const char *p, size_t n)
{
    int fd = atomic_load(&log_fd);
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w <= 0) return; /* nowhere to log to: the lines are lost */
        p += w;
        n -= (size_t)w;
    }
}

static void *log_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&ring.mu);
    for (;;) {
        while (ring.len == 0 && ring.dropped == 0) {
            pthread_cond_broadcast(&ring.empty);
            pthread_cond_wait(&ring.more, &ring.mu);
        }
        /* Written from the ring in place: producers append only past head + len, so
         * these bytes stay put until they are released below. */
        size_t head = ring.head, n = ring.len, first = RING_BYTES - head;
        if (first > n) first = n;
        uint64_t dropped = ring.dropped;
        ring.dropped = 0;
        ring.writing = true;
        pthread_mutex_unlock(&ring.mu);
        write_all(ring.buf + head, first);
        write_all(ring.buf, n - first);
        if (dropped) {
            char note[240], when[40];
            format_now(when, sizeof when);
            int k = snprintf(note, sizeof note,
                             "{\"ts\":\"%s\",\"level\":\"warn\",\"component\":\"log\",\"msg\":\"%llu "
                             "log lines dropped: the log's reader or disk was slower than the "
                             "service\"}\n",
                             when, (unsigned long long)dropped);
            write_all(note, (size_t)k);
        }
        pthread_mutex_lock(&ring.mu);
        ring.head = (head + n) % RING_BYTES;
        ring.len -= n;
        ring.writing = false;
    }
    return NULL;
}

void rp_log_flush(void)
{
    if (!atomic_load(&ring.on)) return;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 2; /* a stuck reader must not hold the exit for good */
    pthread_mutex_lock(&ring.mu);
    pthread_cond_signal(&ring.more);
    while ((ring.len > 0 || ring.writing || ring.dropped) &&
           pthread_cond_timedwait(&ring.empty, &ring.mu, &until) == 0) {}
    pthread_mutex_unlock(&ring.mu);
}

int rp_log_async_start(void)
{
    pthread_mutex_lock(&ring.mu);
    if (atomic_load(&ring.on)) {
        pthread_mutex_unlock(&ring.mu);
        return RP_OK;
    }
    int rc = RP_OK;
    pthread_t th;
    pthread_attr_t at;
    if (!(ring.buf = malloc(RING_BYTES))) {
        rc = RP_ENOMEM;
    } else {
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&th, &at, log_main, NULL) != 0) {
            free(ring.buf);
            ring.buf = NULL;
            rc = RP_EINTERNAL;
        }
        pthread_attr_destroy(&at);
    }
    if (rc == RP_OK) {
        atomic_store(&ring.on, true);
        atexit(rp_log_flush);
    }
    pthread_mutex_unlock(&ring.mu);
    return rc;
}

/* Appends one line to the ring, or drops it when there is no room. */
static void ring_put(const char *line, size_t n)
{
    pthread_mutex_lock(&ring.mu);
    if (ring.len + n > RING_BYTES) {
        ring.dropped++;
    } else {
        size_t tail = (ring.head + ring.len) % RING_BYTES, first = RING_BYTES - tail;
        if (first > n) first = n;
        memcpy(ring.buf + tail, line, first);
        memcpy(ring.buf, line + first, n - first);
        ring.len += n;
    }
    pthread_cond_signal(&ring.more);
    pthread_mutex_unlock(&ring.mu);
}

void rp_log_set_level(rp_log_level level)
{
    atomic_store(&log_level, (int)level);
}

rp_log_level rp_log_get_level(void)
{
    return (rp_log_level)atomic_load(&log_level);
}

int rp_log_parse_level(const char *s, rp_log_level *out)
{
    for (int i = 0; i <= RP_LOG_OFF; i++) {
        if (s && strcasecmp(s, level_names[i]) == 0) {
            *out = (rp_log_level)i;
            return RP_OK;
        }
    }
    return RP_EINVAL;
}

void rp_log_set_fd(int fd)
{
    atomic_store(&log_fd, fd);
}

void rp_log_set_request_id(const char *id)
{
    if (!id) {
        request_id[0] = '\0';
        return;
    }
    snprintf(request_id, sizeof request_id, "%s", id);
}

const char *rp_log_request_id(void)
{
    return request_id;
}

void rp_json_escape(char *buf, size_t cap, size_t *len, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = *len;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[7];
        size_t k = 0;
        switch (*p) {
        case '"': esc[k++] = '\\'; esc[k++] = '"'; break;
        case '\\': esc[k++] = '\\'; esc[k++] = '\\'; break;
        case '\n': esc[k++] = '\\'; esc[k++] = 'n'; break;
        case '\r': esc[k++] = '\\'; esc[k++] = 'r'; break;
        case '\t': esc[k++] = '\\'; esc[k++] = 't'; break;
        default:
            if (*p < 0x20) {
                esc[k++] = '\\'; esc[k++] = 'u'; esc[k++] = '0'; esc[k++] = '0';
                esc[k++] = hex[*p >> 4]; esc[k++] = hex[*p & 15];
            } else {
                esc[k++] = (char)*p;
            }
        }
        if (n + k + 1 >= cap) break;
        memcpy(buf + n, esc, k);
        n += k;
    }
    buf[n < cap ? n : cap - 1] = '\0';
    *len = n;
}

static void append(char *buf, size_t cap, size_t *len, const char *s)
{
    size_t k = strlen(s);
    if (*len + k + 1 >= cap) k = cap - *len - 1;
    memcpy(buf + *len, s, k);
    *len += k;
    buf[*len] = '\0';
}

static void vlog(rp_log_level level, const char *component, const char *fields,
                 const char *fmt, va_list ap)
{
    if ((int)level < atomic_load(&log_level) || level >= RP_LOG_OFF) return;

    char msg[2048];
    vsnprintf(msg, sizeof msg, fmt, ap);

    char when[40];
    format_now(when, sizeof when);

    char line[4096];
    size_t n = 0;
    line[0] = '\0';
    append(line, sizeof line - 2, &n, "{\"ts\":\"");
    append(line, sizeof line - 2, &n, when);
    append(line, sizeof line - 2, &n, "\",\"level\":\"");
    append(line, sizeof line - 2, &n, level_names[level]);
    append(line, sizeof line - 2, &n, "\",\"component\":\"");
    rp_json_escape(line, sizeof line - 2, &n, component ? component : "");
    append(line, sizeof line - 2, &n, "\",\"msg\":\"");
    rp_json_escape(line, sizeof line - 2, &n, msg);
    append(line, sizeof line - 2, &n, "\"");
    if (request_id[0]) {
        append(line, sizeof line - 2, &n, ",\"request_id\":\"");
        rp_json_escape(line, sizeof line - 2, &n, request_id);
        append(line, sizeof line - 2, &n, "\"");
    }
    if (fields && fields[0]) {
        append(line, sizeof line - 2, &n, ",");
        append(line, sizeof line - 2, &n, fields);
    }
    line[n++] = '}';
    line[n++] = '\n';
    if (atomic_load(&ring.on)) ring_put(line, n);
    else write_all(line, n);
}

void rp_log(rp_log_level level, const char *component, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(level, component, NULL, fmt, ap);
    va_end(ap);
}

void rp_logx(rp_log_level level, const char *component, const char *fields, const char *fmt,
             ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(level, component, fields, fmt, ap);
    va_end(ap);
}
