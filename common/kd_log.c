/* kd_log: leveled, key=value log lines with UTC timestamps (see kd_log.h). */
#include "kd_log.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static const char *log_component = "kadet";
static kd_log_level log_level = KD_LOG_INFO;
static FILE *log_stream;
static pthread_mutex_t last_error_mu = PTHREAD_MUTEX_INITIALIZER;
static char last_error[2048];

void kd_log_set_component(const char *component) { log_component = component; }
void kd_log_set_level(kd_log_level level) { log_level = level; }
kd_log_level kd_log_get_level(void) { return log_level; }
void kd_log_set_stream(FILE *stream) { log_stream = stream; }

int kd_log_parse_level(const char *text)
{
    static const char *names[] = {"debug", "info", "warn", "error", "off"};
    for (int i = 0; i < 5; i++)
        if (text != NULL && strcasecmp(text, names[i]) == 0)
            return i;
    return -1;
}

void kd_log(kd_log_level level, const char *fmt, ...)
{
    static const char *names[] = {"debug", "info ", "warn ", "error"};
    if (level < log_level || level >= KD_LOG_OFF)
        return;
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, names[level], log_component);
    if (n < 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    /* Messages that start with their component ("worker: started ...") would name it
     * twice on the line: the prefix is dropped. */
    size_t cl = strlen(log_component);
    if ((size_t)m > cl + 2 && strncmp(line + n, log_component, cl) == 0 &&
        line[n + (int)cl] == ':' && line[n + (int)cl + 1] == ' ') {
        size_t body = (size_t)m < sizeof line - (size_t)n - 1 ? (size_t)m
                                                              : sizeof line - (size_t)n - 2;
        memmove(line + n, line + n + cl + 2, body - cl - 2 + 1);
        m = (int)(body - cl - 2);
    }
    size_t len = (size_t)n + (size_t)m;
    if (level == KD_LOG_ERROR) {
        pthread_mutex_lock(&last_error_mu);
        snprintf(last_error, sizeof last_error, "%s", line + n);
        pthread_mutex_unlock(&last_error_mu);
    }
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';
    FILE *out = log_stream != NULL ? log_stream : stderr;
    fwrite(line, 1, len, out);
    fflush(out);
}

void kd_log_last_error(char *buf, size_t n)
{
    if (buf == NULL || n == 0)
        return;
    pthread_mutex_lock(&last_error_mu);
    snprintf(buf, n, "%s", last_error);
    pthread_mutex_unlock(&last_error_mu);
}

int kd_log_write_termination(const char *msg)
{
    char text[4097];
    if (msg != NULL)
        snprintf(text, sizeof text, "%s", msg);
    else
        kd_log_last_error(text, sizeof text);
    if (text[0] == '\0')
        return -1;
    const char *path = getenv("KADET_TERMINATION_LOG");
    if (path == NULL || path[0] == '\0') {
        path = "/dev/termination-log";
        if (access(path, F_OK) != 0)
            return -1; /* not in a pod */
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    size_t len = strlen(text);
    ssize_t w = write(fd, text, len);
    close(fd);
    return w == (ssize_t)len ? 0 : -1;
}
