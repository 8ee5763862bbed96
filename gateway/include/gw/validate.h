/*
 * gw/validate.h — request validation for the Recommender service.
 *
 * Each check returns RP_OK or RP_EINVAL with err naming the field and its limit, e.g.
 * "events[3].type: 9 is not a known event type (1..6)". Nothing is modified.
 */
#ifndef GW_VALIDATE_H
#define GW_VALIDATE_H

#include "rp/err.h"
#include "recpipe/v1/recommender.pb-c.h"

#include <stdint.h>

#define GW_COUNT_DEFAULT 10
#define GW_COUNT_MAX 500
#define GW_EXCLUDE_MAX 10000
#define GW_FILTER_CATEGORIES_MAX 256
#define GW_FEEDBACK_MAX 1000
#define GW_MAX_PER_CATEGORY_MAX 500
#define GW_FUTURE_SLACK_S 86400 /* timestamps up to a day ahead of the server are accepted */

/* Checks a RecommendRequest against the API's limits (category names are checked
 * against the bundle by the service). */
int gw_validate_recommend(const Recpipe__V1__RecommendRequest *req, rp_error *err);

/* Checks a FeedbackRequest: 1..1,000 events, user and item non-zero, a known event type,
 * a finite value, a timestamp not negative and at most a day past now_s. */
int gw_validate_feedback(const Recpipe__V1__FeedbackRequest *req, int64_t now_s, rp_error *err);

/* Checks a ForgetUserRequest. */
int gw_validate_forget(const Recpipe__V1__ForgetUserRequest *req, rp_error *err);

#endif
