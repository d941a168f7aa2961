/* engine_path.c: finds the sd-worker-engine executable that workers and engine commands are exec'd
 * from: $SDW_ENGINE, else beside this binary (build tree), else the installed libexec path. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server.h"

int sdw_engine_path(char *out, size_t outlen, char *err, size_t errlen)
{
    const char *env = getenv("SDW_ENGINE");
    if (env && *env) {
        if (access(env, X_OK) != 0) {
            snprintf(err, errlen, "SDW_ENGINE=%s is not executable: %s", env, strerror(errno));
            return -1;
        }
        snprintf(out, outlen, "%s", env);
        return 0;
    }
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (slash) {
            *slash = '\0';
            if ((size_t)snprintf(out, outlen, "%s/sd-worker-engine", self) < outlen && access(out, X_OK) == 0)
                return 0;
        }
    }
    if ((size_t)snprintf(out, outlen, "%s/sd-worker-engine", SDW_LIBEXECDIR) < outlen &&
        access(out, X_OK) == 0)
        return 0;
    snprintf(err, errlen, "sd-worker-engine not found beside this program nor in %s (set SDW_ENGINE)",
             SDW_LIBEXECDIR);
    return -1;
}
