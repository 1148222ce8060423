/*
 * kd_hosts: hosts-file lookup for ZeroMQ endpoints (see kd_hosts.h). Lines are read with
 * a bounded buffer; an over-long line is skipped whole rather than split into bogus
 * entries, and anything that is not "address name..." is ignored, so a damaged file can
 * only make a name unknown, never crash or mis-resolve a different name.
 */
#include "kd_hosts.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "kd_error.h"

#define KD_HOSTS_LINE 1024

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Next whitespace-separated token of *p (modified in place), or NULL. */
static char *next_token(char **p)
{
    char *s = *p;
    while (*s != '\0' && is_space(*s))
        s++;
    if (*s == '\0')
        return NULL;
    char *start = s;
    while (*s != '\0' && !is_space(*s))
        s++;
    if (*s != '\0')
        *s++ = '\0';
    *p = s;
    return start;
}

int kd_hosts_lookup(const char *hosts_path, const char *name, char *ip, size_t iplen)
{
    if (hosts_path == NULL || name == NULL || ip == NULL || iplen == 0)
        return KD_EINVAL;
    FILE *f = fopen(hosts_path, "r");
    if (f == NULL)
        return KD_EIO;
    char line[KD_HOSTS_LINE];
    int rc = KD_ENOTFOUND;
    int skipping = 0; /* inside the tail of a line longer than the buffer */
    while (rc == KD_ENOTFOUND && fgets(line, sizeof line, f) != NULL) {
        size_t n = strlen(line);
        int complete = n > 0 && line[n - 1] == '\n';
        if (skipping || (!complete && !feof(f))) {
            skipping = !complete;
            continue;
        }
        char *hash = strchr(line, '#');
        if (hash != NULL)
            *hash = '\0';
        char *p = line;
        char *addr = next_token(&p);
        if (addr == NULL)
            continue;
        char *tok;
        while ((tok = next_token(&p)) != NULL) {
            if (strcasecmp(tok, name) != 0)
                continue;
            if (strlen(addr) >= iplen) {
                rc = KD_ETOOBIG;
            } else {
                memcpy(ip, addr, strlen(addr) + 1);
                rc = KD_OK;
            }
            break;
        }
    }
    fclose(f);
    return rc;
}

static int copy_out(const char *s, char *out, size_t outlen)
{
    size_t n = strlen(s);
    if (n >= outlen) {
        out[0] = '\0';
        return KD_ETOOBIG;
    }
    memcpy(out, s, n + 1);
    return KD_OK;
}

/* 1 when the endpoint is tcp://NAME:... with a NAME the hosts file could map (not an
 * IPv4 literal, "*" or a bracketed IPv6 address). */
static int has_name(const char *endpoint)
{
    static const char prefix[] = "tcp://";
    if (strncmp(endpoint, prefix, sizeof prefix - 1) != 0)
        return 0;
    const char *h = endpoint + sizeof prefix - 1;
    if (*h == '[' || *h == '*' || *h == ':' || *h == '\0')
        return 0;
    for (; *h != '\0' && *h != ':'; h++)
        if ((*h < '0' || *h > '9') && *h != '.')
            return 1;
    return 0;
}

int kd_resolve_endpoint_file(const char *endpoint_in, const char *hosts_path, char *out,
                             size_t outlen)
{
    if (endpoint_in == NULL || out == NULL || outlen == 0)
        return KD_EINVAL;
    static const char prefix[] = "tcp://";
    size_t plen = sizeof prefix - 1;
    if (hosts_path == NULL || hosts_path[0] == '\0' || strncmp(endpoint_in, prefix, plen) != 0)
        return copy_out(endpoint_in, out, outlen);
    const char *host = endpoint_in + plen;
    const char *colon = strrchr(host, ':');
    size_t hlen = colon != NULL ? (size_t)(colon - host) : strlen(host);
    /* Bracketed IPv6 literals and over-long names are never in a hosts file's names. */
    char name[256];
    if (hlen == 0 || hlen >= sizeof name || host[0] == '[')
        return copy_out(endpoint_in, out, outlen);
    memcpy(name, host, hlen);
    name[hlen] = '\0';
    char ip[128];
    if (kd_hosts_lookup(hosts_path, name, ip, sizeof ip) != KD_OK)
        return copy_out(endpoint_in, out, outlen);
    int n = snprintf(out, outlen, "%s%s%s", prefix, ip, colon != NULL ? colon : "");
    if (n < 0 || (size_t)n >= outlen) {
        out[0] = '\0';
        return KD_ETOOBIG;
    }
    return KD_OK;
}

int kd_resolve_endpoint(const char *endpoint_in, char *out, size_t outlen)
{
    return kd_resolve_endpoint_file(endpoint_in, getenv("KADET_HOSTS"), out, outlen);
}

int kd_resolve_endpoint_wait(const char *endpoint_in, char *out, size_t outlen,
                             long timeout_ms)
{
    const char *path = getenv("KADET_HOSTS");
    long waited = 0;
    for (;;) {
        int rc = kd_resolve_endpoint_file(endpoint_in, path, out, outlen);
        if (rc != KD_OK || path == NULL || path[0] == '\0' || !has_name(endpoint_in) ||
            strcmp(out, endpoint_in) != 0)
            return rc;
        if (waited >= timeout_ms)
            return KD_ETIMEOUT;
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
        waited += 100;
    }
}
