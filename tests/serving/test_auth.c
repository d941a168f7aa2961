/* test_auth.c: the API key table: hash lines, the keys file's errors with their line, Bearer checks,
 * reload keeping the table on a bad file and the unfinished-job counts by name, and the per-key limit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "auth.h"

static char path[256];

static void write_file(const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void line_for(const char *name, const char *key, char *out, size_t cap)
{
    char err[200];
    assert_int_equal(sdw_auth_hash_line(name, key, strlen(key), out, cap, err, sizeof err), 0);
}

static int setup(void **state)
{
    (void)state;
    const char *dir = getenv("SDW_TMPDIR");
    snprintf(path, sizeof path, "%s/test_auth_keys.%d", dir && *dir ? dir : "/tmp", (int)getpid());
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    sdw_auth_free();
    unlink(path);
    return 0;
}

static void test_hash_line(void **state)
{
    (void)state;
    char line[200], err[200];
    line_for("alice", "0123456789abcdef\n", line, sizeof line);
    /* sha256("0123456789abcdef") */
    assert_string_equal(line, "alice 9f9f5111f7b27a781f1f1ddde5ebc2dd2b796bfc7365c9c28b548e564176929f\n");
    assert_int_equal(sdw_auth_hash_line("a b", "0123456789abcdef", 16, line, sizeof line, err, sizeof err),
                     -1);
    assert_int_equal(sdw_auth_hash_line("a", "short", 5, line, sizeof line, err, sizeof err), -1);
    assert_int_equal(sdw_auth_hash_line("a", "0123456789 abcdef", 17, line, sizeof line, err, sizeof err),
                     -1);
}

static void test_check_and_reload(void **state)
{
    (void)state;
    char a[200], b[200], text[600], err[300];
    line_for("alice", "alice-key-0123456789", a, sizeof a);
    line_for("bob", "bob-key-0123456789ab", b, sizeof b);
    snprintf(text, sizeof text, "# keys\n\n%s  %s", a, b);
    write_file(text);
    assert_int_equal(sdw_auth_init(path, 2, err, sizeof err), 0);
    assert_true(sdw_auth_enabled());
    assert_int_equal(sdw_auth_count(), 2);
    const char *h = "Bearer alice-key-0123456789";
    assert_string_equal(sdw_auth_check(h, strlen(h)), "alice");
    h = "bearer   bob-key-0123456789ab ";
    assert_string_equal(sdw_auth_check(h, strlen(h)), "bob");
    const char *bad[] = {"Bearer alice-key-012345678", "Basic alice-key-0123456789", "Bearer ", "Bearer", ""};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_null(sdw_auth_check(bad[i], strlen(bad[i])));
    assert_null(sdw_auth_check(NULL, 0));

    /* a broken file keeps the table; the error names the line */
    snprintf(text, sizeof text, "%sbroken\n", a);
    write_file(text);
    assert_int_equal(sdw_auth_reload(err, sizeof err), -1);
    assert_non_null(strstr(err, ":2:"));
    assert_int_equal(sdw_auth_count(), 2);
    snprintf(text, sizeof text, "%s%s", a, a);
    write_file(text);
    assert_int_equal(sdw_auth_reload(err, sizeof err), -1);
    assert_non_null(strstr(err, "twice"));
    write_file(a);
    assert_int_equal(sdw_auth_reload(err, sizeof err), 0);
    assert_int_equal(sdw_auth_count(), 1);
    h = "Bearer bob-key-0123456789ab";
    assert_null(sdw_auth_check(h, strlen(h)));
}

static void test_limit(void **state)
{
    (void)state;
    char a[200], err[300];
    line_for("alice", "alice-key-0123456789", a, sizeof a);
    write_file(a);
    assert_int_equal(sdw_auth_init(path, 2, err, sizeof err), 0);
    sdw_job j1, j2;
    memset(&j1, 0, sizeof j1);
    memset(&j2, 0, sizeof j2);
    assert_true(sdw_auth_may_queue("alice"));
    assert_int_equal(sdw_auth_track("alice", &j1), 0);
    assert_int_equal(sdw_auth_track("alice", &j2), 0);
    assert_int_equal(sdw_auth_queued("alice"), 2);
    assert_false(sdw_auth_may_queue("alice"));
    assert_true(sdw_auth_may_queue(NULL)); /* no key, no per-key limit */
    /* a reload keeps the counts by name */
    assert_int_equal(sdw_auth_reload(err, sizeof err), 0);
    assert_int_equal(sdw_auth_queued("alice"), 2);
    /* the end of a job gives its place back */
    j1.subs->fn(j1.subs->ud, &j1, SDW_JEV_END);
    assert_null(j1.subs);
    assert_int_equal(sdw_auth_queued("alice"), 1);
    assert_true(sdw_auth_may_queue("alice"));
    j2.subs->fn(j2.subs->ud, &j2, SDW_JEV_GONE);
    assert_int_equal(sdw_auth_queued("alice"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_hash_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_and_reload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limit, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
