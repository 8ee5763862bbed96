/*
 * libFuzzer target: the gateway's Recommend / Feedback / ForgetUser request decoding,
 * validation and state store (the parts of the handlers that run without retrieval and
 * ranking): the first byte picks the method, the rest is the request. Valid Feedback
 * batches are appended to a real LMDB store, Recommend reads the user's history,
 * ForgetUser deletes it.
 */
#include "fuzz_service.h"

#include "gw/state.h"
#include "gw/validate.h"
#include "recpipe/v1/recommender.pb-c.h"

#include <time.h>

static gw_state *st;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    rp_log_set_level(RP_LOG_ERROR);
    char dir[400];
    snprintf(dir, sizeof dir, "%s/state", fz_tmpdir());
    gw_state_opts o = {.map_size = 64u << 20, .history_len = 50};
    rp_error err = {0};
    if (gw_state_open(dir, &o, &st, &err)) {
        fprintf(stderr, "fuzz: state: %s\n", err.msg);
        abort();
    }
    return 0;
}

static void feedback(const uint8_t *data, size_t size)
{
    Recpipe__V1__FeedbackRequest *q = recpipe__v1__feedback_request__unpack(NULL, size, data);
    if (!q) return;
    rp_error err = {0};
    if (gw_validate_feedback(q, (int64_t)time(NULL), &err) == RP_OK) {
        gw_user_event *ev = calloc(q->n_events, sizeof *ev);
        for (size_t i = 0; i < q->n_events; i++) {
            ev[i].user_id = q->events[i]->user_id % 64 + 1; /* keep the store small */
            ev[i].ev = (gw_event){q->events[i]->item_id, q->events[i]->timestamp,
                                  q->events[i]->value, (uint8_t)q->events[i]->type};
        }
        int rc = gw_state_append(st, ev, q->n_events, &err);
        if (rc != RP_OK && rc != RP_EFULL) {
            fprintf(stderr, "append: %s\n", err.msg);
            abort();
        }
        free(ev);
    } else if (!err.msg[0]) {
        abort();
    }
    recpipe__v1__feedback_request__free_unpacked(q, NULL);
}

static void recommend(const uint8_t *data, size_t size)
{
    Recpipe__V1__RecommendRequest *q = recpipe__v1__recommend_request__unpack(NULL, size, data);
    if (!q) return;
    rp_error err = {0};
    if (gw_validate_recommend(q, &err) == RP_OK) {
        gw_event h[64];
        size_t n;
        uint64_t v;
        if (gw_state_history(st, q->user_id % 64 + 1, h, 64, &n, &v, &err)) abort();
    } else if (!err.msg[0]) {
        abort();
    }
    recpipe__v1__recommend_request__free_unpacked(q, NULL);
}

static void forget(const uint8_t *data, size_t size)
{
    Recpipe__V1__ForgetUserRequest *q = recpipe__v1__forget_user_request__unpack(NULL, size, data);
    if (!q) return;
    rp_error err = {0};
    if (gw_validate_forget(q, &err) == RP_OK) {
        if (gw_state_forget(st, q->user_id % 64 + 1, NULL, NULL, &err)) abort();
    }
    recpipe__v1__forget_user_request__free_unpacked(q, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    switch (data[0] % 4) {
    case 0:
    case 1: feedback(data + 1, size - 1); break;
    case 2: recommend(data + 1, size - 1); break;
    default: forget(data + 1, size - 1); break;
    }
    return 0;
}
