/* predict.c: v vs eps for SD 2.x files from one LayerNorm bias of the UNet's last attention block, the test
 * ComfyUI uses; cheaper than A1111's (one UNet pass on a constant input at t = 999, v when the mean
 * output minus input is below -1), and it needs no fp32 UNet at load. */
#include "predict.h"

#include <math.h>
#include <stdio.h>

int sde_prediction_from_weights(sde_ckpt *c, char *why, size_t whylen)
{
    if (sde_ckpt_find(c, "v_pred")) {
        snprintf(why, whylen, "the file has a v_pred marker tensor");
        return 1;
    }
    const sde_tensor *t = sde_ckpt_find(c, SDE_PREDICT_PROBE);
    if (!t || t->ndim != 1 || t->shape[0] < 2) {
        snprintf(why, whylen, "no %s to look at", SDE_PREDICT_PROBE);
        return -1;
    }
    char err[256];
    const int64_t shape[1] = {t->shape[0]};
    const float *b = sde_ckpt_f32(c, SDE_PREDICT_PROBE, 1, shape, err, sizeof err);
    if (!b) {
        snprintf(why, whylen, "%s", err);
        return -1;
    }
    double m = 0.0, v = 0.0;
    for (int64_t i = 0; i < shape[0]; i++)
        m += b[i];
    m /= (double)shape[0];
    for (int64_t i = 0; i < shape[0]; i++)
        v += (b[i] - m) * (b[i] - m);
    double sd = sqrt(v / (double)shape[0]);
    if (sd == 0.0) {
        /* a LayerNorm bias never stays exactly at its zero init through training: nothing to go on */
        snprintf(why, whylen, "the UNet's last attention LayerNorm bias is untrained (all equal)");
        return -1;
    }
    /* v training moves this bias much further than eps training: ~0.15+ vs ~0.05 in the released 2.x models
     */
    int vp = sd > SDE_PREDICT_V_STD;
    snprintf(why, whylen, "std %.4f of the UNet's last attention LayerNorm bias is %s %.2f", sd,
             vp ? "above" : "at most", SDE_PREDICT_V_STD);
    return vp;
}
