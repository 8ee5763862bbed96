/*
 * recpipe demo: import the bundled MovieLens ml-latest-small, build a bundle, start
 * `recpipe serve`, load three users' histories through Feedback, print their
 * recommendations, send one of them several movies of one genre and print the changed
 * list, then leave the server running (Ctrl-C stops it).
 */
#include "cli.h"
#include "gw/supervise.h"
#include "idx/dataset.h"
#include "recpipe/v1/recommender.pb-c.h"
#include "rp/clock.h"
#include "rp/rpc.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define DEMO_MAX_USERS 8
#define DEMO_HISTORY 200

static volatile sig_atomic_t demo_stop;

static void on_signal(int sig)
{
    demo_stop = sig;
}

static bool is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The bundled data: ./data/ml-latest-small, or next to the binary's source tree. */
static bool find_data(char *out, size_t cap)
{
    char exe[PATH_MAX];
    snprintf(exe, sizeof exe, "%s", gw_self_exe());
    const char *dir = dirname(exe);
    const char *cands[] = {"data/ml-latest-small", "%s/../data/ml-latest-small",
                           "%s/../../data/ml-latest-small"};
    for (size_t i = 0; i < sizeof cands / sizeof cands[0]; i++) {
        char p[PATH_MAX];
        snprintf(p, sizeof p, cands[i], dir);
        char real[PATH_MAX];
        if (is_dir(p) && realpath(p, real)) {
            snprintf(out, cap, "%s", real);
            return true;
        }
    }
    return false;
}

/* Runs `recpipe argv...` with its output appended to log; prints the log tail on failure. */
static int run_step(const char *what, const char *const *argv, const char *log, rp_error *err)
{
    pid_t pid;
    int rc = gw_spawn(gw_self_exe(), argv, log, &pid, err);
    if (rc) return rc;
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return rp_errorf(err, RP_EIO, "%s: waitpid: %s", what, strerror(errno));
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return RP_OK;
    char how[64], cmd[PATH_MAX + 32];
    gw_describe_status(status, how, sizeof how);
    snprintf(cmd, sizeof cmd, "tail -n 15 '%s' >&2", log);
    if (system(cmd) != 0) fprintf(stderr, "(see %s)\n", log);
    return rp_errorf(err, RP_EIO, "%s %s (log: %s)", what, how, log);
}

typedef struct demo {
    rp_client *client;
    const char *target;
    idx_dataset *ds;
} demo;

static Recpipe__V1__RecommendResponse *recommend(demo *d, rp_arena *a, uint64_t user, uint32_t count,
                                                rp_error *err)
{
    Recpipe__V1__RecommendRequest req = RECPIPE__V1__RECOMMEND_REQUEST__INIT;
    req.user_id = user;
    req.count = count;
    ProtobufCMessage *resp = NULL;
    rp_call_opts o = {.timeout_ms = 2000};
    rp_status st;
    if (rp_client_unary(d->client, d->target, "/recpipe.v1.Recommender/Recommend", &req.base,
                        &recpipe__v1__recommend_response__descriptor, a, &resp, &o, &st) != RP_OK) {
        rp_errorf(err, RP_EUNAVAIL, "Recommend for user %llu: %s %s", (unsigned long long)user,
                  rp_grpc_status_name(st.code), st.msg);
        return NULL;
    }
    return (Recpipe__V1__RecommendResponse *)resp;
}

static int send_feedback(demo *d, rp_arena *a, Recpipe__V1__FeedbackEvent *ev, size_t n,
                         rp_error *err)
{
    Recpipe__V1__FeedbackRequest req = RECPIPE__V1__FEEDBACK_REQUEST__INIT;
    Recpipe__V1__FeedbackEvent **p = rp_arena_alloc(a, (n + 1) * sizeof *p);
    if (!p) return rp_errorf(err, RP_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) p[i] = &ev[i];
    req.events = p;
    req.n_events = n;
    ProtobufCMessage *resp = NULL;
    rp_call_opts o = {.timeout_ms = 5000};
    rp_status st;
    if (rp_client_unary(d->client, d->target, "/recpipe.v1.Recommender/Feedback", &req.base,
                        &recpipe__v1__feedback_response__descriptor, a, &resp, &o, &st) != RP_OK)
        return rp_errorf(err, RP_EUNAVAIL, "Feedback: %s %s", rp_grpc_status_name(st.code),
                         st.msg);
    return RP_OK;
}

/* Forgets the user, then stores their newest DEMO_HISTORY dataset events. */
static int load_history(demo *d, rp_arena *a, uint64_t user, uint32_t *u_out, rp_error *err)
{
    uint32_t u;
    if (!idx_dataset_find_user(d->ds, user, &u))
        return rp_errorf(err, RP_ENOENT, "--users: user %llu is not in the dataset",
                         (unsigned long long)user);
    *u_out = u;
    Recpipe__V1__ForgetUserRequest fr = RECPIPE__V1__FORGET_USER_REQUEST__INIT;
    fr.user_id = user;
    ProtobufCMessage *resp;
    rp_call_opts o = {.timeout_ms = 5000};
    rp_status st;
    if (rp_client_unary(d->client, d->target, "/recpipe.v1.Recommender/ForgetUser", &fr.base,
                        &recpipe__v1__forget_user_response__descriptor, a, &resp, &o, &st) != RP_OK)
        return rp_errorf(err, RP_EUNAVAIL, "ForgetUser: %s %s", rp_grpc_status_name(st.code),
                         st.msg);
    uint64_t lo = d->ds->user_off[u], hi = d->ds->user_off[u + 1];
    if (hi - lo > DEMO_HISTORY) lo = hi - DEMO_HISTORY;
    size_t n = (size_t)(hi - lo);
    Recpipe__V1__FeedbackEvent *ev = rp_arena_alloc(a, (n + 1) * sizeof *ev);
    if (!ev) return rp_errorf(err, RP_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const idx_event *e = &d->ds->events[lo + i];
        recpipe__v1__feedback_event__init(&ev[i]);
        ev[i].user_id = user;
        ev[i].item_id = d->ds->item_ids[e->item];
        ev[i].type = e->type >= 1 && e->type <= 6 ? (Recpipe__V1__EventType)e->type
                                                  : RECPIPE__V1__EVENT_TYPE__EVENT_TYPE_VIEW;
        ev[i].value = e->value;
        ev[i].timestamp = e->ts;
    }
    return send_feedback(d, a, ev, n, err);
}

static bool has_category(const Recpipe__V1__RecommendedItem *it, const char *genre)
{
    for (size_t c = 0; c < it->n_categories; c++)
        if (!strcmp(it->categories[c], genre)) return true;
    return false;
}

static size_t print_list(const Recpipe__V1__RecommendResponse *r, const char *genre)
{
    size_t in_genre = 0;
    for (size_t i = 0; i < r->n_items; i++) {
        const Recpipe__V1__RecommendedItem *it = r->items[i];
        char cats[96] = "";
        for (size_t c = 0; c < it->n_categories; c++) {
            size_t len = strlen(cats);
            snprintf(cats + len, sizeof cats - len, "%s%s", c ? "|" : "", it->categories[c]);
        }
        bool mark = genre && has_category(it, genre);
        in_genre += mark;
        printf("   %2zu. %-52.52s %-30.30s %s%s\n", i + 1, it->title, cats,
               it->explanation ? it->explanation : "", mark ? "  *" : "");
    }
    printf("       (%u us", r->timings ? r->timings->total_us : 0);
    for (size_t i = 0; i < r->n_degraded; i++) {
        const ProtobufCEnumValue *v =
            protobuf_c_enum_descriptor_get_value(&recpipe__v1__degradation__descriptor, r->degraded[i]);
        printf("%s%s", i ? ", " : "; degraded: ", v ? v->name : "?");
    }
    printf(")\n");
    return in_genre;
}

static void print_recent(const idx_dataset *ds, uint32_t u)
{
    uint64_t lo = ds->user_off[u], hi = ds->user_off[u + 1];
    printf("   %llu events; most recent:", (unsigned long long)(hi - lo));
    for (uint64_t i = hi, k = 0; i > lo && k < 3; i--, k++)
        printf("%s %s", k ? ";" : "", ds->titles[ds->events[i - 1].item]);
    printf("\n");
}

/* Items the user has not seen that stand for the genre: the most watched among those
 * listed under at most two genres (a blockbuster tagged with five genres says little
 * about any one of them), then the most watched of the rest. */
static size_t pick_genre_items(const idx_dataset *ds, uint32_t u, const char *genre, size_t want,
                               uint64_t *out)
{
    uint16_t g;
    if (!idx_dataset_find_category(ds, genre, &g)) return 0;
    uint32_t *count = calloc(ds->n_items, sizeof *count);
    uint8_t *seen = calloc(ds->n_items, 1);
    size_t n = 0;
    if (!count || !seen) goto out;
    for (uint64_t e = 0; e < ds->n_events; e++) count[ds->events[e].item]++;
    for (uint64_t e = ds->user_off[u]; e < ds->user_off[u + 1]; e++) seen[ds->events[e].item] = 1;
    for (int pass = 0; pass < 2 && n < want; pass++) {
        while (n < want) {
            uint32_t best = UINT32_MAX;
            for (uint32_t i = 0; i < ds->n_items; i++) {
                if (seen[i] || count[i] == 0) continue;
                uint32_t ncat = ds->item_cat_off[i + 1] - ds->item_cat_off[i];
                if (pass == 0 && ncat > 2) continue;
                bool in = false;
                for (uint32_t k = ds->item_cat_off[i]; k < ds->item_cat_off[i + 1]; k++)
                    in |= ds->item_cats[k] == g;
                if (in && (best == UINT32_MAX || count[i] > count[best])) best = i;
            }
            if (best == UINT32_MAX) break;
            seen[best] = 1;
            out[n++] = ds->item_ids[best];
        }
    }
out:
    free(count);
    free(seen);
    return n;
}

int cmd_demo(int argc, char **argv)
{
    const char *data = NULL, *work = NULL, *listen = NULL, *users_s = NULL, *genre = NULL;
    bool no_wait = false;
    int64_t count = 0;
    const rp_opt opts[] = {
        {"data", RP_OPT_STR, &data, NULL, 0, 0,
         "MovieLens directory (default: the bundled data/ml-latest-small)", false},
        {"work", RP_OPT_STR, &work, NULL, 0, 0,
         "working directory for the dataset, bundle and state (default: demo/ next to the "
         "recpipe binary)", false},
        {"listen", RP_OPT_STR, &listen, "127.0.0.1:50050", 0, 0, "gateway address", false},
        {"users", RP_OPT_STR, &users_s, "3,1,68", 0, 0, "users to show (MovieLens ids)", false},
        {"genre", RP_OPT_STR, &genre, "Horror", 0, 0,
         "genre of the movies the first user then watches", false},
        {"count", RP_OPT_INT, &count, "10", 1, 100, "recommendations per list", false},
        {"no-wait", RP_OPT_BOOL, &no_wait, "false", 0, 0,
         "stop the server after the demo instead of leaving it running", false},
    };
    int rc = cli_parse("demo", "demo [--listen ADDR] [--users 3,1,68] [--genre Horror]",
                       "Imports the bundled MovieLens ml-latest-small, trains and builds a "
                       "bundle, starts\n`recpipe serve`, loads three users' histories through "
                       "Feedback, prints their\nrecommendations, sends the first user several "
                       "movies of one genre and prints\nthe changed list. The server keeps "
                       "running until Ctrl-C (unless --no-wait).",
                       opts, sizeof opts / sizeof opts[0], argc, argv, NULL, 0, NULL);
    if (rc != RP_OK) return cli_parse_exit(rc);

    uint64_t t0 = rp_now_ns();
    rp_error err = {0};
    char data_dir[PATH_MAX], work_dir[PATH_MAX], path[5][PATH_MAX + 64];
    if (data) snprintf(data_dir, sizeof data_dir, "%s", data);
    else if (!find_data(data_dir, sizeof data_dir)) {
        rp_errorf(&err, RP_ENOENT, "data/ml-latest-small not found (run from the source tree or "
                                   "pass --data DIR)");
        return cli_fail("demo", &err);
    }
    if (work) snprintf(work_dir, sizeof work_dir, "%s", work);
    else {
        char exe[PATH_MAX];
        snprintf(exe, sizeof exe, "%s", gw_self_exe());
        snprintf(work_dir, sizeof work_dir, "%s/demo", dirname(exe));
    }
    if (mkdir(work_dir, 0775) != 0 && errno != EEXIST) {
        rp_errorf(&err, RP_EIO, "cannot create %s: %s", work_dir, strerror(errno));
        return cli_fail("demo", &err);
    }
    enum { P_DATA, P_BUNDLE, P_STATE, P_LOG, P_FILE };
    snprintf(path[P_DATA], sizeof path[P_DATA], "%s/data", work_dir);
    snprintf(path[P_BUNDLE], sizeof path[P_BUNDLE], "%s/bundle", work_dir);
    snprintf(path[P_STATE], sizeof path[P_STATE], "%s/state", work_dir);
    snprintf(path[P_LOG], sizeof path[P_LOG], "%s/demo.log", work_dir);
    uint64_t users[DEMO_MAX_USERS];
    size_t nusers = 0;
    for (char *p = (char *)users_s; *p && nusers < DEMO_MAX_USERS;) {
        char *end;
        unsigned long long v = strtoull(p, &end, 10);
        if (end == p || v == 0) {
            fprintf(stderr, "recpipe demo: --users: \"%s\" is not a list of user ids\n"
                            "Try 'recpipe demo --help'.\n", users_s);
            return RP_EXIT_USAGE;
        }
        users[nusers++] = v;
        p = *end == ',' ? end + 1 : end;
    }

    printf("recpipe demo: MovieLens ml-latest-small from %s\n", data_dir);
    printf("[1/4] importing ratings, movies and tags ...\n");
    fflush(stdout);
    char ratings[PATH_MAX + 16], movies[PATH_MAX + 16], tags[PATH_MAX + 16];
    snprintf(ratings, sizeof ratings, "%s/ratings.csv", data_dir);
    snprintf(movies, sizeof movies, "%s/movies.csv", data_dir);
    snprintf(tags, sizeof tags, "%s/tags.csv", data_dir);
    const char *imp[] = {"import", "--ratings", ratings, "--items", movies, "--tags", tags,
                         "--out", path[P_DATA], "--force", NULL};
    if (run_step("import", imp, path[P_LOG], &err)) return cli_fail("demo", &err);
    printf("[2/4] training implicit-ALS embeddings and the ranker, building the bundle ...\n");
    fflush(stdout);
    const char *bld[] = {"build", "--data", path[P_DATA], "--out", path[P_BUNDLE], "--force",
                         "--eval=false", NULL};
    if (run_step("build", bld, path[P_LOG], &err)) return cli_fail("demo", &err);

    printf("[3/4] starting retrieval, ranking and gateway (recpipe serve) ...\n");
    fflush(stdout);
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    const char *srv[] = {"serve", "--bundle", path[P_BUNDLE], "--state", path[P_STATE],
                         "--listen", listen, NULL};
    pid_t serve_pid = 0;
    if (gw_spawn(gw_self_exe(), srv, path[P_LOG], &serve_pid, &err)) return cli_fail("demo", &err);
    demo d = {.target = listen};
    rp_arena *a = NULL;
    int code = RP_EXIT_FAILURE;
    if ((rc = gw_wait_serving(listen, serve_pid, 120, &err))) {
        if (rc == RP_EUNAVAIL) serve_pid = 0;
        rp_error_prefix(&err, "serve (log: %s)", path[P_LOG]);
        goto out;
    }
    if ((rc = rp_client_create(NULL, &d.client, &err)) || (rc = rp_arena_create(0, &a)) ||
        (rc = idx_dataset_open(path[P_DATA], &d.ds, &err)))
        goto out;
    double ready_s = (double)(rp_now_ns() - t0) / 1e9;

    printf("[4/4] loading each user's newest %d ratings through Feedback, then Recommend\n\n",
           DEMO_HISTORY);
    uint32_t dense[DEMO_MAX_USERS];
    Recpipe__V1__RecommendResponse *first = NULL;
    for (size_t i = 0; i < nusers; i++) {
        if ((rc = load_history(&d, a, users[i], &dense[i], &err))) goto out;
        Recpipe__V1__RecommendResponse *r = recommend(&d, a, users[i], (uint32_t)count, &err);
        if (!r) goto out;
        if (i == 0) first = r;
        printf(" user %llu\n", (unsigned long long)users[i]);
        print_recent(d.ds, dense[i]);
        print_list(r, NULL);
        printf("\n");
    }
    /* Real-time: the first user watches several movies of one genre. */
    uint64_t picks[8];
    size_t npick = pick_genre_items(d.ds, dense[0], genre, 8, picks);
    if (npick == 0) {
        rp_errorf(&err, RP_EINVAL, "--genre: no unseen \"%s\" movies for user %llu", genre,
                  (unsigned long long)users[0]);
        goto out;
    }
    Recpipe__V1__FeedbackEvent ev[8];
    int64_t now = rp_wall_s();
    printf(" user %llu now watches %zu %s movies:", (unsigned long long)users[0], npick, genre);
    for (size_t i = 0; i < npick; i++) {
        recpipe__v1__feedback_event__init(&ev[i]);
        ev[i].user_id = users[0];
        ev[i].item_id = picks[i];
        /* Watched to the end: a view with weight 3 (the API's optional event weight). */
        ev[i].type = RECPIPE__V1__EVENT_TYPE__EVENT_TYPE_VIEW;
        ev[i].value = 3.0f;
        ev[i].timestamp = now - (int64_t)(npick - i);
        uint32_t ix;
        if (idx_dataset_find_item(d.ds, picks[i], &ix))
            printf("%s %s", i ? ";" : "", d.ds->titles[ix]);
    }
    printf("\n");
    if ((rc = send_feedback(&d, a, ev, npick, &err))) goto out;
    size_t before = 0;
    for (size_t i = 0; i < first->n_items; i++) before += has_category(first->items[i], genre);
    Recpipe__V1__RecommendResponse *after = recommend(&d, a, users[0], (uint32_t)count, &err);
    if (!after) goto out;
    printf(" user %llu's next recommendations (* = %s):\n", (unsigned long long)users[0], genre);
    size_t now_in = print_list(after, genre);
    printf("   %s movies in the top %lld: %zu before the feedback, %zu after — no retraining, "
           "no reload.\n\n",
           genre, (long long)count, before, now_in);

    char src_root[PATH_MAX];
    snprintf(src_root, sizeof src_root, "%s/../..", data_dir);
    char real_root[PATH_MAX];
    if (!realpath(src_root, real_root)) snprintf(real_root, sizeof real_root, "%s", src_root);
    printf("Ready in %.1f s. ", ready_s);
    if (no_wait) {
        printf("Stopping (--no-wait).\n");
        code = RP_EXIT_OK;
        goto out;
    }
    printf("The server keeps running on %s; from another terminal:\n"
           "  /usr/bin/python3 %s/examples/python/recommend.py --target %s --user %llu\n"
           "Ctrl-C stops it. Logs: %s\n",
           listen, real_root, listen, (unsigned long long)users[0], path[P_LOG]);
    fflush(stdout);
    while (!demo_stop) {
        int status;
        if (waitpid(serve_pid, &status, WNOHANG) == serve_pid) {
            serve_pid = 0;
            char how[64];
            gw_describe_status(status, how, sizeof how);
            rp_errorf(&err, RP_EUNAVAIL, "the server %s (log: %s)", how, path[P_LOG]);
            goto out;
        }
        usleep(200000);
    }
    code = RP_EXIT_OK;

out:
    if (code != RP_EXIT_OK) code = cli_fail("demo", &err);
    if (serve_pid > 0) {
        pid_t one[1] = {serve_pid};
        gw_stop_all(one, 1, SIGTERM, 15);
    }
    idx_dataset_close(d.ds);
    rp_arena_destroy(a);
    rp_client_destroy(d.client);
    return code;
}
