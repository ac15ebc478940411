/* prom.h -- writing the Prometheus text exposition format (version 0.0.4).
 *
 * Every daemon's /metrics is built with these, so families are declared
 * once (# HELP, # TYPE) and label values are escaped the same way
 * everywhere (backslash, double quote and newline, as the format asks).
 *
 *   rm_prom_family(&b, "radixmesh_hit_tokens_total", "counter", "Tokens ...");
 *   char l[256];
 *   rm_prom_label(l, sizeof l, "node", node_id);
 *   rm_prom_sample(&b, "radixmesh_hit_tokens_total", l, hits);
 */
#ifndef RM_PROM_H
#define RM_PROM_H

#include <stddef.h>

#include "util.h"

/* # HELP and # TYPE lines of one family; type is "counter", "gauge" or
 * "histogram". */
void rm_prom_family(rm_sbuf *b, const char *name, const char *type, const char *help);

/* One sample line: name{labels} value. labels is a ready label list
 * ('k="v",k2="v2"', see rm_prom_label), "" or NULL for none. Integers up
 * to 2^53 print exactly. */
void rm_prom_sample(rm_sbuf *b, const char *name, const char *labels, double value);

/* A family with a single sample. */
void rm_prom_metric(rm_sbuf *b, const char *name, const char *type, const char *help,
                    const char *labels, double value);

/* One family with a single sample, as a row of a table of them. */
typedef struct rm_prom_row {
    const char *name, *type, *help;
    double value;
} rm_prom_row;

/* Each of rows[0..n) as rm_prom_metric, every sample labelled labels. */
void rm_prom_rows(rm_sbuf *b, const rm_prom_row *rows, size_t n, const char *labels);

/* One sample of a family split by one label: labels (as rm_prom_sample)
 * plus key="value". Should the list not fit (1 KiB), the sample goes out
 * with labels alone, as rm_prom_label leaves them. */
void rm_prom_sample_by(rm_sbuf *b, const char *name, const char *labels, const char *key,
                       const char *value, double v);

/* A family whose samples differ by one label: # HELP, # TYPE, then for
 * each i < n the sample labels + key="keys[i]" of value values[i]. */
void rm_prom_split(rm_sbuf *b, const char *name, const char *type, const char *help,
                   const char *labels, const char *key, const char *const *keys,
                   const double *values, size_t n);

/* radixmesh_build_info{labels,role="role",version="..."} 1: the build a
 * daemon runs, one family for all of them. */
void rm_prom_build_info(rm_sbuf *b, const char *labels, const char *role);

/* Appends key="value" (value escaped) to the label list in out, after a
 * comma when out is not empty. out must hold a string (set out[0] = '\0'
 * first). Returns 0, or -1 if it did not fit (out is then unchanged). */
int rm_prom_label(char *out, size_t len, const char *key, const char *value);

/* ---- reading the text format (an inference worker's /metrics) ---------- */

/* One sample line: its name, its label block as written (between the
 * braces, escapes kept; empty when there is none) and its value. */
typedef struct rm_prom_line {
    const char *name;
    size_t name_len;
    const char *labels;
    size_t labels_len;
    double value;
} rm_prom_line;

/* Reads the line [p, end) (without its newline) as a sample: a name,
 * optional {labels} (quoted values may hold '}', spaces and escapes), a
 * value (an optional timestamp after it is ignored). Returns 0, or -1 for
 * a comment, a blank or a malformed line. */
int rm_prom_parse_line(const char *p, const char *end, rm_prom_line *out);

/* The value of label key in a label block (unescaped into out, at most
 * outlen - 1 bytes, NUL-terminated). Returns 0, or -1 when the block has
 * no such label or it does not fit. */
int rm_prom_label_get(const char *labels, size_t len, const char *key, char *out, size_t outlen);

#endif
