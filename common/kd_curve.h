/*
 * kd_curve: the job's CURVE keys, the ZeroMQ socket settings that use them, and the ZAP
 * handler that admits only them (docs/security.md; key contract in the same file).
 *
 * One keypair per AgentJob (Z85 text, 40 characters, as zmq_curve_keypair makes it) lives
 * in a directory: agent.pub and agent.key, each one line, and optionally operator.pub (the
 * operator's public key, admitted on the metrics PUB only). Every agent uses the job key
 * as both its server and its client key, so a peer is admitted when it proves it holds the
 * job's secret key. The directory comes from --keys-dir or KADET_KEYS_DIR; without one the
 * runtime runs unauthenticated (and says so once).
 *
 * Sockets: servers (coordinator ROUTER and PUB, worker data PULL) set a ZAP domain and
 * either CURVE server mode or, for the data plane in `authenticated` mode, PLAIN server
 * mode; clients present the job key (CURVE) or a credential derived from the job's secret
 * key (PLAIN: username "kadet", password the hex BLAKE2b-256 keyed hash of a fixed label
 * with the secret key; it proves possession of the key to a peer that can connect but not
 * read the traffic, see the docs). The ZAP handler (one thread per ZeroMQ context) answers
 * every handshake: CURVE clients must present the job's public key (or, on the metrics
 * domain, the operator's), PLAIN clients the credential. Every refusal is counted and the
 * first refusal of each peer (address and key) is logged; a refused peer's connection is
 * closed by ZeroMQ before any of its messages is delivered, so nothing it sends reaches
 * kd_wire_decode. Handshakes that fail before ZAP is asked (a peer speaking no or another
 * security mechanism) are counted through a socket monitor (kd_zap_watch).
 *
 * Threads: kd_zap_* may be called from the thread that owns the sockets; the handler runs
 * on its own thread and only touches its own sockets.
 */
#ifndef KD_CURVE_H
#define KD_CURVE_H

#include <stddef.h>
#include <stdint.h>

#define KD_CURVE_KEY_LEN 40 /* Z85 text of a 32-byte key */
#define KD_CURVE_ENV "KADET_KEYS_DIR"
/* ZAP domains: which keys a server socket admits. */
#define KD_ZAP_CONTROL "kadet-control" /* coordinator ROUTER: the job key */
#define KD_ZAP_METRICS "kadet-metrics" /* coordinator PUB: the job key or the operator's */
/* The ZAP user id of an admitted peer (a message's "User-Id" property): a holder of the
 * job key, or the operator (operator.pub: metrics, and BATCH on the control socket). */
#define KD_ZAP_USER_JOB "job"
#define KD_ZAP_USER_OPERATOR "operator"
#define KD_ZAP_DATA "kadet-data"       /* worker PULL: the job key or the PLAIN credential */

typedef struct kd_curve_keys {
    int enabled;                      /* keys loaded; 0 = unauthenticated */
    char pub[KD_CURVE_KEY_LEN + 1];   /* the job's public key, Z85 */
    char sec[KD_CURVE_KEY_LEN + 1];   /* the job's secret key, Z85 */
    int have_operator;                /* operator.pub was present */
    char op_pub[KD_CURVE_KEY_LEN + 1]; /* the operator's public key, Z85 */
    char plain_pass[65];              /* data-plane PLAIN credential (hex) */
    char dir[512];                    /* where they were read from */
} kd_curve_keys;

/* Loads the keys from dir, or from $KADET_KEYS_DIR when dir is NULL or empty. Neither
 * set: KD_OK with k->enabled = 0. A missing or malformed file, a public key that does not
 * belong to the secret one, or a secret key file of our own uid that group or others may
 * read: KD_EFORMAT / KD_EIO / KD_EFORBIDDEN with the file named in err (callers exit 2). */
int kd_curve_load(const char *dir, kd_curve_keys *k, char *err, size_t errlen);

/* Writes a new job keypair into the existing directory dir (agent.pub and agent.key,
 * mode 0600). KD_EIO with detail in err. */
int kd_curve_make(const char *dir, char *err, size_t errlen);
/* Makes an operator keypair for a process that hosts the job's policy itself (`kadet run`):
 * writes the public key as dir/operator.pub (mode 0600, like kd_curve_make's files) and
 * returns both keys (z85, KD_CURVE_KEY_LEN + 1 bytes each). KD_EIO / KD_EUNSUPPORTED with
 * detail in err. */
int kd_curve_make_operator(const char *dir, char *pub, char *sec, char *err, size_t errlen);
/* Removes what kd_curve_make wrote (and operator.pub); accepts a missing file. */
void kd_curve_unmake(const char *dir);

/* Makes sock a server of `domain` (before bind): CURVE with the job's secret key, or
 * PLAIN when plain is set. Returns 0, or -1 with zmq_errno() set. */
int kd_curve_server(void *sock, const kd_curve_keys *k, const char *domain, int plain);
/* Makes sock a CURVE client (before connect) of a server whose public key is server_pub,
 * presenting the keypair pub/sec. */
int kd_curve_client(void *sock, const char *server_pub, const char *pub, const char *sec);
/* Makes sock a client of the job's servers: CURVE with the job key, or the PLAIN
 * credential when plain is set. */
int kd_curve_job_client(void *sock, const kd_curve_keys *k, int plain);

/* The ZAP handler of one ZeroMQ context. */
typedef struct kd_zap kd_zap;
typedef struct kd_zap_stats {
    uint64_t admitted;   /* handshakes admitted */
    uint64_t refused;    /* handshakes refused by the handler (wrong key or credential) */
    uint64_t handshakes; /* handshakes that failed before the handler (kd_zap_watch) */
} kd_zap_stats;

/* Starts the handler on zctx (borrowed; call before binding any server socket). KD_OK, or
 * KD_ENETWORK / KD_ENOMEM with detail in err. */
int kd_zap_start(kd_zap **out, void *zctx, const kd_curve_keys *k, char *err, size_t errlen);
/* Counts (and logs the first of) the failed handshakes of server socket sock, named what
 * in the log. Call from sock's owner thread after kd_zap_start; at most 8 sockets. */
void kd_zap_watch(kd_zap *z, void *sock, const char *what);
void kd_zap_get_stats(const kd_zap *z, kd_zap_stats *out);
/* Stops the handler thread and frees it (before zmq_ctx_term); accepts NULL. */
void kd_zap_stop(kd_zap **z);

#endif
