/* test_predict.c: the SD 2.x v/eps detector on small files holding only the tensor it reads, spread like
 * an eps model's, a v model's, an untrained one's, plus the v_pred marker and a file without the probe. */
#include "st_test_writer.h"

#include <math.h>

#include "predict.h"

/* One file with the probe bias: 320 floats of standard deviation sd (0: all zero), optionally with v_pred. */
static int detect(const char *tag, double sd, int marker, char *why, size_t whylen)
{
    static float b[320];
    for (int i = 0; i < 320; i++)
        b[i] =
            (float)(sd * sin(0.7 * i) * sqrt(2.0)); /* a sine over many periods has std amplitude/sqrt(2) */
    float one = 1.f;
    stw_tensor t[2] = {{SDE_PREDICT_PROBE, "F32", 1, {320}, b, sizeof b}, {"v_pred", "F32", 1, {1}, &one, 4}};
    char name[64];
    snprintf(name, sizeof name, "%s.safetensors", tag);
    const char *path = stw_path(stw_tmpdir, name);
    assert_int_equal(stw_write_tensors(path, t, marker ? 2 : 1, NULL), 0);
    sde_ckpt *c;
    char err[512];
    if (sde_ckpt_open(path, &c, err, sizeof err)) fail_msg("%s", err);
    int r = sde_prediction_from_weights(c, why, whylen);
    sde_ckpt_free(c);
    return r;
}

static void test_detect(void **state)
{
    (void)state;
    char why[256];
    assert_int_equal(detect("eps", 0.05, 0, why, sizeof why), 0);
    stw_assert_contains(why, "at most");
    assert_int_equal(detect("v", 0.15, 0, why, sizeof why), 1);
    stw_assert_contains(why, "above");
    assert_int_equal(detect("untrained", 0.0, 0, why, sizeof why), -1);
    stw_assert_contains(why, "untrained");
    assert_int_equal(detect("marker", 0.05, 1, why, sizeof why), 1);
    stw_assert_contains(why, "v_pred");
    /* a file without the probe: no evidence */
    static const float w = 0.f;
    stw_tensor t = {"model.diffusion_model.out.2.bias", "F32", 1, {1}, &w, 4};
    const char *path = stw_path(stw_tmpdir, "noprobe.safetensors");
    assert_int_equal(stw_write_tensors(path, &t, 1, NULL), 0);
    sde_ckpt *c;
    char err[512];
    assert_int_equal(sde_ckpt_open(path, &c, err, sizeof err), 0);
    assert_int_equal(sde_prediction_from_weights(c, why, sizeof why), -1);
    sde_ckpt_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_detect),
    };
    return cmocka_run_group_tests(tests, stw_tmpdir_setup, stw_tmpdir_teardown);
}
