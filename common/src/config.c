#include "rp/config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int rp_parse_duration(const char *s, double *seconds)
{
    if (!s || !*s) return RP_EINVAL;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || !isfinite(v) || v < 0) return RP_EINVAL;
    double mul = 1;
    if (*end == '\0' || strcmp(end, "s") == 0) mul = 1;
    else if (strcmp(end, "ms") == 0) mul = 1e-3;
    else if (strcmp(end, "us") == 0) mul = 1e-6;
    else if (strcmp(end, "m") == 0) mul = 60;
    else if (strcmp(end, "h") == 0) mul = 3600;
    else return RP_EINVAL;
    *seconds = v * mul;
    return RP_OK;
}

static void env_name(const char *name, char *buf, size_t cap)
{
    size_t n = snprintf(buf, cap, "RECPIPE_");
    for (const char *p = name; *p && n + 1 < cap; p++)
        buf[n++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    buf[n] = '\0';
}

static bool has_bounds(const rp_opt *o)
{
    return !(o->min == 0 && o->max == 0);
}

/* Stores text into o->dest; `src` names where it came from for the message. */
static int set_value(const rp_opt *o, const char *text, const char *src, rp_error *err)
{
    char *end;
    switch (o->type) {
    case RP_OPT_STR:
        *(const char **)o->dest = text;
        return RP_OK;
    case RP_OPT_BOOL:
        if (!strcasecmp(text, "1") || !strcasecmp(text, "true") || !strcasecmp(text, "yes") ||
            !strcasecmp(text, "on")) {
            *(bool *)o->dest = true;
        } else if (!strcasecmp(text, "0") || !strcasecmp(text, "false") ||
                   !strcasecmp(text, "no") || !strcasecmp(text, "off")) {
            *(bool *)o->dest = false;
        } else {
            return rp_errorf(err, RP_EINVAL, "%s: '%s' is not a boolean (use true or false)",
                             src, text);
        }
        return RP_OK;
    case RP_OPT_INT: {
        errno = 0;
        long long v = strtoll(text, &end, 10);
        if (end == text || *end || errno)
            return rp_errorf(err, RP_EINVAL, "%s: '%s' is not an integer", src, text);
        if (has_bounds(o) && ((double)v < o->min || (double)v > o->max))
            return rp_errorf(err, RP_EINVAL, "%s: %lld is out of range %.0f..%.0f", src, v,
                             o->min, o->max);
        *(int64_t *)o->dest = v;
        return RP_OK;
    }
    case RP_OPT_DOUBLE: {
        errno = 0;
        double v = strtod(text, &end);
        if (end == text || *end || errno || !isfinite(v))
            return rp_errorf(err, RP_EINVAL, "%s: '%s' is not a finite number", src, text);
        if (has_bounds(o) && (v < o->min || v > o->max))
            return rp_errorf(err, RP_EINVAL, "%s: %g is out of range %g..%g", src, v, o->min,
                             o->max);
        *(double *)o->dest = v;
        return RP_OK;
    }
    case RP_OPT_DURATION: {
        double v;
        if (rp_parse_duration(text, &v) != RP_OK)
            return rp_errorf(err, RP_EINVAL,
                             "%s: '%s' is not a duration (examples: 250ms, 30s, 5m)", src, text);
        if (has_bounds(o) && (v < o->min || v > o->max))
            return rp_errorf(err, RP_EINVAL, "%s: %gs is out of range %gs..%gs", src, v,
                             o->min, o->max);
        *(double *)o->dest = v;
        return RP_OK;
    }
    }
    return rp_errorf(err, RP_EINTERNAL, "%s: unknown option type", src);
}

static const rp_opt *find_opt(const rp_opt *opts, size_t n, const char *name, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(opts[i].name) == len && strncmp(opts[i].name, name, len) == 0) return &opts[i];
    return NULL;
}

int rp_config_parse(const rp_opt *opts, size_t nopts, int argc, char **argv,
                    char **positional, size_t max_positional, size_t *npositional,
                    rp_error *err)
{
    unsigned char seen[256] = {0};
    if (nopts > sizeof seen) return rp_errorf(err, RP_EINTERNAL, "too many options in table");
    size_t npos = 0;
    char src[160];

    /* Defaults first, then the environment, then flags: each overrides the last. */
    for (size_t i = 0; i < nopts; i++) {
        if (opts[i].def) {
            snprintf(src, sizeof src, "default of --%s", opts[i].name);
            int rc = set_value(&opts[i], opts[i].def, src, err);
            if (rc) return rc;
        }
    }
    for (size_t i = 0; i < nopts; i++) {
        char env[128];
        env_name(opts[i].name, env, sizeof env);
        const char *v = getenv(env);
        if (v) {
            int rc = set_value(&opts[i], v, env, err);
            if (rc) return rc;
            seen[i] = 1;
        }
    }

    bool only_positional = false;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (only_positional || a[0] != '-' || a[1] == '\0') {
            if (npos >= max_positional)
                return rp_errorf(err, RP_EINVAL, "unexpected argument '%s'", a);
            positional[npos++] = argv[i];
            continue;
        }
        if (!strcmp(a, "--")) {
            only_positional = true;
            continue;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return RP_CONFIG_HELP;
        if (a[1] != '-')
            return rp_errorf(err, RP_EINVAL, "unknown option '%s' (options are --name)", a);
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const rp_opt *o = find_opt(opts, nopts, name, len);
        if (!o) return rp_errorf(err, RP_EINVAL, "unknown option '--%.*s'", (int)len, name);
        const char *val = eq ? eq + 1 : NULL;
        if (!val && o->type == RP_OPT_BOOL) {
            /* A bare boolean flag means true; --name=false sets it off. */
            *(bool *)o->dest = true;
            seen[o - opts] = 1;
            continue;
        }
        if (!val) {
            if (i + 1 >= argc) return rp_errorf(err, RP_EINVAL, "--%s: needs a value", o->name);
            val = argv[++i];
        }
        snprintf(src, sizeof src, "--%s", o->name);
        int rc = set_value(o, val, src, err);
        if (rc) return rc;
        seen[o - opts] = 1;
    }

    for (size_t i = 0; i < nopts; i++) {
        if (opts[i].required && !seen[i] && !opts[i].def) {
            char env[128];
            env_name(opts[i].name, env, sizeof env);
            return rp_errorf(err, RP_EINVAL, "--%s is required (or set %s)", opts[i].name, env);
        }
    }
    if (npositional) *npositional = npos;
    return RP_OK;
}

void rp_config_help(FILE *f, const rp_opt *opts, size_t nopts)
{
    static const char *const metavar[] = {"STR", "INT", "NUM", "BOOL", "DURATION"};
    for (size_t i = 0; i < nopts; i++) {
        const rp_opt *o = &opts[i];
        char flag[96], env[128], extra[160] = "";
        snprintf(flag, sizeof flag, "--%s %s", o->name, o->type == RP_OPT_BOOL ? "" : metavar[o->type]);
        env_name(o->name, env, sizeof env);
        size_t n = 0;
        if (o->required) n += snprintf(extra + n, sizeof extra - n, " (required)");
        if (o->def && n < sizeof extra)
            n += snprintf(extra + n, sizeof extra - n, " [default: %s]", o->def);
        if (has_bounds(o) && n < sizeof extra)
            snprintf(extra + n, sizeof extra - n, " [range: %g..%g]", o->min, o->max);
        fprintf(f, "  %-28s %s%s\n  %-28s env %s\n", flag, o->help ? o->help : "", extra, "", env);
    }
}
