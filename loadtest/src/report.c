/* Reports: the human table and the JSON document. The SVG chart is in svg.c. */
#include "lt/report.h"
#include "internal.h"

#include <json-c/json.h>

#include <errno.h>
#include <string.h>

static double ms(uint64_t ns)
{
    return (double)ns / 1e6;
}

/* Percentiles shown in the table and written to JSON. */
static const struct {
    const char *name;
    double p;
} table_ps[] = {{"p50", 50}, {"p90", 90}, {"p99", 99}, {"p99.9", 99.9}};

/* The percentile spectrum: dense near the tail, as HdrHistogram plots it. */
const double lt__spectrum_ps[] = {0,    10,    20,    30,     40,     50,     60,     70,
                                  75,   80,    85,    90,     92.5,   95,     96.25,  97.5,
                                  98,   98.5,  99,    99.25,  99.5,   99.75,  99.9,   99.95,
                                  99.975, 99.99, 99.995, 99.999, 100};
const size_t lt__spectrum_n = sizeof lt__spectrum_ps / sizeof lt__spectrum_ps[0];

static void describe(FILE *f, const lt_result *r)
{
    const lt_config *c = &r->cfg;
    fprintf(f, "recpipe loadtest: %s, ", c->target);
    if (c->workload) {
        const double *mix = lt_workload_mix(c->workload);
        const char *sep = "";
        for (int k = 0; k < LT_RPC_COUNT; k++) {
            if (mix[k] <= 0) continue;
            if (mix[k] >= 1) fprintf(f, "%s", lt_rpc_name(k));
            else fprintf(f, "%s%s %.0f%%", sep, lt_rpc_name(k), mix[k] * 100);
            sep = " + ";
        }
        fprintf(f, ", ");
    }
    if (r->open_loop)
        fprintf(f, "open loop at %g/s (%s arrivals)", c->rate, lt_arrivals_name(c->arrivals));
    else
        fprintf(f, "closed loop with %u in flight", c->concurrency);
    fprintf(f, ", %g s after %g s warmup, %u connection%s, deadline %u ms\n", c->duration_s,
            c->warmup_s, c->connections, c->connections == 1 ? "" : "s", c->deadline_ms);
}

void lt_report_text(FILE *f, const lt_result *r)
{
    describe(f, r);
    if (r->interrupted)
        fprintf(f, "  interrupted after %.1f s of the measured window: figures cover that part\n",
                r->window_s);
    fprintf(f, "  calls     %llu measured, %llu sent in all (warmup included)",
            (unsigned long long)r->measured, (unsigned long long)r->sent);
    if (r->unsent) fprintf(f, ", %llu never sent", (unsigned long long)r->unsent);
    fprintf(f, "\n  rate      %.1f/s achieved", r->achieved_rate);
    if (r->open_loop) fprintf(f, " of %g/s offered", r->cfg.rate);
    fprintf(f, ", at most %u in flight\n", r->max_in_flight_seen);
    if (r->late_sends > r->sent / 100)
        fprintf(f, "  warning   %llu calls sent over 1 ms late (up to %.3f ms): the generator "
                   "or --max-in-flight fell behind; their latency counts from the intended start\n",
                (unsigned long long)r->late_sends, ms(r->max_send_lag_ns));
    fprintf(f, "  latency   %s, every status included\n",
            r->open_loop ? "from each call's intended start (coordinated omission corrected)"
                         : "from each call's start (closed loop)");
    for (size_t i = 0; i < sizeof table_ps / sizeof table_ps[0]; i++)
        fprintf(f, "    %-7s %10.3f ms\n", table_ps[i].name,
                ms(rp_hist_percentile(&r->latency, table_ps[i].p)));
    fprintf(f, "    %-7s %10.3f ms\n", "max", ms(rp_hist_max(&r->latency)));
    fprintf(f, "    %-7s %10.3f ms\n", "mean", rp_hist_mean(&r->latency) / 1e6);
    fprintf(f, "  status   ");
    for (int s = 0; s < LT_NSTATUS; s++)
        if (r->status[s])
            fprintf(f, " %s %llu", lt_status_name(s), (unsigned long long)r->status[s]);
    if (r->measured == 0) fprintf(f, " (no calls measured)");
    fprintf(f, "\n  errors    %llu (%.3f%%)\n", (unsigned long long)r->errors,
            r->measured ? 100.0 * (double)r->errors / (double)r->measured : 0.0);
    if (r->errors && r->ok) {
        /* Shed or failed calls answer at their own speed: each status on its own line. */
        for (int s = 0; s < LT_NSTATUS; s++) {
            if (!r->status[s]) continue;
            fprintf(f, "  %-18s p50 %.3f ms, p99 %.3f ms, max %.3f ms\n", lt_status_name(s),
                    ms(rp_hist_percentile(&r->by_status[s], 50)),
                    ms(rp_hist_percentile(&r->by_status[s], 99)), ms(rp_hist_max(&r->by_status[s])));
        }
    }
    int kinds = 0;
    for (int k = 0; k < LT_RPC_COUNT; k++) kinds += r->calls_by_rpc[k] > 0;
    if (kinds > 1) {
        for (int k = 0; k < LT_RPC_COUNT; k++) {
            if (!r->calls_by_rpc[k]) continue;
            fprintf(f, "  %-9s %llu calls, p50 %.3f ms, p99 %.3f ms, max %.3f ms\n",
                    lt_rpc_name(k), (unsigned long long)r->calls_by_rpc[k],
                    ms(rp_hist_percentile(&r->by_rpc[k], 50)),
                    ms(rp_hist_percentile(&r->by_rpc[k], 99)), ms(rp_hist_max(&r->by_rpc[k])));
        }
    }
}

void lt_report_find_text(FILE *f, const lt_find_result *fm)
{
    fprintf(f, "find-max: the highest rate with p99 <= %g ms (errors <= 1%%, achieved >= 95%%)\n",
            fm->slo_p99_ms);
    for (size_t i = 0; i < fm->nsteps; i++) {
        const lt_step *s = &fm->steps[i];
        fprintf(f, "  step %2zu  offered %10.1f/s  achieved %10.1f/s  p99 %9.3f ms  errors %llu  %s\n",
                i + 1, s->rate, s->achieved, ms(s->p99_ns), (unsigned long long)s->errors,
                s->pass ? "pass" : "FAIL");
    }
    if (fm->best_rate > 0)
        fprintf(f, "  max rate under the objective: %.1f/s\n", fm->best_rate);
    else
        fprintf(f, "  no rate tried met the objective\n");
}

/* ---------------------------------------------------------------- JSON */

static json_object *lat_object(const rp_hist *h)
{
    json_object *o = json_object_new_object();
    for (size_t i = 0; i < sizeof table_ps / sizeof table_ps[0]; i++)
        json_object_object_add(o, table_ps[i].name,
                               json_object_new_double(ms(rp_hist_percentile(h, table_ps[i].p))));
    json_object_object_add(o, "p99.99", json_object_new_double(ms(rp_hist_percentile(h, 99.99))));
    json_object_object_add(o, "min", json_object_new_double(ms(rp_hist_min(h))));
    json_object_object_add(o, "max", json_object_new_double(ms(rp_hist_max(h))));
    json_object_object_add(o, "mean", json_object_new_double(rp_hist_mean(h) / 1e6));
    json_object_object_add(o, "count", json_object_new_int64((int64_t)h->count));
    return o;
}

json_object *lt_report_json_object(const lt_result *r, const lt_find_result *fm)
{
    const lt_config *c = &r->cfg;
    json_object *root = json_object_new_object();
    if (!root) return NULL;

    json_object *cfg = json_object_new_object();
    json_object_object_add(cfg, "target", json_object_new_string(c->target ? c->target : ""));
    json_object_object_add(cfg, "mode", json_object_new_string(r->open_loop ? "open" : "closed"));
    json_object_object_add(cfg, "rate", json_object_new_double(c->rate));
    json_object_object_add(cfg, "concurrency", json_object_new_int64(c->concurrency));
    json_object_object_add(cfg, "arrivals", json_object_new_string(lt_arrivals_name(c->arrivals)));
    json_object_object_add(cfg, "duration_s", json_object_new_double(c->duration_s));
    json_object_object_add(cfg, "warmup_s", json_object_new_double(c->warmup_s));
    json_object_object_add(cfg, "connections", json_object_new_int64(c->connections));
    json_object_object_add(cfg, "threads", json_object_new_int64(c->threads));
    json_object_object_add(cfg, "deadline_ms", json_object_new_int64(c->deadline_ms));
    json_object_object_add(cfg, "max_calls", json_object_new_int64((int64_t)c->max_calls));
    json_object_object_add(cfg, "seed", json_object_new_int64((int64_t)c->seed));
    if (c->workload) {
        const double *mix = lt_workload_mix(c->workload);
        json_object *m = json_object_new_object();
        for (int k = 0; k < LT_RPC_COUNT; k++)
            if (mix[k] > 0) json_object_object_add(m, lt_rpc_name(k), json_object_new_double(mix[k]));
        json_object_object_add(cfg, "mix", m);
    }
    json_object_object_add(root, "config", cfg);

    json_object *sum = json_object_new_object();
    json_object_object_add(sum, "start_unix_s", json_object_new_double(r->start_wall_s));
    json_object_object_add(sum, "elapsed_s", json_object_new_double(r->elapsed_s));
    json_object_object_add(sum, "measured", json_object_new_int64((int64_t)r->measured));
    json_object_object_add(sum, "ok", json_object_new_int64((int64_t)r->ok));
    json_object_object_add(sum, "errors", json_object_new_int64((int64_t)r->errors));
    json_object_object_add(sum, "sent", json_object_new_int64((int64_t)r->sent));
    json_object_object_add(sum, "completed", json_object_new_int64((int64_t)r->completed));
    json_object_object_add(sum, "unsent", json_object_new_int64((int64_t)r->unsent));
    json_object_object_add(sum, "achieved_rate", json_object_new_double(r->achieved_rate));
    json_object_object_add(sum, "window_s", json_object_new_double(r->window_s));
    json_object_object_add(sum, "interrupted", json_object_new_boolean(r->interrupted));
    json_object_object_add(sum, "max_in_flight", json_object_new_int64(r->max_in_flight_seen));
    json_object_object_add(sum, "late_sends", json_object_new_int64((int64_t)r->late_sends));
    json_object_object_add(sum, "max_send_lag_ms", json_object_new_double(ms(r->max_send_lag_ns)));
    json_object_object_add(sum, "latency_from",
                           json_object_new_string(r->open_loop ? "intended_start" : "actual_start"));
    json_object_object_add(root, "summary", sum);
    json_object_object_add(root, "latency_ms", lat_object(&r->latency));

    json_object *st = json_object_new_object();
    for (int s = 0; s < LT_NSTATUS; s++)
        if (r->status[s])
            json_object_object_add(st, lt_status_name(s), json_object_new_int64((int64_t)r->status[s]));
    json_object_object_add(root, "status", st);

    json_object *bs = json_object_new_object();
    for (int s = 0; s < LT_NSTATUS; s++) {
        if (!r->status[s]) continue;
        json_object *o = lat_object(&r->by_status[s]);
        json_object_object_add(o, "count", json_object_new_int64((int64_t)r->status[s]));
        json_object_object_add(bs, lt_status_name(s), o);
    }
    json_object_object_add(root, "latency_by_status_ms", bs);

    json_object *by = json_object_new_object();
    for (int k = 0; k < LT_RPC_COUNT; k++) {
        if (!r->calls_by_rpc[k]) continue;
        json_object *o = lat_object(&r->by_rpc[k]);
        json_object_object_add(o, "path", json_object_new_string(lt_rpc_path(k)));
        json_object_object_add(by, lt_rpc_name(k), o);
    }
    json_object_object_add(root, "by_rpc", by);

    json_object *spec = json_object_new_array();
    for (size_t i = 0; i < lt__spectrum_n; i++) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "percentile", json_object_new_double(lt__spectrum_ps[i]));
        json_object_object_add(o, "ms", json_object_new_double(ms(rp_hist_percentile(&r->latency, lt__spectrum_ps[i]))));
        json_object_array_add(spec, o);
    }
    json_object_object_add(root, "spectrum", spec);

    json_object *hist = json_object_new_array();
    uint32_t b = 0;
    uint64_t lo, hi, n;
    while (rp_hist_next(&r->latency, &b, &lo, &hi, &n)) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "lo_us", json_object_new_double((double)lo / 1e3));
        json_object_object_add(o, "hi_us", json_object_new_double((double)hi / 1e3));
        json_object_object_add(o, "count", json_object_new_int64((int64_t)n));
        json_object_array_add(hist, o);
    }
    json_object_object_add(root, "histogram", hist);

    json_object *tl = json_object_new_array();
    for (size_t s = 0; s < r->nseconds; s++) {
        const lt_second *x = &r->seconds[s];
        json_object *o = json_object_new_object();
        json_object_object_add(o, "t", json_object_new_int64((int64_t)s));
        json_object_object_add(o, "rate", json_object_new_int64((int64_t)x->completed));
        json_object_object_add(o, "errors", json_object_new_int64((int64_t)x->errors));
        json_object_object_add(o, "p50_ms", json_object_new_double(ms(x->p50_ns)));
        json_object_object_add(o, "p99_ms", json_object_new_double(ms(x->p99_ns)));
        json_object_object_add(o, "max_ms", json_object_new_double(ms(x->max_ns)));
        json_object_object_add(o, "warmup", json_object_new_boolean(x->warmup));
        json_object_array_add(tl, o);
    }
    json_object_object_add(root, "timeline", tl);

    if (fm) {
        json_object *f = json_object_new_object();
        json_object_object_add(f, "slo_p99_ms", json_object_new_double(fm->slo_p99_ms));
        json_object_object_add(f, "best_rate", json_object_new_double(fm->best_rate));
        json_object *steps = json_object_new_array();
        for (size_t i = 0; i < fm->nsteps; i++) {
            const lt_step *s = &fm->steps[i];
            json_object *o = json_object_new_object();
            json_object_object_add(o, "rate", json_object_new_double(s->rate));
            json_object_object_add(o, "achieved", json_object_new_double(s->achieved));
            json_object_object_add(o, "p99_ms", json_object_new_double(ms(s->p99_ns)));
            json_object_object_add(o, "measured", json_object_new_int64((int64_t)s->measured));
            json_object_object_add(o, "errors", json_object_new_int64((int64_t)s->errors));
            json_object_object_add(o, "pass", json_object_new_boolean(s->pass));
            json_object_array_add(steps, o);
        }
        json_object_object_add(f, "steps", steps);
        json_object_object_add(root, "find_max", f);
    }
    return root;
}

int lt_report_json(const char *path, const lt_result *r, const lt_find_result *fm, rp_error *err)
{
    json_object *o = lt_report_json_object(r, fm);
    if (!o) return rp_errorf(err, RP_ENOMEM, "%s: out of memory building the JSON report", path);
    int rc = RP_OK;
    const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE);
    FILE *f = fopen(path, "w");
    if (!f) {
        rc = rp_errorf(err, RP_EIO, "%s: cannot write: %s", path, strerror(errno));
        goto done;
    }
    fputs(s, f);
    fputc('\n', f);
    if (fclose(f) != 0) rc = rp_errorf(err, RP_EIO, "%s: cannot write: %s", path, strerror(errno));
done:
    json_object_put(o);
    return rc;
}
