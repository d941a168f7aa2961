/* gen_engine.c: request -> sde_gen_params. The sampler and schedule enums of both sides are generated
 * from the same gen_names.h rows, so they convert by a cast; the static asserts keep that true. */
#include <string.h>

#include "gen_engine.h"

_Static_assert((int)SDE_SAMPLER_EULER == (int)SDW_SAMPLER_EULER &&
                   (int)SDE_SAMPLER_LCM == (int)SDW_SAMPLER_LCM,
               "sde_sampler follows the gen_names rows");
_Static_assert((int)SDE_SAMPLER_DPMPP_2M_SDE_BT == (int)SDW_SAMPLER_DPMPP_2M_SDE_BT,
               "sde_sampler follows the gen_names rows");
_Static_assert((int)SDE_SCHEDULE_KARRAS == (int)SDW_SCHEDULE_KARRAS,
               "sde_schedule follows the gen_names rows");
_Static_assert((int)SDE_DECODER_VAE == SDW_DECODER_VAE && (int)SDE_DECODER_TAESD == SDW_DECODER_TAESD,
               "the decoder values agree");
_Static_assert((int)SDE_PREC_FP32 == SDW_PRECISION_FP32 && (int)SDE_PREC_BF16 == SDW_PRECISION_BF16,
               "the precision values agree");

void sdw_gen_to_engine(const sdw_gen_request *r, sde_gen_params *p)
{
    memset(p, 0, sizeof *p);
    p->prompt = r->prompt;
    p->negative_prompt = r->negative_prompt;
    p->steps = r->steps;
    p->cfg_scale = (float)r->cfg_scale;
    p->seed = r->seed;
    p->sampler = (sde_sampler)r->sampler;
    p->schedule = (sde_schedule)r->schedule;
    p->width = r->width;
    p->height = r->height;
    p->clip_skip = r->clip_skip;
    p->decoder = (sde_decoder)r->decoder; /* an unknown value fails sde_params_validate on "decoder" */
    p->orig_width = r->orig_width;
    p->orig_height = r->orig_height;
    p->crop_top = r->crop_top;
    p->crop_left = r->crop_left;
    p->target_width = r->target_width;
    p->target_height = r->target_height;
    p->n_images = r->n;
    p->precision =
        (sde_precision)r->precision; /* an unknown value fails sde_params_validate on "precision" */
}
