#include "rp/log.h"
#include "rp/err.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static atomic_int log_level = RP_LOG_INFO;
static atomic_int log_fd = 2;
static _Thread_local char request_id[64];

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

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

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[40];
    snprintf(when, sizeof when, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);

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
    ssize_t w = write(atomic_load(&log_fd), line, n);
    (void)w;
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
