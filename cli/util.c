#include "cli.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int cli_parse(const char *cmd, const char *usage, const char *description, const rp_opt *opts,
              size_t nopts, int argc, char **argv, char **positional, size_t max_positional,
              size_t *npositional)
{
    rp_error err = {0};
    int rc = rp_config_parse(opts, nopts, argc - 1, argv + 1, positional, max_positional,
                             npositional, &err);
    if (rc == RP_CONFIG_HELP) {
        printf("usage: recpipe %s\n\n%s\n\noptions (flags override RECPIPE_* variables, which "
               "override defaults):\n",
               usage, description);
        rp_config_help(stdout, opts, nopts);
        return rc;
    }
    if (rc != RP_OK) {
        fprintf(stderr, "recpipe %s: %s\nTry 'recpipe %s --help'.\n", cmd, rp_error_text(&err),
                cmd);
        return rc;
    }
    return RP_OK;
}

int cli_parse_exit(int rc)
{
    return rc == RP_CONFIG_HELP ? RP_EXIT_OK : RP_EXIT_USAGE;
}

int cli_fail(const char *what, const rp_error *err)
{
    fprintf(stderr, "recpipe: %s: %s\n", what, rp_error_text(err));
    switch (err ? err->code : RP_EINTERNAL) {
    case RP_EPARSE: return RP_EXIT_DATA;
    case RP_ECORRUPT:
    case RP_EVERSION: return RP_EXIT_VERIFY;
    case RP_EUNAVAIL:
    case RP_ETIMEDOUT: return RP_EXIT_UNAVAILABLE;
    default: return RP_EXIT_FAILURE;
    }
}

int cli_progress_enabled(void)
{
    return isatty(2);
}

int cli_write_port_file(const char *path, int port, rp_error *err)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return rp_errorf(err, RP_EIO, "--port-file %s: %s", tmp, strerror(errno));
    int ok = fprintf(f, "%d\n", port) > 0;
    ok &= fclose(f) == 0;
    if (!ok || rename(tmp, path) != 0) {
        remove(tmp);
        return rp_errorf(err, RP_EIO, "--port-file %s: %s", path, strerror(errno));
    }
    return RP_OK;
}
