/*
 * httpd: the operator's HTTP endpoints on the metrics port, served by libmicrohttpd from
 * its own thread:
 *
 *   GET /healthz  200 "ok" as long as the process serves requests (liveness).
 *   GET /readyz   200 once startup is complete (op_httpd_set_started: every component
 *                 has registered its check) and every registered check passes, else 503; the body
 *                 lists each check as "[+]name ok" or "[-]name failed: reason".
 *                 Leadership is deliberately not a check: a standby replica is ready
 *                 (its caches are warm, it can take over at once), and a Service must
 *                 not drop the standby's /metrics. During shutdown /readyz is 503.
 *   GET /metrics  the registry in the Prometheus text format 0.0.4.
 *
 * Other paths are 404, other methods 405. Checks are called on the HTTP thread and must
 * be quick and thread-safe (read an atomic flag, take a short lock).
 */
#ifndef KD_HTTPD_H
#define KD_HTTPD_H

#include <stddef.h>

#include "metrics.h"

#define OP_HTTPD_MAX_CHECKS 16

typedef struct op_httpd op_httpd;

/* A readiness check: returns 1 when ready; else 0 with a reason in detail. */
typedef int (*op_httpd_check)(void *arg, char *detail, size_t detail_len);

/* Starts serving on host:port (host "" = every IPv4 address, else a numeric IPv4 or IPv6
 * address; port 0 = ephemeral). reg is borrowed and must outlive the server. On error
 * returns KD_EINVAL (bad address) or KD_EIO (bind failed) with a message in err. */
int op_httpd_start(op_httpd **out, const char *host, int port, opm_registry *reg, char *err,
                   size_t errlen);

/* The port actually bound (useful with port 0). */
int op_httpd_port(const op_httpd *h);

/* Adds a named readiness check (name copied, arg borrowed). KD_ETOOBIG past
 * OP_HTTPD_MAX_CHECKS. Safe while serving. */
int op_httpd_add_check(op_httpd *h, const char *name, op_httpd_check fn, void *arg);

/* Marks startup complete: until then /readyz answers 503 "starting", so that a probe
 * between the server's start and the registration of the last check never sees 200. */
void op_httpd_set_started(op_httpd *h);

/* Makes /readyz answer 503 "shutting down" from now on (called first on SIGTERM so that
 * endpoints stop routing to this pod while it drains). Once it returns no readiness
 * check runs again, so their components may be freed. */
void op_httpd_set_shutting_down(op_httpd *h);

/* Stops the server (waits for its thread), frees it, sets *h to NULL; accepts NULL. */
void op_httpd_stop(op_httpd **h);

#endif
