/* Tests index/src/csv.c: RFC 4180 quoting, line ends, byte-order marks, separators,
 * encodings, limits, error positions and recovery after a bad record. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "data_util.h"
#include "idx/csv.h"

static int setup(void **state)
{
    (void)state;
    td_make();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    td_cleanup();
    return 0;
}

static idx_csv *open_text(const char *text, size_t n, idx_csv_opts o)
{
    const char *p = td_write("in.csv", text, n);
    idx_csv *r = NULL;
    rp_error err = {0};
    if (idx_csv_open(p, &o, &r, &err) != RP_OK) fail_msg("open: %s", err.msg);
    return r;
}

static void expect(idx_csv *r, uint64_t line, size_t n, ...)
{
    idx_csv_rec rec;
    rp_error err = {0};
    int rc = idx_csv_next(r, &rec, &err);
    if (rc != 1) fail_msg("expected a record at line %llu, got %d: %s", (unsigned long long)line,
                          rc, err.msg);
    assert_int_equal(rec.line, line);
    assert_int_equal(rec.n, n);
    va_list ap;
    va_start(ap, n);
    for (size_t i = 0; i < n; i++) assert_string_equal(rec.field[i], va_arg(ap, const char *));
    va_end(ap);
}

static void expect_eof(idx_csv *r)
{
    idx_csv_rec rec;
    rp_error err = {0};
    assert_int_equal(idx_csv_next(r, &rec, &err), 0);
}

/* Returns the error message of the next record, which must be malformed. */
static const char *expect_error(idx_csv *r)
{
    static rp_error err;
    idx_csv_rec rec;
    rp_error_clear(&err);
    int rc = idx_csv_next(r, &rec, &err);
    if (rc != RP_EPARSE) fail_msg("expected RP_EPARSE, got %d", rc);
    return err.msg;
}

static void test_rfc4180_quoting(void **state)
{
    (void)state;
    const char *t = "id,title,genres\r\n"
                    "1,\"Hello, \"\"World\"\" (2000)\",Comedy\r\n"
                    "2,\"Two\r\nLines\",\r\n"
                    "3,\"\",\"a|b\"\r\n"
                    "4,plain \"inner\" quote,x\n";
    idx_csv *r = open_text(t, strlen(t), (idx_csv_opts){.sep = ',', .quotes = true});
    expect(r, 1, 3, "id", "title", "genres");
    expect(r, 2, 3, "1", "Hello, \"World\" (2000)", "Comedy");
    expect(r, 3, 3, "2", "Two\r\nLines", "");
    expect(r, 5, 3, "3", "", "a|b");
    expect(r, 6, 3, "4", "plain \"inner\" quote", "x"); /* a quote inside a plain field */
    assert_int_equal(idx_csv_offset(r), strlen(t));
    expect_eof(r);
    assert_int_equal(idx_csv_lines(r), 6);
    idx_csv_close(r);
}

static void test_line_ends_blank_lines_no_final_newline(void **state)
{
    (void)state;
    const char *t = "a,b\n\n\r\nc,d\re,f\r\n\ng,h";
    idx_csv *r = open_text(t, strlen(t), (idx_csv_opts){.sep = ',', .quotes = true});
    expect(r, 1, 2, "a", "b");
    expect(r, 4, 2, "c", "d");
    expect(r, 5, 2, "e", "f"); /* a lone CR ends a line (old Mac files) */
    expect(r, 7, 2, "g", "h");
    expect_eof(r);
    idx_csv_close(r);
}

static void test_bom_and_separator_detection(void **state)
{
    (void)state;
    const char *t = "\xef\xbb\xbfuser\titem\n1\t2\n";
    idx_csv *r = open_text(t, strlen(t), (idx_csv_opts){.sep = 0, .quotes = true});
    expect(r, 1, 2, "user", "item"); /* no BOM bytes in the first field */
    assert_int_equal(idx_csv_sep(r), '\t');
    expect(r, 2, 2, "1", "2");
    idx_csv_close(r);

    t = "1,2,3\n";
    r = open_text(t, strlen(t), (idx_csv_opts){.sep = 0, .quotes = true});
    expect(r, 1, 3, "1", "2", "3");
    assert_int_equal(idx_csv_sep(r), ',');
    idx_csv_close(r);

    /* UTF-16 is refused as a whole, with a clear reason */
    const char u16[] = "\xff\xfe" "1\0,\0" "2\0";
    r = open_text(u16, sizeof u16 - 1, (idx_csv_opts){.sep = ',', .quotes = true});
    assert_non_null(strstr(expect_error(r), "UTF-16"));
    assert_true(idx_csv_fatal(r));
    idx_csv_close(r);
}

static void test_latin1_converted_utf8_validated(void **state)
{
    (void)state;
    const char *t = "4|Caf\xe9 au lait|x\n";
    idx_csv *r = open_text(t, strlen(t),
                           (idx_csv_opts){.sep = '|', .quotes = false, .encoding = "latin1"});
    expect(r, 1, 3, "4", "Caf\xc3\xa9 au lait", "x");
    idx_csv_close(r);

    r = open_text(t, strlen(t), (idx_csv_opts){.sep = '|', .quotes = false});
    const char *msg = expect_error(r);
    assert_non_null(strstr(msg, "in.csv:1:6: invalid UTF-8 (byte 0xE9)"));
    idx_csv_close(r);

    assert_int_equal(idx_utf8_invalid_at("abc", 3), -1);
    assert_int_equal(idx_utf8_invalid_at("Caf\xc3\xa9", 5), -1);
    assert_int_equal(idx_utf8_invalid_at("\xf0\x9f\x8e\xac", 4), -1);  /* U+1F3AC */
    assert_int_equal(idx_utf8_invalid_at("a\xc0\xaf", 3), 1);          /* overlong */
    assert_int_equal(idx_utf8_invalid_at("ab\xed\xa0\x80", 5), 2);     /* surrogate */
    assert_int_equal(idx_utf8_invalid_at("\xf4\x90\x80\x80", 4), 0);   /* > U+10FFFF */
    assert_int_equal(idx_utf8_invalid_at("x\xc3", 2), 1);              /* truncated */

    idx_csv *bad = NULL;
    rp_error err = {0};
    idx_csv_opts o = {.sep = ',', .encoding = "no-such-encoding"};
    assert_int_equal(idx_csv_open(td_path("in.csv"), &o, &bad, &err), RP_EINVAL);
    assert_non_null(strstr(err.msg, "no-such-encoding"));
    assert_null(bad);
}

static void test_errors_name_place_and_reading_resumes(void **state)
{
    (void)state;
    static const char t[] = "1,ok\n2,\"bad\" x,y\n3,ok\n4,nul\0byte\n5,ok\n6,\"never closed\n7,eaten\n";
    size_t n = sizeof t - 1;
    idx_csv *r = open_text(t, n, (idx_csv_opts){.sep = ',', .quotes = true});
    expect(r, 1, 2, "1", "ok");
    assert_non_null(strstr(expect_error(r), "in.csv:2:8: unexpected ' ' after a closing quote"));
    expect(r, 3, 2, "3", "ok");
    assert_non_null(strstr(expect_error(r), "in.csv:4:6: NUL byte"));
    expect(r, 5, 2, "5", "ok");
    assert_non_null(strstr(expect_error(r), "in.csv:6:3: quoted field never closed"));
    assert_false(idx_csv_fatal(r));
    expect_eof(r);
    idx_csv_close(r);
}

static void test_record_limit(void **state)
{
    (void)state;
    size_t big = 100000;
    char *t = malloc(big + 32);
    strcpy(t, "1,short\n2,");
    size_t n = strlen(t);
    memset(t + n, 'x', big);
    n += big;
    memcpy(t + n, "\n3,after\n", 9);
    n += 9;
    idx_csv *r = open_text(t, n, (idx_csv_opts){.sep = ',', .quotes = true, .max_record = 1000});
    expect(r, 1, 2, "1", "short");
    assert_non_null(strstr(expect_error(r), "in.csv:2: line longer than 1000 bytes"));
    expect(r, 3, 2, "3", "after");
    idx_csv_close(r);
    /* under the default limit the same long line is read whole */
    r = open_text(t, n, (idx_csv_opts){.sep = ',', .quotes = true});
    expect(r, 1, 2, "1", "short");
    idx_csv_rec rec;
    rp_error err = {0};
    assert_int_equal(idx_csv_next(r, &rec, &err), 1);
    assert_int_equal(strlen(rec.field[1]), big);
    idx_csv_close(r);
    free(t);
}

static void test_open_errors(void **state)
{
    (void)state;
    idx_csv *r = NULL;
    rp_error err = {0};
    assert_int_equal(idx_csv_open(td_path("missing.csv"), NULL, &r, &err), RP_ENOENT);
    assert_non_null(strstr(err.msg, "missing.csv: No such file"));
    assert_int_equal(idx_csv_open(td_root, NULL, &r, &err), RP_EIO);
    assert_non_null(strstr(err.msg, "is a directory"));
    idx_csv_close(NULL);
    /* an empty file has no records */
    r = open_text("", 0, (idx_csv_opts){.sep = ',', .quotes = true});
    expect_eof(r);
    idx_csv_close(r);
}

/* Random files over the bytes that matter (quotes, separators, line ends, NUL, high
 * bytes): the reader always terminates, every record it returns is well formed, and
 * line numbers never go backwards. Run under -DRECPIPE_SANITIZE=address,undefined. */
static void test_random_input_never_crashes(void **state)
{
    (void)state;
    static const char alphabet[] = "0123456789,,,\"\"\"\n\n\r\t|a \xc3\xa9\xe9\xff";
    uint64_t x = 12345;
    char buf[600];
    for (int round = 0; round < 400; round++) {
        size_t n = 0, len = (size_t)(round % 7 == 0 ? 580 : round + 1) % 590;
        for (; n < len; n++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            uint32_t r = (uint32_t)(x >> 33);
            buf[n] = r % 97 == 0 ? '\0' : alphabet[r % (sizeof alphabet - 1)];
        }
        idx_csv_opts o = {.sep = round % 3 == 0 ? 0 : ',', .quotes = round % 2 == 0,
                          .encoding = round % 5 == 0 ? "latin1" : NULL,
                          .max_record = round % 4 == 0 ? 64 : 0};
        idx_csv *r = open_text(buf, n, o);
        idx_csv_rec rec;
        rp_error err = {0};
        uint64_t last = 0;
        int rc, guard = 0;
        while ((rc = idx_csv_next(r, &rec, &err)) != 0 && guard++ < 2000) {
            if (rc < 0) {
                assert_int_equal(rc, RP_EPARSE);
                assert_non_null(strstr(err.msg, "in.csv:"));
                if (idx_csv_fatal(r)) break;
                continue;
            }
            assert_true(rec.n >= 1);
            assert_true(rec.line >= last);
            last = rec.line;
            for (size_t i = 0; i < rec.n; i++) {
                size_t fl = strlen(rec.field[i]);
                assert_true(fl <= n * 2);
                if (!o.encoding) assert_int_equal(idx_utf8_invalid_at(rec.field[i], fl), -1);
            }
        }
        assert_true(guard < 2000);
        idx_csv_close(r);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc4180_quoting),
        cmocka_unit_test(test_line_ends_blank_lines_no_final_newline),
        cmocka_unit_test(test_bom_and_separator_detection),
        cmocka_unit_test(test_latin1_converted_utf8_validated),
        cmocka_unit_test(test_errors_name_place_and_reading_resumes),
        cmocka_unit_test(test_record_limit),
        cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_random_input_never_crashes),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
