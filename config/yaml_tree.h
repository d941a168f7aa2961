/* yaml_tree.h: the config's YAML as a small node tree (libyaml's event parser) with every node's
 * line:column, an error collector writing "file:line:col: message", and typed reads that report into it. */
#ifndef SDW_YAML_TREE_H
#define SDW_YAML_TREE_H

#include <stddef.h>

/* Our schema nests four levels deep; anything far deeper is a mistake or an attack on the parser. */
#define SDW_YT_MAX_DEPTH 32
/* Enough to see all typos of one edit; more would only repeat a cascade. */
#define SDW_YT_MAX_ERRORS 20

/** A node's kind. */
typedef enum { SDW_YT_SCALAR, SDW_YT_MAP, SDW_YT_SEQ } sdw_yt_type;

typedef struct sdw_yt_node sdw_yt_node;
/** One YAML node with its position. */
struct sdw_yt_node {
    sdw_yt_type type;
    int line, col; /* 1-based, from libyaml's start mark */
    char *s;       /* SDW_YT_SCALAR: the value (NUL-terminated; may hold NULs, see slen) */
    size_t slen;
    int quoted;        /* SDW_YT_SCALAR: written quoted or as a block: a string, never a number/bool/null */
    sdw_yt_node **kid; /* SDW_YT_MAP: key, value, key, value...; SDW_YT_SEQ: the items */
    int n, cap;
};

/** One collected error. */
typedef struct {
    int line, col; /* 0 for errors about the whole file */
    char *msg;     /* "file:line:col: message", malloc'd */
} sdw_yt_error_entry;

/** The input being read and the errors found in it; zero it, then set file, text and textlen. */
typedef struct {
    const char *file;
    const char *text; /* the whole input, for positions of reader errors */
    size_t textlen;
    sdw_yt_error_entry errs[SDW_YT_MAX_ERRORS];
    int nerr;  /* every error seen, also those past SDW_YT_MAX_ERRORS */
    int nkept; /* entries of errs */
} sdw_yt_ctx;

/** A node's line, column: the position arguments of sdw_yt_error. */
#define SDW_YT_AT(n) (n)->line, (n)->col

/** Records an error at line:col (line 0: about the whole file); only the first SDW_YT_MAX_ERRORS are kept,
 * all are counted in nerr. */
void __attribute__((format(printf, 4, 5)))
sdw_yt_error(sdw_yt_ctx *c, int line, int col, const char *fmt, ...);
/** Writes the kept errors into err in file order, one per line, with a count of those not shown; frees them.
 */
void sdw_yt_errors_finish(sdw_yt_ctx *c, char *err, size_t errlen);
/** Builds the tree of the single document in c->text. Returns 0 (*root NULL for an empty stream) or -1 after
 * reporting; aliases and more than one document are errors. */
int sdw_yt_parse(sdw_yt_ctx *c, sdw_yt_node **root);
/** Frees a tree (NULL is fine). */
void sdw_yt_free(sdw_yt_node *n);
/** 1 for a missing value or a plain YAML null (~, null, empty). */
int sdw_yt_is_null(const sdw_yt_node *v);
/** A scalar's text made safe for a one-line message in buf. */
const char *sdw_yt_clean(const sdw_yt_node *v, char *buf, size_t len);
/** A short rendering of a value for messages ('abc', string "32", a mapping, a list) in buf. */
const char *sdw_yt_show(const sdw_yt_node *v, char *buf, size_t len);
/** An integer in [lo, hi] from a plain decimal scalar; 0, or -1 reported against path. */
int sdw_yt_get_int(sdw_yt_ctx *c, const sdw_yt_node *v, const char *path, long long lo, long long hi,
                   long long *out);
/** sdw_yt_get_int for an int. */
int sdw_yt_get_int32(sdw_yt_ctx *c, const sdw_yt_node *v, const char *path, int lo, int hi, int *out);
/** true/false (also True, TRUE...); 0, or -1 reported. */
int sdw_yt_get_bool(sdw_yt_ctx *c, const sdw_yt_node *v, const char *path, int *out);
/** Any scalar as text, without NULs; 0, or -1 reported. *out points into the tree. */
int sdw_yt_get_str(sdw_yt_ctx *c, const sdw_yt_node *v, const char *path, const char **out);
/** One of choices (NULL-terminated), *out its index; 0, or -1 reported. */
int sdw_yt_get_enum(sdw_yt_ctx *c, const sdw_yt_node *v, const char *path, const char *const *choices,
                    int *out);
/** Replaces *dst with a copy of s; 0, or -1 reported (out of memory). */
int sdw_yt_set_str(sdw_yt_ctx *c, char **dst, const char *s);
/** Checks a mapping's keys against known (NULL-terminated): unknown and duplicate keys are reported; the key
 * and value nodes of each known key land in keys[] and vals[] at its index (NULL when absent). */
void sdw_yt_walk_map(sdw_yt_ctx *c, const sdw_yt_node *m, const char *where, const char *const *known,
                     const sdw_yt_node **keys, const sdw_yt_node **vals);
/** For a section that must be a mapping: 1 to walk it, 0 for null (all defaults), -1 reported. */
int sdw_yt_want_map(sdw_yt_ctx *c, const sdw_yt_node *v, const char *path);

#endif
