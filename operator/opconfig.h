/*
 * opconfig: the operator's settings, read from command-line flags and environment
 * variables (a flag wins over its variable, a variable over the default).
 *
 * Every setting has one entry in a table (opconfig.c) that gives its flag, its variable,
 * its default and its help text, so that parsing, --help and the documentation never
 * disagree. Parsing never exits or prints: it returns a kd_err and writes a readable
 * message into the caller's buffer; main() decides what to do with it.
 */
#ifndef KD_OPCONFIG_H
#define KD_OPCONFIG_H

#include <stddef.h>
#include <stdio.h>

#define OPC_MAX_NAMESPACES 64
#define OPC_NAME_MAX 254 /* DNS subdomain names: 253 characters + NUL */
/* Where the shipped rl table is looked for: relative to the install prefix (or build
 * tree) of the binary, then the operator image's path. */
#define OPC_QTABLE_REL "share/kadet/qtable-default.json"
#define OPC_QTABLE_SYSTEM "/usr/share/kadet/qtable-default.json"

/* What main() should do after parsing. */
typedef enum opc_action {
    OPC_RUN = 0,     /* run the operator */
    OPC_HELP = 1,    /* print opc_usage() and exit 0 */
    OPC_VERSION = 2, /* print the version and exit 0 */
} opc_action;

typedef struct opc_config {
    char kubeconfig[4096];  /* kubeconfig path(s), colon-separated as in kubectl;
                               "" = in-cluster, then ~/.kube/config (kube_config_auto) */
    char context[256];      /* kubeconfig context; "" = its current-context */
    size_t n_namespaces;    /* watched namespaces; 0 = all namespaces */
    char namespaces[OPC_MAX_NAMESPACES][64]; /* each a DNS label */
    char operator_namespace[64]; /* where the Lease and the state ConfigMap live */
    int leader_elect;            /* 1 = take a coordination.k8s.io Lease before acting */
    char lease_name[OPC_NAME_MAX];
    char lease_namespace[64];    /* "" before opc_parse returns; then defaulted */
    long lease_duration_ms;      /* a leader that does not renew for this long is replaced */
    char identity[OPC_NAME_MAX]; /* holder identity in the Lease; default: host name */
    char metrics_host[256];      /* numeric address to bind; "" = every IPv4 address */
    int metrics_port;            /* 0 = an ephemeral port (logged at start) */
    char scheduler_policy[16];   /* static | tiresias | fair | greedy | rl */
    long scheduler_interval_ms;  /* period of scheduling rounds */
    double weight_time;          /* default reward weight of 1/T (job time to finish) */
    double weight_cost;          /* default reward weight of 1/C (resources held) */
    char state_configmap[OPC_NAME_MAX]; /* ConfigMap with the learned policy state */
    char default_qtable[4096];   /* rl table used when the ConfigMap holds none; "" = none */
    int default_qtable_given;    /* 1 = from --default-qtable or its variable (else found) */
    char runtime_image[1024];    /* agent image when a job's template names none */
    char runtime_pull_policy[16]; /* Always | IfNotPresent | Never */
    int log_level;               /* a kd_log_level */
    int workers;                 /* concurrent reconciles, 1..64 */
    int allow_privileged_pods;   /* accept pod templates beyond the restricted profile */
    int network_policy;          /* create a NetworkPolicy per AgentJob */
    char operator_pod_labels[512]; /* the operator pods' labels, "k=v,k=v" (the
                                      NetworkPolicy admits them to the metrics port) */
} opc_config;

/* Fills cfg from the defaults, then the environment (getenv), then argv (argv[0] is the
 * program name). On success returns KD_OK and sets *action. On a bad flag, variable or
 * value returns KD_EINVAL (or KD_ERANGE) with a message naming the flag or variable in
 * err. The in-cluster namespace file is read for the operator namespace default when
 * neither --operator-namespace nor KADET_OPERATOR_NAMESPACE is set. */
int opc_parse(opc_config *cfg, int argc, char *const argv[], opc_action *action, char *err,
              size_t errlen);

/* Same, with the environment looked up through getenv_fn (argv may be permuted, as
 * getopt_long does: positional arguments after the flags) (tests pass a fake) and the
 * service-account namespace file at ns_file (NULL = the in-cluster path). */
int opc_parse_env(opc_config *cfg, int argc, char *const argv[],
                  const char *(*getenv_fn)(const char *name), const char *ns_file,
                  opc_action *action, char *err, size_t errlen);

/* The shipped rl table for the binary at exe (absolute, e.g. /proc/self/exe's target):
 * <prefix>/share/kadet/qtable-default.json where exe is <prefix>/bin/NAME, else
 * system_path; the first readable one is written to out. KD_ENOTFOUND (out "") when
 * neither is readable. */
int opc_find_qtable(const char *exe, const char *system_path, char *out, size_t n);

/* Writes the --help text (every flag with its variable and default) to out. */
void opc_usage(FILE *out, const char *prog);

/* Parses a duration: a number with an optional unit ms, s, m or h (bare = seconds),
 * for example "500ms", "15s", "2m". Returns KD_EINVAL for anything else. */
int opc_parse_duration(const char *text, long *ms);

/* Parses "host:port", ":port" or "[v6addr]:port" into host (may be "") and port. */
int opc_parse_addr(const char *text, char *host, size_t hostlen, int *port);

/* Writes the effective settings as one key=value log line (no secrets are held). */
void opc_log(const opc_config *cfg);

#endif
