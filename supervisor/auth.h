/* auth.h: API keys: the keys file (one "NAME SHA256HEX" line per key), Bearer checks in constant time,
 * reload on SIGHUP, and the per-key count of unfinished jobs behind the 429 limit. */
#ifndef SDW_AUTH_H
#define SDW_AUTH_H

#include <stddef.h>

#include "jobs.h"

/** Longest key name; names are [A-Za-z0-9_.-]. */
#define SDW_AUTH_NAME_MAX 63

/** Reads path (NULL: no keys, every request allowed) as the key table; max_queued is the per-key limit
 * (0 = none). 0, or -1 with err ("file:line: message"); on failure the previous table stays. */
int sdw_auth_init(const char *path, int max_queued, char *err, size_t errlen);
/** Reads the keys file named at init again (the SIGHUP hook); unfinished-job counts carry over by name.
 * 0, or -1 with err and the old table kept. A no-op without a file. */
int sdw_auth_reload(char *err, size_t errlen);
/** 1 when a keys file is configured (every route but the exempt ones needs a key). */
int sdw_auth_enabled(void);
/** Keys in the table now. */
int sdw_auth_count(void);
/** The name of the key an "Authorization" header value carries ("Bearer KEY"), or NULL (no header, other
 * scheme, unknown key). Every entry is compared, in constant time, whatever matches. */
const char *sdw_auth_check(const char *authz, size_t len);
/** Fills line ("NAME HEX\n") for the keys file from a key; 0, or -1 with err (bad name, empty key). */
int sdw_auth_hash_line(const char *name, const char *key, size_t keylen, char *line, size_t linelen,
                       char *err, size_t errlen);
/** 1 when the key called name may queue one more job (under its limit); name NULL (no auth) always may. */
int sdw_auth_may_queue(const char *name);
/** Counts job against name until it ends (no-op for NULL name). 0, or -1 out of memory (job not counted). */
int sdw_auth_track(const char *name, sdw_job *job);
/** Unfinished jobs counted for name (tests, logs). */
int sdw_auth_queued(const char *name);
/** Frees the table (counts go with it; trackers of running jobs stay harmless). */
void sdw_auth_free(void);

#endif
