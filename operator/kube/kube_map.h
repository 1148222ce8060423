/*
 * kube_map: a string-keyed hash map (separate chaining, power-of-two buckets, grows at
 * load factor 1). It backs the work queue's sets and the informer's cache, so it is pure
 * (no I/O, no locking): callers that share a map across threads hold their own lock.
 *
 * Ownership: the map copies keys and frees its copies. Values are opaque pointers; the
 * map never frees them unless a free callback is given to kube_map_new, in which case it
 * is called on a value when the value is replaced, removed (kube_map_del) or when the
 * map is freed. kube_map_take removes an entry and hands the value back without
 * calling the callback.
 */
#ifndef KUBE_MAP_H
#define KUBE_MAP_H

#include <stddef.h>

typedef struct kube_map kube_map;
typedef void (*kube_map_free_fn)(void *value);
/* Iteration callback; return nonzero to stop. Must not modify the map. */
typedef int (*kube_map_iter_fn)(void *ud, const char *key, void *value);

/* Returns NULL when out of memory. free_value may be NULL. */
kube_map *kube_map_new(kube_map_free_fn free_value);
/* Frees every entry (calling free_value on each value) and the map; accepts NULL and
 * sets *m to NULL. */
void kube_map_free(kube_map **m);

/* Inserts or replaces; 0 on success, KD_ENOMEM on allocation failure (map unchanged). */
int kube_map_put(kube_map *m, const char *key, void *value);
/* The value stored under key, or NULL when absent (borrowed). */
void *kube_map_get(const kube_map *m, const char *key);
/* 1 when key is present (even with a NULL value), 0 otherwise. */
int kube_map_has(const kube_map *m, const char *key);
/* Removes key, calling free_value on its value; 1 if it was present, 0 otherwise. */
int kube_map_del(kube_map *m, const char *key);
/* Removes key and returns its value to the caller (the free callback is not called);
 * NULL when absent. */
void *kube_map_take(kube_map *m, const char *key);
size_t kube_map_size(const kube_map *m);
/* Calls fn for every entry in unspecified order. */
void kube_map_foreach(const kube_map *m, kube_map_iter_fn fn, void *ud);

#endif
