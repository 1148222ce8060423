/*
 * jobkeys: CURVE keypairs for jobs and for the operator (see jobkeys.h).
 */
#include "jobkeys.h"

#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "kd_error.h"
#include "kd_log.h"
#include "kube_config.h"

static const char Z85[] =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

int jobkeys_valid(const char *text)
{
    if (text == NULL || strlen(text) != JOBKEYS_LEN)
        return 0;
    return strspn(text, Z85) == JOBKEYS_LEN;
}

int jobkeys_generate(jobkeys_pair *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (zmq_curve_keypair(out->pub, out->sec) != 0)
        return kd_errf(err, errlen, KD_EUNSUPPORTED,
                       "cannot make a CURVE keypair: %s (libzmq without CURVE?)",
                       zmq_strerror(zmq_errno()));
    return KD_OK;
}

/* Domain separation: these bytes are hashed before the uid, so the derived secret can
 * never equal a hash the operator's key is used for elsewhere. */
static const char DERIVE_LABEL[] = "kadet.io job CURVE key v1";

int jobkeys_derive(const jobkeys_pair *op, const char *uid, jobkeys_pair *out, char *err,
                   size_t errlen)
{
    memset(out, 0, sizeof *out);
    uint8_t opsec[32], sec[32];
    if (uid == NULL || uid[0] == '\0' || !jobkeys_valid(op->sec) ||
        zmq_z85_decode(opsec, op->sec) == NULL)
        return kd_errf(err, errlen, KD_EINVAL, "cannot derive a job key: %s",
                       uid == NULL || uid[0] == '\0' ? "the job has no uid"
                                                     : "malformed operator key");
    if (sodium_init() < 0) {
        sodium_memzero(opsec, sizeof opsec);
        return kd_errf(err, errlen, KD_EINTERNAL, "libsodium failed to initialise");
    }
    crypto_generichash_state st;
    crypto_generichash_init(&st, opsec, sizeof opsec, sizeof sec);
    crypto_generichash_update(&st, (const unsigned char *)DERIVE_LABEL, sizeof DERIVE_LABEL);
    crypto_generichash_update(&st, (const unsigned char *)uid, strlen(uid));
    crypto_generichash_final(&st, sec, sizeof sec);
    sodium_memzero(opsec, sizeof opsec);
    sodium_memzero(&st, sizeof st);
    int ok = zmq_z85_encode(out->sec, sec, sizeof sec) != NULL &&
             zmq_curve_public(out->pub, out->sec) == 0;
    sodium_memzero(sec, sizeof sec);
    if (!ok) {
        memset(out, 0, sizeof *out);
        return kd_errf(err, errlen, KD_EUNSUPPORTED,
                       "cannot compute a CURVE public key: %s (libzmq without CURVE?)",
                       zmq_strerror(zmq_errno()));
    }
    return KD_OK;
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void jobkeys_base64(const char *in, char *out, size_t outlen)
{
    size_t n = strlen(in), o = 0;
    for (size_t i = 0; i < n && o + 4 < outlen; i += 3) {
        unsigned b0 = (unsigned char)in[i];
        unsigned b1 = i + 1 < n ? (unsigned char)in[i + 1] : 0;
        unsigned b2 = i + 2 < n ? (unsigned char)in[i + 2] : 0;
        out[o++] = B64[b0 >> 2];
        out[o++] = B64[((b0 & 3) << 4) | (b1 >> 4)];
        out[o++] = i + 1 < n ? B64[((b1 & 15) << 2) | (b2 >> 6)] : '=';
        out[o++] = i + 2 < n ? B64[b2 & 63] : '=';
    }
    out[o] = '\0';
}

/* One data value of a Secret, base64-decoded, trailing newline removed, into out. */
static int secret_key(const json_t *secret, const char *field, const char *where, char *out,
                      char *err, size_t errlen)
{
    const char *b = json_string_value(json_object_get(json_object_get(secret, "data"), field));
    char *text = NULL;
    size_t len = 0;
    if (b == NULL || kube_base64_decode(b, &text, &len) != KD_OK) {
        free(text);
        return kd_errf(err, errlen, KD_EFORMAT, "Secret %s: data.%s missing or not base64",
                       where, field);
    }
    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r'))
        text[--len] = '\0';
    int ok = jobkeys_valid(text);
    if (ok)
        memcpy(out, text, JOBKEYS_LEN + 1);
    free(text);
    if (!ok)
        return kd_errf(err, errlen, KD_EFORMAT,
                       "Secret %s: data.%s is not a 40-character Z85 key", where, field);
    return KD_OK;
}

static int read_pair(const json_t *secret, const char *where, jobkeys_pair *out, char *err,
                     size_t errlen)
{
    int rc = secret_key(secret, "operator.pub", where, out->pub, err, errlen);
    if (rc == KD_OK)
        rc = secret_key(secret, "operator.key", where, out->sec, err, errlen);
    return rc;
}

int jobkeys_operator_ensure(kube_client *kc, const char *ns, const char *name,
                            jobkeys_pair *out, char *err, size_t errlen)
{
    char where[400];
    snprintf(where, sizeof where, "%.63s/%.300s", ns, name);
    memset(out, 0, sizeof *out);
    for (int attempt = 0; attempt < 2; attempt++) {
        json_t *s = NULL;
        kube_error e;
        int rc = kube_get(kc, &KUBE_SECRETS, ns, name, &s, &e);
        if (rc == KD_OK) {
            rc = read_pair(s, where, out, err, errlen);
            json_decref(s);
            return rc;
        }
        if (rc != KD_ENOTFOUND)
            return kd_errf(err, errlen, rc, "reading Secret %s: %s", where, e.message);
        jobkeys_pair fresh;
        rc = jobkeys_generate(&fresh, err, errlen);
        if (rc != KD_OK)
            return rc;
        char pub64[64], sec64[64];
        jobkeys_base64(fresh.pub, pub64, sizeof pub64);
        jobkeys_base64(fresh.sec, sec64, sizeof sec64);
        json_t *obj = json_pack("{s:s, s:s, s:{s:s, s:s, s:{s:s}}, s:s, s:{s:s, s:s}}",
                                "apiVersion", "v1", "kind", "Secret", "metadata", "name", name,
                                "namespace", ns, "labels", "app.kubernetes.io/part-of", "kadet",
                                "type", "Opaque", "data", "operator.pub", pub64, "operator.key",
                                sec64);
        if (obj == NULL)
            return KD_ENOMEM;
        rc = kube_create(kc, &KUBE_SECRETS, ns, obj, NULL, &e);
        json_decref(obj);
        if (rc == KD_OK) {
            *out = fresh;
            return KD_OK;
        }
        if (rc != KD_EEXISTS)
            return kd_errf(err, errlen, rc, "creating Secret %s: %s", where, e.message);
        /* Another replica created it meanwhile: read theirs. */
    }
    return kd_errf(err, errlen, KD_ECONFLICT, "Secret %s: created and deleted meanwhile",
                   where);
}

void jobkeys_cache_init(jobkeys_cache *c, const char *ns, const char *name)
{
    memset(c, 0, sizeof *c);
    pthread_mutex_init(&c->mu, NULL);
    snprintf(c->ns, sizeof c->ns, "%s", ns);
    snprintf(c->name, sizeof c->name, "%s", name);
}

int jobkeys_cache_get(jobkeys_cache *c, kube_client *kc, jobkeys_pair *out, char *err,
                      size_t errlen)
{
    pthread_mutex_lock(&c->mu);
    int rc = KD_OK;
    if (!c->loaded) {
        rc = jobkeys_operator_ensure(kc, c->ns, c->name, &c->pair, err, errlen);
        c->loaded = rc == KD_OK;
        if (c->loaded)
            KD_INFO("operator keys secret=%s/%s public=%s", c->ns, c->name, c->pair.pub);
    }
    if (rc == KD_OK)
        *out = c->pair;
    pthread_mutex_unlock(&c->mu);
    return rc;
}

void jobkeys_cache_destroy(jobkeys_cache *c)
{
    if (c == NULL)
        return;
    memset(&c->pair, 0, sizeof c->pair);
    c->loaded = 0;
    pthread_mutex_destroy(&c->mu);
}
