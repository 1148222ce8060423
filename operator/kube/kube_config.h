/*
 * kube_config: where the API server is and how to authenticate, from a kubeconfig or
 * from inside a pod (service account).
 *
 * Kubeconfig: the files in KUBECONFIG (colon-separated, merged like kubectl: for
 * clusters, users and contexts the first file that defines a name wins, and the first
 * non-empty current-context wins) or ~/.kube/config; the current context or an explicit
 * one; server, certificate-authority(-data), insecure-skip-tls-verify, token, tokenFile,
 * client-certificate(-data), client-key(-data). Relative paths are resolved against the
 * directory of the file that defined the entry. *-data fields are base64 PEM and are
 * kept decoded in memory (handed to curl as blobs, never written to disk).
 *
 * In-cluster: token, ca.crt and namespace under /var/run/secrets/kubernetes.io/
 * serviceaccount (or another root, for tests), server from KUBERNETES_SERVICE_HOST and
 * KUBERNETES_SERVICE_PORT (IPv6 addresses bracketed). The token is not copied: the
 * client re-reads token_file when it changes, so rotated tokens are picked up.
 *
 * Errors name the file and the field, e.g.
 *   "/home/u/.kube/config: clusters[0].cluster.server: expected a string".
 */
#ifndef KUBE_CONFIG_H
#define KUBE_CONFIG_H

#include <stddef.h>

typedef struct kube_config {
    char *server;          /* "https://host:port", no trailing slash */
    char *ca_file;         /* PEM CA bundle path, or NULL */
    char *ca_data;         /* decoded PEM CA bundle, or NULL */
    size_t ca_data_len;
    int insecure;          /* skip TLS verification (insecure-skip-tls-verify) */
    char *token;           /* static bearer token, or NULL */
    char *token_file;      /* bearer token re-read on change, or NULL */
    char *cert_file;       /* client certificate (PEM) path, or NULL */
    char *cert_data;       /* decoded client certificate, or NULL */
    size_t cert_data_len;
    char *key_file;        /* client key (PEM) path, or NULL */
    char *key_data;        /* decoded client key, or NULL */
    size_t key_data_len;
    char *namespace;       /* context namespace / service-account namespace; "default" */
    char *context;         /* name of the context used (kubeconfig) or "in-cluster" */
} kube_config;

/* Loads a kubeconfig. paths: colon-separated list of files; NULL means $KUBECONFIG,
 * then ~/.kube/config. Files of the list that do not exist are skipped (as kubectl
 * does) but at least one must exist. context: NULL for current-context. On success
 * fills *cfg (free with kube_config_clear); on error *cfg is left zeroed and err holds
 * a message naming the file and the field. */
int kube_config_load(const char *paths, const char *context, kube_config *cfg, char *err,
                     size_t errlen);

/* In-cluster configuration. root: directory holding token, ca.crt and namespace; NULL
 * means /var/run/secrets/kubernetes.io/serviceaccount. host/port: NULL to read
 * KUBERNETES_SERVICE_HOST / KUBERNETES_SERVICE_PORT. */
int kube_config_in_cluster(const char *root, const char *host, const char *port,
                           kube_config *cfg, char *err, size_t errlen);

/* In-cluster when KUBERNETES_SERVICE_HOST is set and the service-account token exists,
 * otherwise kube_config_load(NULL, context, ...). */
int kube_config_auto(const char *context, kube_config *cfg, char *err, size_t errlen);

/* Frees every field and zeroes *cfg; accepts NULL and an already cleared config. */
void kube_config_clear(kube_config *cfg);

/* Decodes standard base64 (whitespace ignored, padding optional) into a new buffer
 * (NUL-terminated, caller frees). KD_EPARSE on invalid characters. */
int kube_base64_decode(const char *in, char **out, size_t *outlen);

#endif
