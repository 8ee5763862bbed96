/* Tests gateway/src/validate.c: every field's limit, named in the message. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "gw/validate.h"

#define REJECTS(call, needle)                                                              \
    do {                                                                                   \
        rp_error e_;                                                                       \
        rp_error_clear(&e_);                                                               \
        assert_int_equal((call), RP_EINVAL);                                               \
        if (!strstr(e_.msg, needle)) fail_msg("message \"%s\" lacks \"%s\"", e_.msg, needle); \
    } while (0)

static void test_recommend_limits(void **state)
{
    (void)state;
    Recpipe__V1__RecommendRequest r = RECPIPE__V1__RECOMMEND_REQUEST__INIT;
    REJECTS(gw_validate_recommend(&r, &e_), "user_id");
    r.user_id = 5;
    assert_int_equal(gw_validate_recommend(&r, NULL), RP_OK); /* count 0 = default */
    r.count = 500;
    assert_int_equal(gw_validate_recommend(&r, NULL), RP_OK);
    r.count = 501;
    REJECTS(gw_validate_recommend(&r, &e_), "count: 501 is out of range 1..500");
    r.count = 10;
    r.n_exclude_ids = 10001;
    REJECTS(gw_validate_recommend(&r, &e_), "exclude_ids: 10001 ids, at most 10000");
    r.n_exclude_ids = 0;
    r.now = -1;
    REJECTS(gw_validate_recommend(&r, &e_), "now");
    r.now = 0;

    Recpipe__V1__Filter f = RECPIPE__V1__FILTER__INIT;
    r.filter = &f;
    f.n_include_categories = 257;
    REJECTS(gw_validate_recommend(&r, &e_), "filter.include_categories");
    f.n_include_categories = 0;
    f.n_exclude_categories = 300;
    REJECTS(gw_validate_recommend(&r, &e_), "filter.exclude_categories");
    f.n_exclude_categories = 1;
    char *empty[] = {""};
    f.exclude_categories = empty;
    REJECTS(gw_validate_recommend(&r, &e_), "filter.exclude_categories[0]: empty");
    f.n_exclude_categories = 0;
    f.created_after = 100;
    f.created_before = 50;
    REJECTS(gw_validate_recommend(&r, &e_), "filter.created_before");
    f.created_before = 0;
    f.created_after = -3;
    REJECTS(gw_validate_recommend(&r, &e_), "filter.created_after");
    f.created_after = 0;

    Recpipe__V1__Diversity d = RECPIPE__V1__DIVERSITY__INIT;
    r.diversity = &d;
    d.mmr_lambda = 1.5f;
    REJECTS(gw_validate_recommend(&r, &e_), "diversity.mmr_lambda");
    d.mmr_lambda = NAN;
    REJECTS(gw_validate_recommend(&r, &e_), "diversity.mmr_lambda");
    d.mmr_lambda = 0.3f;
    d.max_per_category = 501;
    REJECTS(gw_validate_recommend(&r, &e_), "diversity.max_per_category");
    d.max_per_category = 3;
    assert_int_equal(gw_validate_recommend(&r, NULL), RP_OK);
}

static void test_feedback_limits_name_the_event(void **state)
{
    (void)state;
    enum { N = 1001 };
    static Recpipe__V1__FeedbackEvent ev[N];
    static Recpipe__V1__FeedbackEvent *pev[N];
    for (int i = 0; i < N; i++) {
        Recpipe__V1__FeedbackEvent e = RECPIPE__V1__FEEDBACK_EVENT__INIT;
        e.user_id = 1;
        e.item_id = 2;
        e.type = RECPIPE__V1__EVENT_TYPE__EVENT_TYPE_CLICK;
        e.timestamp = 1000;
        ev[i] = e;
        pev[i] = &ev[i];
    }
    Recpipe__V1__FeedbackRequest r = RECPIPE__V1__FEEDBACK_REQUEST__INIT;
    r.events = pev;
    int64_t now = 1700000000;
    REJECTS(gw_validate_feedback(&r, now, &e_), "events: empty");
    r.n_events = 1001;
    REJECTS(gw_validate_feedback(&r, now, &e_), "events: 1001 events, at most 1000");
    r.n_events = 1000;
    assert_int_equal(gw_validate_feedback(&r, now, NULL), RP_OK);
    ev[3].type = 9;
    REJECTS(gw_validate_feedback(&r, now, &e_), "events[3].type: 9 is not a known event type");
    ev[3].type = 0;
    REJECTS(gw_validate_feedback(&r, now, &e_), "events[3].type: 0");
    ev[3].type = RECPIPE__V1__EVENT_TYPE__EVENT_TYPE_DISMISS;
    ev[7].timestamp = now + 86400 + 1;
    REJECTS(gw_validate_feedback(&r, now, &e_), "events[7].timestamp");
    ev[7].timestamp = now + 86400; /* exactly a day ahead is accepted */
    assert_int_equal(gw_validate_feedback(&r, now, NULL), RP_OK);
    ev[8].user_id = 0;
    REJECTS(gw_validate_feedback(&r, now, &e_), "events[8].user_id");
    ev[8].user_id = 1;
    ev[9].item_id = 0;
    REJECTS(gw_validate_feedback(&r, now, &e_), "events[9].item_id");
    ev[9].item_id = 1;
    ev[10].value = INFINITY;
    REJECTS(gw_validate_feedback(&r, now, &e_), "events[10].value");
    ev[10].value = 0;
    ev[11].timestamp = -5;
    REJECTS(gw_validate_feedback(&r, now, &e_), "events[11].timestamp");
}

static void test_forget(void **state)
{
    (void)state;
    Recpipe__V1__ForgetUserRequest r = RECPIPE__V1__FORGET_USER_REQUEST__INIT;
    REJECTS(gw_validate_forget(&r, &e_), "user_id");
    r.user_id = 3;
    assert_int_equal(gw_validate_forget(&r, NULL), RP_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_recommend_limits),
        cmocka_unit_test(test_feedback_limits_name_the_event),
        cmocka_unit_test(test_forget),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
