/*
 * kube_client: a small hand-written Kubernetes API client on libcurl + jansson, for any
 * group/version/resource, keeping objects as json_t.
 *
 * Requests: get, list (selectors, limit/continue pagination), create, update, JSON merge
 * patch, delete (propagation policy, preconditions), the status and scale subresources.
 * Every request has a connect timeout and a total timeout; responses larger than
 * max_response_bytes are refused (KD_ETOOBIG). 429 and 5xx answers (and connection
 * failures) are retried up to max_attempts with jittered exponential backoff, waiting at
 * least the server's Retry-After. A 401 makes the client re-read its token file once and
 * retry, so a rotated service-account token is picked up without a restart.
 *
 * Errors: functions return a kd_err and fill a caller-owned kube_error with the HTTP
 * code and the API Status' reason and message (kube_error may be NULL). Mapping:
 * 404 KD_ENOTFOUND, 409 KD_EEXISTS (reason AlreadyExists) or KD_ECONFLICT, 410 KD_EGONE,
 * 422 KD_EINVALID_OBJECT, 429 KD_ETHROTTLED, 401 KD_EUNAUTHORIZED, 403 KD_EFORBIDDEN,
 * 400 and other 4xx KD_EINVAL, 503/502/504 KD_EUNAVAILABLE, 500 and other 5xx
 * KD_EINTERNAL; transport failures KD_ENETWORK, KD_ETLS or KD_ETIMEOUT; bodies that are
 * not the expected JSON KD_EPARSE or KD_ETRUNCATED.
 *
 * Ownership: request bodies (json_t *obj / patch) are borrowed; results (*out) are new
 * references the caller must json_decref. out may be NULL when the result is not needed.
 *
 * Threads: a kube_client may be used from any number of threads at once. Connections
 * are reused through a small pool of curl easy handles (one per concurrent request);
 * each watch owns its own handle for the life of the stream.
 */
#ifndef KUBE_CLIENT_H
#define KUBE_CLIENT_H

#include "kube_config.h"

#include <jansson.h>
#include <stdatomic.h>
#include <stddef.h>

/* A resource type: group "" is the core group (/api/v1). */
typedef struct kube_resource {
    const char *group;   /* "" for core, e.g. "coordination.k8s.io" */
    const char *version; /* "v1" */
    const char *plural;  /* "pods" */
    int namespaced;      /* 1 if objects live in namespaces */
} kube_resource;

extern const kube_resource KUBE_PODS;
extern const kube_resource KUBE_SERVICES;
extern const kube_resource KUBE_CONFIGMAPS;
extern const kube_resource KUBE_EVENTS;
extern const kube_resource KUBE_NODES;
extern const kube_resource KUBE_NAMESPACES;
extern const kube_resource KUBE_LEASES;
extern const kube_resource KUBE_SECRETS;
extern const kube_resource KUBE_NETWORKPOLICIES;

/* What went wrong with a request, beyond the kd_err code. */
typedef struct kube_error {
    int code;              /* the kd_err also returned */
    long http_status;      /* 0 when no HTTP answer was received */
    char reason[64];       /* Status.reason (e.g. "AlreadyExists"), or "" */
    char message[512];     /* Status.message or a transport/decoding description */
    double retry_after_s;  /* Retry-After (or Status.details.retryAfterSeconds), or 0 */
    int attempts;          /* how many times the request was sent */
} kube_error;

typedef struct kube_client_options {
    long connect_timeout_ms;    /* default 5000 */
    long request_timeout_ms;    /* total time of one attempt; default 30000 */
    size_t max_response_bytes;  /* default 64 MiB */
    int max_attempts;           /* for 429/5xx/transport errors; default 5 */
    double backoff_base_ms;     /* default 100 */
    double backoff_max_ms;      /* default 5000 */
    double max_retry_after_s;   /* Retry-After is capped at this; default 30 */
    size_t max_line_bytes;      /* longest watch event accepted; default 16 MiB */
    const char *user_agent;     /* default "kadet-operator/VERSION" */
} kube_client_options;

typedef struct kube_client kube_client;

/* Builds a client from cfg (copied; cfg may be cleared afterwards). opts may be NULL.
 * Call curl_global_init once in main before creating clients in threaded programs. */
int kube_client_new(const kube_config *cfg, const kube_client_options *opts,
                    kube_client **out, char *err, size_t errlen);
/* A new client with c's configuration and other options (NULL: defaults), e.g. short
 * timeouts and no retries for leader election. */
int kube_client_clone(const kube_client *c, const kube_client_options *opts,
                      kube_client **out, char *err, size_t errlen);
/* Frees the client; no request or watch may be in progress. Accepts NULL. */
void kube_client_free(kube_client **c);
/* The namespace of the configuration (context or service account). Borrowed. */
const char *kube_client_namespace(const kube_client *c);
/* Requests sent (attempts, retries included) since the client was created. */
long kube_client_requests(kube_client *c);
/* TCP connections opened since the client was created (watches included): with
 * connection reuse this stays far below kube_client_requests. */
long kube_client_connections(kube_client *c);

typedef struct kube_list_opts {
    const char *label_selector;   /* e.g. "app=x,tier!=db", or NULL */
    const char *field_selector;   /* e.g. "spec.nodeName=n1", or NULL */
    long limit;                   /* page size, 0 = server default (no paging) */
    const char *continue_token;   /* from the previous page, or NULL */
    const char *resource_version; /* list/watch from this version, or NULL */
    long timeout_s;               /* watch only: server-side timeoutSeconds, 0 = none */
    const atomic_int *cancel;     /* list only, optional: give up with KD_ESHUTDOWN soon
                                   * after it becomes nonzero (informer_stop uses it) */
} kube_list_opts;

typedef struct kube_delete_opts {
    const char *propagation;    /* "Background", "Foreground", "Orphan" or NULL */
    const char *precondition_uid;
    const char *precondition_rv;
    int set_grace;              /* 1: send grace_period_s; 0: server default */
    long grace_period_s;        /* seconds before the kill (0 = now) */
} kube_delete_opts;

/* ns is ignored for cluster-scoped resources; for namespaced ones NULL/"" means all
 * namespaces in list/watch and the client's namespace elsewhere. */
int kube_get(kube_client *c, const kube_resource *r, const char *ns, const char *name,
             json_t **out, kube_error *e);
/* One page: *out is the List object (items, metadata.resourceVersion/continue). */
int kube_list(kube_client *c, const kube_resource *r, const char *ns,
              const kube_list_opts *o, json_t **out, kube_error *e);
/* Every page: *items a new array of the objects, *rv a new string (the resourceVersion
 * of the list, to watch from). A continue token that expires midway (410) restarts the
 * list once from the beginning. */
int kube_list_all(kube_client *c, const kube_resource *r, const char *ns,
                  const kube_list_opts *o, json_t **items, char **rv, kube_error *e);
int kube_create(kube_client *c, const kube_resource *r, const char *ns, json_t *obj,
                json_t **out, kube_error *e);
/* PUT; obj's metadata.resourceVersion makes it conditional (409 when stale). name NULL
 * takes obj's metadata.name. subresource: NULL, "status" or "scale". */
int kube_update(kube_client *c, const kube_resource *r, const char *ns, const char *name,
                const char *subresource, json_t *obj, json_t **out, kube_error *e);
/* JSON merge patch (RFC 7386). */
int kube_patch(kube_client *c, const kube_resource *r, const char *ns, const char *name,
               const char *subresource, json_t *patch, json_t **out, kube_error *e);
int kube_delete(kube_client *c, const kube_resource *r, const char *ns, const char *name,
                const kube_delete_opts *o, json_t **out, kube_error *e);
/* GET of a subresource ("scale", "status"). */
int kube_get_sub(kube_client *c, const kube_resource *r, const char *ns, const char *name,
                 const char *subresource, json_t **out, kube_error *e);

/* Any request: method, path ("/api/v1/..."), optional query ("a=b&c=d", already
 * escaped), optional body with its content type. */
int kube_request(kube_client *c, const char *method, const char *path, const char *query,
                 json_t *body, const char *content_type, json_t **out, kube_error *e);

/* Decodes an HTTP error answer (body may be a Status, anything else or empty) into e
 * and returns the kd_err. retry_after: the header's value or NULL. Pure. */
int kube_status_decode(long http_status, const char *body, size_t len,
                       const char *retry_after, kube_error *e);
/* 1 if the error is worth retrying (429, 5xx, transport), 0 otherwise. */
int kube_error_retryable(int code);

/* "ns/name" for namespaced objects, "name" otherwise, into buf; KD_EFORMAT when the
 * object has no metadata.name. */
int kube_object_key(json_t *obj, char *buf, size_t len);
/* metadata.resourceVersion, or NULL (borrowed). */
const char *kube_object_rv(json_t *obj);
/* Whether obj's metadata.labels match an equality- or set-based label selector:
 * "a=b", "a==b", "a!=b", "a", "!a", "a in (x,y)", "a notin (x,y)", comma-separated
 * (all must hold; "" matches everything). Returns 1 or 0, or KD_EPARSE for a selector
 * it cannot parse. Pure. */
int kube_label_match(json_t *obj, const char *selector);

/* --- watch ----------------------------------------------------------------------- */

typedef enum kube_event_type {
    KUBE_ADDED,
    KUBE_MODIFIED,
    KUBE_DELETED,
    KUBE_BOOKMARK,
    KUBE_ERROR
} kube_event_type;

/* Called for every event; obj is borrowed (incref to keep it). Return nonzero to end
 * the watch (kube_watch_run then returns KD_OK). */
typedef int (*kube_watch_fn)(void *ud, kube_event_type type, json_t *obj);

/* Incremental newline-delimited decoder: bytes from any chunking in, whole lines out. */
typedef struct kube_linebuf {
    char *buf;      /* the partial line */
    size_t len;
    size_t cap;
    size_t max;     /* longest line accepted */
} kube_linebuf;
typedef int (*kube_line_fn)(void *ud, const char *line, size_t len);

void kube_linebuf_init(kube_linebuf *lb, size_t max_line);
void kube_linebuf_free(kube_linebuf *lb);
/* Feeds n bytes; calls fn for every complete line (without the newline; empty lines
 * and a trailing '\r' are dropped). Returns KD_OK, KD_ETOOBIG when a line exceeds max
 * (the buffer is then reset), KD_ENOMEM, or the first nonzero value fn returned. */
int kube_linebuf_feed(kube_linebuf *lb, const char *data, size_t n, kube_line_fn fn,
                      void *ud);

/* Decodes one watch line {"type": ..., "object": {...}}. *obj is a new reference.
 * KD_EPARSE / KD_EFORMAT with a message in err on garbage. */
int kube_watch_decode(const char *line, size_t len, kube_event_type *type, json_t **obj,
                      char *err, size_t errlen);

typedef struct kube_watch kube_watch;
int kube_watch_new(kube_client *c, kube_watch **out);
/* Accepts NULL; the watch must not be running. */
void kube_watch_free(kube_watch **w);
/* Streams events of r (from o->resource_version, with bookmarks) until the server ends
 * the stream (KD_OK), fn asks to stop (KD_OK), kube_watch_stop is called
 * (KD_ESHUTDOWN), or an error: KD_EGONE for 410 (HTTP or an ERROR event with code 410),
 * other ERROR events decoded like HTTP errors, KD_ETOOBIG / KD_EPARSE for bad streams,
 * transport errors. ERROR events are not passed to fn. Not retried: the informer
 * decides. */
int kube_watch_run(kube_watch *w, const kube_resource *r, const char *ns,
                   const kube_list_opts *o, kube_watch_fn fn, void *ud, kube_error *e);
/* From any thread: ends a running (or the next) kube_watch_run promptly. */
void kube_watch_stop(kube_watch *w);
/* Clears a stop so that the watch can run again. */
void kube_watch_reset(kube_watch *w);

#endif
