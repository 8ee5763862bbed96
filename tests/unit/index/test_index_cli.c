/* Tests cli/cmd_index.c: `recpipe index build|info|verify` as a user runs them (real
 * child processes of the built binary, real files). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "idx/fsutil.h"

static char dir[PATH_MAX];
static char bin[PATH_MAX];
static char sift[PATH_MAX];
static char outbuf[65536];

/* Runs a shell command line, captures stdout+stderr into outbuf, returns the exit code. */
static int run(const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    char full[8300];
    snprintf(full, sizeof full, "cd '%s' && %s 2>&1", dir, cmd);
    FILE *p = popen(full, "r");
    assert_non_null(p);
    size_t n = fread(outbuf, 1, sizeof outbuf - 1, p);
    outbuf[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int exists(const char *name)
{
    char p[PATH_MAX + 64];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    struct stat st;
    return stat(p, &st) == 0;
}

static int setup(void **state)
{
    (void)state;
    const char *b = getenv("RECPIPE_BIN"), *src = getenv("RECPIPE_SOURCE_DIR");
    snprintf(bin, sizeof bin, "%s", b ? b : "recpipe");
    const char *shared = getenv("RECPIPE_SHARED_DATA"); /* siftsmall is not shipped */
    (void)src;
    snprintf(sift, sizeof sift, "%s/siftsmall", shared ? shared : "../shared/data");
    snprintf(dir, sizeof dir, "/tmp/rp-index-cli-XXXXXX");
    assert_non_null(mkdtemp(dir));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    idx_rmtree(dir);
    return 0;
}

static void test_build_info_verify(void **state)
{
    (void)state;
    int rc = run("%s index build --vectors %s/siftsmall_base.fvecs --out sb --metric l2 "
                 "--index IVF32,Flat --target-recall 0.95 --queries %s/siftsmall_query.fvecs",
                 bin, sift, sift);
    if (rc != 0) fail_msg("build exit %d: %s", rc, outbuf);
    assert_non_null(strstr(outbuf, "10000 items"));
    assert_non_null(strstr(outbuf, "tuned: nprobe="));
    assert_int_equal(run("%s index info sb", bin), 0);
    assert_non_null(strstr(outbuf, "IVF32,Flat, nprobe="));
    assert_non_null(strstr(outbuf, "metric l2"));
    assert_non_null(strstr(outbuf, "shard-0.faiss"));
    assert_int_equal(run("%s index info sb --json", bin), 0);
    assert_non_null(strstr(outbuf, "\"sha256\""));
    assert_int_equal(run("%s index verify sb", bin), 0);
    assert_non_null(strstr(outbuf, "ok"));

    /* One flipped byte: exit 4, the file named. */
    assert_int_equal(run("printf '\\001' | dd of=sb/shard-0.ids bs=1 seek=17 conv=notrunc "
                         "2>/dev/null; %s index verify sb", bin),
                     4);
    assert_non_null(strstr(outbuf, "shard-0.ids"));
    assert_non_null(strstr(outbuf, "checksum mismatch"));

    /* Default factory for 10k vectors is Flat; ids from a file. */
    assert_int_equal(run("seq 100 10099 > ids.txt && %s index build --vectors "
                         "%s/siftsmall_base.fvecs --ids ids.txt --out flat --metric l2 "
                         "--shards 2", bin, sift),
                     0);
    assert_non_null(strstr(outbuf, "index Flat"));
    assert_non_null(strstr(outbuf, "2 shards"));
    /* Replacing needs --replace. */
    assert_int_equal(run("%s index build --vectors %s/siftsmall_base.fvecs --out flat", bin, sift), 1);
    assert_non_null(strstr(outbuf, "already exists"));
    assert_int_equal(run("%s index build --vectors %s/siftsmall_base.fvecs --out flat --replace "
                         "--version v2", bin, sift), 0);
    assert_int_equal(run("%s index info flat", bin), 0);
    assert_non_null(strstr(outbuf, "version    v2"));
}

static void test_errors(void **state)
{
    (void)state;
    /* A factory string FAISS rejects: FAISS's message, exit 1, nothing left behind. */
    assert_int_equal(run("%s index build --vectors %s/siftsmall_base.fvecs --out bad "
                         "--index 'IVF64,Wrong'", bin, sift),
                     1);
    assert_non_null(strstr(outbuf, "could not parse"));
    assert_false(exists("bad"));
    assert_int_equal(run("ls -a | grep -c tmp || true"), 0);
    assert_int_equal(atoi(outbuf), 0);
    /* Too few vectors for the list count. */
    assert_int_equal(run("%s index build --vectors %s/siftsmall_query.fvecs --out bad "
                         "--index IVF256,Flat", bin, sift),
                     1);
    assert_non_null(strstr(outbuf, "at least 256"));
    /* Malformed input data: exit 3 naming the file. */
    assert_int_equal(run("head -c 1000 %s/siftsmall_base.fvecs > trunc.fvecs && %s index "
                         "build --vectors trunc.fvecs --out bad", sift, bin),
                     3);
    assert_non_null(strstr(outbuf, "trunc.fvecs"));
    assert_int_equal(run("printf '1\\n2\\nx3\\n' > ids.bad && %s index build --vectors "
                         "%s/siftsmall_query.fvecs --ids ids.bad --out bad", bin, sift),
                     3);
    assert_non_null(strstr(outbuf, "ids.bad:3"));
    /* Dimension mismatch between vectors and queries. */
    assert_int_equal(run("%s index build --vectors %s/siftsmall_query.fvecs --out bad "
                         "--target-recall 0.9 --queries trunc.fvecs", bin, sift),
                     3);
    /* Usage errors: exit 2. */
    assert_int_equal(run("%s index build --out bad", bin), 2);
    assert_non_null(strstr(outbuf, "--vectors"));
    assert_int_equal(run("%s index verify", bin), 2);
    assert_int_equal(run("%s index build --vectors x --out y --metric cosine", bin), 2);
    /* A future format version is refused with exit 4. */
    assert_int_equal(run("%s index build --vectors %s/siftsmall_query.fvecs --out fut && "
                         "sed -i 's/\"format\": 1/\"format\": 99/' fut/manifest.json && "
                         "%s index verify fut", bin, sift, bin),
                     4);
    assert_non_null(strstr(outbuf, "format 99 is newer"));
    assert_false(exists("bad"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_build_info_verify),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
