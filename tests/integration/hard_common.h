/*
 * tests/integration/hard_common.h — shared pieces of the hardening tests (bad input,
 * faults, durability): a small bundle with items, categories and a ranker built with the
 * real builders, a raw gRPC unary call (arbitrary request bytes, any deadline, even one
 * already past), and running a `recpipe` command to completion with its output captured.
 */
#ifndef TESTS_HARD_COMMON_H
#define TESTS_HARD_COMMON_H

#include "test_gateway_harness.h"

#include "rank/build.h"
#include "rank/model.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>

/* ---- a bundle: TH_GENRES x TH_PER_GENRE items (as th_build_bundle) plus a ranker ---- */
static inline int hc_build_bundle(const char *path, const char *version, rp_error *err)
{
    enum { N = TH_GENRES * TH_PER_GENRE };
    idx_builder *b;
    int rc = idx_builder_create(path, TH_DIM, IDX_METRIC_IP, &b, err);
    if (rc) return rc;
    idx_builder_set_version(b, version, NULL);
    static uint64_t ids[N];
    static float vecs[N * TH_DIM], popr[N], popt[N];
    static uint32_t cnt[N];
    for (int g = 0; g < TH_GENRES; g++) {
        for (int i = 0; i < TH_PER_GENRE; i++) {
            int k = g * TH_PER_GENRE + i;
            char title[64];
            snprintf(title, sizeof title, "%s Movie %d (20%02d)", th_genre_names[g], i, i % 25);
            const char *cats[1] = {th_genre_names[g]};
            idx_item it = {.id = th_item(g, i), .title = title, .categories = cats,
                           .n_categories = 1,
                           .created = 1600000000 + (int64_t)k * 3600,
                           .popularity = (uint64_t)(1000 - i * 20 + g)};
            float *v = vecs + (size_t)k * TH_DIM;
            memset(v, 0, TH_DIM * sizeof *v);
            v[g] = 1.0f;
            v[TH_GENRES + (i % (TH_DIM - TH_GENRES))] = 0.05f * (float)(1 + i % 7);
            ids[k] = it.id;
            popr[k] = popt[k] = 1.0f;
            cnt[k] = 10;
            if ((rc = idx_builder_add_item(b, &it, v, err))) goto fail;
        }
    }
    idx_index_opts o = {.factory = "Flat", .n_shards = 1};
    if ((rc = idx_builder_set_index(b, &o, err))) goto fail;
    rank_shape s = rank_shape_default();
    s.dim = 8;
    s.att1 = 16;
    s.att2 = 8;
    s.deep[0] = 32;
    s.deep[1] = 16;
    s.n_items = N;
    s.sim_dim = TH_DIM;
    rank_items ri = {N, ids, NULL, NULL, popr, popt, cnt, vecs};
    rank_model *m;
    if ((rc = rank_model_create(&s, &ri, NULL, 0, 7, &m, err))) goto fail;
    char file[512];
    rc = idx_builder_file(b, RANK_BUNDLE_FILE, file, sizeof file, err);
    if (!rc) rc = rank_model_save(m, file, err);
    rank_model_free(m);
    if (rc) goto fail;
    return idx_builder_commit(b, 0, NULL, err);
fail:
    idx_builder_abort(b);
    return rc;
}

/* Starts `recpipe ranking --bundle ...` (args after the subcommand name). While the
 * subcommand table does not route `recpipe ranking --bundle` to the bundle-serving
 * service yet, the ranking module's helper binary (RANK_SERVER_HELPER, the same
 * cmd_ranking_bundle) is used instead. Returns the pid; log gets its output. */
static inline pid_t hc_spawn_ranking(const char *const *args, const char *log)
{
    const char *bin = th_bin();
#ifdef RANK_SERVER_HELPER
    {
        char cmd[1200];
        snprintf(cmd, sizeof cmd, "'%s' ranking --help 2>/dev/null | grep -q -- --bundle", bin);
        if (system(cmd) != 0) bin = RANK_SERVER_HELPER;
    }
#endif
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        const char *argv[32] = {bin};
        int n = 1;
        if (bin == th_bin()) argv[n++] = "ranking";
        for (size_t i = 0; args[i] && n < 31; i++) argv[n++] = args[i];
        argv[n] = NULL;
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    return pid;
}

/* ---- a raw unary call over the gRPC core: arbitrary bytes, any deadline ---- */
typedef struct hc_raw_result {
    int code;         /* gRPC status */
    char msg[512];    /* details */
    size_t resp_len;  /* response bytes (OK only) */
} hc_raw_result;

/* Sends body[0..len) to method on target. deadline_ms: > 0 from now, < 0 that far in the
 * past, 0 none. Returns 0 when the call completed (status in *out), -1 otherwise. */
static inline int hc_raw_unary(const char *target, const char *method, const void *body,
                               size_t len, int64_t deadline_ms, const rp_md *md, size_t nmd,
                               hc_raw_result *out)
{
    memset(out, 0, sizeof *out);
    grpc_channel_credentials *cr = grpc_insecure_credentials_create();
    grpc_channel *ch = grpc_channel_create(target, cr, NULL);
    grpc_channel_credentials_release(cr);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    gpr_timespec dl = gpr_inf_future(GPR_CLOCK_REALTIME);
    if (deadline_ms > 0)
        dl = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(deadline_ms, GPR_TIMESPAN));
    else if (deadline_ms < 0)
        dl = gpr_time_sub(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(-deadline_ms, GPR_TIMESPAN));
    grpc_slice m = grpc_slice_from_copied_string(method);
    grpc_call *call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, m, NULL, dl, NULL);
    grpc_slice_unref(m);
    grpc_slice sb = grpc_slice_from_copied_buffer(body, len);
    grpc_byte_buffer *send = grpc_raw_byte_buffer_create(&sb, 1);
    grpc_slice_unref(sb);
    grpc_byte_buffer *recv = NULL;
    grpc_metadata_array im, tm;
    grpc_metadata_array_init(&im);
    grpc_metadata_array_init(&tm);
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_metadata gmd[4];
    memset(gmd, 0, sizeof gmd);
    if (nmd > 4) nmd = 4;
    for (size_t i = 0; i < nmd; i++) {
        gmd[i].key = grpc_slice_from_copied_string(md[i].key);
        gmd[i].value = grpc_slice_from_copied_string(md[i].value);
    }
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = nmd;
    ops[0].data.send_initial_metadata.metadata = gmd;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &im;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &tm;
    ops[5].data.recv_status_on_client.status = &status;
    ops[5].data.recv_status_on_client.status_details = &details;
    int rc = -1;
    int tag = 1;
    if (call && grpc_call_start_batch(call, ops, 6, &tag, NULL) == GRPC_CALL_OK) {
        grpc_event ev = grpc_completion_queue_pluck(cq, &tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_OP_COMPLETE) {
            rc = 0;
            out->code = (int)status;
            size_t n = GRPC_SLICE_LENGTH(details);
            if (n >= sizeof out->msg) n = sizeof out->msg - 1;
            memcpy(out->msg, GRPC_SLICE_START_PTR(details), n);
            out->msg[n] = '\0';
            if (recv) out->resp_len = grpc_byte_buffer_length(recv);
        }
    }
    for (size_t i = 0; i < nmd; i++) {
        grpc_slice_unref(gmd[i].key);
        grpc_slice_unref(gmd[i].value);
    }
    if (recv) grpc_byte_buffer_destroy(recv);
    grpc_byte_buffer_destroy(send);
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&im);
    grpc_metadata_array_destroy(&tm);
    if (call) grpc_call_unref(call);
    grpc_completion_queue_shutdown(cq);
    grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    grpc_completion_queue_destroy(cq);
    grpc_channel_destroy(ch);
    return rc;
}

/* ---- running `recpipe ARGS` to completion ---- */

/* Runs the recpipe binary with argv (NULL-terminated, without the program name), output
 * (stdout and stderr) into out_path; waits at most timeout_s (then SIGKILL). Returns the
 * exit code, -N for signal N, -1000 for a timeout. */
static inline int hc_run(const char *const *argv, const char *out_path, double timeout_s)
{
    unlink(out_path);
    pid_t pid = th_spawn(argv, out_path);
    uint64_t end = rp_now_ns() + (uint64_t)(timeout_s * 1e9);
    int st;
    for (;;) {
        pid_t w = waitpid(pid, &st, WNOHANG);
        if (w == pid) break;
        if (rp_now_ns() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -1000;
        }
        rp_sleep_ns(5000000ull);
    }
    if (WIFEXITED(st)) return WEXITSTATUS(st);
    return -WTERMSIG(st);
}

/* The whole file, NUL-terminated, malloc'd; "" when missing. */
static inline char *hc_slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return strdup("");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    size_t got = fread(s, 1, (size_t)n, f);
    s[got] = '\0';
    fclose(f);
    return s;
}

static inline int hc_alive(pid_t pid)
{
    int st;
    return pid > 0 && waitpid(pid, &st, WNOHANG) == 0;
}

#endif
