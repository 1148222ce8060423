/*
 * kube_internal: what kube_client.c shares with kube_watch.c and nothing else uses:
 * URL building, preparing a curl handle (TLS, auth, timeouts) and mapping curl results.
 */
#ifndef KUBE_INTERNAL_H
#define KUBE_INTERNAL_H

#include "kube_client.h"

#include <curl/curl.h>
#include <stdatomic.h>

/* Builds "<prefix>/namespaces/<ns>/<plural>[/<name>[/<sub>]]" into buf. ns NULL or ""
 * omits the namespace segment. KD_EINVAL for names with characters outside a DNS
 * subdomain (plus ':' and '_'), so that no name can change the path. */
int kube__path(const kube_resource *r, const char *ns, const char *name, const char *sub,
               char *buf, size_t len, kube_error *e);
/* Appends the list/watch options as a query string ("" when none). watch adds
 * watch=1&allowWatchBookmarks=true. */
int kube__query(const kube_list_opts *o, int watch, char *buf, size_t len);
/* Resolves the namespace argument for r: cluster-scoped -> NULL; NULL -> the client's
 * namespace when all_if_null is 0, or NULL (all namespaces) when it is 1. */
const char *kube__ns(const kube_client *c, const kube_resource *r, const char *ns,
                     int all_if_null);
/* Resets h and sets URL, method, TLS, auth and timeouts (request_timeout_ms 0 = none).
 * *headers receives a list the caller frees after the transfer. */
int kube__prepare(kube_client *c, CURL *h, const char *path, const char *query,
                  const char *method, const char *content_type, long request_timeout_ms,
                  struct curl_slist **headers, kube_error *e);
/* Maps a failed transfer into e; toobig: the write callback refused the body. */
int kube__curl_error(CURLcode rc, const char *detail, int toobig, kube_error *e);
/* Forces the token file to be re-read before the next request (after a 401). */
void kube__token_invalidate(kube_client *c);
const kube_client_options *kube__options(const kube_client *c);
void kube__count_request(kube_client *c);
void kube__count_connection(kube_client *c);
/* kube_request that gives up with KD_ESHUTDOWN soon after *cancel (may be NULL)
 * becomes nonzero: checked before each attempt, during transfers and between retries. */
int kube__request(kube_client *c, const char *method, const char *path, const char *query,
                  json_t *body, const char *content_type, json_t **out, kube_error *e,
                  const atomic_int *cancel);
/* Sets e (when not NULL) to a local error with a message and returns code. */
int kube__fail(kube_error *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
