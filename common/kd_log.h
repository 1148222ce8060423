/*
 * kd_log: one line per entry, with time, level, component and key=value fields:
 *
 *   2026-11-27T13:40:01.123Z info  worker step done job=default/fm gen=3 agents=4
 *
 * The message is printf-style; by convention it is a short phrase followed by
 * key=value fields. Lines go to stderr (or the stream set with kd_log_set_stream) and
 * are written with one fwrite so that concurrent processes do not interleave mid-line.
 */
#ifndef KD_LOG_H
#define KD_LOG_H

#include <stdio.h>

typedef enum kd_log_level {
    KD_LOG_DEBUG = 0,
    KD_LOG_INFO = 1,
    KD_LOG_WARN = 2,
    KD_LOG_ERROR = 3,
    KD_LOG_OFF = 4
} kd_log_level;

/* The component named on every line (for example "worker"); the string is borrowed. */
void kd_log_set_component(const char *component);
void kd_log_set_level(kd_log_level level);
kd_log_level kd_log_get_level(void);
/* Parses "debug", "info", "warn", "error", "off"; returns -1 for anything else. */
int kd_log_parse_level(const char *text);
void kd_log_set_stream(FILE *stream);

void kd_log(kd_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The message of the last error-level entry (without time, level and component), or ""
 * when none was logged: what a process that fails reports as its reason. Copied into
 * buf (size n); can't fail. */
void kd_log_last_error(char *buf, size_t n);

/* Writes the last error (or msg, when not NULL) as the container's termination message:
 * to $KADET_TERMINATION_LOG, else /dev/termination-log when it exists (Kubernetes mounts
 * the pod's terminationMessagePath there), at most 4096 bytes as the kubelet keeps.
 * Nothing to write, or nowhere to write it, is not an error: returns 0 when written. */
int kd_log_write_termination(const char *msg);

#define KD_DEBUG(...) kd_log(KD_LOG_DEBUG, __VA_ARGS__)
#define KD_INFO(...) kd_log(KD_LOG_INFO, __VA_ARGS__)
#define KD_WARN(...) kd_log(KD_LOG_WARN, __VA_ARGS__)
#define KD_ERROR(...) kd_log(KD_LOG_ERROR, __VA_ARGS__)

#endif
