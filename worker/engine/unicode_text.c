/* unicode_text.c: libutf8proc behind the CLIP tokenizer's text handling, so every script's letters and digits
 * are classified and lower-cased by the Unicode database rather than by tables kept here. */
#include "unicode_text.h"

#include <stdlib.h>
#include <utf8proc.h>

#define NFC_OPTS (UTF8PROC_STABLE | UTF8PROC_COMPOSE)

/* Makes room for want more code points after the first used ones; the slack avoids regrowing per run. */
static int nfc_reserve(utf8proc_int32_t **buf, size_t *cap, size_t used, size_t want)
{
    if (used + want <= *cap) return 0;
    size_t ncap = used + want + *cap / 2 + 16;
    utf8proc_int32_t *nb = realloc(*buf, ncap * sizeof *nb);
    if (!nb) return -1;
    *buf = nb;
    *cap = ncap;
    return 0;
}

int sde_uni_decode_nfc(const char *text, size_t len, uint32_t **out, size_t *n)
{
    const utf8proc_uint8_t *s = (const utf8proc_uint8_t *)text;
    size_t cap = 0, m = 0;
    utf8proc_int32_t *buf = NULL;
    *out = NULL;
    *n = 0;
    if (nfc_reserve(&buf, &cap, 0, len + 1)) return -1;
    for (size_t i = 0; i < len;) {
        /* NFC works on valid UTF-8 only; invalid bytes split the text into runs normalised one by one */
        size_t j = i;
        utf8proc_int32_t cp;
        utf8proc_ssize_t l;
        while (j < len && (l = utf8proc_iterate(s + j, (utf8proc_ssize_t)(len - j), &cp)) > 0)
            j += (size_t)l;
        while (j > i) {
            utf8proc_ssize_t k = utf8proc_decompose(s + i, (utf8proc_ssize_t)(j - i), buf + m,
                                                    (utf8proc_ssize_t)(cap - m), NFC_OPTS);
            if (k < 0) goto fail;
            if ((size_t)k > cap - m) {
                if (nfc_reserve(&buf, &cap, m, (size_t)k + (len - j) + 1)) goto fail;
                continue;
            }
            m += (size_t)utf8proc_normalize_utf32(buf + m, k, NFC_OPTS);
            i = j;
        }
        if (i < len) {
            if (nfc_reserve(&buf, &cap, m, len - i + 1)) goto fail;
            buf[m++] = (utf8proc_int32_t)(SDE_UNI_RAW | s[i++]);
        }
    }
    *out = (uint32_t *)buf;
    *n = m;
    return 0;
fail:
    free(buf);
    return -1;
}

int sde_uni_encode(uint32_t cp, uint8_t *out)
{
    if (cp >= SDE_UNI_RAW) {
        out[0] = (uint8_t)(cp & 0xFF);
        return 1;
    }
    return (int)utf8proc_encode_char((utf8proc_int32_t)cp, out);
}

int sde_uni_class(uint32_t cp)
{
    if (cp >= SDE_UNI_RAW) return SDE_UNI_OTHER;
    switch (utf8proc_category((utf8proc_int32_t)cp)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
        return SDE_UNI_LETTER;
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO:
        return SDE_UNI_NUMBER;
    case UTF8PROC_CATEGORY_ZS:
    case UTF8PROC_CATEGORY_ZL:
    case UTF8PROC_CATEGORY_ZP:
        return SDE_UNI_SPACE;
    default:
        break;
    }
    /* \s of the `regex` module is White_Space: the Z* separators plus these controls (not U+001C..U+001F,
     * which Python's str.isspace() adds; the tokenizer's final strip() deals with those at the ends) */
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x85 ? SDE_UNI_SPACE : SDE_UNI_OTHER;
}

int sde_uni_lower(uint32_t cp, uint32_t out[2])
{
    if (cp == 0x130) { /* the one unconditional two-code-point lower-casing Python applies: "i" + dot above */
        out[0] = 'i';
        out[1] = 0x307;
        return 2;
    }
    out[0] = cp >= SDE_UNI_RAW ? cp : (uint32_t)utf8proc_tolower((utf8proc_int32_t)cp);
    return 1;
}

/* Cased, approximated as letters with case or anything with a case mapping (circled letters, for one);
 * utf8proc has no Other_Lowercase, so the ordinal indicators are missed. */
static int uni_cased(uint32_t cp)
{
    if (cp >= SDE_UNI_RAW) return 0;
    utf8proc_int32_t c = (utf8proc_int32_t)cp;
    utf8proc_category_t cat = utf8proc_category(c);
    return cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT ||
           utf8proc_tolower(c) != c || utf8proc_toupper(c) != c;
}

/* Case_Ignorable: marks, format characters, modifier letters and symbols by category, plus the
 * Word_Break MidLetter / MidNumLet / Single_Quote characters, which utf8proc does not expose. */
static int uni_case_ignorable(uint32_t cp)
{
    static const uint16_t word_mid[] = {0x27,   0x2E,   0x3A,   0xB7,   0x387,  0x55F,
                                        0x5F4,  0x2018, 0x2019, 0x2024, 0x2027, 0xFE13,
                                        0xFE52, 0xFE55, 0xFF07, 0xFF0E, 0xFF1A};
    if (cp >= SDE_UNI_RAW) return 0;
    switch (utf8proc_category((utf8proc_int32_t)cp)) {
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_SK:
        return 1;
    default:
        break;
    }
    for (size_t i = 0; i < sizeof word_mid / sizeof word_mid[0]; i++)
        if (cp == word_mid[i]) return 1;
    return 0;
}

int sde_uni_final_sigma(const uint32_t *cp, size_t n, size_t i)
{
    size_t j = i;
    while (j > 0 && uni_case_ignorable(cp[j - 1]))
        j--;
    if (j == 0 || !uni_cased(cp[j - 1])) return 0;
    for (j = i + 1; j < n && uni_case_ignorable(cp[j]); j++)
        ;
    return j == n || !uni_cased(cp[j]);
}
