/* recpipe import: interactions + item catalogue (+ tags) → DATA_DIR (idx/import.h). */
#include "cli.h"
#include "idx/import.h"

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* Ctrl-C or SIGTERM asks the import to stop and remove its temporary directory. */
static void catch_signals(void)
{
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

static void warn(void *ctx, const char *msg)
{
    (void)ctx;
    if (cli_progress_enabled()) fputs("\r\033[K", stderr); /* over the progress line */
    fprintf(stderr, "recpipe: import: warning: %s\n", msg);
}

/* "auto" → 0, "comma" or "," → ',', "tab" or "\t" → '\t', ... ; -1 when unknown. */
static int parse_sep(const char *s)
{
    if (!s || !strcasecmp(s, "auto")) return 0;
    if (!strcasecmp(s, "comma") || !strcmp(s, ",")) return ',';
    if (!strcasecmp(s, "tab") || !strcmp(s, "\\t") || !strcmp(s, "\t")) return '\t';
    if (!strcasecmp(s, "pipe") || !strcmp(s, "|")) return '|';
    if (!strcasecmp(s, "semicolon") || !strcmp(s, ";")) return ';';
    return -1;
}

static int parse_header(const char *s)
{
    if (!s || !strcasecmp(s, "auto")) return -1;
    if (!strcasecmp(s, "yes") || !strcasecmp(s, "true")) return 1;
    if (!strcasecmp(s, "no") || !strcasecmp(s, "false")) return 0;
    return -2;
}

static void show_progress(void *ctx, const char *phase, uint64_t done, uint64_t total)
{
    (void)ctx;
    if (total)
        fprintf(stderr, "\rrecpipe: import: %-8s %3d%%", phase, (int)(100 * done / total));
    else
        fprintf(stderr, "\rrecpipe: import: %-12s", phase);
    fflush(stderr);
}

static int usage_error(const char *msg)
{
    fprintf(stderr, "recpipe import: %s\nTry 'recpipe import --help'.\n", msg);
    return RP_EXIT_USAGE;
}

int cmd_import(int argc, char **argv)
{
    const char *ratings = NULL, *items = NULL, *tags = NULL, *out = NULL;
    const char *rsep = NULL, *rheader = NULL, *iformat = NULL, *isep = NULL, *iheader = NULL;
    const char *ienc = NULL, *tenc = NULL, *renc = NULL, *rcols = NULL;
    bool skip_bad = false, force = false;
    int64_t max_reported = 10;
    const rp_opt opts[] = {
        {"ratings", RP_OPT_STR, &ratings, NULL, 0, 0,
         "interactions file: user,item[,rating][,timestamp]", true},
        {"items", RP_OPT_STR, &items, NULL, 0, 0,
         "item catalogue: id,title,categories ('|'-separated), or see --items-format", true},
        {"tags", RP_OPT_STR, &tags, NULL, 0, 0, "optional tags file: user,item,tag[,timestamp]",
         false},
        {"out", RP_OPT_STR, &out, NULL, 0, 0, "DATA_DIR to create (refused if it exists)", true},
        {"force", RP_OPT_BOOL, &force, "false", 0, 0, "replace an existing DATA_DIR", false},
        {"skip-bad", RP_OPT_BOOL, &skip_bad, "false", 0, 0,
         "skip and count malformed lines instead of failing (exit 3)", false},
        {"max-reported", RP_OPT_INT, &max_reported, "10", 1, 1000000,
         "skipped lines and missing items shown", false},
        {"ratings-sep", RP_OPT_STR, &rsep, "auto", 0, 0,
         "interactions separator: auto (tab if the first line has one, else comma), comma, "
         "tab, pipe, semicolon", false},
        {"ratings-columns", RP_OPT_STR, &rcols, NULL, 0, 0,
         "role of each interactions column in order, '-' to ignore one (e.g. "
         "item,user,-,timestamp); default: by header names, else user,item,rating,timestamp",
         false},
        {"ratings-header", RP_OPT_STR, &rheader, "auto", 0, 0,
         "first line of the interactions is a header: auto (when its first field is not a "
         "number), yes, no", false},
        {"items-format", RP_OPT_STR, &iformat, "csv", 0, 0,
         "csv (id,title,categories; RFC 4180 quoting) or ml100k (MovieLens 100k u.item: "
         "id|title|date|video date|URL|19 genre flags)", false},
        {"items-sep", RP_OPT_STR, &isep, "auto", 0, 0,
         "catalogue separator: auto (comma for csv, pipe for ml100k), comma, tab, pipe, "
         "semicolon", false},
        {"items-header", RP_OPT_STR, &iheader, "auto", 0, 0,
         "first line of the catalogue is a header: auto, yes, no", false},
        {"items-encoding", RP_OPT_STR, &ienc, "utf-8", 0, 0,
         "catalogue text encoding (iconv name: utf-8, latin1, cp1252, ...); ml100k is latin1",
         false},
        {"ratings-encoding", RP_OPT_STR, &renc, "utf-8", 0, 0, "interactions text encoding",
         false},
        {"tags-encoding", RP_OPT_STR, &tenc, "utf-8", 0, 0, "tags text encoding", false},
    };
    int rc = cli_parse("import", "import --ratings FILE --items FILE [--tags FILE] --out DATA_DIR "
                       "[options]",
                       "Imports interactions and an item catalogue into DATA_DIR (LMDB): dense "
                       "ids, per-user events sorted\nby time (ties in file order), item titles, "
                       "categories, tags. Repeated (user, item) pairs are merged:\nthe later "
                       "occurrence wins (latest timestamp, last rating). Interactions naming items "
                       "missing\nfrom the catalogue are kept and reported. A malformed line stops "
                       "the import with FILE:LINE: reason\nand exit code 3, writing nothing, "
                       "unless --skip-bad. DATA_DIR appears only when complete.",
                       opts, sizeof opts / sizeof opts[0], argc, argv, NULL, 0, NULL);
    if (rc != RP_OK) return cli_parse_exit(rc);

    idx_import_opts o = {
        .ratings = ratings,
        .items = items,
        .tags = tags,
        .out = out,
        .skip_bad = skip_bad,
        .force = force,
        .max_reported = (unsigned)max_reported,
        .tags_encoding = tenc,
        .ratings_encoding = renc,
        .ratings_columns = rcols,
        .report = warn,
        .cancel = &interrupted,
        .progress = cli_progress_enabled() ? show_progress : NULL,
    };
    int sep = parse_sep(rsep);
    if (sep < 0) return usage_error("--ratings-sep: expected auto, comma, tab, pipe or semicolon");
    o.ratings_sep = (char)sep;
    if ((o.ratings_header = parse_header(rheader)) == -2)
        return usage_error("--ratings-header: expected auto, yes or no");
    if ((o.items_header = parse_header(iheader)) == -2)
        return usage_error("--items-header: expected auto, yes or no");
    if ((sep = parse_sep(isep)) < 0)
        return usage_error("--items-sep: expected auto, comma, tab, pipe or semicolon");
    o.items_sep = (char)sep;
    if (!strcasecmp(iformat, "csv")) {
        o.items_format = IDX_ITEMS_CSV;
        o.items_encoding = ienc;
    } else if (!strcasecmp(iformat, "ml100k")) {
        o.items_format = IDX_ITEMS_ML100K;
        /* u.item is Latin-1; an explicit --items-encoding still wins */
        o.items_encoding = strcasecmp(ienc, "utf-8") ? ienc : "latin1";
        for (int i = 1; i < argc; i++)
            if (!strncmp(argv[i], "--items-encoding", 16)) o.items_encoding = ienc;
    } else {
        return usage_error("--items-format: expected csv or ml100k");
    }

    idx_import_stats st;
    rp_error err = {0};
    catch_signals();
    rc = idx_import(&o, &st, &err);
    if (o.progress) fprintf(stderr, "\r%40s\r", "");
    if (rc == RP_EINVAL) return usage_error(rp_error_text(&err)); /* a flag's value */
    if (rc != RP_OK) {
        if (skip_bad && st.skipped)
            fprintf(stderr, "recpipe: import: %" PRIu64 " malformed lines were skipped before "
                    "this error\n", st.skipped);
        return cli_fail("import", &err);
    }
    printf("imported %s\n", out);
    printf("  %-24s %u\n", "users", st.users);
    printf("  %-24s %u (%u in the catalogue, %u with interactions)\n", "items", st.items,
           st.catalogue_items, st.rated_items);
    printf("  %-24s %" PRIu64 "\n", "events", st.events);
    printf("  %-24s %" PRIu64 "\n", "duplicates merged", st.duplicates);
    printf("  %-24s %" PRIu64 "\n", "lines skipped", st.skipped);
    printf("  %-24s %u (%" PRIu64 " events, kept)\n", "items not in catalogue",
           st.not_in_catalogue_items, st.not_in_catalogue_events);
    printf("  %-24s %u\n", "categories", st.categories);
    if (tags)
        printf("  %-24s %u distinct, from %" PRIu64 " lines (%" PRIu64
               " naming unknown items)\n", "tags", st.tags, st.tag_lines, st.tags_unknown_item);
    return RP_EXIT_OK;
}
