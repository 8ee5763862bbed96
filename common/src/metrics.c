/*
 * metrics.c — the registry behind rp/metrics.h and its libmicrohttpd endpoint.
 *
 * Values are doubles stored as their bit patterns in atomic 64-bit words (adds are
 * compare-and-swap loops); histogram buckets are plain atomic counters. Families and
 * series are linked lists appended under one mutex and never freed.
 */
#include "rp/metrics.h"

#include "rp/log.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <malloc.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

const double rp_metric_default_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                            0.1,    0.25,  0.5,    1,     2.5,  5,    10};
const size_t rp_metric_default_nbuckets = sizeof rp_metric_default_buckets / sizeof(double);

struct rp_series {
    rp_series *next;
    const struct rp_metric *fam;
    char *values[RP_METRIC_MAX_LABELS];
    _Atomic uint64_t bits; /* counter/gauge value; histogram sum */
    _Atomic uint64_t count;
    _Atomic uint64_t buckets[RP_METRIC_MAX_BUCKETS];
    atomic_bool hidden;
};

struct rp_metric {
    rp_metric *next;
    rp_metric_type type;
    char *name, *help;
    char *labels[RP_METRIC_MAX_LABELS];
    size_t nlabels;
    double bounds[RP_METRIC_MAX_BUCKETS];
    size_t nbounds;
    _Atomic(rp_series *) series; /* appended under mu */
};

typedef struct hook {
    struct hook *next;
    rp_metrics_hook fn;
    void *user;
} hook;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;      /* families, series */
static pthread_mutex_t hook_mu = PTHREAD_MUTEX_INITIALIZER; /* hooks, held while they run */
static rp_metric *families, *families_tail;
static hook *hooks;

static uint64_t to_bits(double v)
{
    uint64_t b;
    memcpy(&b, &v, sizeof b);
    return b;
}

static double from_bits(uint64_t b)
{
    double v;
    memcpy(&v, &b, sizeof v);
    return v;
}

static void atomic_add_double(_Atomic uint64_t *p, double v)
{
    uint64_t old = atomic_load_explicit(p, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(p, &old, to_bits(from_bits(old) + v),
                                                  memory_order_relaxed, memory_order_relaxed)) {
    }
}

static bool valid_name(const char *s)
{
    if (!s || !*s) return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
                  (p != s && c >= '0' && c <= '9');
        if (!ok) return false;
    }
    return true;
}

/* Splits "a,b,c" into out (strdup'd); returns the count or -1. */
static int split_labels(const char *labels, char **out)
{
    int n = 0;
    if (!labels || !*labels) return 0;
    const char *p = labels;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (n == RP_METRIC_MAX_LABELS || len == 0) goto bad;
        out[n] = strndup(p, len);
        if (!out[n] || !valid_name(out[n])) {
            n += out[n] != NULL;
            goto bad;
        }
        n++;
        p += len;
        if (*p == ',') p++;
    }
    return n;
bad:
    for (int i = 0; i < n; i++) free(out[i]);
    return -1;
}

rp_metric *rp_metric_family(rp_metric_type type, const char *name, const char *help,
                            const char *labels, const double *buckets, size_t nbuckets)
{
    if (!valid_name(name)) {
        rp_errlog("metrics", "metric name '%s' is not [a-zA-Z_:][a-zA-Z0-9_:]*", name ? name : "");
        return NULL;
    }
    char *lab[RP_METRIC_MAX_LABELS] = {0};
    int nl = split_labels(labels, lab);
    if (nl < 0) {
        rp_errlog("metrics", "%s: labels '%s' are not up to %d comma-separated names", name,
                  labels, RP_METRIC_MAX_LABELS);
        return NULL;
    }
    pthread_mutex_lock(&mu);
    rp_metric *m = families;
    for (; m; m = m->next) {
        if (strcmp(m->name, name)) continue;
        bool same = m->type == type && m->nlabels == (size_t)nl;
        for (int i = 0; same && i < nl; i++) same = !strcmp(m->labels[i], lab[i]);
        if (!same) {
            rp_errlog("metrics", "metric %s is already registered with another type or labels",
                      name);
            m = NULL;
        }
        goto out;
    }
    m = calloc(1, sizeof *m);
    if (!m) goto out;
    m->type = type;
    m->name = strdup(name);
    m->help = strdup(help ? help : "");
    if (!m->name || !m->help) {
        free(m->name);
        free(m->help);
        free(m);
        m = NULL;
        goto out;
    }
    for (int i = 0; i < nl; i++) {
        m->labels[i] = lab[i];
        lab[i] = NULL;
    }
    m->nlabels = (size_t)nl;
    if (type == RP_METRIC_HISTOGRAM) {
        if (!buckets) {
            buckets = rp_metric_default_buckets;
            nbuckets = rp_metric_default_nbuckets;
        }
        if (nbuckets > RP_METRIC_MAX_BUCKETS) nbuckets = RP_METRIC_MAX_BUCKETS;
        memcpy(m->bounds, buckets, nbuckets * sizeof *buckets);
        m->nbounds = nbuckets;
    }
    if (families_tail) families_tail->next = m;
    else families = m;
    families_tail = m;
out:
    pthread_mutex_unlock(&mu);
    for (int i = 0; i < nl; i++) free(lab[i]);
    return m;
}

static bool series_matches(const rp_metric *m, const rp_series *s, const char *const *values)
{
    for (size_t i = 0; i < m->nlabels; i++)
        if (strcmp(s->values[i], values[i] ? values[i] : "")) return false;
    return true;
}

rp_series *rp_metric_series(rp_metric *m, const char *const *values)
{
    if (!m) return NULL;
    /* Lock-free lookup first: the list only grows, at its head. */
    for (rp_series *s = atomic_load(&m->series); s; s = s->next)
        if (series_matches(m, s, values)) return s;
    pthread_mutex_lock(&mu);
    rp_series *s = atomic_load(&m->series);
    for (; s; s = s->next)
        if (series_matches(m, s, values)) goto out;
    s = calloc(1, sizeof *s);
    if (!s) goto out;
    s->fam = m;
    for (size_t i = 0; i < m->nlabels; i++) {
        s->values[i] = strdup(values[i] ? values[i] : "");
        if (!s->values[i]) {
            for (size_t j = 0; j < i; j++) free(s->values[j]);
            free(s);
            s = NULL;
            goto out;
        }
    }
    s->next = atomic_load(&m->series);
    atomic_store(&m->series, s);
out:
    pthread_mutex_unlock(&mu);
    return s;
}

rp_series *rp_metric_series0(rp_metric *m)
{
    return rp_metric_series(m, NULL);
}

rp_series *rp_metric_series1(rp_metric *m, const char *v1)
{
    const char *v[] = {v1};
    return rp_metric_series(m, v);
}

rp_series *rp_metric_series2(rp_metric *m, const char *v1, const char *v2)
{
    const char *v[] = {v1, v2};
    return rp_metric_series(m, v);
}

rp_series *rp_metric_series3(rp_metric *m, const char *v1, const char *v2, const char *v3)
{
    const char *v[] = {v1, v2, v3};
    return rp_metric_series(m, v);
}

void rp_counter_add(rp_series *s, double v)
{
    if (!s || !(v >= 0)) return;
    atomic_add_double(&s->bits, v);
}

void rp_counter_inc(rp_series *s)
{
    rp_counter_add(s, 1.0);
}

void rp_counter_set(rp_series *s, double v)
{
    rp_gauge_set(s, v);
}

void rp_gauge_set(rp_series *s, double v)
{
    if (!s) return;
    atomic_store_explicit(&s->bits, to_bits(v), memory_order_relaxed);
    atomic_store_explicit(&s->hidden, false, memory_order_relaxed);
}

void rp_gauge_add(rp_series *s, double v)
{
    if (!s) return;
    atomic_add_double(&s->bits, v);
}

void rp_histogram_observe(rp_series *s, double v)
{
    if (!s || isnan(v) || s->fam->type != RP_METRIC_HISTOGRAM) return;
    /* Each observation counts in its first bucket only; rendering accumulates. */
    size_t b = 0;
    while (b < s->fam->nbounds && v > s->fam->bounds[b]) b++;
    if (b < s->fam->nbounds) atomic_fetch_add_explicit(&s->buckets[b], 1, memory_order_relaxed);
    atomic_add_double(&s->bits, v);
    atomic_fetch_add_explicit(&s->count, 1, memory_order_relaxed);
}

double rp_series_value(const rp_series *s)
{
    if (!s) return 0;
    if (s->fam->type == RP_METRIC_HISTOGRAM) return (double)atomic_load(&s->count);
    return from_bits(atomic_load(&s->bits));
}

void rp_metric_hide_where(rp_metric *m, const char *v1)
{
    if (!m || m->nlabels == 0) return;
    for (rp_series *s = atomic_load(&m->series); s; s = s->next)
        if (!strcmp(s->values[0], v1 ? v1 : "")) atomic_store(&s->hidden, true);
}

/* ------------------------------------------------------------------ hooks */

int rp_metrics_add_hook(rp_metrics_hook fn, void *user)
{
    hook *h = calloc(1, sizeof *h);
    if (!h) return RP_ENOMEM;
    h->fn = fn;
    h->user = user;
    pthread_mutex_lock(&hook_mu);
    h->next = hooks;
    hooks = h;
    pthread_mutex_unlock(&hook_mu);
    return RP_OK;
}

void rp_metrics_remove_hook(rp_metrics_hook fn, void *user)
{
    pthread_mutex_lock(&hook_mu);
    for (hook **pp = &hooks; *pp; pp = &(*pp)->next) {
        if ((*pp)->fn == fn && (*pp)->user == user) {
            hook *h = *pp;
            *pp = h->next;
            free(h);
            break;
        }
    }
    pthread_mutex_unlock(&hook_mu);
}

/* ------------------------------------------------------------------ rendering */

typedef struct buf {
    char *p;
    size_t len, cap;
    bool oom;
} buf;

static void bput(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bput(buf *b, const char *fmt, ...)
{
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap * 2 + (size_t)n + 1;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

/* A label value or help text escaped for the exposition format. */
static void bescape(buf *b, const char *s, bool quote)
{
    for (; *s; s++) {
        if (*s == '\\') bput(b, "\\\\");
        else if (*s == '\n') bput(b, "\\n");
        else if (quote && *s == '"') bput(b, "\\\"");
        else bput(b, "%c", *s);
    }
}

static void bvalue(buf *b, double v)
{
    if (isnan(v)) bput(b, "NaN");
    else if (isinf(v)) bput(b, v > 0 ? "+Inf" : "-Inf");
    else if (v == (double)(int64_t)v && fabs(v) < 1e15) bput(b, "%lld", (long long)v);
    else bput(b, "%.15g", v);
}

/* {a="x",b="y"[,le="0.5"]} — nothing when there are no labels and no le. */
static void blabels(buf *b, const rp_metric *m, const rp_series *s, const char *le)
{
    if (m->nlabels == 0 && !le) return;
    bput(b, "{");
    for (size_t i = 0; i < m->nlabels; i++) {
        bput(b, "%s%s=\"", i ? "," : "", m->labels[i]);
        bescape(b, s->values[i], true);
        bput(b, "\"");
    }
    if (le) bput(b, "%sle=\"%s\"", m->nlabels ? "," : "", le);
    bput(b, "}");
}

static void render_family(buf *b, const rp_metric *m)
{
    static const char *const type_names[] = {"counter", "gauge", "histogram"};
    bool any = false;
    for (rp_series *s = atomic_load(&m->series); s && !any; s = s->next)
        any = !atomic_load(&s->hidden);
    if (!any) return;
    bput(b, "# HELP %s ", m->name);
    bescape(b, m->help, false);
    bput(b, "\n# TYPE %s %s\n", m->name, type_names[m->type]);
    for (rp_series *s = atomic_load(&m->series); s; s = s->next) {
        if (atomic_load(&s->hidden)) continue;
        if (m->type != RP_METRIC_HISTOGRAM) {
            bput(b, "%s", m->name);
            blabels(b, m, s, NULL);
            bput(b, " ");
            bvalue(b, from_bits(atomic_load(&s->bits)));
            bput(b, "\n");
            continue;
        }
        /* Read the count first: buckets read afterwards are >= it for a consistent +Inf. */
        uint64_t cum = 0;
        for (size_t i = 0; i < m->nbounds; i++) {
            cum += atomic_load(&s->buckets[i]);
            char le[40];
            snprintf(le, sizeof le, "%g", m->bounds[i]);
            bput(b, "%s_bucket", m->name);
            blabels(b, m, s, le);
            bput(b, " %llu\n", (unsigned long long)cum);
        }
        uint64_t count = atomic_load(&s->count);
        if (count < cum) count = cum;
        bput(b, "%s_bucket", m->name);
        blabels(b, m, s, "+Inf");
        bput(b, " %llu\n%s_sum", (unsigned long long)count, m->name);
        blabels(b, m, s, NULL);
        bput(b, " ");
        bvalue(b, from_bits(atomic_load(&s->bits)));
        bput(b, "\n%s_count", m->name);
        blabels(b, m, s, NULL);
        bput(b, " %llu\n", (unsigned long long)count);
    }
}

/* ------------------------------------------------------------------ process metrics */

static double process_start_time(void)
{
    static double start;
    if (start > 0) return start;
    /* Field 22 of /proc/self/stat: start time in clock ticks after boot. */
    FILE *f = fopen("/proc/self/stat", "r");
    char line[1024];
    double btime = 0;
    if (f && fgets(line, sizeof line, f)) {
        const char *p = strrchr(line, ')');
        unsigned long long ticks = 0;
        int field = 2;
        for (; p && *p && field < 22; p++)
            if (*p == ' ') field++;
        if (p && sscanf(p, "%llu", &ticks) == 1) {
            FILE *st = fopen("/proc/stat", "r");
            char l2[256];
            while (st && fgets(l2, sizeof l2, st))
                if (sscanf(l2, "btime %lf", &btime) == 1) break;
            if (st) fclose(st);
            if (btime > 0) start = btime + (double)ticks / (double)sysconf(_SC_CLK_TCK);
        }
    }
    if (f) fclose(f);
    return start;
}

static void render_process(buf *b)
{
    long page = sysconf(_SC_PAGESIZE);
    unsigned long long vsize_pages = 0, rss_pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%llu %llu", &vsize_pages, &rss_pages) != 2) vsize_pages = rss_pages = 0;
        fclose(f);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                 (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    int fds = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        while (readdir(d)) fds++;
        closedir(d);
        fds = fds > 3 ? fds - 3 : 0; /* ".", ".." and the directory's own descriptor */
    }
    bput(b, "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
            "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %llu\n",
         rss_pages * (unsigned long long)page);
    bput(b, "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
            "# TYPE process_virtual_memory_bytes gauge\nprocess_virtual_memory_bytes %llu\n",
         vsize_pages * (unsigned long long)page);
    bput(b, "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n"
            "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total ");
    bvalue(b, cpu);
    bput(b, "\n# HELP process_start_time_seconds Start time of the process since unix epoch in "
            "seconds.\n# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds ");
    bvalue(b, process_start_time());
    bput(b, "\n# HELP process_open_fds Number of open file descriptors.\n"
            "# TYPE process_open_fds gauge\nprocess_open_fds %d\n", fds);
    /* The heap as the allocator sees it: RSS growth with a flat in-use figure is memory
     * kept for reuse, not a leak. */
    struct mallinfo2 mi = mallinfo2();
    bput(b, "# HELP recpipe_heap_in_use_bytes Bytes allocated with malloc and not yet freed.\n"
            "# TYPE recpipe_heap_in_use_bytes gauge\nrecpipe_heap_in_use_bytes %llu\n",
         (unsigned long long)(mi.uordblks + mi.hblkhd));
    bput(b, "# HELP recpipe_heap_free_bytes Freed bytes the allocator keeps for reuse.\n"
            "# TYPE recpipe_heap_free_bytes gauge\nrecpipe_heap_free_bytes %llu\n",
         (unsigned long long)mi.fordblks);
}

char *rp_metrics_render(size_t *len)
{
    buf b = {malloc(16384), 0, 16384, false};
    if (!b.p) return NULL;
    b.p[0] = '\0';
    pthread_mutex_lock(&hook_mu);
    for (hook *h = hooks; h; h = h->next) h->fn(h->user);
    pthread_mutex_unlock(&hook_mu);
    pthread_mutex_lock(&mu);
    for (rp_metric *m = families; m; m = m->next) render_family(&b, m);
    pthread_mutex_unlock(&mu);
    render_process(&b);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    if (len) *len = b.len;
    return b.p;
}

/* ------------------------------------------------------------------ HTTP endpoint */

static struct MHD_Daemon *daemon_;
static int daemon_port;

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **req_cls)
{
    (void)cls;
    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)req_cls;
    struct MHD_Response *r;
    unsigned code;
    if (strcmp(method, "GET") && strcmp(method, "HEAD")) {
        static const char msg[] = "only GET /metrics\n";
        r = MHD_create_response_from_buffer(sizeof msg - 1, (void *)msg, MHD_RESPMEM_PERSISTENT);
        code = MHD_HTTP_METHOD_NOT_ALLOWED;
    } else if (strcmp(url, "/metrics") && strcmp(url, "/")) {
        static const char msg[] = "not found: the metrics are at /metrics\n";
        r = MHD_create_response_from_buffer(sizeof msg - 1, (void *)msg, MHD_RESPMEM_PERSISTENT);
        code = MHD_HTTP_NOT_FOUND;
    } else {
        size_t len = 0;
        char *text = rp_metrics_render(&len);
        if (!text) {
            static const char msg[] = "out of memory rendering the metrics\n";
            r = MHD_create_response_from_buffer(sizeof msg - 1, (void *)msg,
                                                MHD_RESPMEM_PERSISTENT);
            code = MHD_HTTP_INTERNAL_SERVER_ERROR;
        } else {
            r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
            if (!r) free(text);
            code = MHD_HTTP_OK;
            if (r)
                MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                                        "text/plain; version=0.0.4; charset=utf-8");
        }
    }
    if (!r) return MHD_NO;
    enum MHD_Result ret = MHD_queue_response(conn, code, r);
    MHD_destroy_response(r);
    return ret;
}

int rp_metrics_http_start(const char *listen, int *port, rp_error *err)
{
    if (daemon_) return rp_errorf(err, RP_EINVAL, "--metrics-listen: the endpoint already runs "
                                  "on port %d", daemon_port);
    const char *colon = listen ? strrchr(listen, ':') : NULL;
    if (!colon) return rp_errorf(err, RP_EINVAL, "--metrics-listen %s: not \"host:port\"",
                                 listen ? listen : "(null)");
    char host[64];
    size_t hl = (size_t)(colon - listen);
    if (hl >= sizeof host) return rp_errorf(err, RP_EINVAL, "--metrics-listen %s: host too long", listen);
    memcpy(host, listen, hl);
    host[hl] = '\0';
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end || end == colon + 1 || p < 0 || p > 65535)
        return rp_errorf(err, RP_EINVAL, "--metrics-listen %s: port is not 0..65535", listen);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)p);
    if (!hl || !strcmp(host, "0.0.0.0") || !strcmp(host, "*")) sa.sin_addr.s_addr = htonl(INADDR_ANY);
    else if (!strcmp(host, "localhost")) sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    else if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return rp_errorf(err, RP_EINVAL, "--metrics-listen %s: host is not an IPv4 address", listen);
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, (uint16_t)p, NULL, NULL, on_request,
        NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_CONNECTION_LIMIT, 64u,
        MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
    if (!d) return rp_errorf(err, RP_EIO, "--metrics-listen %s: cannot listen (address in use?)", listen);
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    daemon_port = info ? (int)info->port : (int)p;
    daemon_ = d;
    if (port) *port = daemon_port;
    char fields[160];
    snprintf(fields, sizeof fields, "\"metrics_address\":\"%s:%d\",\"metrics_port\":%d", host,
             daemon_port, daemon_port);
    rp_logx(RP_LOG_INFO, "metrics", fields, "metrics listening on %s:%d", host, daemon_port);
    return RP_OK;
}

int rp_metrics_http_port(void)
{
    return daemon_ ? daemon_port : 0;
}

void rp_metrics_http_stop(void)
{
    if (!daemon_) return;
    MHD_stop_daemon(daemon_);
    daemon_ = NULL;
    daemon_port = 0;
}
