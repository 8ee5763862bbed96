/* The search for the highest open-loop rate under a p99 objective. */
#include "lt/loadtest.h"
#include "rp/clock.h"

#include <string.h>

/* Runs one step at rate; keeps its result in out->best when it passes and is the
 * highest passing rate so far. */
static int step_once(const lt_config *base, double rate, lt_find_result *out, bool *pass,
                rp_error *err)
{
    lt_config c = *base;
    c.rate = rate;
    c.concurrency = 0;
    lt_result *r = NULL;
    int rc = lt_run(&c, &r, err);
    if (rc) return rc;
    lt_step *s = &out->steps[out->nsteps++];
    s->rate = rate;
    s->achieved = r->achieved_rate;
    s->p99_ns = rp_hist_percentile(&r->latency, 99);
    s->measured = r->measured;
    s->errors = r->errors;
    s->pass = r->measured > 0 && (double)s->p99_ns <= out->slo_p99_ms * 1e6 &&
              (double)r->errors <= 0.01 * (double)r->measured && r->unsent == 0 &&
              r->achieved_rate >= 0.95 * rate;
    *pass = s->pass;
    if (s->pass && rate > out->best_rate) {
        out->best_rate = rate;
        lt_result_free(out->best);
        out->best = r;
    } else {
        lt_result_free(r);
    }
    /* Let the target settle (queues drain) before the next step. */
    rp_sleep_ns(500000000ull);
    return RP_OK;
}

static bool stopped(const lt_config *c)
{
    return c->stop && *c->stop;
}

/* A step that fails is run once more and fails only if it fails again: one stall of the
 * machine (another process, a page-cache miss, the target's first calls) in a few
 * seconds of calls must not halve the rate found. Both runs are kept in out->steps. */
static int step(const lt_config *base, double rate, lt_find_result *out, bool *pass,
                rp_error *err)
{
    int rc = step_once(base, rate, out, pass, err);
    if (rc || *pass || out->nsteps >= LT_MAX_STEPS || stopped(base)) return rc;
    return step_once(base, rate, out, pass, err);
}

int lt_find_max(const lt_config *cfg, double slo_p99_ms, double max_rate, lt_find_result *out,
                rp_error *err)
{
    memset(out, 0, sizeof *out);
    out->slo_p99_ms = slo_p99_ms;
    if (!(slo_p99_ms > 0))
        return rp_errorf(err, RP_EINVAL, "--slo-p99-ms: %g must be above 0", slo_p99_ms);
    if (!(cfg->rate > 0))
        return rp_errorf(err, RP_EINVAL, "--rate: find-max needs a starting rate above 0");
    if (!(max_rate >= cfg->rate))
        return rp_errorf(err, RP_EINVAL, "--max-rate: %g is below the starting rate %g", max_rate,
                         cfg->rate);
    double rate = cfg->rate, lo = 0, hi = 0;
    bool pass;
    int rc;
    /* Up by doubling while steps pass. */
    while (out->nsteps < LT_MAX_STEPS && !stopped(cfg)) {
        if ((rc = step(cfg, rate, out, &pass, err))) return rc;
        if (!pass) {
            hi = rate;
            break;
        }
        lo = rate;
        if (rate >= max_rate) break;
        rate = rate * 2 > max_rate ? max_rate : rate * 2;
    }
    /* Down by halving when even the first step failed. */
    while (lo == 0 && hi > 0 && out->nsteps < LT_MAX_STEPS && !stopped(cfg) && hi / 2 >= 1) {
        rate = hi / 2;
        if ((rc = step(cfg, rate, out, &pass, err))) return rc;
        if (pass) lo = rate;
        else hi = rate;
    }
    /* Bisect between the last pass and the first failure until within 5 %. */
    while (lo > 0 && hi > 0 && hi / lo > 1.05 && out->nsteps < LT_MAX_STEPS && !stopped(cfg)) {
        rate = (lo + hi) / 2;
        if ((rc = step(cfg, rate, out, &pass, err))) return rc;
        if (pass) lo = rate;
        else hi = rate;
    }
    return RP_OK;
}

void lt_find_result_clear(lt_find_result *f)
{
    if (!f) return;
    lt_result_free(f->best);
    f->best = NULL;
}
