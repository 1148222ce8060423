/*
 * kube_map: string-keyed hash map with separate chaining. FNV-1a hashing; the bucket
 * array doubles when the entry count exceeds it so chains stay short. A failed grow is
 * not an error: the map keeps working with longer chains.
 */
#include "kube_map.h"

#include "kd_error.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct entry {
    struct entry *next; /* next entry in the same bucket */
    uint64_t hash;      /* full hash of key, kept to avoid rehashing on grow */
    void *value;        /* caller's value, freed with free_value when set */
    char key[];         /* the map's own copy of the key */
};

struct kube_map {
    struct entry **buckets;      /* nbuckets chains */
    size_t nbuckets;             /* always a power of two */
    size_t size;                 /* number of entries */
    kube_map_free_fn free_value; /* may be NULL */
};

static uint64_t hash_key(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s != '\0'; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

kube_map *kube_map_new(kube_map_free_fn free_value)
{
    kube_map *m = calloc(1, sizeof *m);
    if (m == NULL) {
        return NULL;
    }
    m->nbuckets = 16;
    m->buckets = calloc(m->nbuckets, sizeof *m->buckets);
    if (m->buckets == NULL) {
        free(m);
        return NULL;
    }
    m->free_value = free_value;
    return m;
}

void kube_map_free(kube_map **mp)
{
    if (mp == NULL || *mp == NULL) {
        return;
    }
    kube_map *m = *mp;
    for (size_t i = 0; i < m->nbuckets; i++) {
        struct entry *e = m->buckets[i];
        while (e != NULL) {
            struct entry *next = e->next;
            if (m->free_value != NULL) {
                m->free_value(e->value);
            }
            free(e);
            e = next;
        }
    }
    free(m->buckets);
    free(m);
    *mp = NULL;
}

static struct entry **find_slot(const kube_map *m, const char *key, uint64_t h)
{
    struct entry **pp = &m->buckets[h & (m->nbuckets - 1)];
    while (*pp != NULL && ((*pp)->hash != h || strcmp((*pp)->key, key) != 0)) {
        pp = &(*pp)->next;
    }
    return pp;
}

static void grow(kube_map *m)
{
    size_t n = m->nbuckets * 2;
    struct entry **b = calloc(n, sizeof *b);
    if (b == NULL) {
        return;
    }
    for (size_t i = 0; i < m->nbuckets; i++) {
        struct entry *e = m->buckets[i];
        while (e != NULL) {
            struct entry *next = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
            e = next;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->nbuckets = n;
}

int kube_map_put(kube_map *m, const char *key, void *value)
{
    uint64_t h = hash_key(key);
    struct entry **pp = find_slot(m, key, h);
    if (*pp != NULL) {
        if (m->free_value != NULL && (*pp)->value != value) {
            m->free_value((*pp)->value);
        }
        (*pp)->value = value;
        return KD_OK;
    }
    size_t klen = strlen(key);
    struct entry *e = malloc(sizeof *e + klen + 1);
    if (e == NULL) {
        return KD_ENOMEM;
    }
    memcpy(e->key, key, klen + 1);
    e->hash = h;
    e->value = value;
    e->next = NULL;
    *pp = e;
    m->size++;
    if (m->size > m->nbuckets) {
        grow(m);
    }
    return KD_OK;
}

void *kube_map_get(const kube_map *m, const char *key)
{
    struct entry *e = *find_slot(m, key, hash_key(key));
    return e != NULL ? e->value : NULL;
}

int kube_map_has(const kube_map *m, const char *key)
{
    return *find_slot(m, key, hash_key(key)) != NULL;
}

void *kube_map_take(kube_map *m, const char *key)
{
    struct entry **pp = find_slot(m, key, hash_key(key));
    struct entry *e = *pp;
    if (e == NULL) {
        return NULL;
    }
    *pp = e->next;
    void *v = e->value;
    free(e);
    m->size--;
    return v;
}

int kube_map_del(kube_map *m, const char *key)
{
    struct entry **pp = find_slot(m, key, hash_key(key));
    struct entry *e = *pp;
    if (e == NULL) {
        return 0;
    }
    *pp = e->next;
    if (m->free_value != NULL) {
        m->free_value(e->value);
    }
    free(e);
    m->size--;
    return 1;
}

size_t kube_map_size(const kube_map *m)
{
    return m->size;
}

void kube_map_foreach(const kube_map *m, kube_map_iter_fn fn, void *ud)
{
    for (size_t i = 0; i < m->nbuckets; i++) {
        for (struct entry *e = m->buckets[i]; e != NULL; e = e->next) {
            if (fn(ud, e->key, e->value) != 0) {
                return;
            }
        }
    }
}
