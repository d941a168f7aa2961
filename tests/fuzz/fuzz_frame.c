/* fuzz_frame.c: libFuzzer target for the frame reader (common/frame.c): any byte stream, fed in pieces, must
 * give frames or a clean error, never a crash, a leak or unbounded buffering; accepted frames must re-encode.
 *
 * Not part of the default build (needs clang's libFuzzer): tests/fuzz/run.sh builds and runs it with the
 * others. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"

static void check_reencodes(const sdw_frame *f)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    if (sdw_frame_encode(&sb, f) != 0) abort(); /* whatever decodes must encode */
    sdw_frame_reader *r = sdw_frame_reader_new(SDW_FRAME_MAX_RESULT);
    if (sdw_frame_reader_feed(r, sb.data, sb.size) != sb.size) abort();
    sdw_frame g;
    char err[256];
    if (sdw_frame_reader_next(r, &g, err, sizeof err) != 1 || g.type != f->type || g.job != f->job) abort();
    sdw_frame_free(&g);
    sdw_frame_reader_free(r);
    msgpack_sbuffer_destroy(&sb);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    /* byte 0 picks the reader's limit and the feed chunk size, so both bounds and splits get explored */
    size_t limit = (data[0] & 0x80) ? 256 : SDW_FRAME_MAX_SMALL;
    size_t chunk = 1 + (data[0] & 0x7f);
    data++;
    size--;
    sdw_frame_reader *r = sdw_frame_reader_new(limit);
    if (!r) return 0;
    size_t off = 0;
    int rc = 0;
    while (off < size && rc >= 0) {
        size_t want = size - off < chunk ? size - off : chunk;
        size_t n = sdw_frame_reader_feed(r, data + off, want);
        off += n;
        if (sdw_frame_reader_pending(r) > limit) abort(); /* the reader must never hold more than its limit */
        sdw_frame f;
        char err[256];
        while ((rc = sdw_frame_reader_next(r, &f, err, sizeof err)) == 1) {
            check_reencodes(&f);
            sdw_frame_free(&f);
        }
        if (rc == 0 && n == 0)
            abort(); /* a feed that takes nothing must be followed by a frame or an error */
    }
    sdw_frame_reader_free(r);
    return 0;
}
