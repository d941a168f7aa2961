/* fuzz_job_request.c: libFuzzer target for the POST /v1/jobs body check (supervisor/validate.c): any bytes
 * give a request within the limits or an API error with a status, code and message; never a crash or leak. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "validate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* the service's defaults, and a small body cap so the 413 path is reached too */
    const sdw_validate_limits lim = {.max_width = 1024,
                                     .max_height = 1024,
                                     .max_steps = 150,
                                     .max_body_bytes = size > 2 && data[0] == '!' ? 64 : 1048576,
                                     .preview_every_default = 5,
                                     .preview_every_min = 1,
                                     .default_size = 512, /* a worker is ready: its native size */
                                     .max_batch = 4};
    sdw_gen_request req;
    sdw_api_error e;
    memset(&e, 0, sizeof e);
    if (sdw_validate_job_request((const char *)data, size, &lim, &req, &e) == 0) {
        if (req.width < 64 || req.width > lim.max_width || req.width % 8 || req.height < 64 ||
            req.height > lim.max_height || req.height % 8 || req.steps < 1 || req.steps > lim.max_steps ||
            req.n < 1 || req.n > lim.max_batch)
            abort(); /* accepted, so within the limits */
    } else if (e.status < 400 || e.status > 499 || !e.code[0] || !e.message[0]) {
        abort(); /* a rejection always explains itself */
    }
    sdw_gen_request_free(&req);
    return 0;
}
