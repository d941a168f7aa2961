/* checkpoint.c: a model's tensors by canonical LDM name, from one .safetensors file or a diffusers folder
 * (unet/ vae/ text_encoder/ mapped through diffusers_names.c), with float32 views converted once. */
#include "checkpoint.h"
#include "weights.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "diffusers_names.h"
#include "dtype_convert.h"
#include "safetensors.h"

#define MAX_FILES 4
#define NAME_MAX_LEN 1024

/* How a tensor's float32 values are being edited for one job, and how the file's values come back. */
typedef enum {
    EDIT_NONE = 0,
    EDIT_PRIVATE,   /* a private copy (F16/BF16 as stored, else float32) the weight handle points at; dropped
                       afterwards */
    EDIT_CONVERTED, /* the converted float32 copy float views hold; reconverted from the file afterwards */
    EDIT_MAPPED     /* float32 data used in place from the mapping, made writable; saved values put back */
} ck_edit_kind;

typedef struct {
    ck_edit_kind kind;
    sde_weight vals; /* the values being edited (data is writable: the copy, or the mapping made writable) */
    float *saved;    /* EDIT_MAPPED: the original values */
    sde_weight orig; /* the weight handle before the edit */
    int mapped_view; /* sde_ckpt_f32 has handed out the mapping itself as a float view */
} ck_edit;

struct sde_ckpt {
    char *path;
    sde_st_file *files[MAX_FILES]; /* files[0] is the main file: the single file, or unet/ */
    int nfiles;
    int n;
    sde_tensor *t; /* sorted by name, for bsearch */
    float **f32;   /* per tensor: converted copy, or NULL */
    sde_weight *w; /* per tensor: its weight handle (data NULL until first asked for) */
    ck_edit *edit; /* per tensor: a job's LoRA edit in progress (see sde_ckpt_edit_begin) */
    size_t converted;
    char *tokenizer_dir;
    char *prediction_type;
    pthread_mutex_t mu; /* guards f32[] and converted: builders may resolve weights from several threads */
};

static char *join(const char *dir, const char *rel)
{
    size_t a = strlen(dir);
    while (a > 1 && dir[a - 1] == '/')
        a--;
    char *s = malloc(a + 1 + strlen(rel) + 1);
    if (s) sprintf(s, "%.*s/%s", (int)a, dir, rel);
    return s;
}

static int is_file(const char *p)
{
    struct stat st;
    return !stat(p, &st) && S_ISREG(st.st_mode);
}

static int is_dir(const char *p)
{
    struct stat st;
    return !stat(p, &st) && S_ISDIR(st.st_mode);
}

void sde_ckpt_free(sde_ckpt *c)
{
    if (!c) return;
    for (int i = 0; c->edit && i < c->n; i++)
        sde_ckpt_edit_end(c, &c->t[i]);
    for (int i = 0; i < c->n; i++) {
        free((char *)c->t[i].name);
        free(c->f32 ? c->f32[i] : NULL);
    }
    free(c->t);
    free(c->f32);
    free(c->w);
    free(c->edit);
    for (int i = 0; i < c->nfiles; i++)
        sde_st_free(c->files[i]);
    free(c->tokenizer_dir);
    free(c->prediction_type);
    free(c->path);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static int cmp_tensor(const void *a, const void *b)
{
    return strcmp(((const sde_tensor *)a)->name, ((const sde_tensor *)b)->name);
}

/* The canonical name of a single-file tensor: variants some trainers and older tools write are folded
 * onto the plain LDM names. Returns non-zero when the result does not fit. */
static int single_file_name(const char *nm, int bare_unet, char *buf, size_t len)
{
    if (!strncmp(nm, "state_dict.", 11) && nm[11]) nm += 11; /* {"state_dict": {...}} flattened */
    const char *pre = "";
    if (bare_unet && !strncmp(nm, "diffusion_model.", 16)) pre = "model.";
    /* transformers < 4.x CLIPTextModel had no text_model level: cond_stage_model.transformer.encoder... */
    static const char *const old_clip[] = {"embeddings.", "encoder.", "final_layer_norm."};
    char tmp[NAME_MAX_LEN];
    if (!strncmp(nm, "cond_stage_model.transformer.", 29))
        for (int i = 0; i < 3; i++)
            if (!strncmp(nm + 29, old_clip[i], strlen(old_clip[i]))) {
                if (snprintf(tmp, sizeof tmp, "cond_stage_model.transformer.text_model.%s", nm + 29) >=
                    (int)sizeof tmp)
                    return -1;
                nm = tmp;
                break;
            }
    int n = snprintf(buf, len, "%s%s", pre, nm);
    return n < 0 || (size_t)n >= len;
}

/* Adds every tensor of f under a canonical name. kind: 0 single file, 1 unet, 2 vae, 3 text encoder,
 * 4 SDXL's second text encoder. */
static int add_file(sde_ckpt *c, sde_st_file *f, int kind, char *err, size_t errlen)
{
    sde_dn_unet_layout L;
    int vae_levels = 0;
    const char **names = malloc((f->n ? f->n : 1) * sizeof *names);
    if (!names) return sde_fail(err, errlen, "%s: out of memory", f->label);
    for (int i = 0; i < f->n; i++)
        names[i] = f->t[i].name;
    int rc = 0;
    if (kind == 1) {
        char e2[512];
        if (sde_dn_unet_layout_scan(names, f->n, &L, e2, sizeof e2))
            rc = sde_fail(err, errlen, "%s: %s", f->label, e2);
    } else if (kind == 2) {
        vae_levels = sde_dn_vae_levels(names, f->n);
    }
    free(names);
    if (rc) return rc;

    /* Files where every UNet name lacks the leading "model." (UNet-only extracts) get it back. */
    int bare_unet = 0;
    if (kind == 0) {
        int plain = 0;
        for (int i = 0; i < f->n; i++) {
            const char *s = f->t[i].name;
            if (!strncmp(s, "state_dict.", 11)) s += 11;
            plain |= !strncmp(s, "model.diffusion_model.", 22);
            bare_unet |= !strncmp(s, "diffusion_model.", 16);
        }
        bare_unet &= !plain;
    }

    sde_tensor *nt = realloc(c->t, (size_t)(c->n + f->n) * sizeof *nt);
    if (!nt) return sde_fail(err, errlen, "%s: out of memory", f->label);
    c->t = nt;
    for (int i = 0; i < f->n; i++) {
        const sde_st_tensor *s = &f->t[i];
        char buf[NAME_MAX_LEN];
        int bad = 0;
        switch (kind) {
        case 0:
            bad = single_file_name(s->name, bare_unet, buf, sizeof buf);
            break;
        case 1:
            bad = sde_dn_unet_to_ldm(&L, s->name, buf, sizeof buf);
            break;
        case 2:
            bad = sde_dn_vae_to_ldm(vae_levels, s->name, buf, sizeof buf);
            break;
        case 4:
            bad = sde_dn_text2_to_ldm(s->name, buf, sizeof buf);
            break;
        default:
            bad = sde_dn_text_to_ldm(s->name, buf, sizeof buf);
            break;
        }
        if (bad)
            return sde_fail(err, errlen, "%s: tensor \"%s\": %s", f->label, s->name,
                            kind ? "unknown diffusers name (no single-file LDM equivalent)"
                                 : "name too long");
        sde_tensor *t = &c->t[c->n];
        memset(t, 0, sizeof *t);
        if (!(t->name = strdup(buf))) return sde_fail(err, errlen, "%s: out of memory", f->label);
        c->n++;
        t->file = f->label;
        t->dtype = s->dtype;
        t->ndim = s->ndim;
        memcpy(t->shape, s->shape, sizeof t->shape);
        t->data = s->data;
        t->nbytes = s->nbytes;
    }
    return 0;
}

/* Sorts by name and rejects two stored names that map to one canonical name. */
static int index_names(sde_ckpt *c, char *err, size_t errlen)
{
    qsort(c->t, (size_t)c->n, sizeof *c->t, cmp_tensor);
    for (int i = 1; i < c->n; i++)
        if (!strcmp(c->t[i].name, c->t[i - 1].name))
            return sde_fail(err, errlen, "%s: tensor \"%s\" appears twice (in %s and %s, after name mapping)",
                            c->path, c->t[i].name, c->t[i - 1].file, c->t[i].file);
    c->f32 = calloc(c->n ? (size_t)c->n : 1, sizeof *c->f32);
    c->w = calloc(c->n ? (size_t)c->n : 1, sizeof *c->w);
    c->edit = calloc(c->n ? (size_t)c->n : 1, sizeof *c->edit);
    return c->f32 && c->w && c->edit ? 0 : sde_fail(err, errlen, "%s: out of memory", c->path);
}

/* dir/sub/base.safetensors, else dir/sub/base.fp16.safetensors (full precision preferred: aligned F32
 * is used in place, so it costs no converted copy). Returns the path or NULL with err filled. */
static char *find_component(const char *dir, const char *sub, const char *base, char *err, size_t errlen)
{
    static const char *const ext[] = {".safetensors", ".fp16.safetensors"};
    char rel[256];
    for (int i = 0; i < 2; i++) {
        snprintf(rel, sizeof rel, "%s/%s%s", sub, base, ext[i]);
        char *p = join(dir, rel);
        if (p && is_file(p)) return p;
        free(p);
    }
    /* diffusers names pickles diffusion_pytorch_model.bin, transformers names them pytorch_model.bin. */
    static const char *const pickles[] = {"%s/%s.bin", "%s/%s.fp16.bin", "%s/pytorch_model.bin",
                                          "%s/pytorch_model.fp16.bin"};
    for (int i = 0; i < 4; i++) {
        snprintf(rel, sizeof rel, pickles[i], sub, base);
        char *bin = join(dir, rel);
        int found = bin && is_file(bin);
        free(bin);
        if (found) {
            sde_fail(err, errlen, "%s: only safetensors is supported (found %s, a PyTorch pickle)", dir, rel);
            return NULL;
        }
    }
    sde_fail(err, errlen, "%s: diffusers folder has no %s/%s.safetensors (or .fp16.safetensors)", dir, sub,
             base);
    return NULL;
}

static int read_prediction_type(sde_ckpt *c, char *err, size_t errlen)
{
    char *p = join(c->path, "scheduler/scheduler_config.json");
    if (!p) return sde_fail(err, errlen, "%s: out of memory", c->path);
    if (!is_file(p)) {
        free(p);
        return 0; /* diffusers' default (epsilon) applies; the engine decides */
    }
    json_error_t je;
    json_t *root = json_load_file(p, 0, &je);
    int rc = 0;
    if (!root) {
        rc = sde_fail(err, errlen, "%s: not valid JSON: %s (line %d)", p, je.text, je.line);
    } else if (!json_is_object(root)) {
        rc = sde_fail(err, errlen, "%s: not a JSON object", p);
    } else {
        json_t *v = json_object_get(root, "prediction_type");
        if (v && !json_is_string(v))
            rc = sde_fail(err, errlen, "%s: \"prediction_type\" is not a string", p);
        else if (v && !(c->prediction_type = strdup(json_string_value(v))))
            rc = sde_fail(err, errlen, "%s: out of memory", p);
    }
    json_decref(root);
    free(p);
    return rc;
}

static int open_folder(sde_ckpt *c, char *err, size_t errlen)
{
    const char *dir = c->path;
    char *mi = join(dir, "model_index.json"), *unet = join(dir, "unet");
    int diffusers = mi && unet && (is_file(mi) || is_dir(unet));
    free(mi);
    free(unet);
    if (!diffusers)
        return sde_fail(err, errlen,
                        "%s: is a directory but not a diffusers folder (no model_index.json or unet/); "
                        "give a .safetensors file or a diffusers folder",
                        dir);

    static const char *const comp[][2] = {
        {"unet", "diffusion_pytorch_model"}, {"vae", "diffusion_pytorch_model"}, {"text_encoder", "model"}};
    for (int k = 0; k < 3; k++) {
        char *p = find_component(dir, comp[k][0], comp[k][1], err, errlen);
        if (!p) return -1;
        int rc = sde_st_open(p, &c->files[c->nfiles], err, errlen);
        free(p);
        if (rc) return -1;
        c->nfiles++;
        if (add_file(c, c->files[k], k + 1, err, errlen)) return -1;
    }
    /* SDXL: text_encoder_2/ (bigG); its tokenizer_2/ is CLIP's BPE again, so tokenizer/ serves both */
    char *te2 = join(dir, "text_encoder_2");
    int has_te2 = te2 && is_dir(te2);
    free(te2);
    if (has_te2) {
        char *p = find_component(dir, "text_encoder_2", "model", err, errlen);
        if (!p) return -1;
        int rc = sde_st_open(p, &c->files[c->nfiles], err, errlen);
        free(p);
        if (rc) return -1;
        c->nfiles++;
        if (add_file(c, c->files[c->nfiles - 1], 4, err, errlen)) return -1;
    }
    char *tok = join(dir, "tokenizer"), *v = tok ? join(tok, "vocab.json") : NULL,
         *m = tok ? join(tok, "merges.txt") : NULL;
    if (v && m && is_file(v) && is_file(m)) {
        c->tokenizer_dir = tok;
        tok = NULL;
    }
    free(tok);
    free(v);
    free(m);
    return read_prediction_type(c, err, errlen);
}

int sde_ckpt_open(const char *path, sde_ckpt **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!path || !*path) return sde_fail(err, errlen, "no model path given");
    sde_ckpt *c = calloc(1, sizeof *c);
    if (!c || !(c->path = strdup(path))) {
        free(c);
        return sde_fail(err, errlen, "%s: out of memory", path);
    }
    pthread_mutex_init(&c->mu, NULL);
    int rc;
    if (is_dir(path)) {
        rc = open_folder(c, err, errlen);
    } else {
        rc = sde_st_open(path, &c->files[0], err, errlen);
        if (!rc) {
            c->nfiles = 1;
            rc = add_file(c, c->files[0], 0, err, errlen);
        }
    }
    if (!rc) rc = index_names(c, err, errlen);
    if (rc) {
        sde_ckpt_free(c);
        return -1;
    }
    *out = c;
    return 0;
}

static int find_index(const sde_ckpt *c, const char *name)
{
    int lo = 0, hi = c->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2, r = strcmp(c->t[mid].name, name);
        if (!r) return mid;
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

const sde_tensor *sde_ckpt_find(const sde_ckpt *c, const char *name)
{
    if (!c || !name) return NULL;
    int i = find_index(c, name);
    return i < 0 ? NULL : &c->t[i];
}

int sde_ckpt_count(const sde_ckpt *c)
{
    return c ? c->n : 0;
}

const sde_tensor *sde_ckpt_at(const sde_ckpt *c, int i)
{
    return c && i >= 0 && i < c->n ? &c->t[i] : NULL;
}

static void shape_str(char *buf, size_t len, int ndim, const int64_t *shape)
{
    size_t o = 0;
    o += (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (o < len) snprintf(buf + o, len - o, "]");
}

/* Drops the mapped pages wholly inside [p, p+n): the copy replaces them. The mapping is private and
 * read-only, so a later read of the raw data just faults the file back in. */
static void drop_pages(const void *p, size_t n)
{
    long pg = sysconf(_SC_PAGESIZE);
    if (pg <= 0) return;
    uintptr_t a = ((uintptr_t)p + (uintptr_t)pg - 1) & ~((uintptr_t)pg - 1),
              e = ((uintptr_t)p + n) & ~((uintptr_t)pg - 1);
    if (e > a) madvise((void *)a, e - a, MADV_DONTNEED);
}

/* Index of tensor name after checking it has exactly shape[0..ndim) (see sde_ckpt_f32) and a
 * floating-point dtype, or -1 with err filled. */
static int find_shaped(const sde_ckpt *c, const char *name, int ndim, const int64_t *shape, char *err,
                       size_t errlen)
{
    if (!c || !name) return sde_fail(err, errlen, "sde_ckpt_f32: no checkpoint or name");
    int idx = find_index(c, name);
    if (idx < 0) return sde_fail(err, errlen, "%s: tensor \"%s\": not found", c->path, name);
    const sde_tensor *t = &c->t[idx];
    if (ndim < 0 || ndim > SDE_MAX_DIMS || (ndim && !shape))
        return sde_fail(err, errlen, "%s: tensor \"%s\": invalid expected rank %d", t->file, name, ndim);
    int na = t->ndim, nb = ndim;
    while (na > 0 && t->shape[na - 1] == 1)
        na--;
    while (nb > 0 && shape[nb - 1] == 1)
        nb--;
    int same = na == nb;
    for (int i = 0; same && i < na; i++)
        same = t->shape[i] == shape[i];
    if (!same) {
        char a[160], b[160];
        shape_str(a, sizeof a, t->ndim, t->shape);
        shape_str(b, sizeof b, ndim, shape);
        return sde_fail(err, errlen, "%s: tensor \"%s\": shape %s does not match expected %s", t->file, name,
                        a, b);
    }
    if (t->dtype != SDE_DT_F32 && t->dtype != SDE_DT_F16 && t->dtype != SDE_DT_BF16 && t->dtype != SDE_DT_F64)
        return sde_fail(err, errlen, "%s: tensor \"%s\": dtype %s is not a floating-point type", t->file,
                        name, sde_st_dtype_name(t->dtype));
    return idx;
}

static size_t numel(const sde_tensor *t)
{
    size_t es = sde_st_dtype_size(t->dtype);
    return es ? t->nbytes / es : 0;
}

/* bytes (0 is fine) of memory for a tensor copy, or NULL. Big copies go on 2 MB-aligned transparent huge
 * pages: converting a whole SD checkpoint otherwise spends most of its time in a million 4 KB page faults. */
static void *alloc_copy(size_t bytes)
{
    void *mem = NULL;
    const size_t huge = (size_t)2 << 20;
    if (!bytes) bytes = 64;
    if (posix_memalign(&mem, bytes >= huge ? huge : 64, bytes)) return NULL;
    if (bytes >= huge) madvise(mem, bytes & ~(huge - 1), MADV_HUGEPAGE);
    return mem;
}

/* The float32 copy of tensor idx, made on first use; NULL when out of memory. Caller holds c->mu. */
static float *converted_locked(sde_ckpt *c, int idx)
{
    const sde_tensor *t = &c->t[idx];
    size_t n = numel(t);
    float *f = c->f32[idx];
    if (!f) {
        if (!(f = alloc_copy(n * sizeof(float)))) return NULL;
        sde_cvt_to_f32(t->dtype, t->data, n, f);
        drop_pages(t->data, t->nbytes);
        c->f32[idx] = f;
        c->converted += n * sizeof(float);
    }
    return f;
}

const float *sde_ckpt_f32(sde_ckpt *c, const char *name, int ndim, const int64_t *shape, char *err,
                          size_t errlen)
{
    int idx = find_shaped(c, name, ndim, shape, err, errlen);
    if (idx < 0) return NULL;
    const sde_tensor *t = &c->t[idx];
    if (t->dtype == SDE_DT_F32 && ((uintptr_t)t->data & 3) == 0) {
        pthread_mutex_lock(&c->mu);
        c->edit[idx].mapped_view = 1;
        pthread_mutex_unlock(&c->mu);
        return (const float *)t->data;
    }
    pthread_mutex_lock(&c->mu);
    float *f = converted_locked(c, idx);
    pthread_mutex_unlock(&c->mu);
    if (!f)
        sde_fail(err, errlen, "%s: tensor \"%s\": out of memory converting %zu %s values to float32", t->file,
                 name, numel(t), sde_st_dtype_name(t->dtype));
    return f;
}

const sde_weight *sde_ckpt_weight(sde_ckpt *c, const char *name, int ndim, const int64_t *shape, char *err,
                                  size_t errlen)
{
    int idx = find_shaped(c, name, ndim, shape, err, errlen);
    if (idx < 0) return NULL;
    const sde_tensor *t = &c->t[idx];
    sde_weight *w = &c->w[idx];
    pthread_mutex_lock(&c->mu);
    if (!w->data) {
        w->n = numel(t);
        /* F16 and BF16 stay in the mapped file (the backend widens them per op): several workers on one
         * host share those pages, and loading converts nothing */
        w->type = t->dtype == SDE_DT_F16 ? SDE_W_F16 : t->dtype == SDE_DT_BF16 ? SDE_W_BF16 : SDE_W_F32;
        if (w->type != SDE_W_F32 || (t->dtype == SDE_DT_F32 && ((uintptr_t)t->data & 3) == 0))
            w->data = t->data;
        else
            w->data = converted_locked(c, idx);
        ck_edit *e = &c->edit[idx];
        if (w->data && e->kind != EDIT_NONE) { /* first asked for during an edit: the edited values */
            e->orig = *w;
            w->data = e->vals.data;
            w->type = e->vals.type;
        }
    }
    pthread_mutex_unlock(&c->mu);
    if (!w->data) {
        sde_fail(err, errlen, "%s: tensor \"%s\": out of memory converting %zu %s values to float32", t->file,
                 name, numel(t), sde_st_dtype_name(t->dtype));
        return NULL;
    }
    return w;
}

const sde_weight *sde_ckpt_edit_begin(sde_ckpt *c, const sde_tensor *t, char *err, size_t errlen)
{
    int idx = c && t ? (int)(t - c->t) : -1;
    if (idx < 0 || idx >= c->n) {
        sde_fail(err, errlen, "sde_ckpt_edit_begin: not a tensor of this checkpoint");
        return NULL;
    }
    if (t->dtype != SDE_DT_F32 && t->dtype != SDE_DT_F16 && t->dtype != SDE_DT_BF16 &&
        t->dtype != SDE_DT_F64) {
        sde_fail(err, errlen, "%s: tensor \"%s\": dtype %s is not a floating-point type", t->file, t->name,
                 sde_st_dtype_name(t->dtype));
        return NULL;
    }
    const size_t n = numel(t);
    pthread_mutex_lock(&c->mu);
    ck_edit *e = &c->edit[idx];
    sde_weight *w = &c->w[idx];
    if (e->kind != EDIT_NONE) goto done;
    e->vals.n = n;
    e->vals.type = SDE_W_F32;
    if (c->f32[idx]) {
        /* float views hold the converted copy: edit it where they see it */
        e->kind = EDIT_CONVERTED;
        e->vals.data = c->f32[idx];
    } else if (e->mapped_view) {
        /* float views hold the mapping itself: make its pages writable (they become private copies) and
         * keep the values, since the file cannot give them back through the view any more */
        long pg = sysconf(_SC_PAGESIZE);
        uintptr_t a = (uintptr_t)t->data & ~(uintptr_t)(pg - 1);
        float *saved = malloc(n * sizeof(float));
        if (!saved || mprotect((void *)a, (uintptr_t)t->data + t->nbytes - a, PROT_READ | PROT_WRITE)) {
            free(saved);
            goto fail;
        }
        memcpy(saved, t->data, n * sizeof(float));
        e->kind = EDIT_MAPPED;
        e->saved = saved;
        e->vals.data = t->data;
    } else {
        /* only the weight handle (if anyone) reads it: a private copy for this job, the file untouched.
         * F16 and BF16 stay as stored (half the memory of float32, and a copy instead of a conversion). */
        const int as_stored = t->dtype == SDE_DT_F16 || t->dtype == SDE_DT_BF16;
        void *copy = alloc_copy(as_stored ? t->nbytes : n * sizeof(float));
        if (!copy) goto fail;
        if (as_stored) {
            memcpy(copy, t->data, t->nbytes);
            e->vals.type = t->dtype == SDE_DT_F16 ? SDE_W_F16 : SDE_W_BF16;
        } else {
            sde_cvt_to_f32(t->dtype, t->data, n, copy);
        }
        drop_pages(t->data, t->nbytes); /* the copy replaces them for the job */
        e->kind = EDIT_PRIVATE;
        e->vals.data = copy;
    }
    e->orig = *w;
    if (w->data) {
        w->data = e->vals.data;
        w->type = e->vals.type;
        w->gen++; /* a backend's copy of the values is stale now */
    }
done:
    pthread_mutex_unlock(&c->mu);
    return &e->vals;
fail:
    pthread_mutex_unlock(&c->mu);
    sde_fail(err, errlen, "%s: tensor \"%s\": out of memory making %zu values writable", t->file, t->name, n);
    return NULL;
}

int sde_ckpt_edit_add(sde_ckpt *c, const sde_tensor *t, size_t off, const float *delta, size_t n, char *err,
                      size_t errlen)
{
    int idx = c && t ? (int)(t - c->t) : -1;
    if (idx < 0 || idx >= c->n)
        return sde_fail(err, errlen, "sde_ckpt_edit_add: not a tensor of this checkpoint");
    pthread_mutex_lock(&c->mu);
    const ck_edit e = c->edit[idx];
    pthread_mutex_unlock(&c->mu);
    if (e.kind == EDIT_NONE || off > e.vals.n || n > e.vals.n - off)
        return sde_fail(err, errlen, "%s: tensor \"%s\": %s", t->file, t->name,
                        e.kind == EDIT_NONE ? "not being edited" : "edit outside the tensor");
    /* the type each sum is rounded to: the file's, as the peer adds into its f16/bf16 weights */
    const sde_dtype rt = t->dtype == SDE_DT_F16 || t->dtype == SDE_DT_BF16 ? t->dtype : SDE_DT_F32;
    enum { CHUNK = 2048 }; /* in L1 */
    float sum[CHUNK];
    uint16_t h[CHUNK];
    for (size_t i = 0, m; i < n; i += m) {
        m = n - i < CHUNK ? n - i : CHUNK;
        if (e.vals.type == SDE_W_F32) {
            float *v = (float *)e.vals.data + off + i;
            for (size_t j = 0; j < m; j++)
                sum[j] = v[j] + delta[i + j];
            if (rt == SDE_DT_F32) {
                memcpy(v, sum, m * sizeof(float));
            } else { /* float32 values of a 16-bit file: rounded to values the file's type holds */
                sde_cvt_from_f32(rt, sum, m, h);
                sde_cvt_to_f32(rt, h, m, v);
            }
        } else {
            uint16_t *v = (uint16_t *)e.vals.data + off + i;
            sde_cvt_to_f32(rt, v, m, sum);
            for (size_t j = 0; j < m; j++)
                sum[j] += delta[i + j];
            sde_cvt_from_f32(rt, sum, m, v);
        }
    }
    pthread_mutex_lock(&c->mu);
    c->w[idx].gen++; /* the values changed where they are */
    pthread_mutex_unlock(&c->mu);
    return 0;
}

void sde_ckpt_edit_end(sde_ckpt *c, const sde_tensor *t)
{
    int idx = c && t ? (int)(t - c->t) : -1;
    if (idx < 0 || idx >= c->n) return;
    pthread_mutex_lock(&c->mu);
    ck_edit *e = &c->edit[idx];
    sde_weight *w = &c->w[idx];
    const size_t n = numel(t);
    if (e->kind == EDIT_CONVERTED) {
        sde_cvt_to_f32(t->dtype, t->data, n, (float *)e->vals.data);
    } else if (e->kind == EDIT_MAPPED) {
        memcpy((void *)e->vals.data, e->saved, n * sizeof(float));
        free(e->saved);
    }
    if (e->orig.data) { /* a handle not yet handed out stays unmade */
        const unsigned gen = w->gen;
        *w = e->orig;
        w->gen = gen + 1;
    }
    if (e->kind == EDIT_PRIVATE) free((void *)e->vals.data);
    int mv = e->mapped_view;
    memset(e, 0, sizeof *e);
    e->mapped_view = mv;
    pthread_mutex_unlock(&c->mu);
}

const char *sde_ckpt_meta(const sde_ckpt *c, const char *key)
{
    return c && c->nfiles ? sde_st_meta(c->files[0], key) : NULL;
}

const char *sde_ckpt_tokenizer_dir(const sde_ckpt *c)
{
    return c ? c->tokenizer_dir : NULL;
}

const char *sde_ckpt_prediction_type(const sde_ckpt *c)
{
    return c ? c->prediction_type : NULL;
}

const char *sde_ckpt_path(const sde_ckpt *c)
{
    return c ? c->path : NULL;
}

size_t sde_ckpt_converted_bytes(const sde_ckpt *c)
{
    if (!c) return 0;
    pthread_mutex_lock((pthread_mutex_t *)&c->mu);
    size_t n = c->converted;
    pthread_mutex_unlock((pthread_mutex_t *)&c->mu);
    return n;
}

int sde_ckpt_short_hash(const char *path, char out[11], char *err, size_t errlen)
{
    out[0] = 0;
    struct stat st;
    if (!path || stat(path, &st))
        return sde_fail(err, errlen, "%s: cannot stat: %s", path ? path : "(null)", strerror(errno));
    if (S_ISDIR(st.st_mode)) return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return sde_fail(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        close(fd);
        return sde_fail(err, errlen, "%s: not a regular file", path);
    }
    size_t len = (size_t)st.st_size;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md || !EVP_DigestInit_ex(md, EVP_sha256(), NULL)) {
        EVP_MD_CTX_free(md);
        close(fd);
        return sde_fail(err, errlen, "%s: cannot start sha256", path);
    }
    int ok = 1;
    if (len) {
        uint8_t *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            int e = errno;
            EVP_MD_CTX_free(md);
            close(fd);
            return sde_fail(err, errlen, "%s: cannot mmap: %s", path, strerror(e));
        }
        madvise(map, len, MADV_SEQUENTIAL);
        /* Hash in chunks and drop each from the mapping, so hashing a 2 GB file does not leave it resident.
         */
        const size_t chunk = (size_t)64 << 20;
        for (size_t o = 0; ok && o < len; o += chunk) {
            size_t n = len - o < chunk ? len - o : chunk;
            ok = EVP_DigestUpdate(md, map + o, n);
            madvise(map + o, n, MADV_DONTNEED);
        }
        munmap(map, len);
    }
    close(fd);
    uint8_t d[EVP_MAX_MD_SIZE];
    ok = ok && EVP_DigestFinal_ex(md, d, NULL);
    EVP_MD_CTX_free(md);
    if (!ok) return sde_fail(err, errlen, "%s: sha256 failed", path);
    for (int i = 0; i < 5; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
    return 0;
}
