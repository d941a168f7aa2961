/* engine.c: the public engine API: loads checkpoint + tokenizer + text encoder + UNet + VAE, and runs
 * prompt -> conditioning -> Philox noise -> sampler loop (CFG in one batched UNet call) -> VAE -> PNG. */
#include "sd_engine.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "backend.h"
#include "backend_profile.h"
#include "checkpoint.h"
#include "clip.h"
#include "engine_trace.h"
#include "img2img.h"
#include "lora.h"
#include "preview.h"
#include "ops.h"
#include "philox.h"
#include "png_io.h"
#include "predict.h"
#include "sampler.h"
#include "sdxl_cond.h"
#include "tokenizer.h"
#include "unet.h"
#include "taesd.h"
#include "vae.h"

#ifndef SDW_VERSION
#define SDW_VERSION "0.0.0"
#endif

/** SD's VAE latent scale factor (the same for SD 1.x and 2.x); SDXL's VAE was trained to another. */
#define SDE_LATENT_SCALE 0.18215f
#define SDE_LATENT_SCALE_XL 0.13025f
/** Longest prompt accepted, in bytes; CLIP keeps 75 tokens anyway. */
#define SDE_MAX_PROMPT_BYTES 65536

struct sde_engine {
    sde_ckpt *ck;
    sde_tokenizer *tok;
    sde_clip *clip;            /* SD 1.x/2.x; NULL for SDXL */
    sde_sdxl_cond *xl;         /* SDXL's two encoders; NULL otherwise */
    float y[2 * SDE_SDXL_ADM]; /* SDXL's vector conditioning, cond then uncond */
    float latent_scale;
    sde_unet *unet;
    int unet_in_ch; /* 4, or 9 for an inpainting UNet */
    sde_vae *vae;
    sde_taesd *taesd; /* optional: previews and draft decodes */
    sde_noise_table tab;
    sde_model_info info;
    int v_pred;
    int32_t pad_id;
    sde_trace_fn trace;
    void *trace_ud;
    sde_warn_fn warn;
    void *warn_ud;
    sde_backend *be;   /* what every model runs on (sde_load_opts.backend), from sde_backend_open */
    sde_backend *prof; /* the profiling wrapper the models run on (sde_load_opts.profile), or NULL */
    /* threads of the load: the file's sha256 (the model hash), the warm-up of the first job's memory */
    pthread_t hash_th, warm_th;
    int hash_on, warm_on, hash_rc;
    const char *hash_path; /* sde_load_opts.model_path, valid until the load returns */
    char hash[11], hash_err[512];
    size_t warm_bytes;
};

/* A warning goes to the caller's callback (or nowhere): the engine knows nothing of logs or terminals. */
static void __attribute__((format(printf, 2, 3))) warn(const sde_engine *e, const char *fmt, ...)
{
    if (!e->warn) return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    e->warn(e->warn_ud, msg);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int is_dir(const char *p)
{
    struct stat st;
    return p && stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int has_vocab(const char *dir)
{
    char p[4200];
    struct stat st;
    if (snprintf(p, sizeof p, "%s/vocab.json", dir) >= (int)sizeof p) return 0;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* Tokenizer, in order: the caller's path, a diffusers tokenizer/ folder, one embedded in the file's metadata
 * (tiny models), a tokenizer/ folder beside or inside the model, then CLIP's own, built into the engine. */
static int load_tokenizer(sde_engine *e, const sde_load_opts *o, char *err, size_t errlen)
{
    const char *path = o->model_path;
    if (o->tokenizer_path && *o->tokenizer_path) return sde_tok_load(o->tokenizer_path, &e->tok, err, errlen);
    const char *dir = sde_ckpt_tokenizer_dir(e->ck);
    if (dir) return sde_tok_load(dir, &e->tok, err, errlen);
    const char *vj = sde_ckpt_meta(e->ck, "sdw.tokenizer.vocab_json");
    const char *mg = sde_ckpt_meta(e->ck, "sdw.tokenizer.merges");
    if (vj) {
        if (sde_tok_load_mem(vj, strlen(vj), mg ? mg : "", mg ? strlen(mg) : 0, &e->tok, err, errlen)) {
            size_t l = strlen(err);
            snprintf(err + l, errlen - l, " (tokenizer embedded in %s)", path);
            return -1;
        }
        return 0;
    }
    char cand[4096];
    if (is_dir(path)) {
        snprintf(cand, sizeof cand, "%s/tokenizer", path);
        if (has_vocab(cand)) return sde_tok_load(cand, &e->tok, err, errlen);
    } else {
        snprintf(cand, sizeof cand, "%s.tokenizer", path);
        if (has_vocab(cand)) return sde_tok_load(cand, &e->tok, err, errlen);
        const char *slash = strrchr(path, '/');
        if (slash)
            snprintf(cand, sizeof cand, "%.*s/tokenizer", (int)(slash - path), path);
        else
            snprintf(cand, sizeof cand, "tokenizer");
        if (has_vocab(cand)) return sde_tok_load(cand, &e->tok, err, errlen);
    }
    return sde_tok_load_builtin(&e->tok, err, errlen);
}

/* The prediction type: caller > diffusers scheduler_config > metadata > the weights (SD 2.x) > arch default
 * (v for SD 2.x). */
static int resolve_prediction(sde_engine *e, const sde_load_opts *o, char *err, size_t errlen)
{
    char *src = e->info.prediction_source;
    const size_t srclen = sizeof e->info.prediction_source;
    if (o->prediction == SDE_PRED_EPS || o->prediction == SDE_PRED_V) {
        e->v_pred = o->prediction == SDE_PRED_V;
        snprintf(src, srclen, "option");
        return 0;
    }
    if (o->prediction != SDE_PRED_AUTO) {
        snprintf(err, errlen, "prediction: unknown value %d", (int)o->prediction);
        return -1;
    }
    const char *pt = sde_ckpt_prediction_type(e->ck);
    if (pt) {
        if (!strcmp(pt, "epsilon") || !strcmp(pt, "v_prediction")) {
            e->v_pred = !strcmp(pt, "v_prediction");
            snprintf(src, srclen, "config");
            return 0;
        }
        snprintf(err, errlen,
                 "%s: scheduler prediction_type \"%s\" is not supported (epsilon or v_prediction)",
                 o->model_path, pt);
        return -1;
    }
    const char *m = sde_ckpt_meta(e->ck, "sdw.prediction");
    if (m) {
        if (!strcmp(m, "eps") || !strcmp(m, "v")) {
            e->v_pred = !strcmp(m, "v");
            snprintf(src, srclen, "metadata");
            return 0;
        }
        snprintf(err, errlen, "%s: metadata sdw.prediction=\"%s\": expected eps or v", o->model_path, m);
        return -1;
    }
    if (!strcmp(e->info.arch, "sd2")) {
        char why[256];
        int w = sde_prediction_from_weights(e->ck, why, sizeof why);
        if (w >= 0) {
            e->v_pred = w;
            snprintf(src, srclen, "weights");
            fprintf(stderr, "sd-engine: %s: SD 2.x %s prediction: %s\n", o->model_path, w ? "v" : "eps", why);
            return 0;
        }
    }
    snprintf(src, srclen, "default");
    e->v_pred = !strcmp(e->info.arch, "sd2");
    if (e->v_pred)
        /* Nothing in an SD 2.x single file says which it is; the 768-v models are the common ones. */
        warn(e,
             "%s: SD 2.x model without a prediction type: assuming v (768-v); use prediction eps for "
             "512-base models",
             o->model_path);
    return 0;
}

static int64_t count_params(const sde_ckpt *c, const char *prefix)
{
    int64_t total = 0;
    size_t pl = strlen(prefix);
    for (int i = 0; i < sde_ckpt_count(c); i++) {
        const sde_tensor *t = sde_ckpt_at(c, i);
        if (strncmp(t->name, prefix, pl)) continue;
        int64_t n = 1;
        for (int d = 0; d < t->ndim; d++)
            n *= t->shape[d];
        total += n;
    }
    return total;
}

/* The model's native resolution, once its arch and prediction are known. */
static int native_size(const sde_engine *e)
{
    int size = e->xl                                       ? 1024
               : !strcmp(e->info.arch, "tiny")             ? 64
               : !strcmp(e->info.arch, "sd2") && e->v_pred ? 768
                                                           : 512;
    /* a file that carries Stability's model spec metadata names its training size there: it wins (square
     * only), for distilled models such as SDXL-Turbo (512) that share an architecture with a larger size */
    const char *res = sde_ckpt_meta(e->ck, "modelspec.resolution");
    int rw = 0, rh = 0, used = 0;
    if (res && sscanf(res, "%dx%d%n", &rw, &rh, &used) == 2 && !res[used] && rw == rh && rw >= 64 &&
        rw <= 2048 && rw % 8 == 0)
        size = rw;
    return size;
}

/* The A1111 model hash reads the whole file (about 1 s for 2 GB, 80 % of a load): on its own thread, while
 * the models are built. */
static void *load_hash(void *arg)
{
    sde_engine *e = arg;
    e->hash_rc = sde_ckpt_short_hash(e->hash_path, e->hash, e->hash_err, sizeof e->hash_err);
    return NULL;
}

/* The first job's UNet activations, faulted in on a second core while the load goes on, and kept mapped
 * for that job (ops_mem.c): a page the process touches for the first time is a fault and a zeroing, under a
 * hypervisor that reclaims free guest pages far more (386 MB: 0.9 s), and the first step paid it. */
static void *load_warm(void *arg)
{
    const sde_engine *e = arg;
    sde_mem_prefault(e->warm_bytes);
    return NULL;
}

/* Waits for the load's threads; the hash thread's failure, with its message in err. */
static int load_join(sde_engine *e, char *err, size_t errlen)
{
    int rc = 0;
    if (e->warm_on) pthread_join(e->warm_th, NULL);
    e->warm_on = 0;
    if (e->hash_on) pthread_join(e->hash_th, NULL);
    e->hash_on = 0;
    /* the hash's failure, whether its thread ran it or the load did (no thread could be started) */
    if (e->hash_rc) {
        if (err) snprintf(err, errlen, "%s", e->hash_err);
        rc = -1;
    }
    return rc;
}

int sde_engine_load(const sde_load_opts *opts, sde_engine **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!opts || !opts->model_path || !*opts->model_path) {
        snprintf(err, errlen, "model: no model path given");
        return -1;
    }
    sde_engine *e = calloc(1, sizeof *e);
    if (!e) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    /* every model of this engine runs on one backend, opened for it (a GPU's stream and weights) */
    if (!(e->be = sde_backend_open(opts->backend, err, errlen))) {
        free(e);
        return -1;
    }
    e->warn = opts->warn;
    e->warn_ud = opts->warn_ud;
    if (opts->threads > 0) sde_set_threads(opts->threads);
    e->hash_path = opts->model_path;
    e->hash_on = !pthread_create(&e->hash_th, NULL, load_hash, e);
    if (!e->hash_on) e->hash_rc = sde_ckpt_short_hash(e->hash_path, e->hash, e->hash_err, sizeof e->hash_err);
    if (sde_ckpt_open(opts->model_path, &e->ck, err, errlen)) goto fail;
    /* SDXL by its tensors: a UNet with label_emb and a second, bigG text encoder */
    if (sde_sdxl_detect(e->ck) ? sde_sdxl_cond_build_on(e->be, e->ck, &e->xl, err, errlen)
                               : sde_clip_build_on(e->be, e->ck, NULL, &e->clip, err, errlen))
        goto fail;
    const sde_clip_config *cc = sde_clip_get_config(e->xl ? sde_sdxl_clip_l(e->xl) : e->clip);
    const int ctx_dim = e->xl ? cc->dim + SDE_SDXL_POOLED : cc->dim;
    e->latent_scale = e->xl ? SDE_LATENT_SCALE_XL : SDE_LATENT_SCALE;
    const char *preset = sde_ckpt_meta(e->ck, "sdw.preset");
    if (e->xl)
        snprintf(e->info.arch, sizeof e->info.arch, "sdxl");
    else if (cc->openclip || cc->dim == 1024)
        snprintf(e->info.arch, sizeof e->info.arch, "sd2");
    else if (preset && !strcmp(preset, "tiny"))
        snprintf(e->info.arch, sizeof e->info.arch, "tiny");
    else
        snprintf(e->info.arch, sizeof e->info.arch, "sd1");

    if (load_tokenizer(e, opts, err, errlen)) goto fail;
    if (sde_tok_vocab_size(e->tok) > cc->vocab) {
        snprintf(err, errlen,
                 "%s: the tokenizer has %d tokens but the text encoder embeds only %d: wrong tokenizer?",
                 opts->model_path, sde_tok_vocab_size(e->tok), cc->vocab);
        goto fail;
    }
    e->pad_id = e->xl ? sde_tok_eos(e->tok) : sde_clip_pad_id(e->clip, sde_tok_eos(e->tok));

    sde_unet_config ucfg;
    if (sde_unet_config_infer(e->ck, &ucfg, err, errlen) ||
        sde_unet_build_on(e->be, e->ck, &ucfg, &e->unet, err, errlen))
        goto fail;
    /* a 9-channel conv_in is an inpainting checkpoint (the weights decide, never the file name) */
    if (ucfg.in_channels != 4 && ucfg.in_channels != 9) {
        snprintf(err, errlen, "%s: the UNet takes %d input channels: only 4, or 9 (inpainting), are known",
                 opts->model_path, ucfg.in_channels);
        goto fail;
    }
    e->unet_in_ch = ucfg.in_channels;
    e->info.inpaint = ucfg.in_channels == 9;
    if (ucfg.context_dim != ctx_dim || (e->xl && ucfg.adm_in_channels != SDE_SDXL_ADM)) {
        snprintf(err, errlen, "%s: the UNet cross-attends to %d-wide context but the text encoder is %d wide",
                 opts->model_path, ucfg.context_dim, ctx_dim);
        goto fail;
    }
    if (sde_vae_build_on(e->be, e->ck, &e->vae, err, errlen)) goto fail;
    if (opts->taesd_path && *opts->taesd_path) {
        if (sde_taesd_load_on(e->be, opts->taesd_path, &e->taesd, err, errlen)) goto fail;
        if (sde_taesd_latent_channels(e->taesd) != sde_vae_get_config(e->vae)->z_channels) {
            snprintf(err, errlen, "%s: TAESD takes %d latent channels, the model's VAE has %d",
                     opts->taesd_path, sde_taesd_latent_channels(e->taesd),
                     sde_vae_get_config(e->vae)->z_channels);
            goto fail;
        }
        e->info.taesd = 1;
    }

    const float *ac = NULL;
    float ac_xl[SDE_TIMESTEPS];
    if (e->xl && !sde_ckpt_find(e->ck, "alphas_cumprod")) { /* the reference's float32 schedule */
        sde_sdxl_alphas_f32(ac_xl);
        ac = ac_xl;
    } else if (sde_ckpt_find(e->ck, "alphas_cumprod")) {
        const int64_t shape[1] = {SDE_TIMESTEPS};
        ac = sde_ckpt_f32(e->ck, "alphas_cumprod", 1, shape, err, errlen);
        if (!ac) goto fail;
    }
    if (sde_noise_table_init(&e->tab, ac, err, errlen)) {
        size_t l = strlen(err);
        snprintf(err + l, errlen - l, " (%s)", opts->model_path);
        goto fail;
    }
    if (resolve_prediction(e, opts, err, errlen)) goto fail;
    e->info.default_size = native_size(e);
    if (opts->warm && e->be == sde_backend_cpu()) {
        const int ww = opts->warm_width > 0 ? opts->warm_width : e->info.default_size,
                  wh = opts->warm_height > 0 ? opts->warm_height : e->info.default_size;
        /* the activations sde_generate reserves for one image with CFG (a batch of 2) */
        e->warm_bytes = sde_unet_activation_bytes(e->unet, 2, (wh + 7) / 8, (ww + 7) / 8, SDE_TOK_CONTEXT);
        if (e->warm_bytes != SIZE_MAX && ww >= 64 && wh >= 64 && ww <= 2048 && wh <= 2048)
            e->warm_on = !pthread_create(&e->warm_th, NULL, load_warm, e);
    }
    const char *env_prof = getenv("SDW_PROFILE");
    if (opts->profile || (env_prof && !strcmp(env_prof, "1"))) {
        /* the models keep the buffers and weights they were built with: the wrapper forwards to them */
        if (!(e->prof = sde_prof_wrap(e->be))) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        sde_unet_use_backend(e->unet, e->prof);
        sde_vae_use_backend(e->vae, e->prof);
        if (e->xl)
            sde_sdxl_cond_use_backend(e->xl, e->prof);
        else
            sde_clip_use_backend(e->clip, e->prof);
    }

    sde_model_info *in = &e->info;
    in->bf16 = sde_bf16_available() && e->be == sde_backend_cpu();
    snprintf(in->prediction, sizeof in->prediction, "%s", e->v_pred ? "v" : "eps");
    if (load_join(e, err, errlen)) goto fail;
    snprintf(in->model_hash, sizeof in->model_hash, "%s", e->hash);
    /* model name: the basename, without the extension of a file */
    const char *base = opts->model_path;
    size_t bl = strlen(base);
    while (bl > 1 && base[bl - 1] == '/')
        bl--;
    size_t start = bl;
    while (start > 0 && base[start - 1] != '/')
        start--;
    size_t nl = bl - start;
    if (!is_dir(opts->model_path))
        for (size_t i = nl; i > 1; i--)
            if (base[start + i - 1] == '.') {
                nl = i - 1;
                break;
            }
    if (nl >= sizeof in->model_name) nl = sizeof in->model_name - 1;
    memcpy(in->model_name, base + start, nl);
    in->model_name[nl] = 0;
    in->context_dim = ctx_dim;
    in->n_params = (e->xl ? sde_sdxl_params(e->xl) : sde_clip_params(e->clip)) +
                   count_params(e->ck, "model.diffusion_model.") +
                   count_params(e->ck, "first_stage_model.decoder.") +
                   count_params(e->ck, "first_stage_model.post_quant_conv.");
    if (e->taesd) in->n_params += sde_taesd_params(e->taesd);
    *out = e;
    return 0;
fail:
    sde_engine_free(e);
    return -1;
}

void sde_engine_free(sde_engine *e)
{
    if (!e) return;
    load_join(e, NULL, 0); /* a load that failed while its threads ran */
    sde_vae_free(e->vae);
    sde_taesd_free(e->taesd);
    sde_unet_free(e->unet);
    sde_clip_free(e->clip);
    sde_sdxl_cond_free(e->xl);
    sde_prof_free(e->prof);   /* after the models, which free their buffers through it */
    sde_backend_close(e->be); /* after the models too: the weights they uploaded go with it */
    sde_tok_free(e->tok);
    sde_ckpt_free(e->ck);
    free(e);
    sde_mem_trim(); /* the working memory kept for the next job (ops_mem.c) is unmapped with the engine */
}

void sde_engine_info(const sde_engine *e, sde_model_info *info)
{
    *info = e->info;
}

void sde_engine_set_trace(sde_engine *e, sde_trace_fn fn, void *ud)
{
    e->trace = fn;
    e->trace_ud = ud;
}

/* The job's LoRA list and prompt tags, each a plain file in lora_dir: NULL, or the offending field. */
static const char *lora_validate(const sde_gen_params *p, char *err, size_t errlen)
{
    if (p->n_loras < 0 || p->n_loras > SDE_LORA_MAX || (p->n_loras && !p->loras)) {
        snprintf(err, errlen, "loras: at most %d LoRAs per job", SDE_LORA_MAX);
        return "loras";
    }
    char path[4200];
    for (int i = 0; i < p->n_loras; i++)
        if (!p->loras[i].name ||
            sde_lora_resolve(p->lora_dir, p->loras[i].name, path, sizeof path, err, errlen))
            return "loras";
    size_t cap = strlen(p->prompt) + 1;
    char *clean = malloc(cap), *names = malloc(cap);
    sde_lora_spec tags[SDE_LORA_MAX];
    int n = p->n_loras;
    const char *f = NULL;
    if (!clean || !names) {
        snprintf(err, errlen, "out of memory");
        f = "prompt";
    } else if (sde_lora_parse_prompt(p->prompt, clean, cap, names, cap, tags, &n, err, errlen))
        f = "prompt";
    for (int i = p->n_loras; !f && i < n; i++)
        if (sde_lora_resolve(p->lora_dir, tags[i].name, path, sizeof path, err, errlen)) f = "prompt";
    free(clean);
    free(names);
    return f;
}

/* Merges the job's LoRAs (list, then prompt tags, whose text is removed into clean) into the weights. */
static int lora_begin(sde_engine *e, const sde_gen_params *p, char *clean, size_t cap, char *names,
                      sde_lora_undo **undo, sde_result *res, char *err, size_t errlen)
{
    sde_lora_spec all[SDE_LORA_MAX];
    int n = p->n_loras;
    for (int i = 0; i < n; i++)
        all[i] = p->loras[i];
    if (sde_lora_parse_prompt(p->prompt, clean, cap, names, cap, all, &n, err, errlen)) return -1;
    const double t0 = now_s();
    for (int i = 0; i < n; i++) {
        char path[4200], w[600] = "";
        int unused = 0;
        if (sde_lora_resolve(p->lora_dir, all[i].name, path, sizeof path, err, errlen) ||
            sde_lora_apply(e->ck, path, all[i].weight, undo, &unused, w, sizeof w, err, errlen))
            return -1;
        if (unused) warn(e, "%d LoRA tensors unused; first: %s", unused, w);
    }
    res->t_lora = now_s() - t0;
    res->n_loras = n;
    return 0;
}

/* SDXL's micro-conditioning numbers: pixels, 0 = the default; named as the job API names them. */
static const char *sdxl_sizes_validate(const sde_gen_params *p, char *err, size_t errlen)
{
    const struct {
        const char *name;
        int a, b;
    } v[] = {{"original_size", p->orig_width, p->orig_height},
             {"crops_coords_top_left", p->crop_top, p->crop_left},
             {"target_size", p->target_width, p->target_height}};
    for (size_t i = 0; i < sizeof v / sizeof *v; i++)
        if (v[i].a < 0 || v[i].a > SDE_MAX_SDXL_SIZE || v[i].b < 0 || v[i].b > SDE_MAX_SDXL_SIZE) {
            snprintf(err, errlen, "%s must be two numbers in 0..%d pixels, got %d, %d", v[i].name,
                     SDE_MAX_SDXL_SIZE, v[i].a, v[i].b);
            return v[i].name;
        }
    return NULL;
}

int sde_params_validate(const sde_gen_params *p, const char **field, char *err, size_t errlen)
{
    const char *f = NULL;
    if (!p) {
        f = "params";
        snprintf(err, errlen, "no parameters");
    } else if (!p->prompt) {
        f = "prompt";
        snprintf(err, errlen, "prompt is required");
    } else if (strlen(p->prompt) > SDE_MAX_PROMPT_BYTES) {
        f = "prompt";
        snprintf(err, errlen, "prompt is longer than %d bytes", SDE_MAX_PROMPT_BYTES);
    } else if (p->negative_prompt && strlen(p->negative_prompt) > SDE_MAX_PROMPT_BYTES) {
        f = "negative_prompt";
        snprintf(err, errlen, "negative_prompt is longer than %d bytes", SDE_MAX_PROMPT_BYTES);
    } else if (p->steps < 1 || p->steps > SDE_MAX_STEPS) {
        f = "steps";
        snprintf(err, errlen, "steps must be 1..%d, got %d", SDE_MAX_STEPS, p->steps);
    } else if (!isfinite(p->cfg_scale) || p->cfg_scale < 0.f || p->cfg_scale > 30.f) {
        f = "cfg_scale";
        snprintf(err, errlen, "cfg_scale must be a number in 0..30, got %g", (double)p->cfg_scale);
    } else if (p->width < 64 || p->width > 2048 || p->width % 8) {
        f = "width";
        snprintf(err, errlen, "width must be a multiple of 8 in 64..2048, got %d", p->width);
    } else if (p->height < 64 || p->height > 2048 || p->height % 8) {
        f = "height";
        snprintf(err, errlen, "height must be a multiple of 8 in 64..2048, got %d", p->height);
    } else if (!strcmp(sde_sampler_name(p->sampler), "?")) {
        f = "sampler";
        snprintf(err, errlen, "unknown sampler %d", (int)p->sampler);
    } else if (!strcmp(sde_schedule_name(p->schedule), "?")) {
        f = "schedule";
        snprintf(err, errlen, "unknown schedule %d", (int)p->schedule);
    } else if (p->clip_skip < 0 || p->clip_skip > 64) {
        f = "clip_skip";
        snprintf(err, errlen, "clip_skip must be 0 (model default) or 1..64, got %d", p->clip_skip);
    } else if (p->init_rgb || p->mask) {
        f = sde_img2img_validate(p, err, errlen);
    }
    if (!f && p && (p->n_images < 0 || p->n_images > SDE_MAX_IMAGES)) {
        f = "n_images";
        snprintf(err, errlen, "n_images must be 1..%d, got %d", SDE_MAX_IMAGES, p->n_images);
    }
    if (!f && p && p->batch_mem_mb < 0) {
        f = "batch_mem_mb";
        snprintf(err, errlen, "batch_mem_mb must be >= 0 (0: the default), got %d", p->batch_mem_mb);
    }
    if (!f && p && (p->preview_every < 0 || p->preview_every > SDE_MAX_STEPS)) {
        f = "preview_every";
        snprintf(err, errlen, "preview_every must be 0..%d steps, got %d", SDE_MAX_STEPS, p->preview_every);
    }
    if (!f && p && p->decoder != SDE_DECODER_VAE && p->decoder != SDE_DECODER_TAESD) {
        f = "decoder";
        snprintf(err, errlen, "decoder must be vae or taesd, got %d", (int)p->decoder);
    }
    if (!f && p && p->precision != SDE_PREC_FP32 && p->precision != SDE_PREC_BF16) {
        f = "precision";
        snprintf(err, errlen, "precision must be fp32 or bf16, got %d", (int)p->precision);
    }
    if (!f && p && p->prompt && (p->n_loras || strstr(p->prompt, "<lora:")))
        f = lora_validate(p, err, errlen);
    if (!f && p) f = sdxl_sizes_validate(p, err, errlen);
    if (field) *field = f;
    return f ? -1 : 0;
}

/* ---- one generation ---- */

/* Everything one generation needs, sized before sampling starts. */
typedef struct {
    sde_engine *e;
    const sde_gen_params *p;
    int lh, lw, batch; /* batch: UNet passes per image, 2 with CFG (cond, uncond), else 1 */
    int k;             /* images in the group now sampling; the UNet runs batch * k at once */
    int group, n_groups, steps;
    size_t n;        /* latent elements of one image: 4 * lh * lw */
    float *ctx;      /* [batch][k][77][dim]: k copies of cond, then k of uncond */
    float *ctx1;     /* [batch][77][dim]: the encoded cond and uncond once */
    float *y;        /* SDXL: [batch][k][adm] in the ctx order; NULL otherwise */
    float *unet_in;  /* [batch][k][in_ch][lh][lw]: the scaled latent, then concat */
    float *unet_out; /* [batch][k][4][lh][lw] */
    float *guided;   /* [k][4][lh][lw] */
    float tsteps[2 * SDE_MAX_IMAGES];
    const float *init_lat; /* [4][lh][lw] init latent when inpainting, else NULL */
    const float *mask_lat; /* [lh][lw], 1 = repaint */
    int in_ch;             /* the UNet's input channels: 4, or 9 (inpainting) */
    const float *concat;   /* [5][lh][lw] mask + masked-image latent for a 9-channel UNet, else NULL */
    float *den_last;       /* the latest denoised latent, for previews; NULL without them */
    double t_preview;
    double t0;
    int cancelled;
} gen_run;

static void trace(const gen_run *g, const char *name, int step, const float *d, size_t n)
{
    if (!g->e->trace) return;
    char nm[48];
    if (step > 0)
        snprintf(nm, sizeof nm, "step%02d_%s", step, name);
    else
        snprintf(nm, sizeof nm, "%s", name);
    g->e->trace(g->e->trace_ud, nm, d, n);
}

static int gen_cancel_requested(const gen_run *g)
{
    return g->p->should_cancel && g->p->should_cancel(g->p->ud);
}

/* Non-zero once the engine's device has failed (a GPU fault): the job ends with why in err. */
static int device_failed(const sde_engine *e, char *err, size_t errlen)
{
    const char *why = e->be->failed ? e->be->failed(e->be) : NULL;
    if (why && err) snprintf(err, errlen, "GPU failure: %s", why);
    return why != NULL;
}

int sde_engine_broken(const sde_engine *e, char *err, size_t errlen)
{
    return e && device_failed(e, err, errlen);
}

int sde_engine_vram(const sde_engine *e, size_t *free_bytes, size_t *total_bytes)
{
    if (!e || !e->be->vram) return -1;
    return e->be->vram(e->be, free_bytes, total_bytes);
}

static int gen_denoise(void *ud, const float *x, float sigma, int step, float *den, float *uncond)
{
    gen_run *g = ud;
    if (gen_cancel_requested(g)) {
        g->cancelled = 1;
        return 1;
    }
    float c_skip, c_out, c_in;
    sde_denoiser_scalings(g->e->v_pred, sigma, &c_skip, &c_out, &c_in);
    float t = sde_sigma_to_t(&g->e->tab, sigma);
    const size_t per = g->n / 4 * (size_t)g->in_ch; /* one image's UNet input: latent, then concat */
    const size_t nk = g->n * (size_t)g->k;          /* the group's latents, image after image */
    for (int b = 0; b < g->batch; b++)
        for (int j = 0; j < g->k; j++) {
            float *in = g->unet_in + ((size_t)b * g->k + (size_t)j) * per;
            const float *xj = x + (size_t)j * g->n;
            for (size_t i = 0; i < g->n; i++)
                in[i] = xj[i] * c_in;
            /* the peer feeds cond and uncond the same extra channels */
            if (g->concat) memcpy(in + g->n, g->concat, (per - g->n) * sizeof(float));
        }
    for (int b = 0; b < g->batch * g->k; b++)
        g->tsteps[b] = t;
    trace(g, "x", step + 1, x, g->n);
    trace(g, "unet_in", step + 1, g->unet_in, g->n);
    sde_unet_forward(g->e->unet, g->unet_in, g->batch * g->k, g->lh, g->lw, g->tsteps, g->ctx,
                     SDE_TOK_CONTEXT, g->unet_out);
    if (device_failed(g->e, NULL, 0)) return -1;
    const float *out = g->unet_out;
    if (g->batch == 2) {
        sde_cfg_combine(g->unet_out, g->unet_out + nk, g->p->cfg_scale, nk, g->guided);
        out = g->guided;
        trace(g, "eps_uncond", step + 1, g->unet_out + nk, g->n);
    }
    trace(g, "eps_cond", step + 1, g->unet_out, g->n);
    trace(g, "eps_guided", step + 1, out, g->n);
    for (size_t i = 0; i < nk; i++)
        den[i] = c_skip * x[i] + c_out * out[i];
    if (uncond) {
        const float *u =
            g->unet_out + (size_t)(g->batch - 1) * nk; /* the cond pass when there is no uncond */
        for (size_t i = 0; i < nk; i++)
            uncond[i] = u[i] * c_out + x[i] * c_skip;
    }
    if (g->mask_lat) {
        /* the peer blends the clean init latent into the estimate, so the sampler keeps the unmasked part */
        const size_t hw = (size_t)g->lh * g->lw;
        for (size_t i = 0; i < nk; i++) {
            float m = g->mask_lat[i % hw];
            den[i] = den[i] * m + g->init_lat[i % g->n] * (1.f - m);
        }
    }
    trace(g, "denoised", step + 1, den, g->n);
    /* previews show the first image of the job only */
    if (g->den_last && g->group == 0) memcpy(g->den_last, den, g->n * sizeof(float));
    return 0;
}

static int gen_vae_cancel(void *ud);

/* A preview by the TAESD: decoded at full size, then shrunk to the preview size. 0, or non-zero when out of
 * memory or cancelled (the caller skips this preview). */
static int taesd_preview(gen_run *g, uint8_t **png, size_t *len, int *w, int *h, char *err, size_t errlen)
{
    const int H = 8 * g->lh, W = 8 * g->lw;
    float *rgb = malloc((size_t)3 * H * W * sizeof(float));
    if (!rgb) {
        snprintf(err, errlen, "preview: out of memory");
        return -1;
    }
    int rc = sde_taesd_decode(g->e->taesd, g->den_last, g->lh, g->lw, rgb, gen_vae_cancel, g, err, errlen);
    if (rc == 0) rc = sde_preview_png_rgb(rgb, H, W, png, len, w, h, err, errlen);
    free(rgb);
    return rc;
}

static int gen_step(void *ud, int step, int total, const float *x)
{
    gen_run *g = ud;
    (void)x;
    /* a job of several groups reports one run of group * steps + step over n_groups * steps */
    step += g->group * g->steps;
    total *= g->n_groups;
    if (g->den_last && g->group == 0 && (step + 1) % g->p->preview_every == 0) {
        const double t0 = now_s();
        uint8_t *png = NULL;
        size_t len;
        int w, h;
        char err[256];
        /* a failed preview (out of memory) is skipped: the image itself matters more */
        if ((g->e->taesd ? taesd_preview(g, &png, &len, &w, &h, err, sizeof err)
                         : sde_preview_png(g->den_last, g->lh, g->lw, g->e->xl != NULL, &png, &len, &w, &h,
                                           err, sizeof err)) == 0)
            g->p->preview(g->p->ud, step + 1, total, png, len, w, h);
        free(png);
        g->t_preview += now_s() - t0;
    }
    if (g->p->progress && g->p->progress(g->p->ud, step + 1, total, now_s() - g->t0)) {
        g->cancelled = 1;
        return 1;
    }
    if (gen_cancel_requested(g)) {
        g->cancelled = 1;
        return 1;
    }
    return 0;
}

static int gen_vae_cancel(void *ud)
{
    return gen_cancel_requested((const gen_run *)ud);
}

/* AUTOMATIC1111's "parameters" text, so the image's settings show up in the tools people already use; the
 * sampler and schedule spellings are the display names of the gen_names.h rows. bf16: the job ran in bf16
 * ("Precision: bf16" before the version; an fp32 job's text says nothing of it, as before the option). */
static char *a1111_parameters(const sde_engine *e, const sde_gen_params *p, int bf16)
{
    const char *neg = p->negative_prompt ? p->negative_prompt : "";
    size_t cap = strlen(p->prompt) + strlen(neg) + 1024;
    char *s = malloc(cap);
    if (!s) return NULL;
    int n = snprintf(s, cap, "%s\n", p->prompt);
    if (*neg) n += snprintf(s + n, cap - (size_t)n, "Negative prompt: %s\n", neg);
    n += snprintf(s + n, cap - (size_t)n,
                  "Steps: %d, Sampler: %s, Schedule type: %s, CFG scale: %g, Seed: %llu, "
                  "Size: %dx%d, ",
                  p->steps, sdw_names_display(SDW_NAMES_SAMPLER, (int)p->sampler),
                  sdw_names_display(SDW_NAMES_SCHEDULE, (int)p->schedule), (double)p->cfg_scale,
                  (unsigned long long)p->seed, p->width, p->height);
    if (e->info.model_hash[0]) n += snprintf(s + n, cap - (size_t)n, "Model hash: %s, ", e->info.model_hash);
    n += snprintf(s + n, cap - (size_t)n, "Model: %s, ", e->info.model_name);
    /* A1111 writes the clip skip only when it is not 1 */
    /* SDXL conditions on the penultimate layers: A1111 writes that as clip skip 2 */
    int skip =
        e->xl ? 2 : sde_clip_get_config(e->clip)->full - sde_clip_skip_layers(e->clip, p->clip_skip) + 1;
    if (skip > 1) n += snprintf(s + n, cap - (size_t)n, "Clip skip: %d, ", skip);
    if (bf16) n += snprintf(s + n, cap - (size_t)n, "Precision: bf16, ");
    snprintf(s + n, cap - (size_t)n, "Version: sd-worker %s", SDW_VERSION);
    return s;
}

/* SDXL: both contexts and y for cond (slot 0) and, with CFG, uncond (slot 1). The reference conditions an
 * empty negative prompt on a zero context but keeps its pooled text in y. Size fields left 0 take the
 * reference's defaults: original = target = the image size, crop (0, 0). */
static void sdxl_conditioning(sde_engine *e, const sde_gen_params *p, int batch, float *ctx)
{
    sde_sdxl_sizes sz = {.orig_h = p->orig_height > 0 ? p->orig_height : p->height,
                         .orig_w = p->orig_width > 0 ? p->orig_width : p->width,
                         .crop_top = p->crop_top,
                         .crop_left = p->crop_left,
                         .target_h = p->target_height > 0 ? p->target_height : p->height,
                         .target_w = p->target_width > 0 ? p->target_width : p->width};
    const int32_t eos = sde_tok_eos(e->tok);
    int32_t ids[SDE_TOK_CONTEXT];
    sde_tok_context(e->tok, p->prompt, e->pad_id, ids);
    sde_sdxl_encode(e->xl, ids, eos, 0, &sz, ctx, e->y);
    if (batch == 2) {
        const char *neg = p->negative_prompt ? p->negative_prompt : "";
        sde_tok_context(e->tok, neg, e->pad_id, ids);
        sde_sdxl_encode(e->xl, ids, eos, !*neg, &sz, ctx + (size_t)SDE_TOK_CONTEXT * e->info.context_dim,
                        e->y + SDE_SDXL_ADM);
    }
    sde_unet_set_y(e->unet, e->y, batch);
}

/* Images per UNet call: the whole batch while its activations fit the budget, else the most that do, in
 * groups of even size (4 over a budget for 3 runs 2 + 2); at least one. */
static int gen_group_size(const sde_engine *e, const sde_gen_params *p, int batch, int lh, int lw, int n_img)
{
    if (n_img <= 1 || p->sampler == SDE_SAMPLER_DPMPP_2M_SDE_BT) return 1;
    const size_t budget = (size_t)(p->batch_mem_mb > 0 ? p->batch_mem_mb : SDE_BATCH_MEM_MB) << 20;
    int k = n_img;
    while (k > 1 && sde_unet_activation_bytes(e->unet, batch * k, lh, lw, SDE_TOK_CONTEXT) > budget)
        k--;
    const int groups = (n_img + k - 1) / k;
    return (n_img + groups - 1) / groups;
}

/* The group's conditioning in the UNet's batch order: k copies of cond, then k of uncond (and SDXL's y). */
static void gen_group_cond(gen_run *g, int k)
{
    const size_t c = (size_t)SDE_TOK_CONTEXT * g->e->info.context_dim;
    g->k = k;
    for (int b = 0; b < g->batch; b++)
        for (int j = 0; j < k; j++) {
            const size_t slot = (size_t)b * k + j;
            memcpy(g->ctx + slot * c, g->ctx1 + (size_t)b * c, c * sizeof(float));
            if (g->y)
                memcpy(g->y + slot * SDE_SDXL_ADM, g->e->y + (size_t)b * SDE_SDXL_ADM,
                       SDE_SDXL_ADM * sizeof(float));
        }
    if (g->y) sde_unet_set_y(g->e->unet, g->y, g->batch * k);
}

/* Latent -> clamped 8-bit RGB -> PNG with its own seed in the parameters text. */
static int gen_decode_one(gen_run *g, float *x, int idx, float *rgb, uint8_t *px, sde_image *img, char *err,
                          size_t errlen)
{
    sde_engine *e = g->e;
    const sde_gen_params *p = g->p;
    const size_t npx = (size_t)p->width * p->height;
    int vr;
    if (p->decoder == SDE_DECODER_TAESD) {
        /* TAESD decodes the latent as sampled, straight to [0, 1] (the peer's TinyImageAutoEncoder) */
        if (idx == 0) trace(g, "taesd_in", 0, x, g->n);
        vr = sde_taesd_decode(e->taesd, x, g->lh, g->lw, rgb, gen_vae_cancel, g, err, errlen);
    } else {
        for (size_t i = 0; i < g->n; i++)
            x[i] /= e->latent_scale;
        if (idx == 0) trace(g, "vae_in", 0, x, g->n);
        vr = sde_vae_decode(e->vae, x, g->lh, g->lw, rgb, gen_vae_cancel, g, err, errlen);
    }
    if (vr) return vr == 1 ? SDE_CANCELLED : SDE_ERR;
    if (device_failed(e, err, errlen)) return SDE_ERR;
    for (size_t i = 0; i < 3 * npx; i++) {
        float v = p->decoder == SDE_DECODER_TAESD ? rgb[i] : (rgb[i] + 1.f) * 0.5f;
        rgb[i] = v < 0.f ? 0.f : v > 1.f ? 1.f : v;
    }
    if (idx == 0) trace(g, "vae_out", 0, rgb, 3 * npx);
    /* planar [3][H][W] in [0,1] -> interleaved 8-bit RGB, rounded to nearest as the peer does */
    for (size_t i = 0; i < npx; i++)
        for (int c = 0; c < 3; c++)
            px[3 * i + (size_t)c] = (uint8_t)(rgb[(size_t)c * npx + i] * 255.f + 0.5f);
    sde_gen_params one = *p;
    one.seed = p->seed + (uint64_t)idx;
    char *params_txt = a1111_parameters(e, &one, sde_get_bf16()); /* what the job runs in (sde_generate) */
    if (!params_txt) {
        snprintf(err, errlen, "out of memory");
        return SDE_ERR;
    }
    const char *kv[] = {"parameters", params_txt, NULL};
    int rc = sde_png_encode(px, p->width, p->height, kv, &img->png, &img->png_len, err, errlen);
    free(params_txt);
    img->seed = one.seed;
    return rc ? SDE_ERR : SDE_OK;
}

int sde_generate(sde_engine *e, const sde_gen_params *p, sde_result *res, char *err, size_t errlen)
{
    memset(res, 0, sizeof *res);
    const char *field;
    if (!e) {
        snprintf(err, errlen, "no engine");
        return SDE_ERR;
    }
    if (sde_params_validate(p, &field, err, errlen)) return SDE_ERR;
    sde_prof_reset(e->prof);
    /* the kernels read the precision from here; it is put back to fp32 on every way out */
    /* (a GPU backend has no bf16 path: its jobs run as the backend does, and say fp32) */
    sde_set_bf16(p->precision == SDE_PREC_BF16 && e->info.bf16);
    res->precision = sde_get_bf16() ? SDE_PREC_BF16 : SDE_PREC_FP32;
    const double t0 = now_s();
    gen_run g = {.e = e, .p = p, .lh = p->height / 8, .lw = p->width / 8, .t0 = t0};
    g.batch = p->cfg_scale <= 1.f ? 1 : 2; /* guidance <= 1 (turbo models): the conditional pass only */
    g.n = (size_t)4 * g.lh * g.lw;
    const int n_img = p->n_images > 1 ? p->n_images : 1;
    const int dim = e->info.context_dim;
    const size_t npx = (size_t)p->width * p->height;
    float sigmas[SDE_MAX_STEPS + 1];
    const int steps = sde_sigmas_make(&e->tab, p->schedule, p->steps, sigmas, err, errlen);
    if (steps < 0) return SDE_ERR;
    /* SDXL's two encoders give their penultimate layers (A1111's clip skip 2), the only depth offered */
    const int clip_layers = e->xl ? 0 : sde_clip_skip_layers(e->clip, p->clip_skip);
    if (e->xl ? p->clip_skip != 0 && p->clip_skip != 2 : clip_layers < 0) {
        if (e->xl)
            snprintf(err, errlen, "clip_skip %d: SDXL takes 0 or 2 (its encoders' penultimate layers)",
                     p->clip_skip);
        else
            snprintf(err, errlen, "clip_skip %d: the text encoder has only %d layers", p->clip_skip,
                     sde_clip_get_config(e->clip)->full);
        return SDE_ERR;
    }
    if (p->decoder == SDE_DECODER_TAESD && !e->taesd) {
        snprintf(
            err, errlen,
            "decoder taesd: no TAESD decoder is loaded (give one with --taesd, or model.preview_decoder)");
        return SDE_ERR;
    }
    const int k = gen_group_size(e, p, g.batch, g.lh, g.lw, n_img);
    g.n_groups = (n_img + k - 1) / k;

    int rc = SDE_ERR;
    float *x = NULL, *work = NULL, *rgb = NULL, *init_lat = NULL, *mask_lat = NULL, *concat = NULL;
    sde_lora_undo *undo = NULL;
    size_t pcap = strlen(p->prompt) + 1;
    char *prompt = malloc(pcap), *lora_names = malloc(pcap);
    uint8_t *px = NULL;
    sde_philox *rngs = calloc((size_t)k, sizeof *rngs);
    res->images = calloc((size_t)n_img, sizeof *res->images);
    const size_t ctx1 = (size_t)SDE_TOK_CONTEXT * dim;
    g.ctx1 = malloc((size_t)g.batch * ctx1 * sizeof(float));
    g.ctx = malloc((size_t)g.batch * k * ctx1 * sizeof(float));
    if (e->xl) g.y = malloc((size_t)g.batch * k * SDE_SDXL_ADM * sizeof(float));
    g.in_ch = e->unet_in_ch;
    g.unet_in = malloc((size_t)g.batch * k * (g.n / 4 * (size_t)g.in_ch) * sizeof(float));
    g.unet_out = malloc((size_t)g.batch * k * g.n * sizeof(float));
    g.guided = malloc((size_t)k * g.n * sizeof(float));
    x = malloc((size_t)n_img * g.n * sizeof(float));
    if (p->preview && p->preview_every > 0) g.den_last = calloc(g.n, sizeof(float));
    work = malloc(sde_sampler_work_floats(p->sampler, (size_t)k * g.n) * sizeof(float));
    rgb = malloc(3 * npx * sizeof(float));
    px = malloc(3 * npx);
    if (!g.ctx || !g.ctx1 || (e->xl && !g.y) || !g.unet_in || !g.unet_out || !g.guided || !x || !work ||
        !rgb || !px || !prompt || !lora_names || !rngs || !res->images) {
        snprintf(err, errlen, "out of memory for %d %dx%d image(s)", n_img, p->width, p->height);
        goto out;
    }
    /* the init latent before the UNet's activations are reserved: the VAE encoder's peak comes first */
    int start = 0;
    if (p->init_rgb) {
        start = sde_img2img_start(steps, p->strength);
        init_lat = malloc(g.n * sizeof(float));
        mask_lat = p->mask ? malloc((size_t)g.lh * g.lw * sizeof(float)) : NULL;
        if (!init_lat || (p->mask && !mask_lat)) {
            snprintf(err, errlen, "out of memory for the init image");
            goto out;
        }
        /* rgb is free until the decode: it holds the planar init image. One encoding, with the job's
         * seed, serves every image of a batch, as the peer does. */
        sde_img2img_to_planar(p->init_rgb, p->init_w, p->init_h, p->width, p->height, rgb);
        if (sde_img2img_encode(e->vae, rgb, p->height, p->width, p->seed, e->latent_scale, init_lat, err,
                               errlen))
            goto out;
        trace(&g, "init_latent", 0, init_lat, g.n);
        if (mask_lat) {
            if (sde_img2img_mask(p->mask, p->mask_w, p->mask_h, p->width, p->height, p->mask_blur,
                                 mask_lat)) {
                snprintf(err, errlen, "out of memory for the mask");
                goto out;
            }
            g.init_lat = init_lat;
            g.mask_lat = mask_lat;
        }
    }
    if (g.in_ch == 9) {
        /* rgb still holds the planar init image; text-to-image gets the peer's all-repaint, empty inputs */
        concat = malloc((size_t)5 * g.lh * g.lw * sizeof(float));
        if (!concat) {
            snprintf(err, errlen, "out of memory for the inpainting input");
            goto out;
        }
        float *dil = mask_lat && p->mask_blur == 0 ? mask_lat : NULL;
        if (sde_img2img_inpaint_concat(e->vae, p->init_rgb ? rgb : NULL, p->mask, p->mask_w, p->mask_h,
                                       p->width, p->height, p->seed, e->latent_scale, concat, dil, err,
                                       errlen))
            goto out;
        g.concat = concat;
        trace(&g, "concat", 0, concat, (size_t)5 * g.lh * g.lw);
    }
    if (sde_unet_reserve(e->unet, g.batch * k, g.lh, g.lw, SDE_TOK_CONTEXT, err, errlen)) goto out;

    if (lora_begin(e, p, prompt, pcap, lora_names, &undo, res, err, errlen)) goto out;
    /* text conditioning, once for all images: cond in slot 0, uncond (negative prompt) in slot 1 */
    int32_t ids[SDE_TOK_CONTEXT];
    sde_prof_section(e->prof, "clip", -1); /* the tokenizer too: it is part of encoding */
    sde_tok_context(e->tok, prompt, e->pad_id, ids);
    if (e->xl) {
        sde_gen_params xp = *p; /* the prompt without its <lora:...> tags */
        xp.prompt = prompt;
        sdxl_conditioning(e, &xp, g.batch, g.ctx1);
    } else {
        sde_clip_encode_layers(e->clip, ids, clip_layers, g.ctx1);
    }
    trace(&g, "cond_crossattn", 0, g.ctx1, ctx1);
    if (e->xl) {
        trace(&g, "cond_vector", 0, e->y, SDE_SDXL_ADM);
        if (g.batch == 2) {
            trace(&g, "uncond_crossattn", 0, g.ctx1 + ctx1, ctx1);
            trace(&g, "uncond_vector", 0, e->y + SDE_SDXL_ADM, SDE_SDXL_ADM);
        }
    }
    if (g.batch == 2 && !e->xl) {
        float *u = g.ctx1 + ctx1;
        sde_tok_context(e->tok, p->negative_prompt ? p->negative_prompt : "", e->pad_id, ids);
        sde_clip_encode_layers(e->clip, ids, clip_layers, u);
        trace(&g, "uncond_crossattn", 0, u, ctx1);
    }
    sde_prof_section(e->prof, NULL, 0);
    res->t_encode = now_s() - t0;
    if (gen_cancel_requested(&g)) {
        rc = SDE_CANCELLED;
        goto out;
    }

    const double ts = now_s();
    g.steps = steps - start;
    for (int first = 0; first < n_img; first += k) {
        const int kk = n_img - first < k ? n_img - first : k;
        float *xg = x + (size_t)first * g.n;
        g.group = first / k;
        gen_group_cond(&g, kk);
        /* starting latents: image i's Philox noise at (seed + i, offset 0), scaled to the first sigma,
         * exactly what a single job with that seed starts from; its generator then feeds that image's sampler
         * noise */
        for (int j = 0; j < kk; j++) {
            sde_philox_init(&rngs[j], p->seed + (uint64_t)(first + j));
            sde_philox_randn(&rngs[j], xg + (size_t)j * g.n, g.n);
        }
        if (first == 0) trace(&g, "noise", 0, xg, g.n);
        /* over an init image the schedule starts part-way (strength), from the init latent plus that much
         * noise */
        for (size_t i = 0; i < (size_t)kk * g.n; i++)
            xg[i] = xg[i] * sigmas[start] + (init_lat ? init_lat[i % g.n] : 0.f);
        if (first == 0) trace(&g, "x_T", 0, xg, g.n);
        sde_sample_args sa = {.kind = p->sampler,
                              .n = g.n,
                              .sigmas = sigmas + start,
                              .steps = steps - start,
                              .rng = rngs,
                              .work = work,
                              .denoise = gen_denoise,
                              .on_step = gen_step,
                              .ud = &g,
                              .batch = kk};
        int sr = sde_sample(&sa, xg);
        if (sr == 1 || g.cancelled) {
            rc = SDE_CANCELLED;
            goto out;
        }
        if (sr != 0) {
            if (!device_failed(e, err, errlen))
                snprintf(err, errlen, "sampler %s failed", sde_sampler_name(p->sampler));
            goto out;
        }
        if (first == 0) trace(&g, "x0", 0, xg, g.n);
    }
    res->t_sample = now_s() - ts;
    res->t_preview = g.t_preview;
    if (gen_cancel_requested(&g)) {
        rc = SDE_CANCELLED;
        goto out;
    }

    /* The UNet's activations (~0.4 GB at 512x512 with CFG) are dead until the next generation reserves them
     * again: releasing them before the VAE's working memory is allocated keeps fp32 SD 1.5 under 5 GB peak.
     */
    sde_unet_reserve(e->unet, 0, 0, 0, 0, err, errlen);
    const double td = now_s();
    for (int i = 0; i < n_img; i++) {
        rc = gen_decode_one(&g, x + (size_t)i * g.n, i, rgb, px, &res->images[i], err, errlen);
        if (rc != SDE_OK) goto out;
        res->n_images = i + 1;
    }
    res->t_decode = now_s() - td;
    res->png = res->images[0].png;
    res->png_len = res->images[0].png_len;
    res->width = p->width;
    res->height = p->height;
    res->seed = p->seed;
    res->t_total = now_s() - t0;
    res->profile = sde_prof_report(e->prof, res->t_total);
    rc = SDE_OK;
out:
    sde_set_bf16(0);
    sde_unet_reserve(e->unet, 0, 0, 0, 0, err,
                     errlen); /* also after a cancel or error: an idle worker holds none */
    if (rc != SDE_OK) sde_result_free(res);
    if (rc == SDE_CANCELLED) snprintf(err, errlen, "cancelled");
    /* the next job sees the checkpoint's own weights again, bit for bit */
    sde_lora_restore(e->ck, undo);
    free(prompt);
    free(lora_names);
    free(mask_lat);
    free(concat);
    free(init_lat);
    free(px);
    free(rgb);
    free(work);
    free(x);
    free(rngs);
    free(g.den_last);
    free(g.guided);
    free(g.unet_out);
    free(g.unet_in);
    free(g.y);
    free(g.ctx);
    free(g.ctx1);
    return rc;
}

int sde_bf16_available(void)
{
    return sde_cpu_has_bf16();
}

void sde_result_free(sde_result *r)
{
    if (!r) return;
    /* png aliases images[0].png */
    for (int i = 0; r->images && i < r->n_images; i++)
        free(r->images[i].png);
    if (!r->images) free(r->png);
    free(r->images);
    r->images = NULL;
    r->n_images = 0;
    r->png = NULL;
    r->png_len = 0;
    free(r->profile);
    r->profile = NULL;
}
