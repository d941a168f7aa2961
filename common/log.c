/* log.c: the structured logger: one line per event on stderr, logfmt ("key=value") or JSON, written
 * with a single write(2) so lines from several processes on one pipe or journald never interleave. */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

/* Longest line we emit; longer values are cut with "..." so one event stays one atomic-ish write. */
#define LOG_LINE_MAX 8192
/* Room kept back for the closing of a line (quote, "...", JSON tail, newline) so it always fits. */
#define LOG_TAIL_RESERVE 48
/* The batch of deferred lines is written whole once it would pass this: PIPE_BUF, the size up to which
 * one write(2) to a pipe is atomic, so a batch is never interleaved with another process's lines. */
#define LOG_BATCH_MAX 4096

static int g_level = SDW_LOG_INFO;
static int g_json = 0;
static char g_comp[64] = "";

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void sdw_log_init(int level, int json, const char *component)
{
    if (level < SDW_LOG_DEBUG) level = SDW_LOG_DEBUG;
    if (level > SDW_LOG_ERROR) level = SDW_LOG_ERROR;
    g_level = level;
    g_json = json ? 1 : 0;
    snprintf(g_comp, sizeof g_comp, "%s", component ? component : "");
}

int sdw_log_level_parse(const char *s)
{
    if (!s) return -1;
    for (int i = 0; i < 4; i++)
        if (!strcasecmp(s, level_names[i])) return i;
    if (!strcasecmp(s, "warning")) return SDW_LOG_WARN;
    return -1;
}

/* The line being built: fixed storage on the stack, so logging never allocates. */
typedef struct {
    char buf[LOG_LINE_MAX];
    size_t len;
    int full; /* a value was cut: every later field is dropped */
} line_t;

static size_t room(const line_t *l)
{
    return l->len + LOG_TAIL_RESERVE < sizeof l->buf ? sizeof l->buf - LOG_TAIL_RESERVE - l->len : 0;
}

/* Raw append for fixed text; uses the reserve, which the callers size for. The common case is split out
 * so that appending a literal inlines to a fixed-size copy. */
static __attribute__((noinline)) void put_raw_cut(line_t *l, const char *s, size_t n)
{
    if (l->len + n > sizeof l->buf - 1) n = sizeof l->buf - 1 - l->len;
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}
static inline void put_raw(line_t *l, const char *s, size_t n)
{
    if (__builtin_expect(l->len + n > sizeof l->buf - 1, 0)) {
        put_raw_cut(l, s, n);
        return;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}
static void put_str(line_t *l, const char *s)
{
    put_raw(l, s, strlen(s));
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 if it is not one. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t need;
    unsigned min;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF)
        need = 2, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF)
        need = 3, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4)
        need = 4, min = 0x10000;
    else
        return 0;
    if (n < need) return 0;
    unsigned cp = c & (0x7F >> need);
    for (size_t i = 1; i < need; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return need;
}

static const char hexdig[] = "0123456789abcdef";

/* Appends s escaped for a logfmt quoted value (json=0) or a JSON string (json=1), without the quotes.
 * Control characters and invalid UTF-8 are escaped so a line can never be split or corrupted. */
static void put_escaped(line_t *l, const char *s, int json)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        char tmp[8];
        size_t tl = 0, adv = 1;
        unsigned c = p[i];
        if (c == '"' || c == '\\') {
            tmp[0] = '\\', tmp[1] = (char)c, tl = 2;
        } else if (c == '\n') {
            tmp[0] = '\\', tmp[1] = 'n', tl = 2;
        } else if (c == '\r') {
            tmp[0] = '\\', tmp[1] = 'r', tl = 2;
        } else if (c == '\t') {
            tmp[0] = '\\', tmp[1] = 't', tl = 2;
        } else if (c < 0x20 || c == 0x7F) {
            if (json)
                memcpy(tmp, "\\u00", 4), tmp[4] = hexdig[c >> 4], tmp[5] = hexdig[c & 15], tl = 6;
            else
                tmp[0] = '\\', tmp[1] = 'x', tmp[2] = hexdig[c >> 4], tmp[3] = hexdig[c & 15], tl = 4;
        } else if (c < 0x80) {
            tmp[0] = (char)c, tl = 1;
        } else {
            size_t u = utf8_len(p + i, n - i);
            if (u) {
                memcpy(tmp, p + i, u), tl = u, adv = u;
            } else if (json) {
                memcpy(tmp, "\\ufffd", 6), tl = 6;
            } else {
                tmp[0] = '\\', tmp[1] = 'x', tmp[2] = hexdig[c >> 4], tmp[3] = hexdig[c & 15], tl = 4;
            }
        }
        if (tl > room(l)) {
            put_str(l, "...");
            l->full = 1;
            return;
        }
        memcpy(l->buf + l->len, tmp, tl);
        l->len += tl;
        i += adv;
    }
}

/* A logfmt value needs quotes when it is empty or holds anything a logfmt reader splits or unescapes on. */
static int needs_quotes(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s);
    if (!n) return 1;
    for (size_t i = 0; i < n;) {
        unsigned c = p[i];
        if (c <= 0x20 || c == '"' || c == '=' || c == '\\' || c == 0x7F) return 1;
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t u = utf8_len(p + i, n - i);
        if (!u) return 1;
        i += u;
    }
    return 0;
}

/* Bytes copied as they are: printable ASCII except what logfmt quotes or either form escapes. Row 0 is
 * logfmt: 0x21..0x7E without '"' (0x22), '=' (0x3D), '\\' (0x5C); row 1 JSON strings: 0x20..0x7E without
 * '"' and '\\'. */
static const unsigned char plain_byte[2][256] = {
    {[0x21] = 1, [0x23 ... 0x3C] = 1, [0x3E ... 0x5B] = 1, [0x5D ... 0x7E] = 1},
    {[0x20 ... 0x21] = 1, [0x23 ... 0x5B] = 1, [0x5D ... 0x7E] = 1},
};

/* Length of s when every byte may be copied as it is (plain_byte); 0 when s needs the careful path (or is
 * empty). Most values are like this (numbers, paths, ids), and one table scan plus a memcpy is much
 * cheaper than escaping byte by byte. */
static size_t plain_len(const char *s, int json)
{
    const unsigned char *p = (const unsigned char *)s, *tab = plain_byte[json];
    size_t n = 0;
    while (tab[p[n]])
        n++;
    return p[n] ? 0 : n;
}

/* Keys come from our own code, but a stray space or '=' must not break the line format. */
static void put_key(line_t *l, const char *k)
{
    size_t n = plain_len(k, 0);
    if (n && n <= 64) {
        put_raw(l, k, n);
        return;
    }
    n = 0;
    for (const char *p = k; *p && n < 64; p++, n++) {
        unsigned char c = (unsigned char)*p;
        char o = (c > 0x20 && c < 0x7F && c != '=' && c != '"' && c != '\\') ? (char)c : '_';
        put_raw(l, &o, 1);
    }
    if (!n) put_str(l, "_");
}

/* Appends v, whose plain_len is n: copied whole when it is plain and fits (the very bytes the byte-by-byte
 * path would give), else escaped and cut as needed. */
static void put_value(line_t *l, const char *v, size_t n, int json)
{
    if (n && n <= room(l)) {
        memcpy(l->buf + l->len, v, n);
        l->len += n;
        return;
    }
    put_escaped(l, v, json);
}

static void put_field(line_t *l, const char *key, const char *val)
{
    if (l->full) return;
    if (!val) val = "";
    if (g_json) {
        put_str(l, ",\"");
        put_value(l, key, plain_len(key, 1), 1);
        put_str(l, "\":\"");
        put_value(l, val, plain_len(val, 1), 1);
        put_str(l, "\"");
    } else {
        put_str(l, " ");
        put_key(l, key);
        put_str(l, "=");
        size_t n = plain_len(val, 0);
        if (n) { /* nothing to quote */
            put_value(l, val, n, 0);
            return;
        }
        int q = needs_quotes(val);
        if (q) put_str(l, "\"");
        put_escaped(l, val, 0);
        if (q) put_str(l, "\"");
    }
}

/* The JSON number in s ("%5d" pads with spaces, "%+d" adds a sign JSON does not allow): the number
 * without its padding, or NULL when s is not one, which is then logged as a string. */
static const char *json_number(char *s)
{
    while (*s == ' ')
        s++;
    size_t n = strlen(s);
    while (n && s[n - 1] == ' ')
        s[--n] = 0;
    const char *p = s;
    if (*p == '-') p++;
    if (!(*p >= '0' && *p <= '9')) return NULL;
    if (*p == '0' && p[1] >= '0' && p[1] <= '9') return NULL;
    while (*p >= '0' && *p <= '9')
        p++;
    if (*p == '.') {
        p++;
        if (!(*p >= '0' && *p <= '9')) return NULL;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-') p++;
        if (!(*p >= '0' && *p <= '9')) return NULL;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    return *p ? NULL : s;
}

/* A number from a numeric conversion: bare in JSON, as is in logfmt (digits, sign, '.', 'e' never need
 * quotes). */
static void put_number(line_t *l, const char *key, const char *num)
{
    if (l->full) return;
    if (!g_json) {
        put_field(l, key, num);
        return;
    }
    put_str(l, ",\"");
    put_value(l, key, plain_len(key, 1), 1);
    put_str(l, "\":");
    put_value(l, num, plain_len(num, 1), 1);
}

/* UTC timestamp. The "YYYY-MM-DDTHH:MM:SS." part is kept per thread for the current second, since a busy
 * service logs many lines per second and gmtime_r + strftime cost more than the rest of a line. gmtime_r may
 * take glibc's time-zone lock, so sdw_log is not async-signal-safe: nothing logs from a signal handler or
 * between fork and exec (the worker spawn's child reports with dprintf). */
#define TS_PREFIX_LEN 20
static __thread time_t t_ts_sec = (time_t)-1;
static __thread char t_ts_prefix[TS_PREFIX_LEN + 1];

static void line_ts(char out[32])
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec != t_ts_sec) {
        struct tm tm;
        if (!gmtime_r(&ts.tv_sec, &tm) ||
            strftime(t_ts_prefix, sizeof t_ts_prefix, "%Y-%m-%dT%H:%M:%S.", &tm) != TS_PREFIX_LEN)
            memcpy(t_ts_prefix, "0000-00-00T00:00:00.", TS_PREFIX_LEN + 1); /* a year past 9999 */
        t_ts_sec = ts.tv_sec;
    }
    int ms = (int)(ts.tv_nsec / 1000000);
    memcpy(out, t_ts_prefix, TS_PREFIX_LEN);
    out[TS_PREFIX_LEN] = (char)('0' + ms / 100);
    out[TS_PREFIX_LEN + 1] = (char)('0' + ms / 10 % 10);
    out[TS_PREFIX_LEN + 2] = (char)('0' + ms % 10);
    out[TS_PREFIX_LEN + 3] = 'Z';
    out[TS_PREFIX_LEN + 4] = 0;
}

static void line_begin(line_t *l, int level, const char *event)
{
    char ts[32];
    line_ts(ts);
    l->len = 0;
    l->full = 0;
    const char *comp = g_comp[0] ? g_comp : program_invocation_short_name;
    if (g_json) {
        put_str(l, "{\"ts\":\"");
        put_str(l, ts);
        put_str(l, "\",\"level\":\"");
        put_str(l, level_names[level]);
        put_str(l, "\"");
        put_field(l, "comp", comp);
        put_field(l, "event", event);
    } else {
        put_str(l, "ts=");
        put_str(l, ts);
        put_str(l, " level=");
        put_str(l, level_names[level]);
        put_field(l, "comp", comp);
        put_field(l, "event", event);
    }
}

/* Closes the line: the truncation mark when a value was cut, the JSON brace, the newline. */
static void line_close(line_t *l)
{
    if (g_json)
        put_str(l, l->full ? ",\"truncated\":true}" : "}");
    else if (l->full)
        put_str(l, " truncated=1");
    put_str(l, "\n");
}

static void write_all(const char *buf, size_t len)
{
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(STDERR_FILENO, buf + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        off += (size_t)w;
    }
}

/* ---- the batch of deferred lines ----
 * Lines given to sdw_log_deferred wait here, complete and in order, until the owning thread (the first to
 * defer a line: the supervisor's event loop) calls sdw_log_flush, writes an immediate line, forks or exits.
 * Each write is at most LOG_BATCH_MAX bytes of whole lines. Other threads never touch it. */
static char g_batch[LOG_BATCH_MAX];
static size_t g_batch_len;
static int g_batch_claimed;
static __thread int t_batch_owner;

static void batch_write(void)
{
    if (g_batch_len) {
        write_all(g_batch, g_batch_len);
        g_batch_len = 0;
    }
}

/* fork() from the owner: the parent's lines go out first, so none is written twice or reordered. */
static void batch_before_fork(void)
{
    if (t_batch_owner) batch_write();
}

/* A child forked by another thread holds a copy of lines that belong to the parent: drop them. */
static void batch_forget_in_child(void)
{
    g_batch_len = 0;
}

static void batch_at_exit(void)
{
    sdw_log_flush();
}

/* Makes the calling thread the batch's owner if nobody is yet; returns whether it is the owner. */
static int batch_claim(void)
{
    if (t_batch_owner) return 1;
    if (__atomic_exchange_n(&g_batch_claimed, 1, __ATOMIC_ACQ_REL)) return 0;
    t_batch_owner = 1;
    pthread_atfork(batch_before_fork, NULL, batch_forget_in_child);
    atexit(batch_at_exit);
    return 1;
}

/* Writes a finished line now. The owner's pending batch goes first, in the same write(2) when both fit,
 * so a warning never overtakes the access lines logged before it. errno is preserved so logging inside
 * error paths is harmless. */
static void line_emit(line_t *l)
{
    int saved = errno;
    if (t_batch_owner && g_batch_len) {
        if (g_batch_len + l->len <= sizeof g_batch) {
            memcpy(g_batch + g_batch_len, l->buf, l->len);
            g_batch_len += l->len;
            batch_write();
            errno = saved;
            return;
        }
        batch_write();
    }
    write_all(l->buf, l->len);
    errno = saved;
}

/* Queues a finished line in the batch, writing the batch first when the line would not fit in it. */
static void line_defer(line_t *l)
{
    if (!batch_claim()) {
        line_emit(l);
        return;
    }
    int saved = errno;
    if (g_batch_len + l->len > sizeof g_batch) batch_write();
    if (l->len > sizeof g_batch)
        write_all(l->buf, l->len); /* longer than any batch: alone, as an immediate line would be */
    else {
        memcpy(g_batch + g_batch_len, l->buf, l->len);
        g_batch_len += l->len;
    }
    errno = saved;
}

void sdw_log_flush(void)
{
    if (!t_batch_owner) return;
    int saved = errno;
    batch_write();
    errno = saved;
}

static int level_ok(int level)
{
    return level >= g_level && level >= SDW_LOG_DEBUG && level <= SDW_LOG_ERROR;
}

/* ---- fields from a printf-style format ----
 * "slot=%d device=%s reason=\"a b\" size=%dx%d": space-separated key=value fields whose values are
 * printf conversions (type-checked by the compiler), literal text, or a double-quoted mix of both. A value
 * that is exactly one integer or floating conversion stays a number in JSON; the rest are strings, escaped
 * and quoted by put_field as any other value. */

/* Formats one conversion, fmt[0] == '%', into out (cap bytes, always terminated) taking its argument(s)
 * from ap. Returns the bytes of fmt consumed; *numeric is set for integer and floating conversions. */
static size_t fmt_conv(const char *fmt, va_list *ap, char *out, size_t cap, int *numeric)
{
    char spec[48];
    size_t si = 0, i = 1;
    spec[si++] = '%';
    *numeric = 0;
    out[0] = 0;
    while (fmt[i] && strchr("-+ #0'", fmt[i]) && si < 16)
        spec[si++] = fmt[i++];
    for (int part = 0; part < 2; part++) { /* width, then precision after '.' */
        if (part == 1) {
            if (fmt[i] != '.') break;
            spec[si++] = fmt[i++];
        }
        if (fmt[i] == '*') {
            si += (size_t)snprintf(spec + si, 12, "%d", va_arg(*ap, int));
            i++;
        } else {
            while (fmt[i] >= '0' && fmt[i] <= '9' && si < 36)
                spec[si++] = fmt[i++];
        }
    }
    char len[3] = "";
    size_t ln = 0;
    while (fmt[i] && strchr("hljztL", fmt[i]) && ln < 2)
        len[ln++] = fmt[i], spec[si++] = fmt[i++];
    len[ln] = 0;
    char conv = fmt[i];
    if (!conv) return i;
    spec[si++] = conv;
    spec[si] = 0;
    i++;
    switch (conv) {
    case 'd':
    case 'i':
        *numeric = 1;
        /* fall through */
    case 'c':
        if (!strcmp(len, "ll"))
            snprintf(out, cap, spec, va_arg(*ap, long long));
        else if (!strcmp(len, "l"))
            snprintf(out, cap, spec, va_arg(*ap, long));
        else if (!strcmp(len, "j"))
            snprintf(out, cap, spec, va_arg(*ap, intmax_t));
        else if (!strcmp(len, "z") || !strcmp(len, "t"))
            snprintf(out, cap, spec, va_arg(*ap, ptrdiff_t));
        else
            snprintf(out, cap, spec, va_arg(*ap, int));
        break;
    case 'u':
        *numeric = 1;
        /* fall through */
    case 'x':
    case 'X':
    case 'o':
        if (!strcmp(len, "ll"))
            snprintf(out, cap, spec, va_arg(*ap, unsigned long long));
        else if (!strcmp(len, "l"))
            snprintf(out, cap, spec, va_arg(*ap, unsigned long));
        else if (!strcmp(len, "j"))
            snprintf(out, cap, spec, va_arg(*ap, uintmax_t));
        else if (!strcmp(len, "z") || !strcmp(len, "t"))
            snprintf(out, cap, spec, va_arg(*ap, size_t));
        else
            snprintf(out, cap, spec, va_arg(*ap, unsigned));
        break;
    case 'f':
    case 'F':
    case 'e':
    case 'E':
    case 'g':
    case 'G':
    case 'a':
    case 'A': {
        double d = len[0] == 'L' ? (double)va_arg(*ap, long double) : va_arg(*ap, double);
        if (len[0] == 'L') /* the spec still says L; format the narrowed value without it */
            memmove(strchr(spec, 'L'), strchr(spec, 'L') + 1, strlen(strchr(spec, 'L')));
        snprintf(out, cap, spec, d);
        *numeric = isfinite(d) && conv != 'a' && conv != 'A';
        break;
    }
    case 's': {
        const char *v = va_arg(*ap, const char *);
        if (!v) v = "(null)";
        if (si == 2) /* plain %s: no width or precision to apply */
            snprintf(out, cap, "%s", v);
        else
            snprintf(out, cap, spec, v);
        break;
    }
    case 'p':
        snprintf(out, cap, spec, va_arg(*ap, void *));
        break;
    case '%':
        snprintf(out, cap, "%%");
        break;
    default: /* %n and unknown conversions print nothing and take no argument */
        break;
    }
    return i;
}

/* Appends the fields described by fmt (see above), taking the values from ap. */
static void put_fields(line_t *l, const char *fmt, va_list ap0)
{
    va_list ap;
    va_copy(ap, ap0);
    const char *p = fmt ? fmt : "";
    /* A value as long as a whole line: one that fills it is then cut, with the mark, by put_field. */
    char key[72], val[LOG_LINE_MAX], conv[LOG_LINE_MAX];
    while (*p && !l->full) {
        while (*p == ' ')
            p++;
        if (!*p) break;
        size_t kn = 0;
        while (*p && *p != '=' && *p != ' ')
            key[kn < sizeof key - 1 ? kn++ : kn] = *p++;
        key[kn] = 0;
        size_t vn = 0;
        int n_conv = 0, n_lit = 0, numeric = 0;
        if (*p == '=') {
            p++;
            int quoted = *p == '"';
            p += quoted;
            while (*p && (quoted ? *p != '"' : *p != ' ')) {
                const char *piece;
                size_t pn;
                if (*p == '%' && p[1] != '%') {
                    int num;
                    p += fmt_conv(p, &ap, conv, sizeof conv, &num);
                    piece = conv, pn = strlen(conv);
                    n_conv++, numeric = num;
                } else {
                    if (*p == '%' || (quoted && *p == '\\' && p[1]))
                        p++; /* "%%" and a backslash escape in quotes stand for the next character */
                    piece = p++, pn = 1;
                    n_lit++;
                }
                if (pn > sizeof val - 1 - vn) pn = sizeof val - 1 - vn;
                memcpy(val + vn, piece, pn);
                vn += pn;
            }
            if (quoted && *p == '"') p++;
        }
        val[vn] = 0;
        if (n_conv == 1 && !n_lit && numeric && json_number(val))
            put_number(l, key, json_number(val));
        else
            put_field(l, key, val);
    }
    va_end(ap);
}

void sdw_log(int level, const char *event, const char *fmt, ...)
{
    if (!level_ok(level)) return;
    line_t l;
    line_begin(&l, level, event ? event : "");
    va_list ap;
    va_start(ap, fmt);
    put_fields(&l, fmt, ap);
    va_end(ap);
    line_close(&l);
    line_emit(&l);
}

void sdw_log_deferred(int level, const char *event, const char *fmt, ...)
{
    if (!level_ok(level)) return;
    line_t l;
    line_begin(&l, level, event ? event : "");
    va_list ap;
    va_start(ap, fmt);
    put_fields(&l, fmt, ap);
    va_end(ap);
    line_close(&l);
    if (level >= SDW_LOG_WARN)
        line_emit(&l); /* warnings and errors are never held back */
    else
        line_defer(&l);
}
