/* kd_error: text for the shared error codes, and the detail-buffer helper. */
#include "kd_error.h"

#include <stdarg.h>
#include <stdio.h>

const char *kd_strerror(int err)
{
    switch (err) {
#define KD_ERR_CASE(name, num, text) case (num): return (text);
        KD_ERRNO_MAP(KD_ERR_CASE)
#undef KD_ERR_CASE
    }
    return "unknown error";
}

int kd_errf(char *buf, size_t size, int err, const char *fmt, ...)
{
    if (buf != NULL && size > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, size, fmt, ap);
        va_end(ap);
    }
    return err;
}
