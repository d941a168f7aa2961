/* golden_e2e.h: shared by the end-to-end golden tests: runs sde_generate() on a random full-size checkpoint
 * with the peer's settings, taps every intermediate tensor and compares it and the PNG with the peer's. */
#ifndef SDW_TEST_GOLDEN_E2E_H
#define SDW_TEST_GOLDEN_E2E_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_trace.h"
#include "png_io.h"
#include "sd_engine.h"

#define GE_MAX_TENSORS 64

/** How far one traced tensor is from the peer's: max and mean absolute difference, and the max relative to
 * the tensor's own scale (max |peer value|). */
typedef struct {
    char name[32];
    double max_abs, mean_abs, scale;
    int compared;
} ge_diff;

typedef struct {
    char dir[1200]; /* golden folder, e.g. SHARED/golden/sd15-rand/euler */
    ge_diff d[GE_MAX_TENSORS];
    int n;
} ge_run;

static float *ge_read(const char *dir, const char *name, size_t n)
{
    char p[1400];
    snprintf(p, sizeof p, "%s/%s.f32", dir, name);
    FILE *f = fopen(p, "rb");
    if (!f)
        return NULL;
    float *v = malloc(n * sizeof *v);
    size_t got = v ? fread(v, sizeof *v, n, f) : 0;
    int extra = fgetc(f) != EOF;
    fclose(f);
    if (got != n || extra) {
        free(v);
        return NULL;
    }
    return v;
}

static void ge_trace(void *ud, const char *name, const float *data, size_t n)
{
    ge_run *r = ud;
    if (r->n >= GE_MAX_TENSORS)
        return;
    ge_diff *d = &r->d[r->n++];
    memset(d, 0, sizeof *d);
    snprintf(d->name, sizeof d->name, "%s", name);
    float *g = ge_read(r->dir, name, n);
    if (!g)
        return; /* the peer did not dump it, or a size mismatch: reported as not compared */
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)data[i] - g[i]);
        d->max_abs = fmax(d->max_abs, e);
        d->mean_abs += e;
        d->scale = fmax(d->scale, fabs(g[i]));
    }
    d->mean_abs /= (double)n;
    d->compared = 1;
    free(g);
}

static const ge_diff *ge_find(const ge_run *r, const char *name)
{
    for (int i = 0; i < r->n; i++)
        if (!strcmp(r->d[i].name, name))
            return &r->d[i];
    return NULL;
}

static void ge_print(const ge_run *r)
{
    for (int i = 0; i < r->n; i++) {
        const ge_diff *d = &r->d[i];
        if (d->compared)
            printf("  %-20s max|d| %-10.4g mean|d| %-10.4g max|d|/scale %-10.4g (scale %.4g)\n", d->name, d->max_abs,
                   d->mean_abs, d->max_abs / (d->scale > 0 ? d->scale : 1), d->scale);
        else
            printf("  %-20s (no peer tensor)\n", d->name);
    }
}

/** Pixel differences between our PNG and the peer's image.png: fills max and mean |delta| of 8-bit values.
 * Returns 0, or -1 with a message when either image cannot be read or the sizes differ. */
static int ge_compare_png(const char *dir, const sde_result *res, int *max_d, double *mean_d, char *err, size_t errlen)
{
    char p[1400];
    snprintf(p, sizeof p, "%s/image.png", dir);
    FILE *f = fopen(p, "rb");
    if (!f) {
        snprintf(err, errlen, "%.900s: cannot open", p);
        return -1;
    }
    static uint8_t buf[1 << 22];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    uint8_t *a = NULL, *b = NULL;
    int aw, ah, bw, bh;
    if (sde_png_decode(buf, len, &a, &aw, &ah, err, errlen))
        return -1;
    if (sde_png_decode(res->png, res->png_len, &b, &bw, &bh, err, errlen)) {
        free(a);
        return -1;
    }
    if (aw != bw || ah != bh) {
        snprintf(err, errlen, "size %dx%d vs peer %dx%d", bw, bh, aw, ah);
        free(a);
        free(b);
        return -1;
    }
    size_t n = (size_t)aw * ah * 3;
    long sum = 0;
    *max_d = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)a[i] - (int)b[i]);
        sum += d;
        if (d > *max_d)
            *max_d = d;
    }
    *mean_d = (double)sum / (double)n;
    free(a);
    free(b);
    return 0;
}

#endif
