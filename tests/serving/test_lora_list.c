/* test_lora_list.c: the LoRA list of GET /v1/loras: model.lora_dir's NAME.safetensors regular files, sorted,
 * no directories, hidden or unusable names, no symlinks out of the folder; a missing folder is empty. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "lora_list.h"

static char dir[64], outside[64];

static void put(const char *d, const char *name, size_t bytes)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s", d, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    for (size_t i = 0; i < bytes; i++)
        fputc('x', f);
    fclose(f);
}

static void run_cmd(const char *fmt, const char *a, const char *b)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, fmt, a, b);
    assert_int_equal(system(cmd), 0);
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/sdw-loralist-XXXXXX");
    snprintf(outside, sizeof outside, "/tmp/sdw-loraout-XXXXXX");
    if (!mkdtemp(dir) || !mkdtemp(outside)) return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    run_cmd("rm -rf '%s' '%s'", dir, outside);
    return 0;
}

static void test_lists_plain_files_sorted(void **state)
{
    (void)state;
    put(dir, "zeta.safetensors", 3);
    put(dir, "alpha.safetensors", 10);
    put(dir, ".hidden.safetensors", 1);
    put(dir, "notes.txt", 1);
    put(dir, "a:b.safetensors", 1);
    put(dir, ".safetensors", 1);
    char p[256];
    snprintf(p, sizeof p, "%s/sub.safetensors", dir);
    assert_int_equal(mkdir(p, 0755), 0);
    put(outside, "secret.safetensors", 5);
    char target[256], link[256];
    snprintf(target, sizeof target, "%s/secret.safetensors", outside);
    snprintf(link, sizeof link, "%s/escape.safetensors", dir);
    assert_int_equal(symlink(target, link), 0);
    snprintf(target, sizeof target, "%s/alpha.safetensors", dir);
    snprintf(link, sizeof link, "%s/beta.safetensors", dir);
    assert_int_equal(symlink(target, link), 0); /* inside the folder: offered, with the target's size */
    snprintf(link, sizeof link, "%s/dangling.safetensors", dir);
    assert_int_equal(symlink("/nonexistent/x", link), 0);

    sdw_lora_entry *list;
    size_t n;
    char err[256];
    assert_int_equal(sdw_lora_list(dir, &list, &n, err, sizeof err), 0);
    assert_int_equal(n, 3);
    assert_string_equal(list[0].name, "alpha");
    assert_int_equal(list[0].size_bytes, 10);
    assert_string_equal(list[1].name, "beta");
    assert_int_equal(list[1].size_bytes, 10);
    assert_string_equal(list[2].name, "zeta");
    assert_int_equal(list[2].size_bytes, 3);
    sdw_lora_list_free(list, n);
}

static void test_missing_folder_is_empty(void **state)
{
    (void)state;
    sdw_lora_entry *list = (sdw_lora_entry *)1;
    size_t n = 9;
    char err[256], p[128];
    snprintf(p, sizeof p, "%s/none", dir);
    assert_int_equal(sdw_lora_list(p, &list, &n, err, sizeof err), 0);
    assert_int_equal(n, 0);
    assert_null(list);
    assert_int_equal(sdw_lora_list(NULL, &list, &n, err, sizeof err), 0);
    assert_int_equal(n, 0);
    assert_int_equal(sdw_lora_list("", &list, &n, err, sizeof err), 0);
    assert_int_equal(n, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lists_plain_files_sorted),
        cmocka_unit_test(test_missing_folder_is_empty),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
