/* Request validation: every rejection names the field and the limit. */
#include "gw/validate.h"

#include "gw/state.h"

#include <math.h>

int gw_validate_recommend(const Recpipe__V1__RecommendRequest *req, rp_error *err)
{
    if (req->user_id == 0) return rp_errorf(err, RP_EINVAL, "user_id: required (non-zero)");
    if (req->count > GW_COUNT_MAX)
        return rp_errorf(err, RP_EINVAL, "count: %u is out of range 1..%d (0 = the default %d)",
                         req->count, GW_COUNT_MAX, GW_COUNT_DEFAULT);
    if (req->n_exclude_ids > GW_EXCLUDE_MAX)
        return rp_errorf(err, RP_EINVAL, "exclude_ids: %zu ids, at most %d", req->n_exclude_ids,
                         GW_EXCLUDE_MAX);
    if (req->now < 0)
        return rp_errorf(err, RP_EINVAL, "now: %lld is negative (Unix seconds; 0 = server clock)",
                         (long long)req->now);
    const Recpipe__V1__Filter *f = req->filter;
    if (f) {
        if (f->n_include_categories > GW_FILTER_CATEGORIES_MAX)
            return rp_errorf(err, RP_EINVAL, "filter.include_categories: %zu names, at most %d",
                             f->n_include_categories, GW_FILTER_CATEGORIES_MAX);
        if (f->n_exclude_categories > GW_FILTER_CATEGORIES_MAX)
            return rp_errorf(err, RP_EINVAL, "filter.exclude_categories: %zu names, at most %d",
                             f->n_exclude_categories, GW_FILTER_CATEGORIES_MAX);
        if (f->created_after < 0 || f->created_before < 0)
            return rp_errorf(err, RP_EINVAL, "filter.created_%s: negative",
                             f->created_after < 0 ? "after" : "before");
        if (f->created_after && f->created_before && f->created_before <= f->created_after)
            return rp_errorf(err, RP_EINVAL,
                             "filter.created_before: %lld is not after created_after %lld",
                             (long long)f->created_before, (long long)f->created_after);
        for (size_t i = 0; i < f->n_include_categories; i++)
            if (!f->include_categories[i] || !f->include_categories[i][0])
                return rp_errorf(err, RP_EINVAL, "filter.include_categories[%zu]: empty name", i);
        for (size_t i = 0; i < f->n_exclude_categories; i++)
            if (!f->exclude_categories[i] || !f->exclude_categories[i][0])
                return rp_errorf(err, RP_EINVAL, "filter.exclude_categories[%zu]: empty name", i);
    }
    const Recpipe__V1__Diversity *d = req->diversity;
    if (d) {
        if (!isfinite(d->mmr_lambda) || d->mmr_lambda < 0 || d->mmr_lambda > 1)
            return rp_errorf(err, RP_EINVAL, "diversity.mmr_lambda: %g is out of range 0..1",
                             (double)d->mmr_lambda);
        if (d->max_per_category > GW_MAX_PER_CATEGORY_MAX)
            return rp_errorf(err, RP_EINVAL,
                             "diversity.max_per_category: %u is above the maximum %d",
                             d->max_per_category, GW_MAX_PER_CATEGORY_MAX);
    }
    return RP_OK;
}

int gw_validate_feedback(const Recpipe__V1__FeedbackRequest *req, int64_t now_s, rp_error *err)
{
    if (req->n_events == 0) return rp_errorf(err, RP_EINVAL, "events: empty (1..%d)", GW_FEEDBACK_MAX);
    if (req->n_events > GW_FEEDBACK_MAX)
        return rp_errorf(err, RP_EINVAL, "events: %zu events, at most %d per call", req->n_events,
                         GW_FEEDBACK_MAX);
    for (size_t i = 0; i < req->n_events; i++) {
        const Recpipe__V1__FeedbackEvent *e = req->events[i];
        if (e->user_id == 0)
            return rp_errorf(err, RP_EINVAL, "events[%zu].user_id: required (non-zero)", i);
        if (e->item_id == 0)
            return rp_errorf(err, RP_EINVAL, "events[%zu].item_id: required (non-zero)", i);
        if ((int)e->type < GW_EVENT_TYPE_MIN || (int)e->type > GW_EVENT_TYPE_MAX)
            return rp_errorf(err, RP_EINVAL,
                             "events[%zu].type: %d is not a known event type (%d..%d: view, "
                             "click, add_to_cart, purchase, rating, dismiss)",
                             i, (int)e->type, GW_EVENT_TYPE_MIN, GW_EVENT_TYPE_MAX);
        if (!isfinite(e->value))
            return rp_errorf(err, RP_EINVAL, "events[%zu].value: not a finite number", i);
        if (e->timestamp < 0)
            return rp_errorf(err, RP_EINVAL, "events[%zu].timestamp: %lld is negative", i,
                             (long long)e->timestamp);
        if (e->timestamp > now_s + GW_FUTURE_SLACK_S)
            return rp_errorf(err, RP_EINVAL,
                             "events[%zu].timestamp: %lld is more than a day in the future "
                             "(server clock %lld)",
                             i, (long long)e->timestamp, (long long)now_s);
    }
    return RP_OK;
}

int gw_validate_forget(const Recpipe__V1__ForgetUserRequest *req, rp_error *err)
{
    if (req->user_id == 0) return rp_errorf(err, RP_EINVAL, "user_id: required (non-zero)");
    return RP_OK;
}
