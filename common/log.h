/* log.h -- leveled log lines on stderr:
 *   2026-11-23T10:00:00.123Z INFO  node: listening on 127.0.0.1:7001
 * Thread-safe (one fprintf per line). */
#ifndef RM_LOG_H
#define RM_LOG_H

typedef enum { RM_LOG_DEBUG = 0, RM_LOG_INFO, RM_LOG_WARN, RM_LOG_ERROR } rm_log_level;

/* Sets the minimum level printed. */
void rm_log_set_level(rm_log_level level);

/* Parses "debug" | "info" | "warn" | "error". Returns 0 or -1. */
int rm_log_parse_level(const char *s, rm_log_level *out);

void rm_log(rm_log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
