/* st_test_writer.h: test-only helpers that write small safetensors images and scratch folders, so the
 * checkpoint tests need no fixture files. Header-only (static) so each test program stays one .c file. */
#ifndef SDW_ST_TEST_WRITER_H
#define SDW_ST_TEST_WRITER_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <ftw.h>
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

/** One tensor to write: dtype as spelled in the format ("F16", ...), raw little-endian bytes. */
typedef struct {
    const char *name;
    const char *dtype;
    int ndim;
    int64_t shape[8];
    const void *data;
    size_t nbytes;
} stw_tensor;

/* Growing string buffer. */
typedef struct {
    char *s;
    size_t n, cap;
} stw_buf;

static __attribute__((unused)) void stw_put(stw_buf *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->s = realloc(b->s, b->cap);
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}

static __attribute__((unused)) void stw_puts(stw_buf *b, const char *s)
{
    stw_put(b, s, strlen(s));
}

static __attribute__((unused)) void stw_put_json_str(stw_buf *b, const char *s)
{
    stw_puts(b, "\"");
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') stw_puts(b, "\\");
        stw_put(b, s, 1);
    }
    stw_puts(b, "\"");
}

/** Builds a safetensors image. meta_json: the __metadata__ object text or NULL. data_mod: wanted value of
 * (8 + header length) % 4 (pads the header with spaces), or -1 for the usual 8-byte alignment.
 * Returns malloc'd bytes, length in *len. */
static __attribute__((unused)) uint8_t *stw_build(const stw_tensor *t, int n, const char *meta_json,
                                                  int data_mod, size_t *len)
{
    stw_buf h = {0};
    stw_puts(&h, "{");
    if (meta_json) {
        stw_puts(&h, "\"__metadata__\":");
        stw_puts(&h, meta_json);
    }
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        char tmp[256];
        if (i || meta_json) stw_puts(&h, ",");
        stw_put_json_str(&h, t[i].name);
        snprintf(tmp, sizeof tmp, ":{\"dtype\":\"%s\",\"shape\":[", t[i].dtype);
        stw_puts(&h, tmp);
        for (int d = 0; d < t[i].ndim; d++) {
            snprintf(tmp, sizeof tmp, "%s%lld", d ? "," : "", (long long)t[i].shape[d]);
            stw_puts(&h, tmp);
        }
        snprintf(tmp, sizeof tmp, "],\"data_offsets\":[%zu,%zu]}", off, off + t[i].nbytes);
        stw_puts(&h, tmp);
        off += t[i].nbytes;
    }
    stw_puts(&h, "}");
    if (data_mod < 0)
        while ((8 + h.n) % 8)
            stw_puts(&h, " ");
    else
        while ((8 + h.n) % 4 != (size_t)data_mod)
            stw_puts(&h, " ");
    *len = 8 + h.n + off;
    uint8_t *out = malloc(*len ? *len : 1);
    for (int i = 0; i < 8; i++)
        out[i] = (uint8_t)((uint64_t)h.n >> (8 * i));
    memcpy(out + 8, h.s, h.n);
    off = 8 + h.n;
    for (int i = 0; i < n; i++) {
        if (t[i].nbytes) memcpy(out + off, t[i].data, t[i].nbytes);
        off += t[i].nbytes;
    }
    free(h.s);
    return out;
}

/** Builds an image from a raw header text and data bytes (for malformed-header tests). */
static __attribute__((unused)) uint8_t *stw_build_raw(const char *header, const void *data, size_t data_len,
                                                      size_t *len)
{
    size_t hn = strlen(header);
    *len = 8 + hn + data_len;
    uint8_t *out = malloc(*len);
    for (int i = 0; i < 8; i++)
        out[i] = (uint8_t)((uint64_t)hn >> (8 * i));
    memcpy(out + 8, header, hn);
    if (data_len) memcpy(out + 8 + hn, data, data_len);
    return out;
}

static __attribute__((unused)) int stw_write(const char *path, const void *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = len ? fwrite(buf, 1, len, f) : 0;
    return fclose(f) || w != len ? -1 : 0;
}

/** Writes the image of tensors t to path (8-byte aligned data, optional metadata). */
static __attribute__((unused)) int stw_write_tensors(const char *path, const stw_tensor *t, int n,
                                                     const char *meta_json)
{
    size_t len;
    uint8_t *b = stw_build(t, n, meta_json, -1, &len);
    int rc = stw_write(path, b, len);
    free(b);
    return rc;
}

/** A fresh scratch directory under $SDW_TMPDIR (or /tmp), malloc'd path. */
static __attribute__((unused)) char *stw_mkdtemp(const char *tag)
{
    const char *base = getenv("SDW_TMPDIR");
    if (!base || !*base) base = "/tmp";
    mkdir(base, 0755);
    char *p = malloc(strlen(base) + strlen(tag) + 16);
    sprintf(p, "%s/%s-XXXXXX", base, tag);
    if (!mkdtemp(p)) {
        free(p);
        return NULL;
    }
    return p;
}

static __attribute__((unused)) int stw_rm_cb(const char *p, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb;
    (void)type;
    (void)ftw;
    return remove(p);
}

/** rm -rf path. */
static __attribute__((unused)) void stw_rmtree(const char *path)
{
    if (path) nftw(path, stw_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/** path = dir + "/" + rel in a static ring of buffers (tests only). */
static __attribute__((unused)) const char *stw_path(const char *dir, const char *rel)
{
    static char ring[8][1024];
    static int k;
    char *p = ring[k++ & 7];
    snprintf(p, sizeof ring[0], "%s/%s", dir, rel);
    return p;
}

/** mkdir -p of dir/rel. */
static __attribute__((unused)) void stw_mkdirs(const char *dir, const char *rel)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, rel);
    for (char *s = p + strlen(dir) + 1; *s; s++)
        if (*s == '/') {
            *s = 0;
            mkdir(p, 0755);
            *s = '/';
        }
    mkdir(p, 0755);
}

/* The test program's scratch folder, $SDW_TMPDIR/<program>-XXXXXX: made by the group setup
 * stw_tmpdir_setup() and removed with all it holds by the group teardown stw_tmpdir_teardown(), so a
 * failed test leaves nothing behind either. */
static __attribute__((unused)) char *stw_tmpdir;

static __attribute__((unused)) int stw_tmpdir_setup(void **state)
{
    (void)state;
    stw_tmpdir = stw_mkdtemp(program_invocation_short_name);
    return stw_tmpdir ? 0 : -1;
}

static __attribute__((unused)) int stw_tmpdir_teardown(void **state)
{
    (void)state;
    stw_rmtree(stw_tmpdir);
    free(stw_tmpdir);
    stw_tmpdir = NULL;
    return 0;
}

/** Fails the test unless s contains sub. */
static __attribute__((unused)) void stw_assert_contains(const char *s, const char *sub)
{
    if (!strstr(s, sub)) fail_msg("expected \"%s\" in \"%s\"", sub, s);
}

#endif
