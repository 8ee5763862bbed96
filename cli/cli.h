/*
 * cli/cli.h — the recpipe command line: subcommand table, exit codes, shared manners.
 *
 * The CLI has no logic of its own: each cmd_*.c parses its flags (an rp_opt table)
 * and calls module APIs. Add a subcommand by writing cli/cmd_NAME.c, listing it in
 * cli/CMakeLists.txt and adding one row to RP_COMMANDS below.
 */
#ifndef RP_CLI_H
#define RP_CLI_H

#include "rp/config.h"
#include "rp/err.h"

/* Exit codes, listed in `recpipe --help`. */
enum {
    RP_EXIT_OK = 0,
    RP_EXIT_FAILURE = 1,     /* a runtime error: recpipe: <what failed>: <why> */
    RP_EXIT_USAGE = 2,       /* bad flags or arguments */
    RP_EXIT_DATA = 3,        /* malformed input data (file, line and reason printed) */
    RP_EXIT_VERIFY = 4,      /* a bundle or dataset failed verification */
    RP_EXIT_UNAVAILABLE = 5, /* a service could not be reached or answered an error */
};

/* XX(name, "summary") — name is the word typed after `recpipe` (with '_' for ' ':
 * `train_embeddings` is `recpipe train embeddings`). Each row has
 * int cmd_NAME(int argc, char **argv) where argv[0] is the subcommand itself. */
#define RP_COMMANDS(XX)                                                                    \
    XX(build, "train embeddings and build a bundle in one command (dataset -> bundle)")   \
    XX(demo, "import the bundled MovieLens data, build, serve, show live recommendations") \
    XX(eval, "offline evaluation on a temporal hold-out (Recall/NDCG@K, coverage, ...)") \
    XX(gateway, "run the Recommender gateway (127.0.0.1:50050)")                          \
    XX(import, "import interactions + item catalogue into a dataset (DATA_DIR)")              \
    XX(index_build, "build a bundle (item store + FAISS index per shard) from vectors")  \
    XX(index_info, "print a bundle's manifest summary")                                    \
    XX(index_verify, "recompute a bundle's checksums (exit 4 naming a corrupt file)")     \
    XX(loadtest, "open-loop load against a service: latency percentiles, JSON, SVG")      \
    XX(ranking, "run the Ranking service (127.0.0.1:50052)")                                \
    XX(reload, "ask running services to swap in a bundle (Admin.Reload)")                  \
    XX(serve, "run retrieval, ranking and gateway together on loopback (one Ctrl-C)")    \
    XX(status, "print a running service's Admin.Status")                                \
    XX(retrieval, "run the Retrieval service, one shard (127.0.0.1:50051)")                 \
    XX(synth, "synthetic dataset + item vectors of any size (clusters, Zipf popularity)")  \
    XX(train_embeddings, "implicit ALS on a dataset: item/user factors as .fvecs")      \
    XX(train_ranker, "train the ranking model (DIN attention + DCN-V2) behind a bundle")  \
    XX(version, "print the version")

#define RP__CMD_DECL(name, summary) int cmd_##name(int argc, char **argv);
RP_COMMANDS(RP__CMD_DECL)
#undef RP__CMD_DECL

/*
 * Parses a subcommand's flags with rp_config_parse. On --help prints usage (the
 * `usage` line, the description and the generated option list) to stdout and returns
 * RP_CONFIG_HELP; on misuse prints one line and a hint to stderr and returns RP_EINVAL.
 * The caller returns cli_parse_exit(rc) for both.
 */
int cli_parse(const char *cmd, const char *usage, const char *description, const rp_opt *opts,
              size_t nopts, int argc, char **argv, char **positional, size_t max_positional,
              size_t *npositional);
/* Exit code for a non-OK cli_parse result: 0 for help, 2 for misuse. */
int cli_parse_exit(int rc);
/* Prints "recpipe: <what>: <err text>" to stderr; returns RP_EXIT_FAILURE or the code
 * that fits err (RP_EXIT_DATA for RP_EPARSE, RP_EXIT_VERIFY for RP_ECORRUPT/EVERSION). */
int cli_fail(const char *what, const rp_error *err);
/* Writes "PORT\n" to path atomically (temp file + rename: a reader never sees a partial
 * file), for scripts and tests that start a service on port 0. RP_EIO naming the path. */
int cli_write_port_file(const char *path, int port, rp_error *err);
/* True when stderr is a terminal (show progress). */
int cli_progress_enabled(void);

#endif
