/*
 * rp/log.h — structured logs: one JSON object per line on stderr.
 *
 * {"ts":"2026-11-23T06:20:42.123Z","level":"info","component":"retrieval",
 *  "msg":"bundle loaded","request_id":"..."}
 * The request id is per thread (set it when a handler starts, clear it when it ends).
 * Thread-safe: each line is written whole (one write(2) unless cut short). Servers turn
 * on the log thread (rp_log_async_start): from then on no caller waits for the disk.
 */
#ifndef RP_LOG_H
#define RP_LOG_H

#include <stdio.h>

typedef enum rp_log_level {
    RP_LOG_DEBUG = 0,
    RP_LOG_INFO = 1,
    RP_LOG_WARN = 2,
    RP_LOG_ERROR = 3,
    RP_LOG_OFF = 4,
} rp_log_level;

/* Sets the minimum level written (default INFO). */
void rp_log_set_level(rp_log_level level);
rp_log_level rp_log_get_level(void);
/* Parses "debug", "info", "warn", "error", "off"; returns 0 or RP_EINVAL. */
int rp_log_parse_level(const char *s, rp_log_level *out);
/* Redirects output to fd (default 2). For tests. */
void rp_log_set_fd(int fd);
/* From now on lines go through a 1 MiB ring to a thread of their own that writes them,
 * so that a stalled disk or log reader never holds the caller; when the ring is full a
 * line is dropped, and the number dropped is logged. Idempotent; the ring is flushed at
 * exit (atexit) and by rp_log_flush. RP_OK, RP_ENOMEM or RP_EINTERNAL (no thread: lines
 * are still written directly). */
int rp_log_async_start(void);
/* Waits (at most 2 s) until every line logged so far is written. No-op without the log
 * thread. */
void rp_log_flush(void);
/* Sets this thread's request id (copied; NULL clears it). */
void rp_log_set_request_id(const char *id);
const char *rp_log_request_id(void);

/* Writes one line. component is a short static name ("rpc", "index", ...). Extra
 * key/value pairs may be given as a preformatted JSON fragment with rp_logx. */
void rp_log(rp_log_level level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Like rp_log, with `fields` a JSON fragment of extra members without braces, e.g.
 * "\"method\":\"/x\",\"status\":0" (may be NULL). */
void rp_logx(rp_log_level level, const char *component, const char *fields, const char *fmt,
             ...) __attribute__((format(printf, 4, 5)));

/* Appends s as a JSON string body (escaped, no quotes) to buf of size cap at *len;
 * truncates safely. Exposed for other JSON writers. */
void rp_json_escape(char *buf, size_t cap, size_t *len, const char *s);

#define rp_debug(comp, ...) rp_log(RP_LOG_DEBUG, comp, __VA_ARGS__)
#define rp_info(comp, ...) rp_log(RP_LOG_INFO, comp, __VA_ARGS__)
#define rp_warn(comp, ...) rp_log(RP_LOG_WARN, comp, __VA_ARGS__)
#define rp_errlog(comp, ...) rp_log(RP_LOG_ERROR, comp, __VA_ARGS__)

#endif
