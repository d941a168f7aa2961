/* gen_engine.h: the one conversion from the shared generation request (common/gen_request.h) to the
 * engine's sde_gen_params, used by the worker process and the generate CLI. */
#ifndef SDW_GEN_ENGINE_H
#define SDW_GEN_ENGINE_H

#include "gen_request.h"
#include "sd_engine.h"

/** Fills p from r: every generation parameter, strings borrowed from r (keep r alive while p is used);
 * progress, should_cancel and ud are set to NULL for the caller to fill. */
void sdw_gen_to_engine(const sdw_gen_request *r, sde_gen_params *p);

#endif
