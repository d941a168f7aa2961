/* test_notify.c: sd_notify against real AF_UNIX datagram sockets (a path in a temp dir and an abstract
 * name): messages arrive verbatim; no socket means a no-op; $WATCHDOG_USEC/$WATCHDOG_PID parsing. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>

#include "notify.h"

static char dir[256], sock_path[300];

/* A bound datagram socket at name ("/path" or "@abstract"), with a receive timeout so a lost message
 * fails the test instead of hanging it. */
static int listener(const char *name)
{
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t n = strlen(name);
    assert_true(n < sizeof sa.sun_path);
    memcpy(sa.sun_path, name, n);
    if (name[0] == '@') sa.sun_path[0] = 0;
    assert_int_equal(
        bind(fd, (struct sockaddr *)&sa, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n)), 0);
    struct timeval tv = {5, 0};
    assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
    return fd;
}

static void expect_msg(int fd, const char *want)
{
    char buf[8192];
    ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
    assert_true(n >= 0);
    buf[n] = 0;
    assert_int_equal((size_t)n, strlen(want));
    assert_string_equal(buf, want);
}

static int setup(void **state)
{
    (void)state;
    const char *base = getenv("SDW_TMPDIR");
    /* sun_path holds 108 bytes: fall back to /tmp when the build tree is deep. */
    if (!base || !*base || strlen(base) > 60) base = "/tmp";
    snprintf(dir, sizeof dir, "%s/notifyXXXXXX", base);
    if (!mkdtemp(dir)) return -1;
    snprintf(sock_path, sizeof sock_path, "%s/notify.sock", dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(sock_path);
    rmdir(dir);
    unsetenv("NOTIFY_SOCKET");
    return 0;
}

static void test_path_socket(void **state)
{
    (void)state;
    int fd = listener(sock_path);
    setenv("NOTIFY_SOCKET", sock_path, 1);
    assert_int_equal(sdw_notify("READY=1"), 0);
    expect_msg(fd, "READY=1");
    assert_int_equal(sdw_notify("READY=1\nSTATUS=serving on 127.0.0.1:8080"), 0);
    expect_msg(fd, "READY=1\nSTATUS=serving on 127.0.0.1:8080");
    assert_int_equal(sdw_notifyf("STATUS=%d jobs queued, %s", 3, "1 worker busy"), 0);
    expect_msg(fd, "STATUS=3 jobs queued, 1 worker busy");
    /* Longer than sdw_notifyf's stack buffer. */
    char big[2000];
    memset(big, 's', sizeof big - 1);
    big[sizeof big - 1] = 0;
    char want[2100];
    snprintf(want, sizeof want, "STATUS=%s", big);
    assert_int_equal(sdw_notifyf("STATUS=%s", big), 0);
    expect_msg(fd, want);
    assert_int_equal(sdw_notify("STOPPING=1"), 0);
    expect_msg(fd, "STOPPING=1");
    assert_int_equal(sdw_notify("WATCHDOG=1"), 0);
    expect_msg(fd, "WATCHDOG=1");
    close(fd);
    unlink(sock_path);
    /* Nobody listening any more: an error, not a crash or a hang. */
    assert_int_equal(sdw_notify("READY=1"), -1);
}

static void test_abstract_socket(void **state)
{
    (void)state;
    char name[64];
    snprintf(name, sizeof name, "@sdw-test-notify-%d", (int)getpid());
    int fd = listener(name);
    setenv("NOTIFY_SOCKET", name, 1);
    assert_int_equal(sdw_notify("READY=1"), 0);
    expect_msg(fd, "READY=1");
    close(fd);
}

static void test_not_under_systemd(void **state)
{
    (void)state;
    unsetenv("NOTIFY_SOCKET");
    assert_int_equal(sdw_notify("READY=1"), 1);
    assert_int_equal(sdw_notifyf("STATUS=%d", 1), 1);
    setenv("NOTIFY_SOCKET", "", 1);
    assert_int_equal(sdw_notify("READY=1"), 1);
    /* Addresses we can't use are errors. */
    setenv("NOTIFY_SOCKET", "relative/path.sock", 1);
    assert_int_equal(sdw_notify("READY=1"), -1);
    setenv("NOTIFY_SOCKET", "vsock:2:1234", 1);
    assert_int_equal(sdw_notify("READY=1"), -1);
    char longp[200];
    memset(longp, 'a', sizeof longp - 1);
    longp[0] = '/';
    longp[sizeof longp - 1] = 0;
    setenv("NOTIFY_SOCKET", longp, 1);
    assert_int_equal(sdw_notify("READY=1"), -1);
    unsetenv("NOTIFY_SOCKET");
}

static void test_watchdog(void **state)
{
    (void)state;
    char pid[32];
    snprintf(pid, sizeof pid, "%d", (int)getpid());
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    assert_int_equal(sdw_notify_watchdog_usec(), 0);
    setenv("WATCHDOG_USEC", "30000000", 1);
    assert_int_equal(sdw_notify_watchdog_usec(), 30000000);
    setenv("WATCHDOG_PID", pid, 1);
    assert_int_equal(sdw_notify_watchdog_usec(), 30000000);
    setenv("WATCHDOG_PID", "1", 1); /* meant for another process */
    assert_int_equal(sdw_notify_watchdog_usec(), 0);
    setenv("WATCHDOG_PID", "x", 1);
    assert_int_equal(sdw_notify_watchdog_usec(), 0);
    setenv("WATCHDOG_PID", pid, 1);
    setenv("WATCHDOG_USEC", "0", 1);
    assert_int_equal(sdw_notify_watchdog_usec(), 0);
    setenv("WATCHDOG_USEC", "12abc", 1);
    assert_int_equal(sdw_notify_watchdog_usec(), 0);
    setenv("WATCHDOG_USEC", "-5", 1);
    assert_int_equal(sdw_notify_watchdog_usec(), 0);
    setenv("WATCHDOG_USEC", "99999999999999999999999", 1);
    assert_int_equal(sdw_notify_watchdog_usec(), 0);
    setenv("WATCHDOG_USEC", "18446744073709551615", 1);
    assert_true(sdw_notify_watchdog_usec() == UINT64_MAX);
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_path_socket, setup, teardown),
        cmocka_unit_test(test_abstract_socket),
        cmocka_unit_test(test_not_under_systemd),
        cmocka_unit_test(test_watchdog),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
