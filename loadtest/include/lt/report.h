/*
 * lt/report.h — reports of a load test: a human table, JSON with every figure, and a
 * self-contained SVG chart (the latency percentile spectrum on a log axis, and the
 * per-second timeline of rate and p99) that opens in any browser.
 *
 * The results are borrowed; nothing here keeps a pointer after returning.
 */
#ifndef LT_REPORT_H
#define LT_REPORT_H

#include "lt/loadtest.h"

#include <stdio.h>

struct json_object;

/* The table: mode, offered and achieved rate, p50/p90/p99/p99.9/max, errors by status
 * (with each status's own p50/p99 when some calls failed), per-RPC lines when several
 * RPCs were mixed. */
void lt_report_text(FILE *f, const lt_result *r);
/* The find-max steps and the answer. */
void lt_report_find_text(FILE *f, const lt_find_result *fm);

/*
 * The JSON document: {"config":{...}, "summary":{...}, "latency_ms":{"p50":...},
 * "status":{"OK":n,...}, "latency_by_status_ms":{"OK":{"p50":..,"count":n},...},
 * "by_rpc":{...}, "spectrum":[{"percentile":..,"ms":..}],
 * "histogram":[{"lo_us":..,"hi_us":..,"count":..}], "timeline":[{"t":..,"rate":..,
 * "errors":..,"p50_ms":..,"p99_ms":..,"max_ms":..,"warmup":..}], "find_max":{...}}.
 * fm may be NULL (no "find_max" member). Returns a new object (json_object_put it),
 * or NULL when out of memory.
 */
struct json_object *lt_report_json_object(const lt_result *r, const lt_find_result *fm);
/* Writes that document to path (pretty-printed). RP_EIO naming the path on failure. */
int lt_report_json(const char *path, const lt_result *r, const lt_find_result *fm,
                   rp_error *err);

/* Writes the SVG to f / to path. The two charts are <g id="spectrum"> and
 * <g id="timeline">. RP_EIO naming the path on failure. */
void lt_report_svg_write(FILE *f, const lt_result *r);
int lt_report_svg(const char *path, const lt_result *r, rp_error *err);

#endif
