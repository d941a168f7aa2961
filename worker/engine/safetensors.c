/* safetensors.c: strict safetensors parser. The header is parsed with jansson (UTF-8 validation,
 * duplicate-key rejection and integer-overflow detection come for free); every field is then bounds-checked.
 */
#include "safetensors.h"
#include "weights.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static const struct {
    const char *name;
    sde_dtype dt;
    size_t size;
} dtypes[] = {
    {"F32", SDE_DT_F32, 4}, {"F16", SDE_DT_F16, 2},   {"BF16", SDE_DT_BF16, 2}, {"F64", SDE_DT_F64, 8},
    {"I64", SDE_DT_I64, 8}, {"I32", SDE_DT_I32, 4},   {"I16", SDE_DT_I16, 2},   {"I8", SDE_DT_I8, 1},
    {"U8", SDE_DT_U8, 1},   {"BOOL", SDE_DT_BOOL, 1},
};
#define N_DTYPES (int)(sizeof dtypes / sizeof *dtypes)

size_t sde_st_dtype_size(sde_dtype dt)
{
    for (int i = 0; i < N_DTYPES; i++)
        if (dtypes[i].dt == dt) return dtypes[i].size;
    return 0;
}

const char *sde_st_dtype_name(sde_dtype dt)
{
    for (int i = 0; i < N_DTYPES; i++)
        if (dtypes[i].dt == dt) return dtypes[i].name;
    return "?";
}

void sde_st_free(sde_st_file *f)
{
    if (!f) return;
    for (int i = 0; i < f->n; i++)
        free(f->t[i].name);
    free(f->t);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_vals[i]);
    }
    free(f->meta_keys);
    free(f->meta_vals);
    if (f->map) munmap(f->map, f->map_len);
    free(f->label);
    free(f);
}

const char *sde_st_meta(const sde_st_file *f, const char *key)
{
    for (int i = 0; f && key && i < f->n_meta; i++)
        if (!strcmp(f->meta_keys[i], key)) return f->meta_vals[i];
    return NULL;
}

static int parse_metadata(sde_st_file *f, json_t *obj, char *err, size_t errlen)
{
    if (!json_is_object(obj)) return sde_fail(err, errlen, "%s: __metadata__ is not a JSON object", f->label);
    size_t n = json_object_size(obj);
    f->meta_keys = calloc(n ? n : 1, sizeof *f->meta_keys);
    f->meta_vals = calloc(n ? n : 1, sizeof *f->meta_vals);
    if (!f->meta_keys || !f->meta_vals)
        return sde_fail(err, errlen, "%s: out of memory for __metadata__", f->label);
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v)
    {
        if (!json_is_string(v))
            return sde_fail(err, errlen, "%s: __metadata__ \"%s\" is not a string", f->label, k);
        f->meta_keys[f->n_meta] = strdup(k);
        f->meta_vals[f->n_meta] = strndup(json_string_value(v), json_string_length(v));
        f->n_meta++;
        if (!f->meta_keys[f->n_meta - 1] || !f->meta_vals[f->n_meta - 1])
            return sde_fail(err, errlen, "%s: out of memory for __metadata__", f->label);
        if (strlen(f->meta_vals[f->n_meta - 1]) != json_string_length(v))
            return sde_fail(err, errlen, "%s: __metadata__ \"%s\" contains a NUL byte", f->label, k);
    }
    return 0;
}

/* Reads one header entry into t. t->name is already set; messages name it. */
static int parse_tensor(const sde_st_file *f, sde_st_tensor *t, json_t *v, char *err, size_t errlen)
{
    const char *L = f->label, *N = t->name;
    if (!json_is_object(v))
        return sde_fail(err, errlen, "%s: tensor \"%s\": header entry is not a JSON object", L, N);

    json_t *jd = json_object_get(v, "dtype");
    if (!json_is_string(jd))
        return sde_fail(err, errlen, "%s: tensor \"%s\": missing or non-string \"dtype\"", L, N);
    const char *ds = json_string_value(jd);
    size_t esize = 0;
    for (int i = 0; i < N_DTYPES; i++)
        if (!strcmp(ds, dtypes[i].name)) {
            t->dtype = dtypes[i].dt;
            esize = dtypes[i].size;
        }
    if (!esize)
        return sde_fail(
            err, errlen,
            "%s: tensor \"%s\": unsupported dtype \"%.16s\" (known: F32 F16 BF16 F64 I64 I32 I16 I8 U8 BOOL)",
            L, N, ds);

    json_t *js = json_object_get(v, "shape");
    if (!json_is_array(js))
        return sde_fail(err, errlen, "%s: tensor \"%s\": missing or non-array \"shape\"", L, N);
    size_t nd = json_array_size(js);
    if (nd > SDE_MAX_DIMS)
        return sde_fail(err, errlen, "%s: tensor \"%s\": shape has %zu dims (at most %d supported)", L, N, nd,
                        SDE_MAX_DIMS);
    t->ndim = (int)nd;
    uint64_t numel = 1;
    for (size_t i = 0; i < nd; i++) {
        json_t *d = json_array_get(js, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return sde_fail(err, errlen, "%s: tensor \"%s\": shape[%zu] is not a non-negative integer", L, N,
                            i);
        t->shape[i] = (int64_t)json_integer_value(d);
        if (__builtin_mul_overflow(numel, (uint64_t)t->shape[i], &numel))
            return sde_fail(err, errlen, "%s: tensor \"%s\": shape element count overflows", L, N);
    }
    t->numel = numel;
    uint64_t nbytes;
    if (__builtin_mul_overflow(numel, (uint64_t)esize, &nbytes))
        return sde_fail(err, errlen, "%s: tensor \"%s\": shape byte size overflows", L, N);

    json_t *jo = json_object_get(v, "data_offsets");
    if (!json_is_array(jo) || json_array_size(jo) != 2)
        return sde_fail(err, errlen, "%s: tensor \"%s\": \"data_offsets\" is not a [begin, end] array", L, N);
    json_t *jb = json_array_get(jo, 0), *je = json_array_get(jo, 1);
    if (!json_is_integer(jb) || !json_is_integer(je) || json_integer_value(jb) < 0 ||
        json_integer_value(je) < 0)
        return sde_fail(err, errlen, "%s: tensor \"%s\": data_offsets are not non-negative integers", L, N);
    t->begin = (uint64_t)json_integer_value(jb);
    t->end = (uint64_t)json_integer_value(je);
    if (t->begin > t->end)
        return sde_fail(err, errlen, "%s: tensor \"%s\": data_offsets [%llu, %llu] have begin > end", L, N,
                        (unsigned long long)t->begin, (unsigned long long)t->end);
    if (t->end > f->data_len)
        return sde_fail(err, errlen, "%s: tensor \"%s\": data_offsets [%llu, %llu] exceed data size %zu", L,
                        N, (unsigned long long)t->begin, (unsigned long long)t->end, f->data_len);
    if (t->end - t->begin != nbytes)
        return sde_fail(
            err, errlen,
            "%s: tensor \"%s\": data_offsets [%llu, %llu] hold %llu bytes but %s shape needs %llu", L, N,
            (unsigned long long)t->begin, (unsigned long long)t->end, (unsigned long long)(t->end - t->begin),
            ds, (unsigned long long)nbytes);
    t->data = f->data + t->begin;
    t->nbytes = (size_t)nbytes;
    return 0;
}

/* Fills f (label, data already unset) from the image buf[0..len). */
static int parse_image(sde_st_file *f, const uint8_t *buf, size_t len, char *err, size_t errlen)
{
    const char *L = f->label;
    if (len < 8) return sde_fail(err, errlen, "%s: file too small (%zu bytes) to be safetensors", L, len);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = hl << 8 | buf[i];
    if (hl < 2 || hl > SDE_ST_MAX_HEADER || hl > len - 8)
        return sde_fail(err, errlen,
                        "%s: header length %llu is invalid (need 2..%u and at most file size - 8 = %zu); "
                        "truncated or not safetensors",
                        L, (unsigned long long)hl, SDE_ST_MAX_HEADER, len - 8);
    if (buf[8] != '{')
        return sde_fail(err, errlen, "%s: header does not start with '{'; not a safetensors file", L);
    f->data = buf + 8 + hl;
    f->data_len = len - 8 - (size_t)hl;

    json_error_t je;
    json_t *root = json_loadb((const char *)buf + 8, (size_t)hl, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return sde_fail(err, errlen, "%s: header is not valid JSON: %s (header byte %d)", L, je.text,
                        je.position);
    int rc = -1;
    if (!json_is_object(root)) {
        sde_fail(err, errlen, "%s: header is not a JSON object", L);
        goto out;
    }
    size_t cap = json_object_size(root);
    f->t = calloc(cap ? cap : 1, sizeof *f->t);
    if (!f->t) {
        sde_fail(err, errlen, "%s: out of memory for %zu tensors", L, cap);
        goto out;
    }
    const char *k;
    json_t *v;
    json_object_foreach(root, k, v)
    {
        if (!strcmp(k, "__metadata__")) {
            if (parse_metadata(f, v, err, errlen)) goto out;
            continue;
        }
        if (!*k) {
            sde_fail(err, errlen, "%s: a tensor has an empty name", L);
            goto out;
        }
        sde_st_tensor *t = &f->t[f->n];
        t->name = strdup(k);
        if (!t->name) {
            sde_fail(err, errlen, "%s: out of memory", L);
            goto out;
        }
        f->n++;
        if (parse_tensor(f, t, v, err, errlen)) goto out;
    }
    rc = 0;
out:
    json_decref(root);
    return rc;
}

int sde_st_parse(const char *label, const void *buf, size_t len, sde_st_file **out, char *err, size_t errlen)
{
    *out = NULL;
    sde_st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->label = strdup(label ? label : "(buffer)"))) {
        free(f);
        return sde_fail(err, errlen, "%s: out of memory", label ? label : "(buffer)");
    }
    if (parse_image(f, buf, len, err, errlen)) {
        sde_st_free(f);
        return -1;
    }
    *out = f;
    return 0;
}

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcasecmp(s + a - b, suf);
}

/* A PyTorch checkpoint: zip archive (torch >= 1.6) or a bare pickle stream (protocol 2..5). */
static int looks_like_pickle(const uint8_t *b, size_t len)
{
    if (len >= 4 && b[0] == 'P' && b[1] == 'K' && b[2] == 3 && b[3] == 4) return 1;
    return len >= 2 && b[0] == 0x80 && b[1] >= 2 && b[1] <= 5;
}

/* The file mapped read-only at a 2 MB-aligned address, advised for huge pages. Where the file system keeps
 * page cache in large folios (ext4 and xfs on Linux 6.x; a huge-page-advised mapping reads ahead in 2 MB
 * folios), every aligned 2 MB of weights is then one page-table entry shared by every worker mapping the
 * file: a first touch and TLB misses per 2 MB, not per 4 KB (under this project's paravirtualised test
 * machines a 4 KB first touch costs ~2 us, ~0.9 s for an SD 1.5 file). Elsewhere it is an ordinary map. */
static void *st_map(int fd, size_t len)
{
    const size_t huge = (size_t)2 << 20;
    const long pg = sysconf(_SC_PAGESIZE);
    if (len >= huge && pg > 0) {
        uint8_t *res = mmap(NULL, len + huge, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (res != MAP_FAILED) {
            uint8_t *a = (uint8_t *)(((uintptr_t)res + huge - 1) & ~(uintptr_t)(huge - 1));
            void *m = mmap(a, len, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0);
            if (m == MAP_FAILED) {
                int e = errno;
                munmap(res, len + huge);
                errno = e;
                return m;
            }
            uint8_t *end = a + ((len + (size_t)pg - 1) & ~((size_t)pg - 1)), *res_end = res + len + huge;
            if (a > res) munmap(res, (size_t)(a - res));
            if (res_end > end) munmap(end, (size_t)(res_end - end));
#ifdef MADV_HUGEPAGE
            (void)madvise(m, len, MADV_HUGEPAGE); /* advice: kernels without THP say no */
#endif
            return m;
        }
    }
    return mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
}

/* kB of the mapping that starts at addr mapped by 2 MB entries (FilePmdMapped in /proc/self/smaps); -1 when
 * that cannot be read. */
static long st_pmd_kb(const void *addr)
{
    FILE *f = fopen("/proc/self/smaps", "re");
    if (!f) return -1;
    char line[512];
    int in = 0;
    long kb = -1;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        char c;
        if (sscanf(line, "%lx-%lx %c", &lo, &hi, &c) == 3 && strchr(line, '-') < strchr(line, ' ')) {
            if (in) break;
            in = lo == (uintptr_t)addr;
        } else if (in && sscanf(line, "FilePmdMapped: %ld kB", &kb) == 1) {
            break;
        }
    }
    fclose(f);
    return kb;
}

#ifdef MADV_POPULATE_READ
#define ST_MADV_POPULATE_READ MADV_POPULATE_READ
#else
#define ST_MADV_POPULATE_READ 22 /* Linux 5.14 */
#endif

/* st_map() gains nothing while the file is cached in 4 KB folios (as a file just written or read with
 * read() is): its first 32 MB of tensors are entered and, when none came in as 2 MB entries, the file's
 * cached pages that no process maps are dropped (POSIX_FADV_DONTNEED) so the loader's reads bring them back
 * in 2 MB folios. The cost is reading the file from disk once more, at most once per load. */
static void st_huge_cache(int fd, uint8_t *map, size_t len)
{
    const size_t huge = (size_t)2 << 20;
    if (len < 8 * huge || ((uintptr_t)map & (huge - 1))) return;
    size_t probe = (len - huge) & ~(huge - 1);
    if (probe > 16 * huge) probe = 16 * huge;
    if (madvise(map + huge, probe, ST_MADV_POPULATE_READ) || st_pmd_kb(map) != 0) return;
    (void)madvise(map, len, MADV_DONTNEED); /* our own entries keep pages cached: let them go */
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
}

int sde_st_open(const char *path, sde_st_file **out, char *err, size_t errlen)
{
    *out = NULL;
    static const char *const pickle_ext[] = {".ckpt", ".pt", ".pth", ".bin", ".pkl"};
    for (size_t i = 0; i < sizeof pickle_ext / sizeof *pickle_ext; i++)
        if (ends_with(path, pickle_ext[i]))
            return sde_fail(err, errlen,
                            "%s: only safetensors is supported (this is a PyTorch pickle checkpoint; convert "
                            "it to .safetensors)",
                            path);

    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return sde_fail(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st)) {
        int e = errno;
        close(fd);
        return sde_fail(err, errlen, "%s: cannot stat: %s", path, strerror(e));
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return sde_fail(err, errlen, "%s: is a directory, not a .safetensors file", path);
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return sde_fail(err, errlen, "%s: not a regular file", path);
    }
    size_t len = (size_t)st.st_size;
    if (len < 8) {
        close(fd);
        return sde_fail(err, errlen, "%s: file too small (%zu bytes) to be safetensors", path, len);
    }
    void *map = st_map(fd, len);
    int e = errno;
    if (map != MAP_FAILED) st_huge_cache(fd, map, len);
    close(fd);
    if (map == MAP_FAILED)
        return sde_fail(err, errlen, "%s: cannot mmap %zu bytes: %s", path, len, strerror(e));

    sde_st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->label = strdup(path))) {
        free(f);
        munmap(map, len);
        return sde_fail(err, errlen, "%s: out of memory", path);
    }
    f->map = map;
    f->map_len = len;
    if (parse_image(f, map, len, err, errlen)) {
        /* A pickle may start with bytes that read as a plausible length; say what it really is. */
        if (looks_like_pickle(map, len))
            sde_fail(err, errlen,
                     "%s: only safetensors is supported (this is a PyTorch pickle/zip checkpoint; convert it "
                     "to .safetensors)",
                     path);
        sde_st_free(f);
        return -1;
    }
    *out = f;
    return 0;
}
