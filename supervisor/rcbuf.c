/* rcbuf.c: reference-counted byte buffers shared by SSE readers (see rcbuf.h). */
#include <stdlib.h>
#include <string.h>

#include "rcbuf.h"

sdw_rcbuf *sdw_rcbuf_new(size_t len)
{
    if (len > (size_t)-1 - sizeof(sdw_rcbuf) - 1) return NULL;
    sdw_rcbuf *b = malloc(sizeof *b + len + 1);
    if (!b) return NULL;
    b->refs = 1;
    b->len = len;
    b->data[len] = '\0';
    return b;
}

sdw_rcbuf *sdw_rcbuf_from(const void *data, size_t len)
{
    sdw_rcbuf *b = sdw_rcbuf_new(len);
    if (b && len) memcpy(b->data, data, len);
    return b;
}

sdw_rcbuf *sdw_rcbuf_retain(sdw_rcbuf *b)
{
    b->refs++;
    return b;
}

void sdw_rcbuf_release(sdw_rcbuf *b)
{
    if (b && --b->refs == 0) free(b);
}
