/* frame.c: the msgpack frame codec: encoders into a msgpack_sbuffer, and a reader that finds each frame's
 * end with a bounded scan before msgpack_unpacker parses it, so a hostile stream can neither grow memory nor
 * crash. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"

/* Nesting and element bounds for the scan: real frames are one map of under 20 keys with one nested map, so
 * these leave room for new optional fields while keeping msgpack's per-object allocations small. */
#define SCAN_MAX_DEPTH 8
#define SCAN_MAX_ITEMS 128    /* elements (pairs for maps) in any one container */
#define SCAN_MAX_OBJECTS 4096 /* objects in one frame */

static const char *const type_names[SDW_FRAME__COUNT] = {
    "hello",     "ready", "started", "progress", "result", "error",
    "cancelled", "pong",  "job",     "cancel",   "ping",   "shutdown",
};

const char *sdw_frame_type_name(sdw_frame_type t)
{
    return (unsigned)t < SDW_FRAME__COUNT ? type_names[t] : "?";
}

size_t sdw_frame_max_size(sdw_frame_type t)
{
    /* job frames carry the init image and mask (PNG bytes) */
    return t == SDW_FRAME_RESULT || t == SDW_FRAME_JOB ? SDW_FRAME_MAX_RESULT : SDW_FRAME_MAX_SMALL;
}

/* ---- encoding ---- */

static int pack_key(msgpack_packer *pk, const char *k)
{
    size_t n = strlen(k);
    return msgpack_pack_str(pk, n) || msgpack_pack_str_body(pk, k, n);
}

static int pack_s(msgpack_packer *pk, const char *k, const char *v)
{
    if (!v) v = "";
    size_t n = strlen(v);
    return pack_key(pk, k) || msgpack_pack_str(pk, n) || msgpack_pack_str_body(pk, v, n);
}

static int pack_u(msgpack_packer *pk, const char *k, uint64_t v)
{
    return pack_key(pk, k) || msgpack_pack_uint64(pk, v);
}

static int pack_i(msgpack_packer *pk, const char *k, int64_t v)
{
    return pack_key(pk, k) || msgpack_pack_int64(pk, v);
}

static int pack_d(msgpack_packer *pk, const char *k, double v)
{
    return pack_key(pk, k) || msgpack_pack_double(pk, v);
}

/* Number of keys besides "t" and "v" each type carries. */
static const int type_nkeys[SDW_FRAME__COUNT] = {3, 6, 1, 4, 9, 3, 1, 0, 1, 1, 0, 0};

/* The job frame's request: one key per row of the field table. */
static int pack_request(msgpack_packer *pk, const sdw_gen_request *r)
{
    int n;
    const sdw_gen_field *fl = sdw_gen_request_fields(&n);
    for (int i = 0; i < n; i++) {
        const sdw_gen_field *fd = &fl[i];
        const char *m = (const char *)r + fd->off;
        int bad = 0;
        switch (fd->kind) {
        case SDW_GF_STR:
            bad = pack_s(pk, fd->key, *(char *const *)m);
            break;
        case SDW_GF_INT:
            bad = pack_i(pk, fd->key, *(const int *)m);
            break;
        case SDW_GF_U64:
            bad = pack_u(pk, fd->key, *(const uint64_t *)m);
            break;
        case SDW_GF_DOUBLE:
            bad = pack_d(pk, fd->key, *(const double *)m);
            break;
        case SDW_GF_BOOL:
            bad = pack_key(pk, fd->key) || (*(const int *)m ? msgpack_pack_true(pk) : msgpack_pack_false(pk));
            break;
        case SDW_GF_NAME: {
            /* enum members: sdw_sampler etc. are all int-sized enums */
            int v = *(const int *)m;
            if (!sdw_names_row(fd->names, v)) return -1;
            bad = pack_s(pk, fd->key, sdw_names_name(fd->names, v));
            break;
        }
        case SDW_GF_BYTES: {
            size_t len = *(const size_t *)((const char *)r + fd->len_off);
            if (len > UINT32_MAX) return -1;
            bad = pack_key(pk, fd->key) || msgpack_pack_bin(pk, len) ||
                  msgpack_pack_bin_body(pk, *(const void *const *)m, len);
            break;
        }
        }
        if (bad) return -1;
    }
    return 0;
}

/* The frame types that may carry the optional VRAM pair. */
static int takes_vram(sdw_frame_type t)
{
    return t == SDW_FRAME_READY || t == SDW_FRAME_RESULT || t == SDW_FRAME_ERROR || t == SDW_FRAME_CANCELLED;
}

static int sends_vram(const sdw_frame *f)
{
    return f->vram.has && takes_vram(f->type);
}

static int encode_vram(msgpack_packer *pk, const sdw_frame *f)
{
    return sends_vram(f) && (pack_u(pk, "vram_free_bytes", f->vram.free_bytes) ||
                             pack_u(pk, "vram_total_bytes", f->vram.total_bytes));
}

static int encode_body(msgpack_packer *pk, const sdw_frame *f)
{
    switch (f->type) {
    case SDW_FRAME_HELLO:
        return pack_i(pk, "pid", f->u.hello.pid) || pack_s(pk, "device", f->u.hello.device) ||
               pack_s(pk, "state", f->u.hello.state);
    case SDW_FRAME_READY:
        return pack_s(pk, "arch", f->u.ready.arch) || pack_s(pk, "prediction", f->u.ready.prediction) ||
               pack_s(pk, "model_hash", f->u.ready.model_hash) ||
               pack_s(pk, "model_name", f->u.ready.model_name) || pack_d(pk, "load_s", f->u.ready.load_s) ||
               pack_key(pk, "bf16") || (f->u.ready.bf16 ? msgpack_pack_true(pk) : msgpack_pack_false(pk)) ||
               (f->u.ready.native_size > 0 && pack_i(pk, "native_size", f->u.ready.native_size));
    case SDW_FRAME_STARTED:
    case SDW_FRAME_CANCELLED:
    case SDW_FRAME_CANCEL:
        return pack_u(pk, "job", f->job);
    case SDW_FRAME_PROGRESS:
        if (f->u.progress.preview_len > UINT32_MAX) return -1;
        return pack_u(pk, "job", f->job) || pack_i(pk, "step", f->u.progress.step) ||
               pack_i(pk, "total", f->u.progress.total) || pack_d(pk, "elapsed", f->u.progress.elapsed) ||
               (f->u.progress.preview_len &&
                (pack_key(pk, "preview") || msgpack_pack_bin(pk, f->u.progress.preview_len) ||
                 msgpack_pack_bin_body(pk, f->u.progress.preview, f->u.progress.preview_len)));
    case SDW_FRAME_RESULT:
        if (f->u.result.png_len > UINT32_MAX || !sdw_precision_name(f->u.result.precision)) return -1;
        return pack_u(pk, "job", f->job) || pack_key(pk, "png") ||
               msgpack_pack_bin(pk, f->u.result.png_len) ||
               msgpack_pack_bin_body(pk, f->u.result.png, f->u.result.png_len) ||
               pack_i(pk, "width", f->u.result.width) || pack_i(pk, "height", f->u.result.height) ||
               pack_u(pk, "seed", f->u.result.seed) || pack_key(pk, "timings") || msgpack_pack_map(pk, 4) ||
               pack_d(pk, "encode", f->u.result.t_encode) || pack_d(pk, "sample", f->u.result.t_sample) ||
               pack_d(pk, "decode", f->u.result.t_decode) || pack_d(pk, "total", f->u.result.t_total) ||
               pack_i(pk, "index", f->u.result.index) || pack_i(pk, "count", f->u.result.count) ||
               pack_s(pk, "precision", sdw_precision_name(f->u.result.precision));
    case SDW_FRAME_ERROR:
        return pack_key(pk, "job") || (f->has_job ? msgpack_pack_uint64(pk, f->job) : msgpack_pack_nil(pk)) ||
               pack_s(pk, "code", f->u.error.code) || pack_s(pk, "message", f->u.error.message);
    case SDW_FRAME_JOB:
        return pack_u(pk, "job", f->job) || pack_request(pk, &f->u.job);
    case SDW_FRAME_PONG:
    case SDW_FRAME_PING:
    case SDW_FRAME_SHUTDOWN:
        return 0;
    default:
        return -1;
    }
}

int sdw_frame_encode(msgpack_sbuffer *sb, const sdw_frame *f)
{
    if ((unsigned)f->type >= SDW_FRAME__COUNT) return -1;
    size_t start = sb->size;
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    int nfields = 0;
    if (f->type == SDW_FRAME_JOB) sdw_gen_request_fields(&nfields);
    if (f->type == SDW_FRAME_PROGRESS && f->u.progress.preview_len) nfields = 1; /* the optional preview */
    if (f->type == SDW_FRAME_READY && f->u.ready.native_size > 0) nfields = 1; /* the optional native_size */
    if (sends_vram(f)) nfields += 2;                                           /* vram_free/total_bytes */
    int bad = msgpack_pack_map(&pk, 2 + (size_t)type_nkeys[f->type] + (size_t)nfields) ||
              pack_s(&pk, "t", type_names[f->type]) || pack_u(&pk, "v", SDW_FRAME_VERSION) ||
              encode_body(&pk, f) || encode_vram(&pk, f);
    if (bad || sb->size - start > sdw_frame_max_size(f->type)) {
        sb->size = start;
        return -1;
    }
    return 0;
}

int sdw_frame_hello(msgpack_sbuffer *sb, int64_t pid, const char *device, const char *state)
{
    sdw_frame f = {.type = SDW_FRAME_HELLO};
    f.u.hello.pid = pid;
    f.u.hello.device = device;
    f.u.hello.state = state;
    return sdw_frame_encode(sb, &f);
}

int sdw_frame_ready(msgpack_sbuffer *sb, const char *arch, const char *prediction, const char *model_hash,
                    const char *model_name, double load_s, int native_size, int bf16)
{
    return sdw_frame_ready_vram(sb, arch, prediction, model_hash, model_name, load_s, native_size, bf16,
                                NULL);
}

int sdw_frame_ready_vram(msgpack_sbuffer *sb, const char *arch, const char *prediction,
                         const char *model_hash, const char *model_name, double load_s, int native_size,
                         int bf16, const sdw_frame_vram *vram)
{
    sdw_frame f = {.type = SDW_FRAME_READY};
    if (vram) f.vram = *vram;
    f.u.ready.native_size = native_size;
    f.u.ready.bf16 = !!bf16;
    f.u.ready.arch = arch;
    f.u.ready.prediction = prediction;
    f.u.ready.model_hash = model_hash;
    f.u.ready.model_name = model_name;
    f.u.ready.load_s = load_s;
    return sdw_frame_encode(sb, &f);
}

int sdw_frame_started(msgpack_sbuffer *sb, uint64_t job)
{
    sdw_frame f = {.type = SDW_FRAME_STARTED, .job = job};
    return sdw_frame_encode(sb, &f);
}

int sdw_frame_progress(msgpack_sbuffer *sb, uint64_t job, int step, int total, double elapsed)
{
    sdw_frame f = {.type = SDW_FRAME_PROGRESS, .job = job};
    f.u.progress.step = step;
    f.u.progress.total = total;
    f.u.progress.elapsed = elapsed;
    return sdw_frame_encode(sb, &f);
}

int sdw_frame_progress_preview(msgpack_sbuffer *sb, uint64_t job, int step, int total, double elapsed,
                               const uint8_t *png, size_t len)
{
    sdw_frame f = {.type = SDW_FRAME_PROGRESS, .job = job};
    f.u.progress.step = step;
    f.u.progress.total = total;
    f.u.progress.elapsed = elapsed;
    f.u.progress.preview = png;
    f.u.progress.preview_len = png ? len : 0;
    return sdw_frame_encode(sb, &f);
}

int sdw_frame_result(msgpack_sbuffer *sb, uint64_t job, const uint8_t *png, size_t png_len, int width,
                     int height, uint64_t seed, double t_encode, double t_sample, double t_decode,
                     double t_total)
{
    return sdw_frame_result_at(sb, job, 0, 1, png, png_len, width, height, seed, t_encode, t_sample, t_decode,
                               t_total, SDW_PRECISION_FP32);
}

int sdw_frame_result_at(msgpack_sbuffer *sb, uint64_t job, int index, int count, const uint8_t *png,
                        size_t png_len, int width, int height, uint64_t seed, double t_encode,
                        double t_sample, double t_decode, double t_total, int precision)
{
    return sdw_frame_result_vram(sb, job, index, count, png, png_len, width, height, seed, t_encode, t_sample,
                                 t_decode, t_total, precision, NULL);
}

int sdw_frame_result_vram(msgpack_sbuffer *sb, uint64_t job, int index, int count, const uint8_t *png,
                          size_t png_len, int width, int height, uint64_t seed, double t_encode,
                          double t_sample, double t_decode, double t_total, int precision,
                          const sdw_frame_vram *vram)
{
    if (count < 1 || count > SDW_FRAME_MAX_IMAGES || index < 0 || index >= count) return -1;
    sdw_frame f = {.type = SDW_FRAME_RESULT, .job = job};
    if (vram) f.vram = *vram;
    f.u.result.precision = precision;
    f.u.result.index = index;
    f.u.result.count = count;
    f.u.result.png = png;
    f.u.result.png_len = png_len;
    f.u.result.width = width;
    f.u.result.height = height;
    f.u.result.seed = seed;
    f.u.result.t_encode = t_encode;
    f.u.result.t_sample = t_sample;
    f.u.result.t_decode = t_decode;
    f.u.result.t_total = t_total;
    return sdw_frame_encode(sb, &f);
}

int sdw_frame_error(msgpack_sbuffer *sb, int has_job, uint64_t job, const char *code, const char *message)
{
    return sdw_frame_error_vram(sb, has_job, job, code, message, NULL);
}

int sdw_frame_error_vram(msgpack_sbuffer *sb, int has_job, uint64_t job, const char *code,
                         const char *message, const sdw_frame_vram *vram)
{
    sdw_frame f = {.type = SDW_FRAME_ERROR, .job = has_job ? job : 0, .has_job = !!has_job};
    if (vram) f.vram = *vram;
    f.u.error.code = code;
    f.u.error.message = message;
    return sdw_frame_encode(sb, &f);
}

int sdw_frame_cancelled(msgpack_sbuffer *sb, uint64_t job)
{
    return sdw_frame_cancelled_vram(sb, job, NULL);
}

int sdw_frame_cancelled_vram(msgpack_sbuffer *sb, uint64_t job, const sdw_frame_vram *vram)
{
    sdw_frame f = {.type = SDW_FRAME_CANCELLED, .job = job};
    if (vram) f.vram = *vram;
    return sdw_frame_encode(sb, &f);
}

int sdw_frame_pong(msgpack_sbuffer *sb)
{
    sdw_frame f = {.type = SDW_FRAME_PONG};
    return sdw_frame_encode(sb, &f);
}

int sdw_frame_job(msgpack_sbuffer *sb, uint64_t job, const sdw_gen_request *req)
{
    sdw_frame f = {.type = SDW_FRAME_JOB, .job = job};
    f.u.job = *req; /* borrowed: this frame is never freed */
    return sdw_frame_encode(sb, &f);
}

int sdw_frame_cancel(msgpack_sbuffer *sb, uint64_t job)
{
    sdw_frame f = {.type = SDW_FRAME_CANCEL, .job = job};
    return sdw_frame_encode(sb, &f);
}

int sdw_frame_ping(msgpack_sbuffer *sb)
{
    sdw_frame f = {.type = SDW_FRAME_PING};
    return sdw_frame_encode(sb, &f);
}

int sdw_frame_shutdown(msgpack_sbuffer *sb)
{
    sdw_frame f = {.type = SDW_FRAME_SHUTDOWN};
    return sdw_frame_encode(sb, &f);
}

void sdw_frame_free(sdw_frame *f)
{
    if (!f) return;
    if (f->_owns_job) sdw_gen_request_free(&f->u.job);
    free(f->_mem);
    memset(f, 0, sizeof *f);
}

/* ---- the boundary scan ---- */

static void seterr(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static uint64_t be(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* Finds the end of the msgpack object at the head of p[0..len). Returns its length, 0 when it continues past
 * len, or -1 with err when it cannot be a valid frame: not a map, an ext or reserved byte, nesting or element
 * counts past the bounds above, or a length that takes it past limit (decided from headers, before the bytes
 * arrive). */
static long long scan_frame(const uint8_t *p, size_t len, size_t limit, char *err, size_t errlen)
{
    uint64_t left[SCAN_MAX_DEPTH + 1];
    int depth = 0;
    size_t objects = 0;
    uint64_t pos = 0;
    left[0] = 1;
    if (len > 0 && !((p[0] >= 0x80 && p[0] <= 0x8f) || p[0] == 0xde || p[0] == 0xdf)) {
        seterr(err, errlen, "frame is not a msgpack map (first byte 0x%02x)", p[0]);
        return -1;
    }
    for (;;) {
        if (pos > limit) {
            seterr(err, errlen, "frame exceeds the %zu-byte limit", limit);
            return -1;
        }
        if (pos > len) break;
        while (depth > 0 && left[depth] == 0)
            depth--;
        if (depth == 0 && left[0] == 0) return (long long)pos;
        if (pos == len) break;
        if (++objects > SCAN_MAX_OBJECTS) {
            seterr(err, errlen, "frame has more than %d msgpack objects", SCAN_MAX_OBJECTS);
            return -1;
        }
        uint8_t b = p[pos];
        size_t hdr = 1;      /* bytes of type + length fields */
        size_t lenbytes = 0; /* of which the big-endian length */
        uint64_t body = 0;   /* payload bytes after the header */
        int container = 0;   /* 1 array, 2 map */
        uint64_t items = 0;
        if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
            /* fixint, nil, bool */
        } else if (b <= 0x8f) {
            container = 2, items = b & 0x0f;
        } else if (b <= 0x9f) {
            container = 1, items = b & 0x0f;
        } else if (b <= 0xbf) {
            body = b & 0x1f;
        } else {
            switch (b) {
            case 0xc4:
            case 0xd9:
                lenbytes = 1;
                break; /* bin8, str8 */
            case 0xc5:
            case 0xda:
                lenbytes = 2;
                break;
            case 0xc6:
            case 0xdb:
                lenbytes = 4;
                break;
            case 0xca:
                body = 4;
                break; /* float32 */
            case 0xcb:
                body = 8;
                break;
            case 0xcc:
            case 0xd0:
                body = 1;
                break; /* (u)int8 */
            case 0xcd:
            case 0xd1:
                body = 2;
                break;
            case 0xce:
            case 0xd2:
                body = 4;
                break;
            case 0xcf:
            case 0xd3:
                body = 8;
                break;
            case 0xdc:
                container = 1, lenbytes = 2;
                break;
            case 0xdd:
                container = 1, lenbytes = 4;
                break;
            case 0xde:
                container = 2, lenbytes = 2;
                break;
            case 0xdf:
                container = 2, lenbytes = 4;
                break;
            case 0xc1:
                seterr(err, errlen, "reserved msgpack byte 0xc1 at offset %" PRIu64, pos);
                return -1;
            default: /* 0xc7..0xc9, 0xd4..0xd8 */
                seterr(err, errlen,
                       "msgpack ext type 0x%02x at offset %" PRIu64 " is not part of the protocol", b, pos);
                return -1;
            }
        }
        hdr += lenbytes;
        if (pos + hdr > len) {
            pos += hdr; /* loop top: incomplete (or over the limit) */
            continue;
        }
        if (lenbytes) {
            uint64_t n = be(p + pos + 1, lenbytes);
            if (container)
                items = n;
            else
                body = n;
        }
        left[depth]--;
        if (container) {
            if (items > SCAN_MAX_ITEMS) {
                seterr(err, errlen, "msgpack %s of %" PRIu64 " elements at offset %" PRIu64 " (at most %d)",
                       container == 2 ? "map" : "array", items, pos, SCAN_MAX_ITEMS);
                return -1;
            }
            pos += hdr;
            if (items) {
                if (depth == SCAN_MAX_DEPTH) {
                    seterr(err, errlen, "msgpack nesting deeper than %d at offset %" PRIu64, SCAN_MAX_DEPTH,
                           pos);
                    return -1;
                }
                left[++depth] = items * (uint64_t)container;
            }
        } else {
            if (body > limit) {
                seterr(err, errlen,
                       "frame exceeds the %zu-byte limit (a %" PRIu64 "-byte value at offset %" PRIu64 ")",
                       limit, body, pos);
                return -1;
            }
            pos += hdr + body;
        }
    }
    if (len >= limit) {
        seterr(err, errlen, "frame exceeds the %zu-byte limit", limit);
        return -1;
    }
    return 0;
}

/* ---- decoding one map into a frame ---- */

typedef struct {
    const msgpack_object_map *map;
    const char *tname;
    char *err;
    size_t errlen;
    /* strings and the png to copy into the frame's block once everything checked out */
    struct {
        const char *src;
        size_t len;
        const char **dst;
    } str[10];
    int nstr;
    const char *bin;
    size_t binlen;
    const uint8_t **bindst;
} decoder;

static const char *object_kind(const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        return "nil";
    case MSGPACK_OBJECT_BOOLEAN:
        return "boolean";
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return "integer";
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return "float";
    case MSGPACK_OBJECT_STR:
        return "string";
    case MSGPACK_OBJECT_BIN:
        return "binary";
    case MSGPACK_OBJECT_ARRAY:
        return "array";
    case MSGPACK_OBJECT_MAP:
        return "map";
    default:
        return "ext";
    }
}

static int key_is(const msgpack_object *k, const char *name)
{
    size_t n = strlen(name);
    /* msgpack gives an empty string a NULL ptr, and memcmp on NULL is undefined even for 0 bytes */
    return k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
           (n == 0 || !memcmp(k->via.str.ptr, name, n));
}

/* Keys must be strings and unique: a peer that sends "job" twice is confused, whichever copy we believed. */
static int check_keys(const msgpack_object_map *m, const char *where, char *err, size_t errlen)
{
    for (uint32_t i = 0; i < m->size; i++) {
        const msgpack_object *k = &m->ptr[i].key;
        if (k->type != MSGPACK_OBJECT_STR) {
            seterr(err, errlen, "%s: a map key is a %s, not a string", where, object_kind(k));
            return -1;
        }
        for (uint32_t j = 0; j < i; j++) {
            const msgpack_object *o = &m->ptr[j].key;
            if (o->via.str.size == k->via.str.size &&
                (k->via.str.size == 0 || !memcmp(o->via.str.ptr, k->via.str.ptr, k->via.str.size))) {
                seterr(err, errlen, "%s: key '%.*s' appears twice", where,
                       (int)(k->via.str.size > 64 ? 64 : k->via.str.size), k->via.str.ptr);
                return -1;
            }
        }
    }
    return 0;
}

static const msgpack_object *lookup(const msgpack_object_map *m, const char *key)
{
    for (uint32_t i = 0; i < m->size; i++)
        if (key_is(&m->ptr[i].key, key)) return &m->ptr[i].val;
    return NULL;
}

static const msgpack_object *need(decoder *d, const char *key)
{
    const msgpack_object *o = lookup(d->map, key);
    if (!o) seterr(d->err, d->errlen, "%s frame: field '%s' is missing", d->tname, key);
    return o;
}

static int mistyped(decoder *d, const char *key, const char *want, const msgpack_object *o)
{
    seterr(d->err, d->errlen, "%s frame: field '%s' must be %s, not %s", d->tname, key, want, object_kind(o));
    return -1;
}

static int get_str(decoder *d, const char *key, const char **dst)
{
    const msgpack_object *o = need(d, key);
    if (!o) return -1;
    if (o->type != MSGPACK_OBJECT_STR) return mistyped(d, key, "a string", o);
    if (memchr(o->via.str.ptr, 0, o->via.str.size)) {
        seterr(d->err, d->errlen, "%s frame: field '%s' contains a NUL byte", d->tname, key);
        return -1;
    }
    int i = d->nstr++;
    d->str[i].src = o->via.str.ptr;
    d->str[i].len = o->via.str.size;
    d->str[i].dst = dst;
    return 0;
}

static int get_u64(decoder *d, const char *key, uint64_t *out)
{
    const msgpack_object *o = need(d, key);
    if (!o) return -1;
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER) return mistyped(d, key, "an unsigned integer", o);
    *out = o->via.u64;
    return 0;
}

static int get_i64(decoder *d, const char *key, int64_t lo, int64_t hi, int64_t *out)
{
    const msgpack_object *o = need(d, key);
    if (!o) return -1;
    int64_t v;
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= (uint64_t)INT64_MAX)
        v = (int64_t)o->via.u64;
    else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        v = o->via.i64;
    else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        v = INT64_MAX;
    else
        return mistyped(d, key, "an integer", o);
    if (v < lo || v > hi) {
        seterr(d->err, d->errlen, "%s frame: field '%s' is %" PRId64 ", outside %" PRId64 "..%" PRId64,
               d->tname, key, v, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

static int get_int(decoder *d, const char *key, int *out)
{
    int64_t v;
    if (get_i64(d, key, INT32_MIN, INT32_MAX, &v)) return -1;
    *out = (int)v;
    return 0;
}

static int get_double_in(decoder *d, const msgpack_object_map *m, const char *where, const char *key,
                         double *out)
{
    const msgpack_object *o = lookup(m, key);
    if (!o) {
        seterr(d->err, d->errlen, "%s frame: field '%s%s' is missing", d->tname, where, key);
        return -1;
    }
    if (o->type != MSGPACK_OBJECT_FLOAT32 && o->type != MSGPACK_OBJECT_FLOAT64) {
        char name[64];
        snprintf(name, sizeof name, "%s%s", where, key);
        return mistyped(d, name, "a float", o);
    }
    *out = o->via.f64;
    return 0;
}

static int get_double(decoder *d, const char *key, double *out)
{
    return get_double_in(d, d->map, "", key, out);
}

/* An optional boolean: *out 0 when the key is absent. */
static int get_bool_opt(decoder *d, const char *key, int *out)
{
    const msgpack_object *o = lookup(d->map, key);
    *out = 0;
    if (!o) return 0;
    if (o->type != MSGPACK_OBJECT_BOOLEAN) return mistyped(d, key, "a boolean", o);
    *out = o->via.boolean;
    return 0;
}

/* An optional precision name ("fp32" | "bf16"): *out SDW_PRECISION_FP32 when the key is absent. */
static int get_precision_opt(decoder *d, const char *key, int *out)
{
    const msgpack_object *o = lookup(d->map, key);
    *out = SDW_PRECISION_FP32;
    if (!o) return 0;
    if (o->type != MSGPACK_OBJECT_STR) return mistyped(d, key, "a string", o);
    char name[8];
    int v = -1;
    if (o->via.str.size && o->via.str.size < sizeof name) { /* msgpack's "" has a NULL ptr */
        memcpy(name, o->via.str.ptr, o->via.str.size);
        name[o->via.str.size] = '\0';
        v = sdw_precision_parse(name);
    }
    if (v < 0) {
        seterr(d->err, d->errlen, "%s frame: field '%s' is '%.*s', not fp32 or bf16", d->tname, key,
               (int)(o->via.str.size > 40 ? 40 : o->via.str.size), o->via.str.ptr);
        return -1;
    }
    *out = v;
    return 0;
}

/* The optional VRAM pair of ready, result, error and cancelled frames: both keys or neither, each an unsigned
 * integer (bytes). Other frame types ignore the keys, as any unknown key. */
static int get_vram_opt(decoder *d, sdw_frame_vram *out)
{
    const int has_free = lookup(d->map, "vram_free_bytes") != NULL;
    const int has_total = lookup(d->map, "vram_total_bytes") != NULL;
    memset(out, 0, sizeof *out);
    if (!has_free && !has_total) return 0;
    if (has_free != has_total) {
        seterr(d->err, d->errlen, "%s frame: field '%s' comes without '%s'", d->tname,
               has_free ? "vram_free_bytes" : "vram_total_bytes",
               has_free ? "vram_total_bytes" : "vram_free_bytes");
        return -1;
    }
    if (get_u64(d, "vram_free_bytes", &out->free_bytes) || get_u64(d, "vram_total_bytes", &out->total_bytes))
        return -1;
    out->has = 1;
    return 0;
}

/* The job frame's request, row by row of the field table. Strings and buffers are allocated into the request
 * (not the frame's block) because the request outlives the frame: the worker and the pool keep it. */
static int decode_request(decoder *d, sdw_gen_request *r)
{
    int n;
    const sdw_gen_field *fl = sdw_gen_request_fields(&n);
    for (int i = 0; i < n; i++) {
        const sdw_gen_field *fd = &fl[i];
        char *m = (char *)r + fd->off;
        const msgpack_object *o = lookup(d->map, fd->key);
        if (!o) {
            if (!fd->required) continue;
            return need(d, fd->key) ? 0 : -1;
        }
        switch (fd->kind) {
        case SDW_GF_STR:
        case SDW_GF_NAME: {
            if (o->type != MSGPACK_OBJECT_STR) return mistyped(d, fd->key, "a string", o);
            const char *p = o->via.str.ptr;
            size_t len = o->via.str.size;
            if (memchr(p, 0, len)) {
                seterr(d->err, d->errlen, "%s frame: field '%s' contains a NUL byte", d->tname, fd->key);
                return -1;
            }
            if (fd->kind == SDW_GF_NAME) {
                char name[64];
                int v = -1;
                if (len < sizeof name) {
                    memcpy(name, p, len);
                    name[len] = '\0';
                    v = sdw_names_parse(fd->names, name);
                }
                if (v < 0) {
                    seterr(d->err, d->errlen, "%s frame: field '%s' is '%.*s', not a known %s", d->tname,
                           fd->key, (int)(len > 40 ? 40 : len), p, sdw_names_kind_name(fd->names));
                    return -1;
                }
                *(int *)m = v;
                break;
            }
            char *s = malloc(len + 1);
            if (!s) goto oom;
            memcpy(s, p, len);
            s[len] = '\0';
            free(*(char **)m);
            *(char **)m = s;
            break;
        }
        case SDW_GF_INT:
            if (get_int(d, fd->key, (int *)m)) return -1;
            break;
        case SDW_GF_U64:
            if (get_u64(d, fd->key, (uint64_t *)m)) return -1;
            break;
        case SDW_GF_DOUBLE:
            if (get_double(d, fd->key, (double *)m)) return -1;
            break;
        case SDW_GF_BOOL:
            if (o->type != MSGPACK_OBJECT_BOOLEAN) return mistyped(d, fd->key, "a boolean", o);
            *(int *)m = o->via.boolean;
            break;
        case SDW_GF_BYTES: {
            if (o->type != MSGPACK_OBJECT_BIN) return mistyped(d, fd->key, "binary", o);
            void *b = malloc(o->via.bin.size ? o->via.bin.size : 1);
            if (!b) goto oom;
            memcpy(b, o->via.bin.ptr, o->via.bin.size);
            free(*(void **)m);
            *(void **)m = b;
            *(size_t *)((char *)r + fd->len_off) = o->via.bin.size;
            break;
        }
        }
    }
    return 0;
oom:
    seterr(d->err, d->errlen, "%s frame: out of memory decoding field", d->tname);
    return -1;
}

static int decode_fields(decoder *d, sdw_frame *f)
{
    const msgpack_object *o;
    int64_t pid;
    switch (f->type) {
    case SDW_FRAME_HELLO:
        if (get_i64(d, "pid", 1, INT32_MAX, &pid) || get_str(d, "device", &f->u.hello.device) ||
            get_str(d, "state", &f->u.hello.state))
            return -1;
        f->u.hello.pid = pid;
        return 0;
    case SDW_FRAME_READY:
        return get_str(d, "arch", &f->u.ready.arch) || get_str(d, "prediction", &f->u.ready.prediction) ||
                       get_str(d, "model_hash", &f->u.ready.model_hash) ||
                       get_str(d, "model_name", &f->u.ready.model_name) ||
                       get_double(d, "load_s", &f->u.ready.load_s) ||
                       /* added after protocol version 1: optional, 0 when an older worker leaves it out */
                       (lookup(d->map, "native_size") &&
                        get_int(d, "native_size", &f->u.ready.native_size)) ||
                       get_bool_opt(d, "bf16", &f->u.ready.bf16)
                   ? -1
                   : 0;
    case SDW_FRAME_STARTED:
    case SDW_FRAME_CANCELLED:
    case SDW_FRAME_CANCEL:
        return get_u64(d, "job", &f->job);
    case SDW_FRAME_PROGRESS:
        if (get_u64(d, "job", &f->job) || get_int(d, "step", &f->u.progress.step) ||
            get_int(d, "total", &f->u.progress.total) || get_double(d, "elapsed", &f->u.progress.elapsed))
            return -1;
        if ((o = lookup(d->map, "preview"))) {
            /* optional: a live preview image rides the step it was made at */
            if (o->type != MSGPACK_OBJECT_BIN) return mistyped(d, "preview", "binary", o);
            d->bin = o->via.bin.ptr;
            d->binlen = o->via.bin.size;
            d->bindst = &f->u.progress.preview;
            f->u.progress.preview_len = o->via.bin.size;
        }
        return 0;
    case SDW_FRAME_RESULT:
        if (get_u64(d, "job", &f->job) || !(o = need(d, "png"))) return -1;
        if (o->type != MSGPACK_OBJECT_BIN) return mistyped(d, "png", "binary", o);
        d->bin = o->via.bin.ptr;
        d->binlen = o->via.bin.size;
        d->bindst = &f->u.result.png;
        f->u.result.png_len = o->via.bin.size;
        if (get_int(d, "width", &f->u.result.width) || get_int(d, "height", &f->u.result.height) ||
            get_u64(d, "seed", &f->u.result.seed) || !(o = need(d, "timings")))
            return -1;
        if (o->type != MSGPACK_OBJECT_MAP) return mistyped(d, "timings", "a map", o);
        if (check_keys(&o->via.map, "result frame: timings", d->err, d->errlen)) return -1;
        /* index and count are optional (one image when absent); index < count */
        f->u.result.index = 0;
        f->u.result.count = 1;
        int64_t cnt = 1, idx = 0;
        if ((lookup(d->map, "count") && get_i64(d, "count", 1, SDW_FRAME_MAX_IMAGES, &cnt)) ||
            (lookup(d->map, "index") && get_i64(d, "index", 0, cnt - 1, &idx)))
            return -1;
        f->u.result.count = (int)cnt;
        f->u.result.index = (int)idx;
        /* precision came after protocol version 1: optional, fp32 when an older worker leaves it out */
        if (get_precision_opt(d, "precision", &f->u.result.precision)) return -1;
        return get_double_in(d, &o->via.map, "timings.", "encode", &f->u.result.t_encode) ||
                       get_double_in(d, &o->via.map, "timings.", "sample", &f->u.result.t_sample) ||
                       get_double_in(d, &o->via.map, "timings.", "decode", &f->u.result.t_decode) ||
                       get_double_in(d, &o->via.map, "timings.", "total", &f->u.result.t_total)
                   ? -1
                   : 0;
    case SDW_FRAME_ERROR:
        if (!(o = need(d, "job"))) return -1;
        if (o->type == MSGPACK_OBJECT_NIL) {
            f->has_job = 0;
        } else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
            f->has_job = 1;
            f->job = o->via.u64;
        } else {
            return mistyped(d, "job", "an unsigned integer or nil", o);
        }
        return get_str(d, "code", &f->u.error.code) || get_str(d, "message", &f->u.error.message) ? -1 : 0;
    case SDW_FRAME_JOB:
        if (get_u64(d, "job", &f->job)) return -1;
        sdw_gen_request_init(&f->u.job);
        f->_owns_job = 1;
        if (decode_request(d, &f->u.job)) return -1;
        f->u.job.has_seed = 1; /* "seed" is required: the sender always chose one */
        return 0;
    default: /* pong, ping, shutdown: nothing but t and v */
        return 0;
    }
}

/* Turns one parsed msgpack object of wire length nbytes into *f; copies strings and the png into one block.
 */
static int decode_object(const msgpack_object *obj, size_t nbytes, sdw_frame *f, char *err, size_t errlen)
{
    memset(f, 0, sizeof *f);
    if (obj->type != MSGPACK_OBJECT_MAP) {
        seterr(err, errlen, "frame is a msgpack %s, not a map", object_kind(obj));
        return -1;
    }
    const msgpack_object_map *m = &obj->via.map;
    if (check_keys(m, "frame", err, errlen)) return -1;
    const msgpack_object *v = lookup(m, "v"), *t = lookup(m, "t");
    if (!v) {
        seterr(err, errlen, "frame has no protocol version 'v'");
        return -1;
    }
    if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
        seterr(err, errlen, "frame field 'v' must be an unsigned integer, not %s", object_kind(v));
        return -1;
    }
    if (v->via.u64 != SDW_FRAME_VERSION) {
        seterr(err, errlen, "frame has protocol version %" PRIu64 "; this side speaks %d", v->via.u64,
               SDW_FRAME_VERSION);
        return -1;
    }
    if (!t) {
        seterr(err, errlen, "frame has no type 't'");
        return -1;
    }
    if (t->type != MSGPACK_OBJECT_STR) {
        seterr(err, errlen, "frame field 't' must be a string, not %s", object_kind(t));
        return -1;
    }
    int type = -1;
    for (int i = 0; i < SDW_FRAME__COUNT; i++)
        if (key_is(t, type_names[i])) type = i;
    if (type < 0) {
        int n = t->via.str.size > 40 ? 40 : (int)t->via.str.size;
        seterr(err, errlen, "unknown frame type '%.*s'", n, t->via.str.ptr);
        return -1;
    }
    f->type = (sdw_frame_type)type;
    if (nbytes > sdw_frame_max_size(f->type)) {
        seterr(err, errlen, "%s frame of %zu bytes exceeds its %zu-byte limit", type_names[type], nbytes,
               sdw_frame_max_size(f->type));
        return -1;
    }
    decoder d = {.map = m, .tname = type_names[type], .err = err, .errlen = errlen};
    if (decode_fields(&d, f) || (takes_vram(f->type) && get_vram_opt(&d, &f->vram))) {
        sdw_frame_free(f);
        return -1;
    }
    size_t total = d.binlen + 1;
    for (int i = 0; i < d.nstr; i++)
        total += d.str[i].len + 1;
    char *mem = malloc(total);
    if (!mem) {
        sdw_frame_free(f);
        seterr(err, errlen, "out of memory decoding a %zu-byte %s frame", nbytes, type_names[type]);
        return -1;
    }
    char *p = mem;
    if (d.bindst) {
        memcpy(p, d.bin, d.binlen);
        *d.bindst = (const uint8_t *)p;
        p += d.binlen;
    }
    for (int i = 0; i < d.nstr; i++) {
        memcpy(p, d.str[i].src, d.str[i].len);
        p[d.str[i].len] = '\0';
        *d.str[i].dst = p;
        p += d.str[i].len + 1;
    }
    f->_mem = mem;
    return 0;
}

/* ---- the reader ---- */

struct sdw_frame_reader {
    msgpack_unpacker up;
    size_t max_frame;
    int dead;
    char err[256];
};

/* After a large result the unpacker would keep a buffer of that size for the connection's life; start over
 * once it is empty instead. */
#define READER_KEEP_BYTES ((size_t)1 << 20)

sdw_frame_reader *sdw_frame_reader_new(size_t max_frame)
{
    sdw_frame_reader *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    if (!msgpack_unpacker_init(&r->up, MSGPACK_UNPACKER_INIT_BUFFER_SIZE)) {
        free(r);
        return NULL;
    }
    r->max_frame = max_frame;
    return r;
}

void sdw_frame_reader_free(sdw_frame_reader *r)
{
    if (!r) return;
    msgpack_unpacker_destroy(&r->up);
    free(r);
}

size_t sdw_frame_reader_pending(const sdw_frame_reader *r)
{
    return msgpack_unpacker_message_size(&r->up);
}

/* Messages quote bytes the peer chose (keys, type names); keep them printable for the logs. */
static void reader_die(sdw_frame_reader *r, const char *msg)
{
    r->dead = 1;
    if (msg != r->err) snprintf(r->err, sizeof r->err, "%s", msg);
    for (char *c = r->err; *c; c++)
        if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f) *c = '?';
}

size_t sdw_frame_reader_feed(sdw_frame_reader *r, const void *data, size_t len)
{
    if (r->dead || len == 0) return 0;
    size_t pending = sdw_frame_reader_pending(r);
    size_t room = pending < r->max_frame ? r->max_frame - pending : 0;
    size_t n = len < room ? len : room;
    if (n == 0) return 0;
    if (!msgpack_unpacker_reserve_buffer(&r->up, n)) {
        reader_die(r, "out of memory buffering a frame");
        return 0;
    }
    memcpy(msgpack_unpacker_buffer(&r->up), data, n);
    msgpack_unpacker_buffer_consumed(&r->up, n);
    return n;
}

int sdw_frame_reader_next(sdw_frame_reader *r, sdw_frame *f, char *err, size_t errlen)
{
    memset(f, 0, sizeof *f);
    if (r->dead) goto dead;
    size_t pending = sdw_frame_reader_pending(r);
    if (pending == 0) return 0;
    /* parsed stays 0 between calls (the unpacker only ever sees whole frames), so the frame starts at off */
    const uint8_t *head = (const uint8_t *)r->up.buffer + r->up.off;
    long long n = scan_frame(head, pending, r->max_frame, r->err, sizeof r->err);
    if (n < 0) {
        reader_die(r, r->err);
        goto dead;
    }
    if (n == 0) return 0;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t used = 0;
    msgpack_unpack_return ret = msgpack_unpacker_next_with_size(&r->up, &u, &used);
    if (ret != MSGPACK_UNPACK_SUCCESS || used != (size_t)n) {
        msgpack_unpacked_destroy(&u);
        snprintf(r->err, sizeof r->err, "malformed msgpack frame (unpacker status %d, %zu of %lld bytes)",
                 (int)ret, used, n);
        reader_die(r, r->err);
        goto dead;
    }
    int rc = decode_object(&u.data, (size_t)n, f, r->err, sizeof r->err);
    msgpack_unpacked_destroy(&u);
    if (rc) {
        reader_die(r, r->err);
        goto dead;
    }
    msgpack_unpacker fresh;
    if (sdw_frame_reader_pending(r) == 0 && r->up.used + r->up.free > READER_KEEP_BYTES &&
        msgpack_unpacker_init(&fresh, MSGPACK_UNPACKER_INIT_BUFFER_SIZE)) {
        msgpack_unpacker_destroy(&r->up);
        r->up = fresh;
    }
    return 1;
dead:
    snprintf(err, errlen, "%s", r->err);
    return -1;
}
