/* unicode_text.c: UTF-8 decoding and the letter/number/space classes and lower-case mappings of the scripts
 * prompts use: Latin (all of 0000-024F, IPA, Latin Extended Additional), Greek, Cyrillic, Armenian, Hebrew,
 * Arabic, Devanagari, Thai, Georgian, Hangul, Kana, CJK ideographs, fullwidth forms, number forms, circled
 * numbers, math alphanumerics. The tables hold the Unicode 14 General_Category (L* -> letter, N* -> number)
 * and simple lower-case mappings for exactly those blocks; code points outside them (other scripts' letters,
 * emoji, symbols, combining marks) are "other", i.e. [^\s\p{L}\p{N}] for the CLIP regex, and never change case. */
#include "unicode_text.h"

enum { CL_LETTER = SDE_UNI_LETTER, CL_NUMBER = SDE_UNI_NUMBER };

typedef struct {
    uint32_t lo, hi; /* inclusive code point range */
    uint8_t cls;     /* CL_LETTER or CL_NUMBER */
} uni_class_range;

/* Sorted, non-overlapping; anything not covered is OTHER (spaces are handled before the lookup). */
static const uni_class_range uni_classes[] = {
    {0x0030, 0x0039, CL_NUMBER}, {0x0041, 0x005A, CL_LETTER}, {0x0061, 0x007A, CL_LETTER},
    {0x00AA, 0x00AA, CL_LETTER}, {0x00B2, 0x00B3, CL_NUMBER}, {0x00B5, 0x00B5, CL_LETTER},
    {0x00B9, 0x00B9, CL_NUMBER}, {0x00BA, 0x00BA, CL_LETTER}, {0x00BC, 0x00BE, CL_NUMBER},
    {0x00C0, 0x00D6, CL_LETTER}, {0x00D8, 0x00F6, CL_LETTER}, {0x00F8, 0x02C1, CL_LETTER},
    {0x02C6, 0x02D1, CL_LETTER}, {0x02E0, 0x02E4, CL_LETTER}, {0x02EC, 0x02EC, CL_LETTER},
    {0x02EE, 0x02EE, CL_LETTER}, {0x0370, 0x0374, CL_LETTER}, {0x0376, 0x0377, CL_LETTER},
    {0x037A, 0x037D, CL_LETTER}, {0x037F, 0x037F, CL_LETTER}, {0x0386, 0x0386, CL_LETTER},
    {0x0388, 0x038A, CL_LETTER}, {0x038C, 0x038C, CL_LETTER}, {0x038E, 0x03A1, CL_LETTER},
    {0x03A3, 0x03F5, CL_LETTER}, {0x03F7, 0x0481, CL_LETTER}, {0x048A, 0x052F, CL_LETTER},
    {0x0531, 0x0556, CL_LETTER}, {0x0559, 0x0559, CL_LETTER}, {0x0560, 0x0588, CL_LETTER},
    {0x05D0, 0x05EA, CL_LETTER}, {0x05EF, 0x05F2, CL_LETTER}, {0x0620, 0x064A, CL_LETTER},
    {0x0660, 0x0669, CL_NUMBER}, {0x066E, 0x066F, CL_LETTER}, {0x0671, 0x06D3, CL_LETTER},
    {0x06D5, 0x06D5, CL_LETTER}, {0x06E5, 0x06E6, CL_LETTER}, {0x06EE, 0x06EF, CL_LETTER},
    {0x06F0, 0x06F9, CL_NUMBER}, {0x06FA, 0x06FC, CL_LETTER}, {0x06FF, 0x06FF, CL_LETTER},
    {0x0904, 0x0939, CL_LETTER}, {0x093D, 0x093D, CL_LETTER}, {0x0950, 0x0950, CL_LETTER},
    {0x0958, 0x0961, CL_LETTER}, {0x0966, 0x096F, CL_NUMBER}, {0x0971, 0x097F, CL_LETTER},
    {0x0E01, 0x0E30, CL_LETTER}, {0x0E32, 0x0E33, CL_LETTER}, {0x0E40, 0x0E46, CL_LETTER},
    {0x0E50, 0x0E59, CL_NUMBER}, {0x10A0, 0x10C5, CL_LETTER}, {0x10C7, 0x10C7, CL_LETTER},
    {0x10CD, 0x10CD, CL_LETTER}, {0x10D0, 0x10FA, CL_LETTER}, {0x10FC, 0x11FF, CL_LETTER},
    {0x1E00, 0x1F15, CL_LETTER}, {0x1F18, 0x1F1D, CL_LETTER}, {0x1F20, 0x1F45, CL_LETTER},
    {0x1F48, 0x1F4D, CL_LETTER}, {0x1F50, 0x1F57, CL_LETTER}, {0x1F59, 0x1F59, CL_LETTER},
    {0x1F5B, 0x1F5B, CL_LETTER}, {0x1F5D, 0x1F5D, CL_LETTER}, {0x1F5F, 0x1F7D, CL_LETTER},
    {0x1F80, 0x1FB4, CL_LETTER}, {0x1FB6, 0x1FBC, CL_LETTER}, {0x1FBE, 0x1FBE, CL_LETTER},
    {0x1FC2, 0x1FC4, CL_LETTER}, {0x1FC6, 0x1FCC, CL_LETTER}, {0x1FD0, 0x1FD3, CL_LETTER},
    {0x1FD6, 0x1FDB, CL_LETTER}, {0x1FE0, 0x1FEC, CL_LETTER}, {0x1FF2, 0x1FF4, CL_LETTER},
    {0x1FF6, 0x1FFC, CL_LETTER}, {0x2070, 0x2070, CL_NUMBER}, {0x2071, 0x2071, CL_LETTER},
    {0x2074, 0x2079, CL_NUMBER}, {0x207F, 0x207F, CL_LETTER}, {0x2080, 0x2089, CL_NUMBER},
    {0x2090, 0x209C, CL_LETTER}, {0x2150, 0x2182, CL_NUMBER}, {0x2183, 0x2184, CL_LETTER},
    {0x2185, 0x2189, CL_NUMBER}, {0x2460, 0x249B, CL_NUMBER}, {0x24EA, 0x24FF, CL_NUMBER},
    {0x2776, 0x2793, CL_NUMBER}, {0x3005, 0x3006, CL_LETTER}, {0x3007, 0x3007, CL_NUMBER},
    {0x3021, 0x3029, CL_NUMBER}, {0x3031, 0x3035, CL_LETTER}, {0x3038, 0x303A, CL_NUMBER},
    {0x303B, 0x303C, CL_LETTER}, {0x3041, 0x3096, CL_LETTER}, {0x309D, 0x309F, CL_LETTER},
    {0x30A1, 0x30FA, CL_LETTER}, {0x30FC, 0x30FF, CL_LETTER}, {0x3131, 0x318E, CL_LETTER},
    {0x31F0, 0x31FF, CL_LETTER}, {0x3220, 0x3229, CL_NUMBER}, {0x3248, 0x324F, CL_NUMBER},
    {0x3251, 0x325F, CL_NUMBER}, {0x3280, 0x3289, CL_NUMBER}, {0x32B1, 0x32BF, CL_NUMBER},
    {0x3400, 0x4DBF, CL_LETTER}, {0x4E00, 0x9FFF, CL_LETTER}, {0xAC00, 0xD7A3, CL_LETTER},
    {0xF900, 0xFA6D, CL_LETTER}, {0xFA70, 0xFAD9, CL_LETTER}, {0xFF10, 0xFF19, CL_NUMBER},
    {0xFF21, 0xFF3A, CL_LETTER}, {0xFF41, 0xFF5A, CL_LETTER}, {0xFF66, 0xFFBE, CL_LETTER},
    {0xFFC2, 0xFFC7, CL_LETTER}, {0xFFCA, 0xFFCF, CL_LETTER}, {0xFFD2, 0xFFD7, CL_LETTER},
    {0xFFDA, 0xFFDC, CL_LETTER}, {0x1D400, 0x1D454, CL_LETTER}, {0x1D456, 0x1D49C, CL_LETTER},
    {0x1D49E, 0x1D49F, CL_LETTER}, {0x1D4A2, 0x1D4A2, CL_LETTER}, {0x1D4A5, 0x1D4A6, CL_LETTER},
    {0x1D4A9, 0x1D4AC, CL_LETTER}, {0x1D4AE, 0x1D4B9, CL_LETTER}, {0x1D4BB, 0x1D4BB, CL_LETTER},
    {0x1D4BD, 0x1D4C3, CL_LETTER}, {0x1D4C5, 0x1D505, CL_LETTER}, {0x1D507, 0x1D50A, CL_LETTER},
    {0x1D50D, 0x1D514, CL_LETTER}, {0x1D516, 0x1D51C, CL_LETTER}, {0x1D51E, 0x1D539, CL_LETTER},
    {0x1D53B, 0x1D53E, CL_LETTER}, {0x1D540, 0x1D544, CL_LETTER}, {0x1D546, 0x1D546, CL_LETTER},
    {0x1D54A, 0x1D550, CL_LETTER}, {0x1D552, 0x1D6A5, CL_LETTER}, {0x1D6A8, 0x1D6C0, CL_LETTER},
    {0x1D6C2, 0x1D6DA, CL_LETTER}, {0x1D6DC, 0x1D6FA, CL_LETTER}, {0x1D6FC, 0x1D714, CL_LETTER},
    {0x1D716, 0x1D734, CL_LETTER}, {0x1D736, 0x1D74E, CL_LETTER}, {0x1D750, 0x1D76E, CL_LETTER},
    {0x1D770, 0x1D788, CL_LETTER}, {0x1D78A, 0x1D7A8, CL_LETTER}, {0x1D7AA, 0x1D7C2, CL_LETTER},
    {0x1D7C4, 0x1D7CB, CL_LETTER}, {0x1D7CE, 0x1D7FF, CL_NUMBER}, {0x20000, 0x2A6DF, CL_LETTER},
    {0x2A700, 0x2B738, CL_LETTER}, {0x2B740, 0x2B81D, CL_LETTER}, {0x2B820, 0x2CEA1, CL_LETTER},
    {0x2CEB0, 0x2EBE0, CL_LETTER}, {0x2F800, 0x2FA1D, CL_LETTER}, {0x30000, 0x3134A, CL_LETTER},};

typedef struct {
    uint32_t lo, hi; /* inclusive range of upper-case code points */
    uint8_t stride;  /* 1: every code point in the range maps; 2: every other one, from lo (alternating pairs) */
    int32_t delta;   /* lower = upper + delta */
} uni_lower_range;

/* Sorted; single-code-point lower-case mappings. The one multi-code-point mapping in these blocks (U+0130 ->
 * "i" + U+0307) is handled in sde_uni_lower. */
static const uni_lower_range uni_lowers[] = {
    {0x0041, 0x005A, 1, 32}, {0x00C0, 0x00D6, 1, 32}, {0x00D8, 0x00DE, 1, 32}, {0x0100, 0x012E, 2, 1},
    {0x0132, 0x0136, 2, 1}, {0x0139, 0x0147, 2, 1}, {0x014A, 0x0176, 2, 1}, {0x0178, 0x0178, 1, -121},
    {0x0179, 0x017D, 2, 1}, {0x0181, 0x0181, 1, 210}, {0x0182, 0x0184, 2, 1}, {0x0186, 0x0186, 1, 206},
    {0x0187, 0x0187, 1, 1}, {0x0189, 0x018A, 1, 205}, {0x018B, 0x018B, 1, 1}, {0x018E, 0x018E, 1, 79},
    {0x018F, 0x018F, 1, 202}, {0x0190, 0x0190, 1, 203}, {0x0191, 0x0191, 1, 1}, {0x0193, 0x0193, 1, 205},
    {0x0194, 0x0194, 1, 207}, {0x0196, 0x0196, 1, 211}, {0x0197, 0x0197, 1, 209}, {0x0198, 0x0198, 1, 1},
    {0x019C, 0x019C, 1, 211}, {0x019D, 0x019D, 1, 213}, {0x019F, 0x019F, 1, 214}, {0x01A0, 0x01A4, 2, 1},
    {0x01A6, 0x01A6, 1, 218}, {0x01A7, 0x01A7, 1, 1}, {0x01A9, 0x01A9, 1, 218}, {0x01AC, 0x01AC, 1, 1},
    {0x01AE, 0x01AE, 1, 218}, {0x01AF, 0x01AF, 1, 1}, {0x01B1, 0x01B2, 1, 217}, {0x01B3, 0x01B5, 2, 1},
    {0x01B7, 0x01B7, 1, 219}, {0x01B8, 0x01B8, 1, 1}, {0x01BC, 0x01BC, 1, 1}, {0x01C4, 0x01C4, 1, 2},
    {0x01C5, 0x01C5, 1, 1}, {0x01C7, 0x01C7, 1, 2}, {0x01C8, 0x01C8, 1, 1}, {0x01CA, 0x01CA, 1, 2},
    {0x01CB, 0x01DB, 2, 1}, {0x01DE, 0x01EE, 2, 1}, {0x01F1, 0x01F1, 1, 2}, {0x01F2, 0x01F4, 2, 1},
    {0x01F6, 0x01F6, 1, -97}, {0x01F7, 0x01F7, 1, -56}, {0x01F8, 0x021E, 2, 1}, {0x0220, 0x0220, 1, -130},
    {0x0222, 0x0232, 2, 1}, {0x023A, 0x023A, 1, 10795}, {0x023B, 0x023B, 1, 1}, {0x023D, 0x023D, 1, -163},
    {0x023E, 0x023E, 1, 10792}, {0x0241, 0x0241, 1, 1}, {0x0243, 0x0243, 1, -195}, {0x0244, 0x0244, 1, 69},
    {0x0245, 0x0245, 1, 71}, {0x0246, 0x024E, 2, 1}, {0x0370, 0x0372, 2, 1}, {0x0376, 0x0376, 1, 1},
    {0x037F, 0x037F, 1, 116}, {0x0386, 0x0386, 1, 38}, {0x0388, 0x038A, 1, 37}, {0x038C, 0x038C, 1, 64},
    {0x038E, 0x038F, 1, 63}, {0x0391, 0x03A1, 1, 32}, {0x03A3, 0x03AB, 1, 32}, {0x03CF, 0x03CF, 1, 8},
    {0x03D8, 0x03EE, 2, 1}, {0x03F4, 0x03F4, 1, -60}, {0x03F7, 0x03F7, 1, 1}, {0x03F9, 0x03F9, 1, -7},
    {0x03FA, 0x03FA, 1, 1}, {0x03FD, 0x03FF, 1, -130}, {0x0400, 0x040F, 1, 80}, {0x0410, 0x042F, 1, 32},
    {0x0460, 0x0480, 2, 1}, {0x048A, 0x04BE, 2, 1}, {0x04C0, 0x04C0, 1, 15}, {0x04C1, 0x04CD, 2, 1},
    {0x04D0, 0x052E, 2, 1}, {0x0531, 0x0556, 1, 48}, {0x10A0, 0x10C5, 1, 7264}, {0x10C7, 0x10C7, 1, 7264},
    {0x10CD, 0x10CD, 1, 7264}, {0x1E00, 0x1E94, 2, 1}, {0x1E9E, 0x1E9E, 1, -7615}, {0x1EA0, 0x1EFE, 2, 1},
    {0x1F08, 0x1F0F, 1, -8}, {0x1F18, 0x1F1D, 1, -8}, {0x1F28, 0x1F2F, 1, -8}, {0x1F38, 0x1F3F, 1, -8},
    {0x1F48, 0x1F4D, 1, -8}, {0x1F59, 0x1F5F, 2, -8}, {0x1F68, 0x1F6F, 1, -8}, {0x1F88, 0x1F8F, 1, -8},
    {0x1F98, 0x1F9F, 1, -8}, {0x1FA8, 0x1FAF, 1, -8}, {0x1FB8, 0x1FB9, 1, -8}, {0x1FBA, 0x1FBB, 1, -74},
    {0x1FBC, 0x1FBC, 1, -9}, {0x1FC8, 0x1FCB, 1, -86}, {0x1FCC, 0x1FCC, 1, -9}, {0x1FD8, 0x1FD9, 1, -8},
    {0x1FDA, 0x1FDB, 1, -100}, {0x1FE8, 0x1FE9, 1, -8}, {0x1FEA, 0x1FEB, 1, -112}, {0x1FEC, 0x1FEC, 1, -7},
    {0x1FF8, 0x1FF9, 1, -128}, {0x1FFA, 0x1FFB, 1, -126}, {0x1FFC, 0x1FFC, 1, -9}, {0x2160, 0x216F, 1, 16},
    {0x2183, 0x2183, 1, 1}, {0x24B6, 0x24CF, 1, 26}, {0xFF21, 0xFF3A, 1, 32},};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

uint32_t sde_uni_decode(const uint8_t *s, size_t n, int *len)
{
    uint8_t b0 = s[0];
    *len = 1;
    if (b0 < 0x80)
        return b0;
    int need;
    uint32_t cp, min;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        need = 1, cp = b0 & 0x1Fu, min = 0x80;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
        need = 2, cp = b0 & 0x0Fu, min = 0x800;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
        need = 3, cp = b0 & 0x07u, min = 0x10000;
    } else {
        return SDE_UNI_RAW | b0; /* continuation byte, C0/C1 (always overlong) or F5..FF */
    }
    if ((size_t)need >= n)
        return SDE_UNI_RAW | b0;
    for (int i = 1; i <= need; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return SDE_UNI_RAW | b0;
        cp = (cp << 6) | (s[i] & 0x3Fu);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return SDE_UNI_RAW | b0;
    *len = need + 1;
    return cp;
}

int sde_uni_encode(uint32_t cp, uint8_t *out)
{
    if (cp >= SDE_UNI_RAW) {
        out[0] = (uint8_t)(cp & 0xFF);
        return 1;
    }
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xC0 | (cp >> 6));
        out[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xE0 | (cp >> 12));
        out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (uint8_t)(0xF0 | (cp >> 18));
    out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

/* The White_Space property, i.e. \s of the `regex` module CLIP's whitespace_clean and pattern use. (Python's
 * str.isspace() adds U+001C..U+001F; the tokenizer's final strip() deals with those at the ends.) */
static int uni_is_space(uint32_t cp)
{
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
           cp == 0x3000;
}

int sde_uni_class(uint32_t cp)
{
    if (cp < 0x80) {
        if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z')
            return SDE_UNI_LETTER;
        if (cp >= '0' && cp <= '9')
            return SDE_UNI_NUMBER;
        return uni_is_space(cp) ? SDE_UNI_SPACE : SDE_UNI_OTHER;
    }
    if (cp >= SDE_UNI_RAW)
        return SDE_UNI_OTHER;
    if (uni_is_space(cp))
        return SDE_UNI_SPACE;
    size_t lo = 0, hi = COUNT(uni_classes);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < uni_classes[mid].lo)
            hi = mid;
        else if (cp > uni_classes[mid].hi)
            lo = mid + 1;
        else
            return uni_classes[mid].cls;
    }
    return SDE_UNI_OTHER;
}

int sde_uni_lower(uint32_t cp, uint32_t out[2])
{
    if (cp < 0x80) {
        out[0] = (cp >= 'A' && cp <= 'Z') ? cp + 32 : cp;
        return 1;
    }
    if (cp == 0x130) { /* capital I with dot above: Python lowers it to "i" + combining dot above */
        out[0] = 'i';
        out[1] = 0x307;
        return 2;
    }
    out[0] = cp;
    size_t lo = 0, hi = COUNT(uni_lowers);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const uni_lower_range *r = &uni_lowers[mid];
        if (cp < r->lo) {
            hi = mid;
        } else if (cp > r->hi) {
            lo = mid + 1;
        } else {
            if ((cp - r->lo) % r->stride == 0)
                out[0] = (uint32_t)((int32_t)cp + r->delta);
            break;
        }
    }
    return 1;
}

/* Letters of the scripts with case (Latin, IPA, Greek, Cyrillic, Armenian, Georgian, fullwidth Latin, math
 * alphanumerics), plus the circled Latin letters, which are symbols but cased. */
static int uni_cased(uint32_t cp)
{
    if (cp >= 0x24B6 && cp <= 0x24E9)
        return 1;
    if (sde_uni_class(cp) != SDE_UNI_LETTER)
        return 0;
    return cp < 0x2B0 || (cp >= 0x370 && cp < 0x590) || (cp >= 0x10A0 && cp < 0x1100) ||
           (cp >= 0x1E00 && cp < 0x2000) || (cp >= 0xFF21 && cp <= 0xFF5A) || (cp >= 0x1D400 && cp < 0x1D7CE);
}

static int uni_case_ignorable(uint32_t cp)
{
    return cp == '\'' || cp == '.' || cp == ':' || cp == '^' || cp == '`' || cp == 0xA8 || cp == 0xAD ||
           cp == 0xAF || cp == 0xB4 || cp == 0xB7 || cp == 0xB8 || (cp >= 0x2B0 && cp <= 0x36F) ||
           (cp >= 0x483 && cp <= 0x489) || (cp >= 0x200B && cp <= 0x200F) || cp == 0x2018 || cp == 0x2019 ||
           cp == 0x2024 || cp == 0x2027 || (cp >= 0xFE00 && cp <= 0xFE0F) || (cp >= 0x1F3FB && cp <= 0x1F3FF);
}

int sde_uni_final_sigma(const uint32_t *cp, size_t n, size_t i)
{
    size_t j = i;
    while (j > 0 && uni_case_ignorable(cp[j - 1]))
        j--;
    if (j == 0 || !uni_cased(cp[j - 1]))
        return 0;
    for (j = i + 1; j < n && uni_case_ignorable(cp[j]); j++)
        ;
    return j == n || !uni_cased(cp[j]);
}
