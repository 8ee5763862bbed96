/* recpipe — one binary, many subcommands (see `recpipe --help`). */
#include "cli.h"

#include <stdio.h>
#include <string.h>

#ifndef RECPIPE_VERSION
#define RECPIPE_VERSION "0.0.0"
#endif

typedef struct command {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv);
} command;

#define RP__CMD_ROW(name, summary) {#name, summary, cmd_##name},
static const command commands[] = {RP_COMMANDS(RP__CMD_ROW)};
#undef RP__CMD_ROW
#define NCOMMANDS (sizeof commands / sizeof commands[0])

int cmd_version(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    printf("recpipe %s\n", RECPIPE_VERSION);
    return RP_EXIT_OK;
}

static void print_name(FILE *f, const char *name)
{
    for (const char *p = name; *p; p++) fputc(*p == '_' ? ' ' : *p, f);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: recpipe <command> [options]   (recpipe <command> --help for its options)\n\n"
               "commands:\n");
    for (size_t i = 0; i < NCOMMANDS; i++) {
        fputs("  ", f);
        print_name(f, commands[i].name);
        fprintf(f, "%*s%s\n", (int)(22 - strlen(commands[i].name)), "", commands[i].summary);
    }
    fprintf(f, "\nexit codes: 0 ok, 1 runtime error, 2 usage error, 3 malformed input data,\n"
               "            4 verification failed, 5 service unavailable\n");
}

/* Matches argv against a command name whose '_' separate words ("train_ranker" matches
 * "train ranker"); returns how many argv words it consumed, 0 if no match. */
static int match(const char *name, int argc, char **argv)
{
    int used = 0;
    const char *p = name;
    while (used < argc) {
        size_t len = strcspn(p, "_");
        if (strlen(argv[used]) != len || strncmp(argv[used], p, len) != 0) return 0;
        used++;
        if (p[len] == '\0') return used;
        p += len + 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help")) {
        usage(stdout);
        return argc < 2 ? RP_EXIT_USAGE : RP_EXIT_OK;
    }
    if (!strcmp(argv[1], "--version")) return cmd_version(argc - 1, argv + 1);
    /* The longest match wins, so "index build" is preferred over a plain "index". */
    const command *best = NULL;
    int best_used = 0;
    for (size_t i = 0; i < NCOMMANDS; i++) {
        int used = match(commands[i].name, argc - 1, argv + 1);
        if (used > best_used) {
            best = &commands[i];
            best_used = used;
        }
    }
    if (!best) {
        fprintf(stderr, "recpipe: unknown command '%s'\nTry 'recpipe --help'.\n", argv[1]);
        return RP_EXIT_USAGE;
    }
    /* argv[0] of the subcommand is its last word. */
    return best->run(argc - best_used, argv + best_used);
}
