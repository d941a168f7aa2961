/* test_log.c: the logger's line format (logfmt and JSON), quoting and escaping, level filtering, and
 * that concurrent writers on one pipe never interleave lines; stderr is captured through a pipe. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "log.h"

static int saved_stderr = -1, pipe_rd = -1;

static void capture_begin(void)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    fflush(stderr);
    saved_stderr = dup(STDERR_FILENO);
    assert_true(saved_stderr >= 0);
    assert_int_equal(dup2(p[1], STDERR_FILENO), STDERR_FILENO);
    close(p[1]);
    pipe_rd = p[0];
}

/* Restores stderr and returns everything logged since capture_begin (malloc'd). */
static char *capture_end(void)
{
    fflush(stderr);
    dup2(saved_stderr, STDERR_FILENO);
    close(saved_stderr);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap + 1);
    assert_non_null(buf);
    ssize_t r;
    while ((r = read(pipe_rd, buf + len, cap - len)) > 0) {
        len += (size_t)r;
        if (len == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
            assert_non_null(buf);
        }
    }
    close(pipe_rd);
    buf[len] = 0;
    return buf;
}

/* Checks the timestamp at s is YYYY-MM-DDTHH:MM:SS.mmmZ and returns what follows it. */
static const char *skip_ts(const char *s)
{
    const char *pat = "dddd-dd-ddTdd:dd:dd.dddZ";
    for (size_t i = 0; pat[i]; i++) {
        if (pat[i] == 'd')
            assert_true(s[i] >= '0' && s[i] <= '9');
        else
            assert_int_equal(s[i], pat[i]);
    }
    return s + strlen(pat);
}

static void test_text_line(void **state)
{
    (void)state;
    sdw_log_init(SDW_LOG_INFO, 0, "supervisor");
    capture_begin();
    sdw_log(SDW_LOG_INFO, "listening", "addr", "127.0.0.1:8080", NULL);
    char *out = capture_end();
    assert_int_equal(strncmp(out, "ts=", 3), 0);
    assert_string_equal(skip_ts(out + 3), " level=info comp=supervisor event=listening addr=127.0.0.1:8080\n");
    free(out);
}

static void test_timestamp_is_now(void **state)
{
    (void)state;
    sdw_log_init(SDW_LOG_INFO, 0, "t");
    time_t before = time(NULL);
    capture_begin();
    sdw_log(SDW_LOG_INFO, "tick", NULL);
    char *out = capture_end();
    time_t after = time(NULL);
    struct tm tm = {0};
    assert_non_null(strptime(out + 3, "%Y-%m-%dT%H:%M:%S", &tm));
    time_t t = timegm(&tm);
    assert_true(t >= before && t <= after);
    free(out);
}

static void test_text_quoting(void **state)
{
    (void)state;
    sdw_log_init(SDW_LOG_DEBUG, 0, "worker");
    capture_begin();
    sdw_log(SDW_LOG_WARN, "job failed", "msg", "out of memory", "q", "say \"hi\"", "eq", "a=b", "empty", "", "nl",
            "line1\nline2\r\t\x01", "bs", "C:\\x", "utf8", "h\xc3\xa9llo", "bad", "\xff", "nullval", NULL);
    char *out = capture_end();
    assert_string_equal(skip_ts(out + 3),
                        " level=warn comp=worker event=\"job failed\" msg=\"out of memory\" q=\"say \\\"hi\\\"\""
                        " eq=\"a=b\" empty=\"\" nl=\"line1\\nline2\\r\\t\\x01\" bs=\"C:\\\\x\" utf8=h\xc3\xa9llo"
                        " bad=\"\\xff\" nullval=\"\"\n");
    /* Exactly one line, whatever the values held. */
    assert_int_equal(strchr(out, '\n') - out + 1, strlen(out));
    free(out);
}

static void test_json_line(void **state)
{
    (void)state;
    sdw_log_init(SDW_LOG_INFO, 1, "supervisor");
    capture_begin();
    sdw_log(SDW_LOG_INFO, "listening", "addr", "127.0.0.1:8080", NULL);
    sdw_log(SDW_LOG_ERROR, "x", "q", "a\"b\\c\n\x01", "u", "h\xc3\xa9", "bad", "\xc3(", NULL);
    char *out = capture_end();
    char *l2 = strchr(out, '\n') + 1;
    l2[-1] = 0;
    assert_int_equal(strncmp(out, "{\"ts\":\"", 7), 0);
    assert_string_equal(skip_ts(out + 7),
                        "\",\"level\":\"info\",\"comp\":\"supervisor\",\"event\":\"listening\",\"addr\":\"127.0.0.1:8080\"}");
    assert_int_equal(strncmp(l2, "{\"ts\":\"", 7), 0);
    assert_string_equal(skip_ts(l2 + 7), "\",\"level\":\"error\",\"comp\":\"supervisor\",\"event\":\"x\",\"q\":\"a\\\"b\\\\c\\n"
                                         "\\u0001\",\"u\":\"h\xc3\xa9\",\"bad\":\"\\ufffd(\"}\n");
    free(out);
}

static void test_levels(void **state)
{
    (void)state;
    assert_int_equal(sdw_log_level_parse("debug"), SDW_LOG_DEBUG);
    assert_int_equal(sdw_log_level_parse("info"), SDW_LOG_INFO);
    assert_int_equal(sdw_log_level_parse("warn"), SDW_LOG_WARN);
    assert_int_equal(sdw_log_level_parse("WARNING"), SDW_LOG_WARN);
    assert_int_equal(sdw_log_level_parse("error"), SDW_LOG_ERROR);
    assert_int_equal(sdw_log_level_parse("loud"), -1);
    assert_int_equal(sdw_log_level_parse(""), -1);
    assert_int_equal(sdw_log_level_parse(NULL), -1);

    sdw_log_init(SDW_LOG_WARN, 0, "c");
    capture_begin();
    sdw_log(SDW_LOG_DEBUG, "d", NULL);
    sdw_log(SDW_LOG_INFO, "i", NULL);
    sdw_logf(SDW_LOG_INFO, "i2", "x=%d", 1);
    sdw_log(SDW_LOG_WARN, "w", NULL);
    sdw_log(SDW_LOG_ERROR, "e", NULL);
    sdw_log(99, "bogus", NULL);
    char *out = capture_end();
    assert_null(strstr(out, "event=d"));
    assert_null(strstr(out, "event=i"));
    assert_null(strstr(out, "bogus"));
    assert_non_null(strstr(out, "level=warn comp=c event=w\n"));
    assert_non_null(strstr(out, "level=error comp=c event=e\n"));
    free(out);
}

static void test_logf(void **state)
{
    (void)state;
    sdw_log_init(SDW_LOG_INFO, 0, "supervisor");
    capture_begin();
    sdw_logf(SDW_LOG_WARN, "worker_exit", "slot=%d code=%d", 0, 3);
    sdw_logf(SDW_LOG_WARN, "oops", "msg=\"%s\"", "two\nlines");
    char *out = capture_end();
    char *l2 = strchr(out, '\n') + 1;
    l2[-1] = 0;
    assert_string_equal(skip_ts(out + 3), " level=warn comp=supervisor event=worker_exit slot=0 code=3");
    assert_string_equal(skip_ts(l2 + 3), " level=warn comp=supervisor event=oops msg=\"two\\nlines\"\n");
    free(out);

    sdw_log_init(SDW_LOG_INFO, 1, "supervisor");
    capture_begin();
    sdw_logf(SDW_LOG_WARN, "worker_exit", "slot=%d code=%d", 0, 3);
    out = capture_end();
    assert_string_equal(skip_ts(out + 7),
                        "\",\"level\":\"warn\",\"comp\":\"supervisor\",\"event\":\"worker_exit\",\"msg\":\"slot=0 code=3\"}\n");
    free(out);
}

static void test_long_values_truncated(void **state)
{
    (void)state;
    size_t n = 20000;
    char *big = malloc(n + 1);
    assert_non_null(big);
    memset(big, 'x', n);
    big[n] = 0;
    sdw_log_init(SDW_LOG_INFO, 0, "c");
    capture_begin();
    sdw_log(SDW_LOG_INFO, "big", "v", big, "after", "1", NULL);
    char *out = capture_end();
    size_t len = strlen(out);
    assert_true(len <= 8192);
    assert_int_equal(strchr(out, '\n') - out + 1, len);
    assert_non_null(strstr(out, "xxx... truncated=1\n"));
    assert_null(strstr(out, "after="));
    free(out);

    sdw_log_init(SDW_LOG_INFO, 1, "c");
    capture_begin();
    sdw_log(SDW_LOG_INFO, "big", "v", big, "after", "1", NULL);
    out = capture_end();
    len = strlen(out);
    assert_true(len <= 8192);
    assert_int_equal(strchr(out, '\n') - out + 1, len);
    assert_non_null(strstr(out, "xxx...\",\"truncated\":true}\n"));
    free(out);
    free(big);
}

static void test_errno_preserved(void **state)
{
    (void)state;
    sdw_log_init(SDW_LOG_INFO, 0, "c");
    int saved = dup(STDERR_FILENO);
    close(STDERR_FILENO); /* the write fails with EBADF; the caller's errno must survive it */
    errno = ENOENT;
    sdw_log(SDW_LOG_ERROR, "x", "k", "v", NULL);
    assert_int_equal(errno, ENOENT);
    dup2(saved, STDERR_FILENO);
    close(saved);
}

/* Several processes logging to one pipe at once: every line read back is whole (one write per line). */
static void test_concurrent_lines_atomic(void **state)
{
    (void)state;
    enum { PROCS = 4, LINES = 300 };
    sdw_log_init(SDW_LOG_INFO, 0, "c");
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t kids[PROCS];
    for (int k = 0; k < PROCS; k++) {
        kids[k] = fork();
        assert_true(kids[k] >= 0);
        if (kids[k] == 0) {
            close(p[0]);
            dup2(p[1], STDERR_FILENO);
            char who[16], pad[600];
            snprintf(who, sizeof who, "%d", k);
            memset(pad, 'a' + k, sizeof pad - 1);
            pad[sizeof pad - 1] = 0;
            for (int i = 0; i < LINES; i++) {
                char seq[16];
                snprintf(seq, sizeof seq, "%d", i);
                sdw_log(SDW_LOG_INFO, "line", "who", who, "seq", seq, "pad", pad, "end", "1", NULL);
            }
            _exit(0);
        }
    }
    close(p[1]);
    FILE *f = fdopen(p[0], "r");
    assert_non_null(f);
    char line[4096];
    int count[PROCS] = {0}, total = 0;
    while (fgets(line, sizeof line, f)) {
        int who = -1, seq = -1;
        char *w = strstr(line, " who="), *s = strstr(line, " seq="), *pad = strstr(line, " pad=");
        assert_non_null(w);
        assert_non_null(s);
        assert_non_null(pad);
        who = atoi(w + 5);
        seq = atoi(s + 5);
        assert_true(who >= 0 && who < PROCS);
        assert_int_equal(seq, count[who]); /* in order per process, none lost or split */
        count[who]++;
        for (int i = 0; i < 599; i++)
            assert_int_equal(pad[5 + i], 'a' + who);
        assert_string_equal(pad + 5 + 599, " end=1\n");
        total++;
    }
    fclose(f);
    for (int k = 0; k < PROCS; k++) {
        int st;
        assert_int_equal(waitpid(kids[k], &st, 0), kids[k]);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    assert_int_equal(total, PROCS * LINES);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_line),
        cmocka_unit_test(test_timestamp_is_now),
        cmocka_unit_test(test_text_quoting),
        cmocka_unit_test(test_json_line),
        cmocka_unit_test(test_levels),
        cmocka_unit_test(test_logf),
        cmocka_unit_test(test_long_values_truncated),
        cmocka_unit_test(test_errno_preserved),
        cmocka_unit_test(test_concurrent_lines_atomic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
