/*
 * rp/config.h — configuration as a table.
 *
 * One row per option: name, type, destination, default, bounds, help. A value comes
 * from the command line (--name VALUE or --name=VALUE), else from the environment
 * (RECPIPE_NAME, upper case, '-' → '_'), else from the default. --help text is
 * generated from the same table, so it cannot drift.
 *
 * Strings are not copied: a string destination points into argv, environ or the
 * table's default, all of which live as long as the process.
 */
#ifndef RP_CONFIG_H
#define RP_CONFIG_H

#include "rp/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum rp_opt_type {
    RP_OPT_STR,      /* const char ** */
    RP_OPT_INT,      /* int64_t *, bounds checked */
    RP_OPT_DOUBLE,   /* double *, bounds checked, finite */
    RP_OPT_BOOL,     /* bool *; "--name" alone = true; "--name=false" sets it off */
    RP_OPT_DURATION, /* double * seconds; "250ms", "30s", "5m", "1h", bare number = s */
} rp_opt_type;

typedef struct rp_opt {
    const char *name; /* without dashes: "listen" */
    rp_opt_type type;
    void *dest;
    const char *def;  /* default, written as on the command line; NULL = unset */
    double min, max;  /* bounds for INT, DOUBLE, DURATION; min == max == 0: none */
    const char *help;
    bool required;
} rp_opt;

/* Returned (positive) by rp_config_parse when --help or -h was given. */
#define RP_CONFIG_HELP 1

/*
 * Parses argv[0..argc) (argv[0] is NOT skipped: pass the arguments after the
 * subcommand). Positional arguments are stored in positional[0..*npositional) up to
 * max_positional; more is an error. Returns RP_OK, RP_CONFIG_HELP, or RP_EINVAL with
 * err naming the flag or variable and the reason ("--k: 0 is below the minimum 1").
 */
int rp_config_parse(const rp_opt *opts, size_t nopts, int argc, char **argv,
                    char **positional, size_t max_positional, size_t *npositional,
                    rp_error *err);

/* Writes the option list (one line each: flag, env, default, bounds, help). */
void rp_config_help(FILE *f, const rp_opt *opts, size_t nopts);

/* Parses a duration ("250ms", "30s", "2m", "1h", "1.5") into seconds; RP_OK/RP_EINVAL. */
int rp_parse_duration(const char *s, double *seconds);

#endif
