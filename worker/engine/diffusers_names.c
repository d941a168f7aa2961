/* diffusers_names.c: diffusers -> single-file LDM tensor names, the inverse of diffusers'
 * convert_original_stable_diffusion_to_diffusers.py, derived from block structure rather than fixed tables
 * so SD 1.x/2.x and shrunken test models (fewer levels or resnets) map alike. */
#include "diffusers_names.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define MAX_LEVELS 16
#define MAX_RES 64

/* Consumes lit at *p. */
static int take(const char **p, const char *lit)
{
    size_t n = strlen(lit);
    if (strncmp(*p, lit, n)) return 0;
    *p += n;
    return 1;
}

/* Consumes "<int>." with value < max. Leading zeros are refused so "01" and "1" never map to the same name.
 */
static int take_int(const char **p, int max, int *v)
{
    const char *s = *p;
    int x = 0, nd = 0;
    while (s[nd] >= '0' && s[nd] <= '9') {
        if (nd == 3) return 0;
        x = x * 10 + (s[nd] - '0');
        nd++;
    }
    if (!nd || (nd > 1 && s[0] == '0') || s[nd] != '.' || x >= max) return 0;
    *v = x;
    *p = s + nd + 1;
    return 1;
}

static int is_leaf(const char *p)
{
    return !strcmp(p, "weight") || !strcmp(p, "bias");
}

static int put(char *out, size_t outlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, outlen, fmt, ap);
    va_end(ap);
    return n < 0 || (size_t)n >= outlen ? -1 : 0;
}

/* diffusers ResnetBlock2D part name -> LDM ResBlock part, for "<part>.<weight|bias>". */
static const char *unet_res_part(const char **p)
{
    static const char *const map[][2] = {
        {"norm1.", "in_layers.0."},          {"conv1.", "in_layers.2."},
        {"norm2.", "out_layers.0."},         {"conv2.", "out_layers.3."},
        {"time_emb_proj.", "emb_layers.1."}, {"conv_shortcut.", "skip_connection."},
    };
    for (size_t i = 0; i < sizeof map / sizeof *map; i++)
        if (take(p, map[i][0])) return is_leaf(*p) ? map[i][1] : NULL;
    return NULL;
}

/* Transformer2DModel internals carry the same names in both layouts; only their first part is checked. */
static int unet_attn_ok(const char *p)
{
    static const char *const first[] = {"norm.", "proj_in.", "proj_out.", "transformer_blocks."};
    for (size_t i = 0; i < sizeof first / sizeof *first; i++)
        if (!strncmp(p, first[i], strlen(first[i]))) return p[strlen(first[i])] != 0;
    return 0;
}

int sde_dn_unet_layout_scan(const char *const *names, int n, sde_dn_unet_layout *L, char *err, size_t errlen)
{
    memset(L, 0, sizeof *L);
    for (int k = 0; k < n; k++) {
        const char *p = names[k];
        int i = 0, j = 0, up = 0;
        if (take(&p, "mid_block.attentions.")) {
            L->mid_attn = 1;
            continue;
        }
        if (take(&p, "down_blocks."))
            up = 0;
        else if (take(&p, "up_blocks."))
            up = 1;
        else
            continue;
        if (!take_int(&p, MAX_LEVELS, &i)) {
            put(err, errlen, "tensor \"%s\": block index is not an integer below %d", names[k], MAX_LEVELS);
            return -1;
        }
        if (i + 1 > L->n_levels) L->n_levels = i + 1;
        int is_attn = 0;
        if (take(&p, "resnets.") || (is_attn = take(&p, "attentions."))) {
            if (!take_int(&p, MAX_RES, &j)) {
                put(err, errlen, "tensor \"%s\": resnet/attention index is not an integer below %d", names[k],
                    MAX_RES);
                return -1;
            }
            if (up && is_attn) L->up_attn[i] = 1;
            if (!up && !is_attn && j + 1 > L->res_blocks) L->res_blocks = j + 1;
        }
    }
    return 0;
}

int sde_dn_vae_levels(const char *const *names, int n)
{
    int levels = 0;
    for (int k = 0; k < n; k++) {
        const char *p = names[k];
        int i;
        if (take(&p, "decoder.up_blocks.") && take_int(&p, MAX_LEVELS, &i) && i + 1 > levels) levels = i + 1;
    }
    return levels;
}

int sde_dn_unet_to_ldm(const sde_dn_unet_layout *L, const char *name, char *out, size_t outlen)
{
    const char *p = name, *part;
    const int R = L->res_blocks;
    int i, j;
    if (take(&p, "conv_in."))
        return is_leaf(p) ? put(out, outlen, "model.diffusion_model.input_blocks.0.0.%s", p) : -1;
    if (take(&p, "time_embedding.linear_1."))
        return is_leaf(p) ? put(out, outlen, "model.diffusion_model.time_embed.0.%s", p) : -1;
    if (take(&p, "time_embedding.linear_2."))
        return is_leaf(p) ? put(out, outlen, "model.diffusion_model.time_embed.2.%s", p) : -1;
    /* SDXL's size/pooled-text embedding */
    if (take(&p, "add_embedding.linear_1."))
        return is_leaf(p) ? put(out, outlen, "model.diffusion_model.label_emb.0.0.%s", p) : -1;
    if (take(&p, "add_embedding.linear_2."))
        return is_leaf(p) ? put(out, outlen, "model.diffusion_model.label_emb.0.2.%s", p) : -1;
    if (take(&p, "conv_norm_out."))
        return is_leaf(p) ? put(out, outlen, "model.diffusion_model.out.0.%s", p) : -1;
    if (take(&p, "conv_out.")) return is_leaf(p) ? put(out, outlen, "model.diffusion_model.out.2.%s", p) : -1;

    if (take(&p, "down_blocks.")) {
        if (!take_int(&p, L->n_levels, &i)) return -1;
        if (take(&p, "resnets.")) {
            if (!take_int(&p, R, &j) || !(part = unet_res_part(&p))) return -1;
            return put(out, outlen, "model.diffusion_model.input_blocks.%d.0.%s%s", 1 + i * (R + 1) + j, part,
                       p);
        }
        if (take(&p, "attentions.")) {
            if (!take_int(&p, R, &j) || !unet_attn_ok(p)) return -1;
            return put(out, outlen, "model.diffusion_model.input_blocks.%d.1.%s", 1 + i * (R + 1) + j, p);
        }
        if (take(&p, "downsamplers.0.conv.") && i < L->n_levels - 1 && is_leaf(p))
            return put(out, outlen, "model.diffusion_model.input_blocks.%d.0.op.%s", (i + 1) * (R + 1), p);
        return -1;
    }
    if (take(&p, "mid_block.")) {
        if (take(&p, "resnets.")) {
            if (!take_int(&p, 2, &j) || !(part = unet_res_part(&p))) return -1;
            return put(out, outlen, "model.diffusion_model.middle_block.%d.%s%s",
                       j == 0        ? 0
                       : L->mid_attn ? 2
                                     : 1,
                       part, p);
        }
        if (take(&p, "attentions.0.") && unet_attn_ok(p))
            return put(out, outlen, "model.diffusion_model.middle_block.1.%s", p);
        return -1;
    }
    if (take(&p, "up_blocks.")) {
        if (!take_int(&p, L->n_levels, &i)) return -1;
        if (take(&p, "resnets.")) {
            if (!take_int(&p, R + 1, &j) || !(part = unet_res_part(&p))) return -1;
            return put(out, outlen, "model.diffusion_model.output_blocks.%d.0.%s%s", i * (R + 1) + j, part,
                       p);
        }
        if (take(&p, "attentions.")) {
            if (!take_int(&p, R + 1, &j) || !unet_attn_ok(p)) return -1;
            return put(out, outlen, "model.diffusion_model.output_blocks.%d.1.%s", i * (R + 1) + j, p);
        }
        /* The upsampler follows the level's last resnet (and its attention, when the level has one). */
        if (take(&p, "upsamplers.0.conv.") && i < L->n_levels - 1 && is_leaf(p))
            return put(out, outlen, "model.diffusion_model.output_blocks.%d.%d.conv.%s", i * (R + 1) + R,
                       L->up_attn[i] ? 2 : 1, p);
        return -1;
    }
    return -1;
}

/* diffusers VAE ResnetBlock2D part -> LDM: only the shortcut is renamed. */
static const char *vae_res_part(const char **p)
{
    static const char *const map[][2] = {
        {"norm1.", "norm1."},
        {"conv1.", "conv1."},
        {"norm2.", "norm2."},
        {"conv2.", "conv2."},
        {"conv_shortcut.", "nin_shortcut."},
    };
    for (size_t i = 0; i < sizeof map / sizeof *map; i++)
        if (take(p, map[i][0])) return is_leaf(*p) ? map[i][1] : NULL;
    return NULL;
}

/* VAE mid-block attention: current diffusers (to_q/to_k/to_v/to_out.0) and older (query/key/value/proj_attn).
 */
static const char *vae_attn_part(const char **p)
{
    static const char *const map[][2] = {
        {"group_norm.", "norm."},    {"to_q.", "q."},  {"to_k.", "k."}, {"to_v.", "v."},
        {"to_out.0.", "proj_out."},  {"query.", "q."}, {"key.", "k."},  {"value.", "v."},
        {"proj_attn.", "proj_out."},
    };
    for (size_t i = 0; i < sizeof map / sizeof *map; i++)
        if (take(p, map[i][0])) return is_leaf(*p) ? map[i][1] : NULL;
    return NULL;
}

int sde_dn_vae_to_ldm(int vae_levels, const char *name, char *out, size_t outlen)
{
    const char *p = name, *part, *side;
    int i, j;
    if (take(&p, "quant_conv.") || take(&p, "post_quant_conv."))
        return is_leaf(p) ? put(out, outlen, "first_stage_model.%s", name) : -1;
    if (take(&p, "encoder."))
        side = "encoder";
    else if (take(&p, "decoder."))
        side = "decoder";
    else
        return -1;
    int enc = side[0] == 'e';

    if (take(&p, "conv_in.") || take(&p, "conv_out."))
        return is_leaf(p) ? put(out, outlen, "first_stage_model.%s", name) : -1;
    if (take(&p, "conv_norm_out."))
        return is_leaf(p) ? put(out, outlen, "first_stage_model.%s.norm_out.%s", side, p) : -1;
    if (take(&p, "mid_block.resnets.")) {
        if (!take_int(&p, 2, &j) || !(part = vae_res_part(&p))) return -1;
        return put(out, outlen, "first_stage_model.%s.mid.block_%d.%s%s", side, j + 1, part, p);
    }
    if (take(&p, "mid_block.attentions.0.")) {
        if (!(part = vae_attn_part(&p))) return -1;
        return put(out, outlen, "first_stage_model.%s.mid.attn_1.%s%s", side, part, p);
    }
    if (enc && take(&p, "down_blocks.")) {
        if (!take_int(&p, MAX_LEVELS, &i)) return -1;
        if (take(&p, "resnets.")) {
            if (!take_int(&p, MAX_RES, &j) || !(part = vae_res_part(&p))) return -1;
            return put(out, outlen, "first_stage_model.encoder.down.%d.block.%d.%s%s", i, j, part, p);
        }
        if (take(&p, "downsamplers.0.conv.") && is_leaf(p))
            return put(out, outlen, "first_stage_model.encoder.down.%d.downsample.conv.%s", i, p);
        return -1;
    }
    /* Decoder up_blocks run from the lowest resolution up; LDM numbers decoder.up by resolution level. */
    if (!enc && take(&p, "up_blocks.")) {
        if (!take_int(&p, vae_levels, &i)) return -1;
        int lvl = vae_levels - 1 - i;
        if (take(&p, "resnets.")) {
            if (!take_int(&p, MAX_RES, &j) || !(part = vae_res_part(&p))) return -1;
            return put(out, outlen, "first_stage_model.decoder.up.%d.block.%d.%s%s", lvl, j, part, p);
        }
        if (take(&p, "upsamplers.0.conv.") && is_leaf(p))
            return put(out, outlen, "first_stage_model.decoder.up.%d.upsample.conv.%s", lvl, p);
        return -1;
    }
    return -1;
}

int sde_dn_text2_to_ldm(const char *name, char *out, size_t outlen)
{
    if (!strcmp(name, "text_projection.weight"))
        return put(out, outlen, "conditioner.embedders.1.transformer.%s", name);
    if (strncmp(name, "text_model.", 11) || !name[11]) return -1;
    return put(out, outlen, "conditioner.embedders.1.transformer.%s", name);
}

int sde_dn_text_to_ldm(const char *name, char *out, size_t outlen)
{
    if (strncmp(name, "text_model.", 11) || !name[11]) return -1;
    return put(out, outlen, "cond_stage_model.transformer.%s", name);
}
