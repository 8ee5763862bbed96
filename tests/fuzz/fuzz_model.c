/*
 * libFuzzer target: the ranker model-file loader (rank_model_load) over a file holding
 * the input. A file that loads is also used to score a small request, so that shapes
 * the loader accepted are shapes the forward pass can run.
 */
#include "fuzz_service.h"

#include "rank/model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[400];
    if (!path[0]) {
        snprintf(path, sizeof path, "%s/model.bin", fz_tmpdir());
        rp_log_set_level(RP_LOG_ERROR);
    }
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    fwrite(data, 1, size, f);
    fclose(f);
    rank_model *m = NULL;
    rp_error err = {0};
    int rc = rank_model_load(path, &m, &err);
    if (rc == RP_OK) {
        rank_ws *ws = NULL;
        if (rank_ws_create(m, &ws) == RP_OK) {
            rank_event h[3] = {{0, 1, 1.0f, 1700000000}, {1, 5, 4.0f, 1700000100},
                               {2, 2, 1.0f, 1700000200}};
            rank_cand c[4] = {{0, 1, 0.5f}, {1, 2, 0.1f}, {2, 3, -1.0f}, {3, 1, 2.0f}};
            for (int i = 0; i < 3; i++)
                if (h[i].item >= rank_model_shape(m)->n_items) h[i].item = rank_model_shape(m)->n_items;
            for (int i = 0; i < 4; i++)
                if (c[i].item >= rank_model_shape(m)->n_items) c[i].item = rank_model_shape(m)->n_items;
            float scores[4];
            rank_score(m, ws, h, 3, 1700001000, c, 4, scores, NULL, NULL);
            rank_ws_free(ws);
        }
        rank_model_free(m);
    } else if (!err.msg[0] || m) {
        abort();
    }
    return 0;
}
