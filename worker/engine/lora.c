/* lora.c: LoRA (kohya/A1111, LoCon, diffusers/PEFT) merged into copies of the weights it touches (in the
 * file's dtype) for one job and removed exactly afterwards (the checkpoint's edits, sde_ckpt_edit_begin).
 * docs/workflows.md. */
#include "lora.h"

#include <cblas.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "diffusers_names.h"
#include "dtype_convert.h"
#include "safetensors.h"
#include "unet.h"
#include "weights.h"

struct sde_lora_undo {
    int n, cap;
    const sde_tensor **t; /* tensors being edited */
};

int sde_lora_parse_prompt(const char *prompt, char *clean, size_t cap, char *names, size_t names_cap,
                          sde_lora_spec *out, int *n, char *err, size_t errlen)
{
    size_t o = 0, no = 0;
    const char *s = prompt;
    while (*s) {
        const char *end = !strncmp(s, "<lora:", 6) ? strchr(s, '>') : NULL;
        if (!end) {
            if (o + 1 >= cap) return sde_fail(err, errlen, "prompt: too long");
            clean[o++] = *s++;
            continue;
        }
        const char *name = s + 6, *colon = memchr(name, ':', (size_t)(end - name));
        size_t nl = (size_t)((colon ? colon : end) - name);
        float w = 1.f;
        if (colon) {
            char num[32], *e;
            size_t wl = (size_t)(end - colon - 1);
            if (wl == 0 || wl >= sizeof num)
                return sde_fail(err, errlen, "prompt: bad LoRA weight in %.*s>", (int)(end - s), s);
            memcpy(num, colon + 1, wl);
            num[wl] = 0;
            errno = 0;
            w = strtof(num, &e);
            if (*e || errno || !(w > -100.f && w < 100.f))
                return sde_fail(err, errlen, "prompt: bad LoRA weight \"%s\" (a number in -100..100)", num);
        }
        if (*n >= SDE_LORA_MAX) return sde_fail(err, errlen, "loras: at most %d LoRAs per job", SDE_LORA_MAX);
        if (nl == 0 || no + nl + 1 > names_cap)
            return sde_fail(err, errlen, "prompt: bad LoRA tag %.*s>", (int)(end - s), s);
        memcpy(names + no, name, nl);
        names[no + nl] = 0;
        out[*n].name = names + no;
        out[*n].weight = w;
        (*n)++;
        no += nl + 1;
        s = end + 1;
    }
    clean[o] = 0;
    return 0;
}

int sde_lora_resolve(const char *dir, const char *name, char *path, size_t pathlen, char *err, size_t errlen)
{
    if (!dir || !*dir)
        return sde_fail(err, errlen, "loras: no LoRA folder is configured (model.lora_dir / --lora-dir)");
    if (!*name || strchr(name, '/') || strstr(name, "..") || name[0] == '.')
        return sde_fail(err, errlen, "loras: \"%s\" is not a plain file name", name);
    size_t l = strlen(name);
    const char *ext = l > 12 && !strcmp(name + l - 12, ".safetensors") ? "" : ".safetensors";
    if (snprintf(path, pathlen, "%s/%s%s", dir, name, ext) >= (int)pathlen)
        return sde_fail(err, errlen, "loras: name too long");
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
        return sde_fail(err, errlen, "loras: no LoRA \"%s\" in %s", name, dir);
    return 0;
}

/* Multi-word parts of diffusers / HF names that kohya's '_'-joined keys flatten. */
static const char *const WORDS[] = {"down_blocks",
                                    "up_blocks",
                                    "mid_block",
                                    "transformer_blocks",
                                    "proj_in",
                                    "proj_out",
                                    "to_q",
                                    "to_k",
                                    "to_v",
                                    "to_out",
                                    "text_model",
                                    "self_attn",
                                    "q_proj",
                                    "k_proj",
                                    "v_proj",
                                    "out_proj",
                                    "conv_shortcut",
                                    "time_emb_proj",
                                    "conv_in",
                                    "conv_out",
                                    "time_embedding",
                                    "linear_1",
                                    "linear_2",
                                    "layer_norm1",
                                    "layer_norm2",
                                    "final_layer_norm",
                                    "text_projection",
                                    "conv_norm_out",
                                    "add_embedding",
                                    "input_blocks",
                                    "middle_block",
                                    "output_blocks",
                                    "in_layers",
                                    "out_layers",
                                    "emb_layers",
                                    "skip_connection"};

/* "down_blocks_0_attentions_0_proj_in" -> "down_blocks.0.attentions.0.proj_in" */
static void kohya_to_dotted(const char *k, char *out, size_t cap)
{
    size_t o = 0;
    while (*k && o + 1 < cap) {
        size_t best = 0;
        for (size_t i = 0; i < sizeof WORDS / sizeof *WORDS; i++) {
            size_t l = strlen(WORDS[i]);
            if (!strncmp(k, WORDS[i], l) && (k[l] == '_' || !k[l]) && l > best) best = l;
        }
        if (!best)
            while (k[best] && k[best] != '_')
                best++;
        if (o + best + 2 >= cap) break;
        memcpy(out + o, k, best);
        o += best;
        k += best;
        if (*k == '_') {
            out[o++] = '.';
            k++;
        }
    }
    out[o] = 0;
}

/* The first of the candidate names the checkpoint holds, or NULL. */
static const sde_tensor *find_first(sde_ckpt *c, const char *const *names, int n)
{
    for (int i = 0; i < n; i++) {
        const sde_tensor *t = names[i][0] ? sde_ckpt_find(c, names[i]) : NULL;
        if (t) return t;
    }
    return NULL;
}

/* An HF CLIP layer name ("text_model.encoder.layers.3.self_attn.q_proj") in an OpenCLIP encoder stored
 * under pfx ("cond_stage_model.model.", SDXL's "conditioner.embedders.1.model."): q/k/v are row blocks of
 * the fused in_proj, so *row0 is set to the block's first row (the block height is the LoRA's out). */
static const sde_tensor *openclip_target(sde_ckpt *c, const char *pfx, const char *dotted, int64_t *row0)
{
    int layer, end = 0;
    char part[64];
    if (sscanf(dotted, "text_model.encoder.layers.%d.%63s%n", &layer, part, &end) != 2 || dotted[end])
        return NULL;
    static const struct {
        const char *hf, *oc;
        int block; /* in_proj row block, -1 for a whole tensor */
    } map[] = {{"self_attn.q_proj", "attn.in_proj_weight", 0},
               {"self_attn.k_proj", "attn.in_proj_weight", 1},
               {"self_attn.v_proj", "attn.in_proj_weight", 2},
               {"self_attn.out_proj", "attn.out_proj.weight", -1},
               {"mlp.fc1", "mlp.c_fc.weight", -1},
               {"mlp.fc2", "mlp.c_proj.weight", -1}};
    for (size_t i = 0; i < sizeof map / sizeof *map; i++) {
        if (strcmp(part, map[i].hf)) continue;
        char name[512];
        snprintf(name, sizeof name, "%stransformer.resblocks.%d.%s", pfx, layer, map[i].oc);
        const sde_tensor *t = sde_ckpt_find(c, name);
        if (!t || t->ndim != 2) return NULL;
        if (map[i].block >= 0) *row0 = map[i].block * (t->shape[0] / 3);
        return t;
    }
    return NULL;
}

/* The checkpoint tensor a LoRA module (prefix without .lora_down etc.) changes, or NULL. *row0 = -1, or the
 * first row of the block of a fused tensor the module changes (OpenCLIP's in_proj). Text encoder 1 is
 * CLIP-L (SD 1.x, SDXL's first); 2 is SDXL's OpenCLIP bigG; SD 2.x's lora_te_ is OpenCLIP ViT-H. */
static const sde_tensor *target_of(sde_ckpt *c, const sde_dn_unet_layout *L, const char *mod, int64_t *row0)
{
    char dotted[512], d2[600], ldm[640];
    int part; /* 0 UNet, 1 text encoder (1), 2 text encoder 2 */
    *row0 = -1;
    if (!strncmp(mod, "base_model.model.", 17)) mod += 17;
    if (!strncmp(mod, "lora_unet_", 10)) {
        kohya_to_dotted(mod + 10, dotted, sizeof dotted);
        part = 0;
    } else if (!strncmp(mod, "lora_te_", 8) || !strncmp(mod, "lora_te1_", 9)) {
        kohya_to_dotted(mod + (mod[7] == '_' ? 8 : 9), dotted, sizeof dotted);
        part = 1;
    } else if (!strncmp(mod, "lora_te2_", 9)) {
        kohya_to_dotted(mod + 9, dotted, sizeof dotted);
        part = 2;
    } else if (!strncmp(mod, "unet.", 5)) {
        snprintf(dotted, sizeof dotted, "%s", mod + 5);
        part = 0;
    } else if (!strncmp(mod, "text_encoder.", 13)) {
        snprintf(dotted, sizeof dotted, "%s", mod + 13);
        part = 1;
    } else if (!strncmp(mod, "text_encoder_2.", 15)) {
        snprintf(dotted, sizeof dotted, "%s", mod + 15);
        part = 2;
    } else
        return NULL;
    snprintf(d2, sizeof d2, "%s.weight", dotted);
    if (part == 0) {
        /* kohya SDXL LoRAs name the LDM blocks themselves (input_blocks_4_1_...), others the diffusers ones
         */
        if (!strncmp(d2, "input_blocks.", 13) || !strncmp(d2, "middle_block.", 13) ||
            !strncmp(d2, "output_blocks.", 14)) {
            snprintf(ldm, sizeof ldm, "model.diffusion_model.%s", d2);
            return sde_ckpt_find(c, ldm);
        }
        if (sde_dn_unet_to_ldm(L, d2, ldm, sizeof ldm)) return NULL;
        return sde_ckpt_find(c, ldm);
    }
    char hf1[640] = "", hf2[640] = "";
    if (part == 1) {
        if (sde_dn_text_to_ldm(d2, ldm, sizeof ldm)) return NULL;
        snprintf(hf1, sizeof hf1, "conditioner.embedders.0.transformer.%s", d2);
        const char *names[] = {ldm, hf1};
        const sde_tensor *t = find_first(c, names, 2);
        return t ? t : openclip_target(c, "cond_stage_model.model.", dotted, row0);
    }
    if (sde_dn_text2_to_ldm(d2, hf2, sizeof hf2)) return NULL;
    const char *names[] = {hf2};
    const sde_tensor *t = find_first(c, names, 1);
    return t ? t : openclip_target(c, "conditioner.embedders.1.model.", dotted, row0);
}

/* Records t as being edited (once) so that sde_lora_restore ends its edit. */
static int undo_add(sde_lora_undo **u, const sde_tensor *t)
{
    if (!*u && !(*u = calloc(1, sizeof **u))) return -1;
    sde_lora_undo *d = *u;
    for (int i = 0; i < d->n; i++)
        if (d->t[i] == t) return 0;
    if (d->n == d->cap) {
        int nc = d->cap ? 2 * d->cap : 64;
        const sde_tensor **nt = realloc(d->t, (size_t)nc * sizeof *nt);
        if (!nt) return -1;
        d->t = nt;
        d->cap = nc;
    }
    d->t[d->n++] = t;
    return 0;
}

/* Float32 copy of a LoRA tensor (any float dtype); NULL when out of memory or not a float type. */
static float *st_f32(const sde_st_tensor *t)
{
    float *f = malloc((t->numel ? t->numel : 1) * sizeof(float));
    if (f && sde_cvt_to_f32(t->dtype, t->data, t->numel, f)) {
        free(f);
        return NULL;
    }
    return f;
}

/* Suffixes naming a module's parts, kohya then PEFT spelling. */
static int part_of(const char *name, size_t *stem)
{
    static const char *const sfx[] = {".lora_down.weight", ".lora_up.weight", ".alpha", ".lora_A.weight",
                                      ".lora_B.weight"};
    static const int kind[] = {0, 1, 2, 0, 1};
    size_t l = strlen(name);
    for (int i = 0; i < 5; i++) {
        size_t sl = strlen(sfx[i]);
        if (l > sl && !strcmp(name + l - sl, sfx[i])) {
            *stem = l - sl;
            return kind[i];
        }
    }
    return -1;
}

int sde_lora_apply(sde_ckpt *c, const char *path, float weight, sde_lora_undo **undo, int *unused, char *warn,
                   size_t wlen, char *err, size_t errlen)
{
    sde_unet_config ucfg;
    if (sde_unet_config_infer(c, &ucfg, err, errlen)) return -1;
    sde_dn_unet_layout L = {.n_levels = ucfg.n_levels, .res_blocks = ucfg.num_res_blocks, .mid_attn = 1};
    for (int i = 0; i < ucfg.n_levels; i++)
        L.up_attn[i] = ucfg.attn_levels[ucfg.n_levels - 1 - i];
    sde_st_file *f;
    if (sde_st_open(path, &f, err, errlen)) return -1;
    int rc = -1;
    float *dn = NULL, *up = NULL;
    /* the delta of one block of rows at a time, in a scratch that stays in cache and is reused by every
     * module: W' = W + delta is formed per block in float32 and rounded to the file's dtype */
    enum { BLOCK = 1 << 16 }; /* floats */
    size_t delta_cap = BLOCK;
    float *delta = malloc(delta_cap * sizeof(float));
    for (int i = 0; i < f->n; i++) {
        size_t stem;
        int k = part_of(f->t[i].name, &stem);
        if (k < 0) {
            (*unused)++;
            if (warn && !*warn) snprintf(warn, wlen, "%s: unknown LoRA key %s", path, f->t[i].name);
            continue;
        }
        if (k != 0) continue; /* each module is handled once, from its down matrix */
        const sde_st_tensor *td = &f->t[i], *tu = NULL, *ta = NULL;
        char mod[512];
        snprintf(mod, sizeof mod, "%.*s", (int)stem, td->name);
        for (int j = 0; j < f->n; j++) {
            size_t s2;
            int k2 = part_of(f->t[j].name, &s2);
            if (k2 > 0 && s2 == stem && !strncmp(f->t[j].name, mod, stem)) *(k2 == 1 ? &tu : &ta) = &f->t[j];
        }
        int64_t row0;
        const sde_tensor *t = target_of(c, &L, mod, &row0);
        if (!tu || !t || td->ndim < 2 || tu->ndim < 2) {
            *unused += 1 + (tu != NULL) + (ta != NULL);
            if (warn && !*warn) snprintf(warn, wlen, "%s: LoRA module %s matches no weight", path, mod);
            continue;
        }
        int64_t rank = td->shape[0], in = (int64_t)td->numel / rank, out = tu->shape[0];
        int64_t n = 1;
        for (int d = 0; d < t->ndim; d++)
            n *= t->shape[d];
        /* a block of rows of a fused weight: the rows below and above it stay */
        const int64_t rows = row0 < 0 ? out : t->shape[0], off = row0 < 0 ? 0 : row0 * in;
        if ((int64_t)tu->numel != out * rank || n != rows * in || (row0 >= 0 && row0 + out > rows)) {
            rc = sde_fail(err, errlen, "%s: LoRA module %s: shapes do not fit the weight", path, mod);
            goto out;
        }
        float alpha = (float)rank;
        if (ta) {
            float *a = st_f32(ta);
            if (a) alpha = a[0];
            free(a);
        }
        free(dn), free(up);
        dn = st_f32(td), up = st_f32(tu);
        if (!dn || !up || !delta) {
            sde_fail(err, errlen, "%s: out of memory (or not float) in LoRA module %s", path, mod);
            goto out;
        }
        if (undo_add(undo, t)) {
            sde_fail(err, errlen, "%s: cannot make weight %s writable: out of memory", path, t->name);
            goto out;
        }
        if (!sde_ckpt_edit_begin(c, t, err, errlen)) goto out;
        /* delta[rows r0..r0+nr)[in] = up[r0..r0+nr)[r] @ down[r][in], scaled, added into this job's copy of
         * the weight and rounded to its stored type, as the peer adds into its f16 weights */
        const int64_t step = in < BLOCK ? BLOCK / in : 1;
        for (int64_t r0 = 0; r0 < out; r0 += step) {
            const int64_t nr = out - r0 < step ? out - r0 : step;
            if ((size_t)(nr * in) > delta_cap) { /* one row longer than the scratch */
                float *big = realloc(delta, (size_t)(nr * in) * sizeof(float));
                if (!big) {
                    sde_fail(err, errlen, "%s: out of memory in LoRA module %s", path, mod);
                    goto out;
                }
                delta = big;
                delta_cap = (size_t)(nr * in);
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nr, (int)in, (int)rank,
                        weight * alpha / (float)rank, up + r0 * rank, (int)rank, dn, (int)in, 0.f, delta,
                        (int)in);
            if (sde_ckpt_edit_add(c, t, (size_t)(off + r0 * in), delta, (size_t)(nr * in), err, errlen))
                goto out;
        }
    }
    rc = 0;
out:
    free(dn), free(up), free(delta);
    sde_st_free(f);
    return rc;
}

int sde_lora_match(sde_ckpt *c, const char *path, int *matched, int *unused, char *warn, size_t wlen,
                   char *err, size_t errlen)
{
    sde_unet_config ucfg;
    if (sde_unet_config_infer(c, &ucfg, err, errlen)) return -1;
    sde_dn_unet_layout L = {.n_levels = ucfg.n_levels, .res_blocks = ucfg.num_res_blocks, .mid_attn = 1};
    for (int i = 0; i < ucfg.n_levels; i++)
        L.up_attn[i] = ucfg.attn_levels[ucfg.n_levels - 1 - i];
    sde_st_file *f;
    if (sde_st_open(path, &f, err, errlen)) return -1;
    for (int i = 0; i < f->n; i++) {
        size_t stem;
        int k = part_of(f->t[i].name, &stem);
        if (k < 0) {
            (*unused)++;
            if (warn && !*warn) snprintf(warn, wlen, "%s: unknown LoRA key %s", path, f->t[i].name);
            continue;
        }
        if (k != 0) continue;
        const sde_st_tensor *td = &f->t[i], *tu = NULL, *ta = NULL;
        char mod[512];
        snprintf(mod, sizeof mod, "%.*s", (int)stem, td->name);
        for (int j = 0; j < f->n; j++) {
            size_t s2;
            int k2 = part_of(f->t[j].name, &s2);
            if (k2 > 0 && s2 == stem && !strncmp(f->t[j].name, mod, stem)) *(k2 == 1 ? &tu : &ta) = &f->t[j];
        }
        int64_t row0;
        const sde_tensor *t = target_of(c, &L, mod, &row0);
        int ok = tu && t && td->ndim >= 2 && tu->ndim >= 2;
        if (ok) {
            int64_t rank = td->shape[0], in = (int64_t)td->numel / rank, out = tu->shape[0], n = 1;
            for (int d = 0; d < t->ndim; d++)
                n *= t->shape[d];
            const int64_t rows = row0 < 0 ? out : t->shape[0];
            ok = (int64_t)tu->numel == out * rank && n == rows * in && (row0 < 0 || row0 + out <= rows);
        }
        if (!ok) {
            *unused += 1 + (tu != NULL) + (ta != NULL);
            if (warn && !*warn) snprintf(warn, wlen, "%s: LoRA module %s matches no weight", path, mod);
            continue;
        }
        (*matched)++;
    }
    sde_st_free(f);
    return 0;
}

void sde_lora_restore(sde_ckpt *c, sde_lora_undo *undo)
{
    if (!undo) return;
    for (int i = 0; i < undo->n; i++)
        sde_ckpt_edit_end(c, undo->t[i]);
    free(undo->t);
    free(undo);
}
