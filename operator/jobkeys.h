/*
 * jobkeys: the CURVE key material the operator makes (docs/security-pods.md, key contract
 * in docs/security.md): a new keypair per AgentJob, put into the job's Secret by the
 * reconciler, and the operator's own keypair, kept in a Secret of the operator's namespace
 * (created on first start, read by every later start and by every replica) and used as
 * its client key when it subscribes to a job's metrics.
 *
 * Keys are Z85 text of 40 characters, as zmq_curve_keypair makes them.
 */
#ifndef KD_JOBKEYS_H
#define KD_JOBKEYS_H

#include <pthread.h>
#include <stddef.h>

#include "kube_client.h"

#define JOBKEYS_LEN 40
#define JOBKEYS_OPERATOR_SECRET "kadet-operator-curve"

typedef struct jobkeys_pair {
    char pub[JOBKEYS_LEN + 1]; /* public key, Z85 */
    char sec[JOBKEYS_LEN + 1]; /* secret key, Z85 */
} jobkeys_pair;

/* A new keypair. KD_EUNSUPPORTED when libzmq was built without CURVE. */
int jobkeys_generate(jobkeys_pair *out, char *err, size_t errlen);

/* The keypair of the job with metadata.uid `uid`, derived from the operator's secret key:
 * the secret key is BLAKE2b-256 keyed by the operator's secret key over a fixed label and
 * the uid, the public key its Curve25519 public key. The operator can thus give the job's
 * public key to its metrics subscription at any time without reading the job's Secret
 * (it has no permission to), a Secret deleted by mistake is made again with the same key,
 * and another job (another uid, even of the same name) never shares it. KD_EINVAL for a
 * malformed operator key or an empty uid. */
int jobkeys_derive(const jobkeys_pair *op, const char *uid, jobkeys_pair *out, char *err,
                   size_t errlen);

/* Standard base64 of the text in (a Secret's data value) into out; output that would not
 * fit outlen is cut at a 4-character group. Cannot fail. */
void jobkeys_base64(const char *in, char *out, size_t outlen);

/* 1 when text is a 40-character Z85 key. */
int jobkeys_valid(const char *text);

/* The operator's keypair from Secret `name` in namespace ns (data operator.pub and
 * operator.key); when the Secret does not exist, a new keypair is made and the Secret
 * created (a replica that loses the creation race reads the winner's). A Secret holding
 * malformed keys is an error naming it (never silently replaced: jobs running with the
 * old operator.pub would stop admitting the operator). */
int jobkeys_operator_ensure(kube_client *kc, const char *ns, const char *name,
                            jobkeys_pair *out, char *err, size_t errlen);

/* The operator's keypair, fetched (or created) on first use and kept: the operator starts
 * and serves /healthz without an API server, and the first job that needs the key asks
 * for it (a failure is that sync's error, retried with its backoff). Thread-safe. */
typedef struct jobkeys_cache {
    pthread_mutex_t mu;
    int loaded;            /* pair holds the keys */
    jobkeys_pair pair;
    char ns[64];           /* the Secret's namespace and name */
    char name[254];
} jobkeys_cache;

void jobkeys_cache_init(jobkeys_cache *c, const char *ns, const char *name);
/* Copies the keypair into *out, loading it first if needed (jobkeys_operator_ensure). */
int jobkeys_cache_get(jobkeys_cache *c, kube_client *kc, jobkeys_pair *out, char *err,
                      size_t errlen);
/* Wipes the keys and destroys the mutex; accepts NULL. */
void jobkeys_cache_destroy(jobkeys_cache *c);

#endif
