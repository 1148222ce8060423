/*
 * informer: client-go's reflector + indexer for one resource type, on a thread.
 *
 * List (paginated) then watch from the list's resourceVersion with bookmarks; every
 * event updates a local cache keyed by "namespace/name" (or "name") and then calls the
 * handlers. The watch is re-opened from the last resourceVersion seen (so no event is
 * missed or delivered twice) when the server ends it, and after errors with jittered
 * exponential backoff. A 410 Gone (version too old) relists: objects that changed are
 * delivered as updates, new ones as adds, and objects that disappeared during the gap
 * as deletes with final_state_unknown = 1 (a tombstone: the object passed is the last
 * state the cache held, not the state at deletion).
 *
 * Handlers run on the informer's thread, one at a time, without any informer lock held
 * (they may call informer_get). They should be quick: enqueue a key into a wq and
 * return. Objects passed to handlers are borrowed for the duration of the call.
 *
 * Cache ownership: the cache holds one reference to every object. informer_get and
 * informer_list return new references (json_decref them). Cached objects are shared
 * and read-only: never modify them; json_deep_copy first.
 *
 * Threads: every function may be called from any thread; informer_stop and
 * informer_free from one thread only, not from a handler.
 */
#ifndef INFORMER_H
#define INFORMER_H

#include "kube_client.h"

#include <jansson.h>

typedef struct informer_handlers {
    void (*on_add)(void *ud, json_t *obj);
    void (*on_update)(void *ud, json_t *old_obj, json_t *new_obj);
    /* final_state_unknown: the delete was inferred on relist, obj is the last known
     * state. */
    void (*on_delete)(void *ud, json_t *obj, int final_state_unknown);
    void *ud;
} informer_handlers;

typedef struct informer_options {
    const char *name;            /* for logs; default the resource's plural */
    const char *namespace;       /* NULL or "" = all namespaces */
    const char *label_selector;  /* NULL = everything */
    const char *field_selector;
    long page_size;              /* list page size; default 500 */
    long watch_timeout_s;        /* server-side timeout, jittered up to 2x; default 300 */
    double backoff_base_ms;      /* reconnect backoff; default 100 */
    double backoff_max_ms;       /* default 30000 */
    int keep_managed_fields;     /* 1: cache metadata.managedFields (dropped by default:
                                  * server-side-apply bookkeeping that controllers do not
                                  * read and that can double an object's size) */
    /* Optional, like client-go's transform functions: called on every object (listed or
     * watched, keys already readable) before it enters the cache, on the informer's
     * thread while the object is still its own; it may delete members the cache's
     * readers never look at, and must keep metadata.name/namespace/resourceVersion. */
    void (*transform)(json_t *obj, void *ud);
    void *transform_ud;
} informer_options;

typedef struct informer_stats {
    long lists;          /* successful (re)lists, the first one included */
    long gone;           /* 410 answers that forced a relist */
    long watches;        /* watch streams opened */
    long watch_errors;   /* watch streams that ended with an error */
    long events;         /* ADDED/MODIFIED/DELETED events applied */
    long bookmarks;
    long tombstones;     /* deletes inferred on relist */
} informer_stats;

typedef struct informer informer;

/* r and its strings, opts' strings and h are copied. The client must outlive the
 * informer. */
int informer_new(kube_client *c, const kube_resource *r, const informer_options *opts,
                 const informer_handlers *h, informer **out);
/* Starts the thread. KD_EINVAL if already started. */
int informer_start(informer *inf);
/* 1 once the first list has been applied to the cache and its handlers called. */
int informer_has_synced(informer *inf);
/* Waits up to timeout_ms (< 0: forever) for has_synced; KD_OK, KD_ETIMEOUT or
 * KD_ESHUTDOWN when stopped first. */
int informer_wait_synced(informer *inf, long timeout_ms);
/* New reference to the cached object under key ("ns/name"), or NULL. */
json_t *informer_get(informer *inf, const char *key);
/* New array of references to every cached object. */
json_t *informer_list(informer *inf);
/* New array of references to the cached objects in namespace ns (NULL: any) whose
 * labels match selector (kube_label_match syntax; NULL or "": all). NULL when the
 * selector does not parse or memory runs out. */
json_t *informer_select(informer *inf, const char *ns, const char *selector);
size_t informer_size(informer *inf);
/* The last resourceVersion seen (copied into buf, "" when none). */
void informer_last_rv(informer *inf, char *buf, size_t len);
void informer_get_stats(informer *inf, informer_stats *st);
/* Stops the thread (ends the watch promptly) and waits for it. Idempotent. */
void informer_stop(informer *inf);
/* Stops if needed, releases the cache. Accepts NULL, sets *inf to NULL. */
void informer_free(informer **inf);

#endif
