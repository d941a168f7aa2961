/* lora_list.c: the LoRAs a server offers: the NAME.safetensors plain files of model.lora_dir, for
 * GET /v1/loras and GET /sdapi/v1/loras. */
#include "lora_list.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define EXT ".safetensors"
#define EXT_LEN (sizeof EXT - 1)

/* Only names validate_loras.c would accept, so every listed name can be sent back in a job. */
static int usable_name(const char *f, size_t len)
{
    if (len <= EXT_LEN || len - EXT_LEN > 200 || f[0] == '.' || strcmp(f + len - EXT_LEN, EXT)) return 0;
    for (size_t i = 0; i < len; i++)
        if (f[i] == ':' || (unsigned char)f[i] < 0x20 || (i && f[i] == '.' && f[i - 1] == '.')) return 0;
    return 1;
}

/* A symlink counts only when it lands on a regular file inside the folder itself (realdir): the list must
 * not reveal or offer files elsewhere on the host. */
static int link_inside(const char *dir, const char *realdir, const char *f, struct stat *st)
{
    char path[PATH_MAX], real[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/%s", dir, f) >= (int)sizeof path || !realpath(path, real)) return 0;
    size_t rl = strlen(realdir);
    if (strncmp(real, realdir, rl) || real[rl] != '/') return 0;
    return stat(real, st) == 0 && S_ISREG(st->st_mode);
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const sdw_lora_entry *)a)->name, ((const sdw_lora_entry *)b)->name);
}

void sdw_lora_list_free(sdw_lora_entry *list, size_t n)
{
    for (size_t i = 0; list && i < n; i++)
        free(list[i].name);
    free(list);
}

int sdw_lora_list(const char *dir, sdw_lora_entry **out, size_t *n, char *err, size_t errlen)
{
    *out = NULL;
    *n = 0;
    if (!dir || !*dir) return 0;
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT || errno == ENOTDIR) return 0; /* no folder yet: nothing to offer */
        snprintf(err, errlen, "cannot read model.lora_dir %s: %s", dir, strerror(errno));
        return -1;
    }
    char realdir[PATH_MAX];
    if (!realpath(dir, realdir)) realdir[0] = '\0';
    sdw_lora_entry *list = NULL;
    size_t cap = 0, cnt = 0;
    int fd = dirfd(d), rc = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (!usable_name(e->d_name, len)) continue;
        struct stat st;
        if (fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
        if (S_ISLNK(st.st_mode) && !(realdir[0] && link_inside(dir, realdir, e->d_name, &st))) continue;
        if (!S_ISREG(st.st_mode)) continue;
        if (cnt == cap) {
            size_t nc = cap ? cap * 2 : 16;
            sdw_lora_entry *nl = realloc(list, nc * sizeof *nl);
            if (!nl) {
                rc = -1;
                break;
            }
            list = nl;
            cap = nc;
        }
        if (!(list[cnt].name = strndup(e->d_name, len - EXT_LEN))) {
            rc = -1;
            break;
        }
        list[cnt++].size_bytes = (long long)st.st_size;
    }
    closedir(d);
    if (rc) {
        snprintf(err, errlen, "out of memory listing model.lora_dir");
        sdw_lora_list_free(list, cnt);
        return -1;
    }
    if (cnt) qsort(list, cnt, sizeof *list, by_name);
    *out = list;
    *n = cnt;
    return 0;
}
