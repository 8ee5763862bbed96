/* recpipe status | reload — operator calls to the Admin service of running processes. */
#include "cli.h"
#include "rp/arena.h"
#include "rp/ops.h"
#include "rp/rpc.h"

#include "recpipe/v1/admin.pb-c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reads the first line of a token file into buf; RP_OK or RP_EIO naming the file. */
static int read_token(const char *path, char *buf, size_t cap, rp_error *err)
{
    FILE *f = fopen(path, "r");
    if (!f) return rp_errorf(err, RP_EIO, "%s: cannot open the token file", path);
    if (!fgets(buf, (int)cap, f)) buf[0] = '\0';
    fclose(f);
    buf[strcspn(buf, "\r\n")] = '\0';
    if (!buf[0]) return rp_errorf(err, RP_EINVAL, "%s: the token file is empty", path);
    return RP_OK;
}

int cmd_status(int argc, char **argv)
{
    const char *target = NULL;
    double timeout = 5;
    rp_ops_flags ops = {0};
    const rp_opt opts[] = {
        {"target", RP_OPT_STR, &target, "127.0.0.1:50050", 0, 0, "service address", false},
        {"timeout", RP_OPT_DURATION, &timeout, "5s", 0.001, 3600, "call deadline", false},
        RP_OPS_CLIENT_OPTS(ops),
    };
    int rc = cli_parse("status", "status [--target ADDR]",
                       "Prints Admin.Status of a running recpipe service.", opts,
                       sizeof opts / sizeof opts[0], argc, argv, NULL, 0, NULL);
    if (rc) return cli_parse_exit(rc);

    rp_error err = {0};
    rp_client *client = NULL;
    rp_arena *arena = NULL;
    int code = RP_EXIT_UNAVAILABLE;
    if (rp_ops_apply(&ops, &err) || rp_client_create(NULL, &client, &err) ||
        rp_arena_create(0, &arena)) {
        code = cli_fail("status", &err);
        goto out;
    }
    Recpipe__V1__StatusRequest req = RECPIPE__V1__STATUS_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    rp_call_opts copts = {.timeout_ms = (int64_t)(timeout * 1000)};
    rp_status st;
    rc = rp_client_unary(client, target, "/recpipe.v1.Admin/Status", &req.base,
                         &recpipe__v1__status_response__descriptor, arena, &resp, &copts, &st);
    if (rc) {
        fprintf(stderr, "recpipe: status: %s: %s: %s\n", target, rp_grpc_status_name(st.code),
                st.msg);
        goto out;
    }
    const Recpipe__V1__StatusResponse *s = (const Recpipe__V1__StatusResponse *)resp;
    printf("service        %s %s\n", s->service, s->software_version);
    printf("serving        %s\n", s->serving ? "yes" : "no (no bundle loaded)");
    printf("bundle         %s %s\n", s->bundle_version[0] ? s->bundle_version : "-",
           s->bundle_path);
    printf("uptime         %.1f s\n", s->uptime_seconds);
    printf("calls          %llu (%llu failed), %u in flight\n",
           (unsigned long long)s->calls_total, (unsigned long long)s->calls_failed,
           s->in_flight);
    printf("items          %llu (shard %u of %u)\n", (unsigned long long)s->item_count,
           s->shard, s->shard_count);
    if (s->index_bytes)
        printf("index          %.1f MB in memory\n", (double)s->index_bytes / 1e6);
    if (s->cache_hits || s->cache_misses)
        printf("cache          %llu answers (%.1f MB), %llu hits, %llu misses, "
               "%llu refreshes deferred\n",
               (unsigned long long)s->cache_entries, (double)s->cache_bytes / 1e6,
               (unsigned long long)s->cache_hits, (unsigned long long)s->cache_misses,
               (unsigned long long)s->cache_refreshes_deferred);
    if (!strcmp(s->service, "gateway"))
        printf("state          %llu users, %llu events held\n",
               (unsigned long long)s->state_users, (unsigned long long)s->state_events);
    printf("reloads        %llu\n", (unsigned long long)s->reloads);
    if (s->heap_in_use_bytes)
        printf("heap           %.1f MB in use, %.1f MB free (kept for reuse)\n",
               (double)s->heap_in_use_bytes / 1e6, (double)s->heap_free_bytes / 1e6);
    code = RP_EXIT_OK;
out:
    rp_arena_destroy(arena);
    rp_client_destroy(client);
    return code;
}

int cmd_reload(int argc, char **argv)
{
    const char *targets = NULL, *bundle = "", *token_file = NULL;
    double timeout = 120;
    rp_ops_flags ops = {0};
    const rp_opt opts[] = {
        {"targets", RP_OPT_STR, &targets, NULL, 0, 0,
         "comma-separated service addresses; each one is reloaded", true},
        {"bundle", RP_OPT_STR, &bundle, "", 0, 0,
         "bundle directory (empty: the path each service was started with)", false},
        {"token-file", RP_OPT_STR, &token_file, NULL, 0, 0,
         "file holding the admin bearer token, when the services require one", false},
        {"timeout", RP_OPT_DURATION, &timeout, "120s", 0.001, 3600,
         "deadline of each Reload (opening and warming a bundle takes time)", false},
        RP_OPS_CLIENT_OPTS(ops),
    };
    int rc = cli_parse("reload", "reload --targets ADDR[,ADDR...] [--bundle DIR]",
                       "Asks each service to open, verify and swap in a bundle (Admin.Reload).\n"
                       "Exits 0 when every target reloaded, 5 when any refused or failed.",
                       opts, sizeof opts / sizeof opts[0], argc, argv, NULL, 0, NULL);
    if (rc) return cli_parse_exit(rc);

    rp_error err = {0};
    char token[1024], auth[1100];
    rp_md md = {"authorization", auth};
    rp_call_opts copts = {.timeout_ms = (int64_t)(timeout * 1000)};
    if (token_file) {
        if (read_token(token_file, token, sizeof token, &err)) return cli_fail("reload", &err);
        snprintf(auth, sizeof auth, "Bearer %s", token);
        copts.md = &md;
        copts.nmd = 1;
    }

    rp_client *client = NULL;
    rp_arena *arena = NULL;
    char *list = strdup(targets);
    int failed = 0;
    if (!list || rp_ops_apply(&ops, &err) || rp_client_create(NULL, &client, &err) ||
        rp_arena_create(0, &arena)) {
        free(list);
        rp_client_destroy(client);
        return cli_fail("reload", &err);
    }
    char *save = NULL;
    for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        Recpipe__V1__ReloadRequest req = RECPIPE__V1__RELOAD_REQUEST__INIT;
        req.bundle_path = (char *)bundle;
        ProtobufCMessage *resp = NULL;
        rp_status st;
        rp_arena_reset(arena);
        rc = rp_client_unary(client, t, "/recpipe.v1.Admin/Reload", &req.base,
                             &recpipe__v1__reload_response__descriptor, arena, &resp, &copts,
                             &st);
        if (rc) {
            fprintf(stderr, "recpipe: reload: %s: %s: %s\n", t, rp_grpc_status_name(st.code),
                    st.msg);
            failed++;
            continue;
        }
        const Recpipe__V1__ReloadResponse *r = (const Recpipe__V1__ReloadResponse *)resp;
        printf("%s: %s -> %s (%.2f s)\n", t, r->previous_version[0] ? r->previous_version : "-",
               r->bundle_version, r->load_seconds);
    }
    free(list);
    rp_arena_destroy(arena);
    rp_client_destroy(client);
    return failed ? RP_EXIT_UNAVAILABLE : RP_EXIT_OK;
}
