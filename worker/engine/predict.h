/* predict.h: telling a v-prediction SD 2.x UNet from an eps one by its weights, for single files that do
 * not say which they are. */
#ifndef SDE_PREDICT_H
#define SDE_PREDICT_H

#include <stddef.h>

#include "checkpoint.h"

/** The weight tensor the detector reads, and the spread of it above which the model is taken as v. */
#define SDE_PREDICT_PROBE "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias"
#define SDE_PREDICT_V_STD 0.09

/** What the weights say: 1 v-prediction, 0 eps, -1 no evidence (probe tensor missing, or still at its
 * initial all-zero value as in untrained/random checkpoints). why gets a one-line reason either way.
 * A "v_pred" tensor (the marker some v checkpoints carry) means v. Reads 320 floats; no UNet pass. */
int sde_prediction_from_weights(sde_ckpt *c, char *why, size_t whylen);

#endif
