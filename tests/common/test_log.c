/* test_log.c: the logger's line format (logfmt and JSON), quoting and escaping, level filtering, that
 * concurrent writers on one pipe never interleave lines, and the batch of deferred lines (order, whole
 * lines, writes within PIPE_BUF, flush on immediate lines, fork and exit); stderr is captured. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
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
    sdw_log(SDW_LOG_INFO, "listening", "addr=%s", "127.0.0.1:8080");
    char *out = capture_end();
    assert_int_equal(strncmp(out, "ts=", 3), 0);
    assert_string_equal(skip_ts(out + 3),
                        " level=info comp=supervisor event=listening addr=127.0.0.1:8080\n");
    free(out);
}

static void test_timestamp_is_now(void **state)
{
    (void)state;
    sdw_log_init(SDW_LOG_INFO, 0, "t");
    time_t before = time(NULL);
    capture_begin();
    sdw_log(SDW_LOG_INFO, "tick", "");
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
    sdw_log(SDW_LOG_WARN, "job failed",
            "msg=%s q=%s eq=%s empty=%s nl=%s bs=%s utf8=%s bad=%s nullval=", "out of memory", "say \"hi\"",
            "a=b", "", "line1\nline2\r\t\x01", "C:\\x", "h\xc3\xa9llo", "\xff");
    char *out = capture_end();
    assert_string_equal(
        skip_ts(out + 3),
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
    sdw_log(SDW_LOG_INFO, "listening", "addr=%s", "127.0.0.1:8080");
    sdw_log(SDW_LOG_ERROR, "x", "q=%s u=%s bad=%s", "a\"b\\c\n\x01", "h\xc3\xa9", "\xc3(");
    char *out = capture_end();
    char *l2 = strchr(out, '\n') + 1;
    l2[-1] = 0;
    assert_int_equal(strncmp(out, "{\"ts\":\"", 7), 0);
    assert_string_equal(
        skip_ts(out + 7),
        "\",\"level\":\"info\",\"comp\":\"supervisor\",\"event\":\"listening\",\"addr\":\"127.0.0.1:8080\"}");
    assert_int_equal(strncmp(l2, "{\"ts\":\"", 7), 0);
    assert_string_equal(
        skip_ts(l2 + 7),
        "\",\"level\":\"error\",\"comp\":\"supervisor\",\"event\":\"x\",\"q\":\"a\\\"b\\\\c\\n"
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
    sdw_log(SDW_LOG_DEBUG, "d", "");
    sdw_log(SDW_LOG_INFO, "i", "");
    sdw_log(SDW_LOG_INFO, "i2", "x=%d", 1);
    sdw_log(SDW_LOG_WARN, "w", "");
    sdw_log(SDW_LOG_ERROR, "e", "");
    sdw_log(99, "bogus", "");
    char *out = capture_end();
    assert_null(strstr(out, "event=d"));
    assert_null(strstr(out, "event=i"));
    assert_null(strstr(out, "bogus"));
    assert_non_null(strstr(out, "level=warn comp=c event=w\n"));
    assert_non_null(strstr(out, "level=error comp=c event=e\n"));
    free(out);
}

static void test_typed_fields(void **state)
{
    (void)state;
    sdw_log_init(SDW_LOG_INFO, 0, "supervisor");
    capture_begin();
    sdw_log(SDW_LOG_WARN, "worker_exit", "slot=%d code=%d", 0, 3);
    sdw_log(SDW_LOG_WARN, "oops", "msg=\"%s\"", "two\nlines");
    char *out = capture_end();
    char *l2 = strchr(out, '\n') + 1;
    l2[-1] = 0;
    assert_string_equal(skip_ts(out + 3), " level=warn comp=supervisor event=worker_exit slot=0 code=3");
    assert_string_equal(skip_ts(l2 + 3), " level=warn comp=supervisor event=oops msg=\"two\\nlines\"\n");
    free(out);

    /* JSON: one integer or float conversion is a number; strings, literals and mixes are strings. */
    sdw_log_init(SDW_LOG_INFO, 1, "supervisor");
    capture_begin();
    sdw_log(SDW_LOG_WARN, "worker_exit",
            "slot=%d code=%u big=%llu neg=%ld t=%.3f size=%dx%d dev=%s why=\"no %s\" "
            "lit=abc pct=%d%% z=%zu hex=%x inf=%f w=%*d",
            0, 3u, 18446744073709551615ull, -7L, 1.5, 64, 32, "cpu0", "luck", 5, (size_t)9, 255u, 1.0 / 0.0,
            4, 7);
    out = capture_end();
    assert_string_equal(
        skip_ts(out + 7),
        "\",\"level\":\"warn\",\"comp\":\"supervisor\",\"event\":\"worker_exit\",\"slot\":0,\"code\":3,"
        "\"big\":18446744073709551615,\"neg\":-7,\"t\":1.500,\"size\":\"64x32\",\"dev\":\"cpu0\","
        "\"why\":\"no luck\",\"lit\":\"abc\",\"pct\":\"5%\",\"z\":9,\"hex\":\"ff\",\"inf\":\"inf\","
        "\"w\":7}\n");
    free(out);

    /* The same in logfmt: numbers bare, strings quoted when they need it. */
    sdw_log_init(SDW_LOG_INFO, 0, "s");
    capture_begin();
    sdw_log(SDW_LOG_INFO, "e", "n=%d s=%s q=\"a %s\" empty=%s", -2, "x y", "b", "");
    out = capture_end();
    assert_string_equal(skip_ts(out + 3), " level=info comp=s event=e n=-2 s=\"x y\" q=\"a b\" empty=\"\"\n");
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
    sdw_log(SDW_LOG_INFO, "big", "v=%s after=%s", big, "1");
    char *out = capture_end();
    size_t len = strlen(out);
    assert_true(len <= 8192);
    assert_int_equal(strchr(out, '\n') - out + 1, len);
    assert_non_null(strstr(out, "xxx... truncated=1\n"));
    assert_null(strstr(out, "after="));
    free(out);

    sdw_log_init(SDW_LOG_INFO, 1, "c");
    capture_begin();
    sdw_log(SDW_LOG_INFO, "big", "v=%s after=%s", big, "1");
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
    sdw_log(SDW_LOG_ERROR, "x", "k=%s", "v");
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
                sdw_log(SDW_LOG_INFO, "line", "who=%s seq=%s pad=%s end=%s", who, seq, pad, "1");
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

/* ---- deferred lines ---- */

/* stderr on a SOCK_SEQPACKET socket: every write(2) arrives as one message, so tests see write boundaries. */
static int pkt_rd = -1;

static void packets_begin(void)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
    int big = 1 << 20;
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    fflush(stderr);
    saved_stderr = dup(STDERR_FILENO);
    assert_true(saved_stderr >= 0);
    assert_int_equal(dup2(sv[1], STDERR_FILENO), STDERR_FILENO);
    close(sv[1]);
    pkt_rd = sv[0];
}

/* The next write's bytes (NUL-terminated, malloc'd), or NULL when none is waiting. */
static char *packet_next(void)
{
    char *buf = malloc(65536 + 1);
    assert_non_null(buf);
    ssize_t n = recv(pkt_rd, buf, 65536, MSG_DONTWAIT);
    if (n <= 0) {
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    return buf;
}

static void packets_end(void)
{
    dup2(saved_stderr, STDERR_FILENO);
    close(saved_stderr);
    close(pkt_rd);
    pkt_rd = -1;
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static void test_deferred_waits_for_flush(void **state)
{
    (void)state;
    sdw_log_init(SDW_LOG_INFO, 0, "supervisor");
    packets_begin();
    sdw_log_deferred(SDW_LOG_INFO, "http", "method=%s path=%s status=%s", "GET", "/health", "200");
    sdw_log_deferred(SDW_LOG_DEBUG, "dropped", ""); /* below the level: not even batched */
    sdw_log_deferred(SDW_LOG_INFO, "http", "method=%s path=%s status=%s", "GET", "/a b", "404");
    assert_null(packet_next());
    errno = ENOENT;
    sdw_log_flush();
    assert_int_equal(errno, ENOENT);
    char *p = packet_next();
    assert_non_null(p);
    assert_null(packet_next()); /* one write for both lines */
    char *l2 = strchr(p, '\n') + 1;
    l2[-1] = 0;
    assert_string_equal(skip_ts(p + 3),
                        " level=info comp=supervisor event=http method=GET path=/health status=200");
    assert_string_equal(skip_ts(l2 + 3),
                        " level=info comp=supervisor event=http method=GET path=\"/a b\" status=404\n");
    free(p);
    sdw_log_flush(); /* nothing left: writes nothing */
    assert_null(packet_next());
    packets_end();
}

/* An immediate line, or a deferred warning, writes the batch first: the log keeps the order of the calls. */
static void test_immediate_line_follows_batch(void **state)
{
    (void)state;
    sdw_log_init(SDW_LOG_INFO, 1, "supervisor");
    packets_begin();
    sdw_log_deferred(SDW_LOG_INFO, "one", "");
    sdw_log_deferred(SDW_LOG_INFO, "two", "");
    sdw_log(SDW_LOG_INFO, "three", "");
    char *p = packet_next();
    assert_non_null(p);
    assert_int_equal(count_lines(p), 3);
    const char *a = strstr(p, "\"event\":\"one\""), *b = strstr(p, "\"event\":\"two\""),
               *c = strstr(p, "\"event\":\"three\"");
    assert_true(a && b && c && a < b && b < c);
    free(p);

    sdw_log_deferred(SDW_LOG_INFO, "four", "");
    sdw_log_deferred(SDW_LOG_WARN, "five", "k=%s", "v"); /* warnings are never held back */
    p = packet_next();
    assert_non_null(p);
    assert_int_equal(count_lines(p), 2);
    a = strstr(p, "\"event\":\"four\"");
    b = strstr(p, "\"level\":\"warn\",\"comp\":\"supervisor\",\"event\":\"five\",\"k\":\"v\"}\n");
    assert_true(a && b && a < b);
    free(p);
    sdw_log(SDW_LOG_ERROR, "six", "x=%d", 6);
    p = packet_next();
    assert_non_null(p);
    assert_int_equal(count_lines(p), 1);
    free(p);
    assert_null(packet_next());
    packets_end();
}

/* Many deferred lines: every write holds whole lines, at most PIPE_BUF (4096) bytes, and all arrive in order;
 * a line longer than the batch is written alone. */
static void test_batch_writes_whole_lines_within_pipe_buf(void **state)
{
    (void)state;
    enum { LINES = 500 };
    sdw_log_init(SDW_LOG_INFO, 0, "c");
    char big[6000];
    memset(big, 'b', sizeof big - 1);
    big[sizeof big - 1] = 0;
    packets_begin();
    for (int i = 0; i < LINES; i++) {
        char seq[16];
        snprintf(seq, sizeof seq, "%d", i);
        sdw_log_deferred(SDW_LOG_INFO, "line", "seq=%s pad=%s", seq,
                         i % 7 ? "short" : "a-longer-value-to-vary-sizes");
        if (i == 250) sdw_log_deferred(SDW_LOG_INFO, "big", "v=%s", big);
    }
    sdw_log_flush();
    int next = 0, writes = 0, saw_big = 0;
    char *p;
    while ((p = packet_next())) {
        size_t len = strlen(p);
        writes++;
        assert_true(len > 0 && p[len - 1] == '\n');
        if (strstr(p, "event=big")) {
            assert_int_equal(count_lines(p), 1); /* alone */
            assert_non_null(strstr(p, "bbbb\n"));
            assert_int_equal(next, 251);
            saw_big = 1;
            free(p);
            continue;
        }
        assert_true(len <= 4096);
        for (char *line = p; *line;) {
            char *nl = strchr(line, '\n');
            assert_non_null(nl);
            *nl = 0;
            assert_int_equal(strncmp(line, "ts=", 3), 0);
            const char *seq = strstr(line, " seq=");
            assert_non_null(seq);
            assert_int_equal(atoi(seq + 5), next);
            next++;
            line = nl + 1;
        }
        free(p);
    }
    assert_int_equal(next, LINES);
    assert_true(saw_big);
    assert_true(writes < LINES / 10); /* batched, not one write per line */
    packets_end();
}

/* A fork writes the parent's batch first (no line twice, none lost); exit writes what is left. */
static void test_deferred_fork_and_exit(void **state)
{
    (void)state;
    sdw_log_init(SDW_LOG_INFO, 0, "c");
    int p[2];
    assert_int_equal(pipe(p), 0);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    assert_int_equal(dup2(p[1], STDERR_FILENO), STDERR_FILENO);
    close(p[1]);

    sdw_log_deferred(SDW_LOG_INFO, "before_fork", "");
    pid_t kid = fork();
    assert_true(kid >= 0);
    if (kid == 0) {
        sdw_log(SDW_LOG_INFO, "in_child", "");
        sdw_log_deferred(SDW_LOG_INFO, "child_deferred", "");
        exit(0); /* the atexit handler writes child_deferred */
    }
    int st;
    assert_int_equal(waitpid(kid, &st, 0), kid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    sdw_log_deferred(SDW_LOG_INFO, "after_fork", "");
    /* a process that exits with lines still deferred: they are written */
    pid_t kid2 = fork();
    assert_true(kid2 >= 0);
    if (kid2 == 0) {
        sdw_log_deferred(SDW_LOG_INFO, "at_exit", "");
        exit(0);
    }
    assert_int_equal(waitpid(kid2, &st, 0), kid2);
    sdw_log_flush();
    dup2(saved, STDERR_FILENO);
    close(saved);

    char out[8192];
    size_t len = 0;
    ssize_t r;
    while ((r = read(p[0], out + len, sizeof out - 1 - len)) > 0)
        len += (size_t)r;
    close(p[0]);
    out[len] = 0;
    const char *names[] = {"before_fork", "in_child", "child_deferred", "after_fork", "at_exit"};
    const char *prev = out;
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char pat[64];
        snprintf(pat, sizeof pat, "event=%s\n", names[i]);
        const char *at = strstr(out, pat);
        assert_non_null(at);
        assert_null(strstr(at + 1, pat)); /* exactly once */
        assert_true(at >= prev);          /* each fork wrote the parent's batch before the child could log */
        prev = at;
    }
    assert_int_equal(count_lines(out), 5);
}

static void *other_thread(void *arg)
{
    (void)arg;
    sdw_log_deferred(SDW_LOG_INFO, "from_thread", "");
    return NULL;
}

/* The batch belongs to the first thread that defers a line; another thread's deferred lines go out at once.
 */
static void test_deferred_other_thread_immediate(void **state)
{
    (void)state;
    sdw_log_init(SDW_LOG_INFO, 0, "c");
    packets_begin();
    sdw_log_deferred(SDW_LOG_INFO, "owner", ""); /* this thread has owned the batch since the first test */
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, other_thread, NULL), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    char *p = packet_next();
    assert_non_null(p);
    assert_non_null(strstr(p, "event=from_thread\n"));
    assert_int_equal(count_lines(p), 1);
    free(p);
    assert_null(packet_next());
    sdw_log_flush();
    p = packet_next();
    assert_non_null(p);
    assert_non_null(strstr(p, "event=owner\n"));
    free(p);
    packets_end();
}

/* Values that are copied whole (printable ASCII with nothing to quote or escape) and their neighbours that
 * are not: the output is the same as escaping byte by byte. */
static void test_plain_value_boundaries(void **state)
{
    (void)state;
    sdw_log_init(SDW_LOG_INFO, 0, "c");
    capture_begin();
    sdw_log(SDW_LOG_INFO, "e", "all=%s sp=%s eq=%s del=%s hi=%s k\"y=%s",
            "!#$%&'()*+,-./09:;<>?@AZ[]^_`az{|}~", "a b", "a=b", "a\x7f", "\xc3\xa9t\xc3\xa9", "v");
    char *out = capture_end();
    assert_string_equal(skip_ts(out + 3),
                        " level=info comp=c event=e all=!#$%&'()*+,-./09:;<>?@AZ[]^_`az{|}~"
                        " sp=\"a b\" eq=\"a=b\" del=\"a\\x7f\" hi=\xc3\xa9t\xc3\xa9 k_y=v\n");
    free(out);
    sdw_log_init(SDW_LOG_INFO, 1, "c");
    capture_begin();
    sdw_log(SDW_LOG_INFO, "e", "sp=%s q=%s k\"y=%s", "a b=c", "x\"y", "v");
    out = capture_end();
    assert_string_equal(skip_ts(out + 7), "\",\"level\":\"info\",\"comp\":\"c\",\"event\":\"e\",\"sp\":\"a "
                                          "b=c\",\"q\":\"x\\\"y\",\"k\\\"y\":\"v\"}\n");
    free(out);
}

/* The timestamp, whose date-and-second part is kept per second, matches the clock to the millisecond
 * across second boundaries. */
static void test_timestamp_millis_across_seconds(void **state)
{
    (void)state;
    sdw_log_init(SDW_LOG_INFO, 0, "t");
    for (int i = 0; i < 6; i++) {
        struct timespec a, b;
        clock_gettime(CLOCK_REALTIME, &a);
        capture_begin();
        sdw_log(SDW_LOG_INFO, "tick", "");
        char *out = capture_end();
        clock_gettime(CLOCK_REALTIME, &b);
        struct tm tm = {0};
        const char *rest = strptime(out + 3, "%Y-%m-%dT%H:%M:%S", &tm);
        assert_non_null(rest);
        assert_int_equal(rest[0], '.');
        long long ms = (long long)timegm(&tm) * 1000 + atoi(rest + 1);
        long long lo = (long long)a.tv_sec * 1000 + a.tv_nsec / 1000000;
        long long hi = (long long)b.tv_sec * 1000 + b.tv_nsec / 1000000;
        assert_true(ms >= lo && ms <= hi);
        free(out);
        struct timespec nap = {0, 230 * 1000000L};
        nanosleep(&nap, NULL);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_line),
        cmocka_unit_test(test_timestamp_is_now),
        cmocka_unit_test(test_text_quoting),
        cmocka_unit_test(test_json_line),
        cmocka_unit_test(test_levels),
        cmocka_unit_test(test_typed_fields),
        cmocka_unit_test(test_long_values_truncated),
        cmocka_unit_test(test_errno_preserved),
        cmocka_unit_test(test_concurrent_lines_atomic),
        cmocka_unit_test(test_deferred_waits_for_flush),
        cmocka_unit_test(test_immediate_line_follows_batch),
        cmocka_unit_test(test_batch_writes_whole_lines_within_pipe_buf),
        cmocka_unit_test(test_deferred_fork_and_exit),
        cmocka_unit_test(test_deferred_other_thread_immediate),
        cmocka_unit_test(test_plain_value_boundaries),
        cmocka_unit_test(test_timestamp_millis_across_seconds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
