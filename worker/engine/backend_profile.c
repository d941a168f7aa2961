/* backend_profile.c: SDW_PROFILE's backend wrapper: every op forwarded to the wrapped backend and timed, the
 * time filed per op kind and per section (UNet/VAE levels, models) for a table at the end of a generation. */
#include "backend_profile.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Weight handles are whatever the backend's upload() returns; conv's descriptor names the type, so the
 * wrapper follows it without spelling it. */
typedef __typeof__(((sde_be_conv *)0)->wt) prof_w;

enum {
    K_CONV,
    K_LINEAR,
    K_ATTENTION,
    K_GN_COEFFS,
    K_GN_APPLY,
    K_LAYERNORM,
    K_GEGLU,
    K_ACT,
    K_ADD,
    K_EMBED,
    K_COPY,
    K_RESIZE,
    K_WRITE,
    K_READ,
    K_ALLOC,
    K_FREE,
    K_UPLOAD,
    K_SYNC,
    N_KINDS
};
static const char *const kind_name[N_KINDS] = {
    "conv",  "linear", "attention", "gn_coeffs", "gn_apply", "layernorm", "geglu", "act",    "add",
    "embed", "copy",   "resize",    "write",     "read",     "alloc",     "free",  "upload", "sync"};

#define MAX_SECTIONS 96
#define MAX_PENDING 128 /* UNet blocks of one forward (unet.c has at most 64) */
#define NAME_LEN 32
#define MAX_SHAPES 160 /* distinct product shapes of one generation (SD 1.5's UNet+VAE have under 100) */
#define SHOW_SHAPES 30

typedef struct {
    double t;           /* wall seconds inside */
    double op[N_KINDS]; /* of which in each op kind */
    long entries;
} prof_acc;

typedef struct {
    char name[NAME_LEN];
    prof_acc a;
} prof_section;

typedef struct {
    int level, push, pop;
    prof_acc a;
} prof_block;

/* One shape of a product op (conv, linear, attention): its dimensions as the report prints them. */
typedef struct {
    int kind;
    int d[7];
    long calls;
    double t, flop;
} prof_shape;

typedef struct {
    sde_backend super; /* first: the models hold a sde_backend * */
    sde_backend *in;
    double op_t[N_KINDS];
    long op_calls[N_KINDS];
    double op_flop[N_KINDS]; /* multiply-adds counted as 2 FLOP, as the products are defined */
    prof_shape shp[MAX_SHAPES];
    int nshp;
    prof_section sec[MAX_SECTIONS];
    int nsec;
    prof_block blk[MAX_PENDING];
    int nblk;
    prof_acc *cur; /* the section or block being timed, or NULL */
    double cur_start;
    double last_dt; /* the last timed op's seconds, for shape_add */
} prof_be;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void account(prof_be *P, int k, double t0)
{
    double dt = now_s() - t0;
    P->last_dt = dt;
    P->op_t[k] += dt;
    P->op_calls[k]++;
    if (P->cur) P->cur->op[k] += dt;
}

/* Files the op just timed (its time, and flop) under its shape d[0..6]; shapes past the table's end are
 * counted in the op kind only. */
static void shape_add(prof_be *P, int k, const int d[7], double flop)
{
    const double dt = P->last_dt;
    P->op_flop[k] += flop;
    prof_shape *s = NULL;
    for (int i = 0; i < P->nshp && !s; i++)
        if (P->shp[i].kind == k && !memcmp(P->shp[i].d, d, sizeof P->shp[i].d)) s = &P->shp[i];
    if (!s && P->nshp < MAX_SHAPES) {
        s = &P->shp[P->nshp++];
        memset(s, 0, sizeof *s);
        s->kind = k;
        memcpy(s->d, d, sizeof s->d);
    }
    if (!s) return;
    s->calls++;
    s->t += dt;
    s->flop += flop;
}

/* Each op: forward, wait for it (a queueing backend would otherwise charge it to whichever op syncs), time.
 */
#define P_OF(be) ((prof_be *)(be))
#define TIMED(be, k, call)                                                                                   \
    do {                                                                                                     \
        prof_be *P = P_OF(be);                                                                               \
        double t0_ = now_s();                                                                                \
        call;                                                                                                \
        P->in->sync(P->in);                                                                                  \
        account(P, k, t0_);                                                                                  \
    } while (0)

static sde_buf *p_alloc(sde_backend *be, size_t bytes, char *err, size_t errlen)
{
    sde_buf *b;
    TIMED(be, K_ALLOC, b = P->in->alloc(P->in, bytes, err, errlen));
    return b;
}

static void p_free(sde_backend *be, sde_buf *buf)
{
    TIMED(be, K_FREE, P->in->free(P->in, buf));
}

static const float *p_upload(sde_backend *be, const float *host, size_t n)
{
    const float *w;
    TIMED(be, K_UPLOAD, w = P->in->upload(P->in, host, n));
    return w;
}

static prof_w p_upload_weight(sde_backend *be, prof_w host)
{
    prof_w w;
    TIMED(be, K_UPLOAD, w = P->in->upload_weight(P->in, host));
    return w;
}

static void p_write(sde_backend *be, sde_ten dst, const float *host, size_t n)
{
    TIMED(be, K_WRITE, P->in->write(P->in, dst, host, n));
}

static void p_read(sde_backend *be, float *host, sde_ten src, size_t n)
{
    TIMED(be, K_READ, P->in->read(P->in, host, src, n));
}

static void p_sync(sde_backend *be)
{
    TIMED(be, K_SYNC, (void)0);
}

static void p_linear(sde_backend *be, sde_ten x, int n, int in, prof_w w, const float *b, int out, sde_ten y,
                     int flags)
{
    TIMED(be, K_LINEAR, P->in->linear(P->in, x, n, in, w, b, out, y, flags));
    const int d[7] = {n, in, out, flags, (int)w->type};
    shape_add(P_OF(be), K_LINEAR, d, 2.0 * n * in * out);
}

static size_t p_conv_scratch(sde_backend *be, const sde_be_conv *c, size_t budget)
{
    return P_OF(be)->in->conv_scratch(P_OF(be)->in, c, budget);
}

static void p_conv(sde_backend *be, const sde_be_conv *c, sde_ten scratch, size_t scratch_bytes)
{
    TIMED(be, K_CONV, P->in->conv(P->in, c, scratch, scratch_bytes));
    const int oh = sde_be_conv_out_h(c), ow = sde_be_conv_out_w(c);
    const int d[7] = {
        c->batch, c->cin,   c->upsample ? 2 * c->h : c->h, c->upsample ? 2 * c->w : c->w, c->cout,
        c->k,     c->stride};
    shape_add(P_OF(be), K_CONV, d, 2.0 * c->batch * oh * ow * c->cout * c->cin * c->k * c->k);
}

static size_t p_attention_scratch(sde_backend *be, int nq, int nk, int hd)
{
    return P_OF(be)->in->attention_scratch(P_OF(be)->in, nq, nk, hd);
}

static void p_attention(sde_backend *be, sde_ten q, int q_stride, sde_ten k, int k_stride, sde_ten v,
                        int v_stride, int nq, int nk, int heads, int hd, int causal, sde_ten out,
                        int out_stride, sde_ten scratch)
{
    TIMED(be, K_ATTENTION,
          P->in->attention(P->in, q, q_stride, k, k_stride, v, v_stride, nq, nk, heads, hd, causal, out,
                           out_stride, scratch));
    const int d[7] = {nq, nk, heads, hd, causal};
    shape_add(P_OF(be), K_ATTENTION, d, 4.0 * nq * nk * heads * hd);
}

static void p_gn_coeffs(sde_backend *be, sde_ten x, int c, int batch, size_t hw, int groups, const float *g,
                        const float *b, float eps, sde_ten scale, sde_ten shift)
{
    TIMED(be, K_GN_COEFFS, P->in->gn_coeffs(P->in, x, c, batch, hw, groups, g, b, eps, scale, shift));
}

static void p_gn_apply(sde_backend *be, sde_ten x, int c, int batch, size_t hw, sde_ten scale, sde_ten shift,
                       int silu, sde_ten y)
{
    TIMED(be, K_GN_APPLY, P->in->gn_apply(P->in, x, c, batch, hw, scale, shift, silu, y));
}

static void p_layernorm(sde_backend *be, sde_ten x, int n, int dim, const float *g, const float *b, float eps,
                        sde_ten y)
{
    TIMED(be, K_LAYERNORM, P->in->layernorm(P->in, x, n, dim, g, b, eps, y));
}

static void p_geglu(sde_backend *be, sde_ten x, int n, int inner, sde_ten y)
{
    TIMED(be, K_GEGLU, P->in->geglu(P->in, x, n, inner, y));
}

static void p_act(sde_backend *be, sde_ten x, size_t n, int kind)
{
    TIMED(be, K_ACT, P->in->act(P->in, x, n, kind));
}

static void p_add(sde_backend *be, sde_ten y, sde_ten x, size_t n)
{
    TIMED(be, K_ADD, P->in->add(P->in, y, x, n));
}

static void p_embed(sde_backend *be, prof_w table, const int32_t *ids, int n, int dim, const float *pos,
                    sde_ten y)
{
    TIMED(be, K_EMBED, P->in->embed(P->in, table, ids, n, dim, pos, y));
}

static void p_copy(sde_backend *be, sde_ten dst, sde_ten src, size_t n)
{
    TIMED(be, K_COPY, P->in->copy(P->in, dst, src, n));
}

static void p_resize_nearest(sde_backend *be, sde_ten x, int planes, int ih, int iw, int oh, int ow,
                             sde_ten y)
{
    TIMED(be, K_RESIZE, P->in->resize_nearest(P->in, x, planes, ih, iw, oh, ow, y));
}

sde_backend *sde_prof_wrap(sde_backend *inner)
{
    prof_be *P = calloc(1, sizeof *P);
    if (!P) return NULL;
    P->in = inner;
    P->super = (sde_backend){.name = inner->name,
                             .alloc = p_alloc,
                             .free = p_free,
                             .upload = p_upload,
                             .upload_weight = p_upload_weight,
                             .write = p_write,
                             .read = p_read,
                             .sync = p_sync,
                             .linear = p_linear,
                             .conv_scratch = p_conv_scratch,
                             .conv = p_conv,
                             .attention_scratch = p_attention_scratch,
                             .attention = p_attention,
                             .gn_coeffs = p_gn_coeffs,
                             .gn_apply = p_gn_apply,
                             .layernorm = p_layernorm,
                             .geglu = p_geglu,
                             .act = p_act,
                             .add = p_add,
                             .embed = p_embed,
                             .copy = p_copy,
                             .resize_nearest = p_resize_nearest};
    return &P->super;
}

int sde_prof_on(const sde_backend *be)
{
    return be && be->alloc == p_alloc;
}

void sde_prof_free(sde_backend *be)
{
    if (sde_prof_on(be)) free(P_OF(be));
}

static prof_acc *section_acc(prof_be *P, const char *name)
{
    for (int i = 0; i < P->nsec; i++)
        if (!strcmp(P->sec[i].name, name)) return &P->sec[i].a;
    /* past the table's end everything lands in its last row, named for what it is */
    if (P->nsec == MAX_SECTIONS) {
        snprintf(P->sec[MAX_SECTIONS - 1].name, NAME_LEN, "(more sections)");
        return &P->sec[MAX_SECTIONS - 1].a;
    }
    prof_section *s = &P->sec[P->nsec++];
    memset(s, 0, sizeof *s); /* a slot of the generation before the last reset */
    snprintf(s->name, NAME_LEN, "%s", name);
    return &s->a;
}

static void acc_add(prof_acc *to, const prof_acc *from)
{
    to->t += from->t;
    to->entries += from->entries;
    for (int k = 0; k < N_KINDS; k++)
        to->op[k] += from->op[k];
}

/* Names the UNet blocks of the forward just ended now that it is known where its down path ends. */
static void flush_blocks(prof_be *P)
{
    int first_pop = P->nblk, last_push = -1;
    for (int i = 0; i < P->nblk; i++)
        if (P->blk[i].pop) {
            first_pop = i;
            break;
        }
    for (int i = 0; i < first_pop; i++)
        if (P->blk[i].push) last_push = i;
    for (int i = 0; i < P->nblk; i++) {
        char name[NAME_LEN];
        if (i <= last_push)
            snprintf(name, sizeof name, "unet.down.%d", P->blk[i].level);
        else if (i < first_pop)
            snprintf(name, sizeof name, "unet.mid");
        else
            snprintf(name, sizeof name, "unet.up.%d", P->blk[i].level);
        acc_add(section_acc(P, name), &P->blk[i].a);
    }
    P->nblk = 0;
}

/* Closes the running section or block at time t. */
static void close_current(prof_be *P, double t)
{
    if (P->cur) P->cur->t += t - P->cur_start;
    P->cur = NULL;
}

void sde_prof_section(sde_backend *be, const char *name, int index)
{
    if (!sde_prof_on(be)) return;
    prof_be *P = P_OF(be);
    P->in->sync(P->in);
    double t = now_s();
    close_current(P, t);
    if (P->nblk) flush_blocks(P);
    if (!name) return;
    char full[NAME_LEN];
    if (index >= 0)
        snprintf(full, sizeof full, "%s.%d", name, index);
    else
        snprintf(full, sizeof full, "%s", name);
    P->cur = section_acc(P, full);
    P->cur->entries++;
    P->cur_start = t;
}

void sde_prof_unet_block(sde_backend *be, int level, int push, int pop)
{
    if (!sde_prof_on(be)) return;
    prof_be *P = P_OF(be);
    if (P->nblk == MAX_PENDING) flush_blocks(P);
    P->in->sync(P->in);
    double t = now_s();
    close_current(P, t);
    prof_block *b = &P->blk[P->nblk++];
    memset(b, 0, sizeof *b);
    b->level = level;
    b->push = push != 0;
    b->pop = pop != 0;
    b->a.entries = 1;
    P->cur = &b->a;
    P->cur_start = t;
}

void sde_prof_reset(sde_backend *be)
{
    if (!sde_prof_on(be)) return;
    prof_be *P = P_OF(be);
    memset(P->op_t, 0, sizeof P->op_t);
    memset(P->op_calls, 0, sizeof P->op_calls);
    memset(P->op_flop, 0, sizeof P->op_flop);
    P->nshp = 0;
    P->nsec = 0;
    P->nblk = 0;
    P->cur = NULL;
}

/* A growing text buffer; a failed allocation sticks (the report is then NULL). */
typedef struct {
    char *s;
    size_t len, cap;
    int oom;
} sbuf;

static void __attribute__((format(printf, 2, 3))) sb_printf(sbuf *b, const char *fmt, ...)
{
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if (b->s && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = (b->cap ? b->cap * 2 : 4096) + (size_t)n;
        char *s = realloc(b->s, cap);
        if (!s) {
            b->oom = 1;
            return;
        }
        b->s = s;
        b->cap = cap;
    }
}

/* conv, linear, attention, norms (GroupNorm both halves and LayerNorm), every other op; host = the rest */
static void acc_columns(const prof_acc *a, double col[6])
{
    double sum = 0;
    for (int k = 0; k < N_KINDS; k++)
        sum += a->op[k];
    col[0] = a->op[K_CONV];
    col[1] = a->op[K_LINEAR];
    col[2] = a->op[K_ATTENTION];
    col[3] = a->op[K_GN_COEFFS] + a->op[K_GN_APPLY] + a->op[K_LAYERNORM];
    col[4] = sum - col[0] - col[1] - col[2] - col[3];
    col[5] = a->t - sum;
}

static void row(sbuf *b, const char *name, const prof_acc *a, double total)
{
    double col[6];
    acc_columns(a, col);
    sb_printf(b, "%-16s %7ld %10.3f %5.1f%% %10.3f %10.3f %10.3f %10.3f %10.3f %10.3f\n", name, a->entries,
              a->t * 1e3, total > 0 ? 100 * a->t / total : 0, col[0] * 1e3, col[1] * 1e3, col[2] * 1e3,
              col[3] * 1e3, col[4] * 1e3, col[5] * 1e3);
}

static int shape_slower(const void *a, const void *b)
{
    const prof_shape *x = *(const prof_shape *const *)a, *y = *(const prof_shape *const *)b;
    return (x->t < y->t) - (x->t > y->t);
}

/* The products' slowest shapes, with the rate each reached: where a kernel falls short. FLOP are the
 * direct definition's (a Winograd convolution does fewer multiplies than it is credited with). */
static void shapes_report(sbuf *b, prof_be *P, double total_s)
{
    if (!P->nshp) return;
    const prof_shape *order[MAX_SHAPES];
    for (int i = 0; i < P->nshp; i++)
        order[i] = &P->shp[i];
    qsort(order, (size_t)P->nshp, sizeof order[0], shape_slower);
    sb_printf(b, "\n%-10s %-46s %6s %10s %6s %8s\n", "product", "shape", "calls", "ms", "%", "GFLOP/s");
    for (int i = 0; i < P->nshp && i < SHOW_SHAPES; i++) {
        const prof_shape *s = order[i];
        const int *d = s->d;
        char shape[64];
        if (s->kind == K_CONV)
            snprintf(shape, sizeof shape, "b%d %dx%dx%d -> %d, k%d s%d", d[0], d[1], d[2], d[3], d[4], d[5],
                     d[6]);
        else if (s->kind == K_LINEAR)
            snprintf(shape, sizeof shape, "n%d %d -> %d%s%s%s, w %s", d[0], d[1], d[2],
                     d[3] & SDE_LIN_X_CM ? " x_cm" : "", d[3] & SDE_LIN_Y_CM ? " y_cm" : "",
                     d[3] & SDE_LIN_ACC ? " acc" : "",
                     d[4] == SDE_W_F16    ? "f16"
                     : d[4] == SDE_W_BF16 ? "bf16"
                                          : "f32");
        else
            snprintf(shape, sizeof shape, "q%d k%d, %d heads of %d%s", d[0], d[1], d[2], d[3],
                     d[4] ? ", causal" : "");
        sb_printf(b, "%-10s %-46s %6ld %10.3f %5.1f%% %8.1f\n", kind_name[s->kind], shape, s->calls,
                  s->t * 1e3, total_s > 0 ? 100 * s->t / total_s : 0, s->t > 0 ? s->flop * 1e-9 / s->t : 0);
    }
    if (P->nshp > SHOW_SHAPES) sb_printf(b, "(%d more shapes)\n", P->nshp - SHOW_SHAPES);
}

char *sde_prof_report(sde_backend *be, double total_s)
{
    if (!sde_prof_on(be)) return NULL;
    prof_be *P = P_OF(be);
    sde_prof_section(be, NULL, 0);
    sbuf b = {0};
    static const char head[] = "%-16s %7s %10s %6s %10s %10s %10s %10s %10s %10s\n";
    sb_printf(&b, "profile: %.3f ms wall; times in ms; host = in the section but in no op\n", total_s * 1e3);
    /* per model: the sections grouped by their name's first part, in order of first appearance */
    sb_printf(&b, head, "model", "entries", "ms", "%", "conv", "linear", "attention", "norm", "other ops",
              "host");
    int done[MAX_SECTIONS] = {0};
    prof_acc in_sections = {0};
    for (int i = 0; i < P->nsec; i++) {
        if (done[i]) continue;
        const char *dot = strchr(P->sec[i].name, '.');
        size_t pl = dot ? (size_t)(dot - P->sec[i].name) : strlen(P->sec[i].name);
        char model[NAME_LEN];
        snprintf(model, sizeof model, "%.*s", (int)pl, P->sec[i].name);
        prof_acc m = {0};
        long first_entries = P->sec[i].a.entries;
        for (int j = i; j < P->nsec; j++) {
            const char *n = P->sec[j].name;
            if (!done[j] && !strncmp(n, model, pl) && (n[pl] == '.' || n[pl] == 0)) {
                acc_add(&m, &P->sec[j].a);
                done[j] = 1;
            }
        }
        m.entries = first_entries; /* the first section's entries: one per pass through the model */
        acc_add(&in_sections, &m);
        row(&b, model, &m, total_s);
    }
    /* the engine's own host work: tokenizer, sampler arithmetic, PNG, and ops outside any section */
    prof_acc outside = {0};
    double op_total = 0;
    for (int k = 0; k < N_KINDS; k++) {
        op_total += P->op_t[k];
        outside.op[k] = P->op_t[k] - in_sections.op[k];
    }
    outside.t = total_s - in_sections.t;
    row(&b, "(no section)", &outside, total_s);
    sb_printf(&b, "\n");
    sb_printf(&b, head, "section", "entries", "ms", "%", "conv", "linear", "attention", "norm", "other ops",
              "host");
    for (int i = 0; i < P->nsec; i++)
        row(&b, P->sec[i].name, &P->sec[i].a, total_s);
    sb_printf(&b, "\n%-16s %7s %10s %6s %10s %8s\n", "op", "calls", "ms", "%", "us/call", "GFLOP/s");
    for (int k = 0; k < N_KINDS; k++) {
        if (!P->op_calls[k]) continue;
        sb_printf(&b, "%-16s %7ld %10.3f %5.1f%% %10.1f", kind_name[k], P->op_calls[k], P->op_t[k] * 1e3,
                  total_s > 0 ? 100 * P->op_t[k] / total_s : 0, P->op_t[k] * 1e6 / (double)P->op_calls[k]);
        if (P->op_flop[k] > 0 && P->op_t[k] > 0) sb_printf(&b, " %8.1f", P->op_flop[k] * 1e-9 / P->op_t[k]);
        sb_printf(&b, "\n");
    }
    sb_printf(&b, "%-16s %7s %10.3f %5.1f%%\n", "(all ops)", "", op_total * 1e3,
              total_s > 0 ? 100 * op_total / total_s : 0);
    shapes_report(&b, P, total_s);
    if (b.oom) {
        free(b.s);
        return NULL;
    }
    return b.s;
}
