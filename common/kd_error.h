/*
 * kd_error: the one list of error codes shared by every kadet module.
 *
 * Functions return a kd_err (0 on success, a negative code otherwise) and pass results
 * out through pointers; detail text goes into a caller-owned buffer or onto a handle.
 * Codes are generated from one X-macro list so that the enum and kd_strerror() never
 * disagree. Numbers are never reused: add new codes at the end of the list.
 */
#ifndef KD_ERROR_H
#define KD_ERROR_H

#include <stddef.h>

#define KD_ERRNO_MAP(X)                                                        \
    X(OK, 0, "success")                                                        \
    X(NOMEM, -1, "out of memory")                                              \
    X(INVAL, -2, "invalid argument")                                           \
    X(IO, -3, "input/output error")                                            \
    X(PARSE, -4, "malformed input")                                            \
    X(FORMAT, -5, "unexpected format")                                         \
    X(RANGE, -6, "value out of range")                                         \
    X(NOTFOUND, -7, "not found")                                               \
    X(CONFLICT, -8, "conflict")                                                \
    X(GONE, -9, "resource version expired")                                    \
    X(TIMEOUT, -10, "timed out")                                               \
    X(PROTO, -11, "protocol error")                                            \
    X(CHECKSUM, -12, "checksum mismatch")                                      \
    X(EXISTS, -13, "already exists")                                           \
    X(UNAVAILABLE, -14, "service unavailable")                                 \
    X(THROTTLED, -15, "too many requests")                                     \
    X(FORBIDDEN, -16, "forbidden")                                             \
    X(UNAUTHORIZED, -17, "unauthorized")                                       \
    X(INTERNAL, -18, "internal error")                                         \
    X(SHUTDOWN, -19, "shutting down")                                          \
    X(AGAIN, -20, "try again")                                                 \
    X(TRUNCATED, -21, "truncated input")                                       \
    X(TOOBIG, -22, "too large")                                                \
    X(UNSUPPORTED, -23, "not supported")                                       \
    X(STALE, -24, "stale message")                                             \
    X(INVALID_OBJECT, -25, "object rejected as invalid")                       \
    X(NETWORK, -26, "network error")                                           \
    X(TLS, -27, "TLS error")

typedef enum kd_err {
#define KD_ERR_ENUM(name, num, text) KD_E##name = (num),
    KD_ERRNO_MAP(KD_ERR_ENUM)
#undef KD_ERR_ENUM
    KD_OK = KD_EOK
} kd_err;

/* The text of an error code; never NULL, "unknown error" for numbers not in the list. */
const char *kd_strerror(int err);

/* Writes printf-style detail into buf (size bytes, always NUL-terminated when size > 0)
 * and returns err, so that callers can write `return kd_errf(buf, n, KD_EINVAL, ...)`. */
int kd_errf(char *buf, size_t size, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
