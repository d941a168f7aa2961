/* clip.h: the CLIP text encoders of Stable Diffusion: HF CLIPTextModel (SD 1.x ViT-L/14, diffusers
 * text_encoder folders, tiny models) and OpenCLIP ViT-H/14 (SD 2.x single files, penultimate layer). */
#ifndef SDE_CLIP_H
#define SDE_CLIP_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "checkpoint.h"
#include "tokenizer.h"

/** What was found in the checkpoint. */
typedef struct {
    int openclip;   /* names under cond_stage_model.model.* (SD 2.x single file) */
    int dim;        /* hidden width: 768, 1024, 64 (tiny) */
    int layers;     /* layers run by default (OpenCLIP: all but the last resblock) */
    int loaded;     /* layers resolved: every one in the file */
    int full;       /* layers of the whole encoder, what clip skip counts back from (HF SD 2.x: loaded + 1) */
    int heads;      /* dim / 64, or metadata sdw.text.num_heads */
    int ff;         /* MLP hidden width */
    int vocab;      /* rows of the token embedding */
    int n_pos;      /* rows of the position embedding (>= 77) */
    int quick_gelu; /* 1: x*sigmoid(1.702x) (OpenAI CLIP); 0: exact erf GELU (OpenCLIP, SD 2.x) */
    int pad_zero;   /* SD 2.x pads the context with token 0 instead of the end token */
} sde_clip_config;

/** A built text encoder: resolved weights plus its activation buffers (not safe for concurrent encodes). */
typedef struct sde_clip sde_clip;

/** Which text encoder to build and what it outputs, for checkpoints with several (SDXL). */
typedef struct {
    const char *hf_prefix; /* HF CLIPTextModel names up to and including "text_model.", or NULL */
    const char *oc_prefix; /* OpenCLIP names up to "model." (tried when hf_prefix finds nothing), or NULL */
    int skip;              /* the context is the raw hidden state this many layers before the last */
    int pooled;            /* run every layer for sde_clip_encode_pooled */
    int gelu;              /* 1 exact GELU, 0 quick GELU, -1 as the checkpoint suggests */
} sde_clip_spec;

/** Finds the text encoder in the checkpoint, resolves every weight and allocates all activations.
 * Returns 0, or -1 with err naming the missing or mismatched tensor. */
int sde_clip_build(sde_ckpt *c, sde_clip **out, char *err, size_t errlen);
/** The encoder spec names (the SD 1.x/2.x one when spec is NULL); same contract as sde_clip_build. */
int sde_clip_build_spec(sde_ckpt *c, const sde_clip_spec *spec, sde_clip **out, char *err, size_t errlen);
/** sde_clip_build_spec() on backend be (spec NULL: sde_clip_build()). */
int sde_clip_build_on(sde_backend *be, sde_ckpt *c, const sde_clip_spec *spec, sde_clip **out, char *err,
                      size_t errlen);
/** As sde_clip_encode, and when pooled is non-NULL (a spec with pooled set) also pooled[dim] = the final
 * LayerNorm of the last layer's hidden state at token pool_at. Never allocates. */
void sde_clip_encode_pooled(sde_clip *m, const int32_t tokens[SDE_TOK_CONTEXT], float *out, float *pooled,
                            int pool_at);
/** out[77][dim] = the conditioning for a 77-token context. Ids outside the vocabulary are encoded as the
 * pad token (the engine checks the tokenizer fits the model at load). Never allocates. */
void sde_clip_encode(sde_clip *m, const int32_t tokens[SDE_TOK_CONTEXT], float *out);
/** sde_clip_encode() through the first `layers` layers (1..loaded; else the default), then the final
 * LayerNorm. */
void sde_clip_encode_layers(sde_clip *m, const int32_t tokens[SDE_TOK_CONTEXT], int layers, float *out);
/** Layers to run for an A1111 clip skip (1 = all of the full encoder, 2 = all but the last...; 0 = the
 * model's default), or -1 when the file does not hold that many. */
int sde_clip_skip_layers(const sde_clip *m, int clip_skip);
/** Width of one output token vector (the UNet's context_dim). */
int sde_clip_dim(const sde_clip *m);
/** The token that fills the context after the end token: eos for SD 1.x/tiny, 0 for SD 2.x. */
int32_t sde_clip_pad_id(const sde_clip *m, int32_t eos_id);
/** The resolved configuration. */
const sde_clip_config *sde_clip_get_config(const sde_clip *m);
/** Parameters of the layers actually used (embeddings included). */
int64_t sde_clip_params(const sde_clip *m);
/** Frees the buffers (the weights belong to the checkpoint). NULL is fine. */
void sde_clip_free(sde_clip *m);
/** Runs m on be from now on.
 * Buffers and weights stay valid only when be shares them with the backend it was built on (a profiling
 * wrapper around it, backend_profile.h); switch before freeing that wrapper. */
void sde_clip_use_backend(sde_clip *m, sde_backend *be);

#endif
