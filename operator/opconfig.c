/*
 * opconfig: flags, environment variables and defaults of kadet-operator (opconfig.h).
 *
 * One table row per setting drives parsing, --help and the defaults. Values are applied
 * in three passes over the same setters (defaults, environment, flags), so that every
 * source is checked the same way and a later source overrides an earlier one. Settings
 * whose default depends on another (the lease namespace) are resolved at the end.
 */
#include "opconfig.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "kd_cli.h"
#include "kd_error.h"
#include "kd_log.h"

#define OPC_NS_FILE "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

typedef int (*opc_setter)(opc_config *cfg, const char *value, char *err, size_t errlen);

typedef struct opc_option {
    const char *flag;    /* long flag without the leading "--" */
    const char *env;     /* environment variable, NULL for aliases and meta flags */
    const char *def;     /* default as text; NULL when computed (see opc_parse_env) */
    const char *metavar; /* placeholder in --help; NULL for boolean flags */
    const char *help;    /* one-line description */
    opc_setter set;      /* NULL for --help and --version */
} opc_option;

/* Copies value into dst (size n) or fails when it does not fit. */
static int set_str(char *dst, size_t n, const char *value, const char *what, char *err,
                   size_t errlen)
{
    size_t len = strlen(value);
    if (len >= n)
        return kd_errf(err, errlen, KD_ERANGE, "%s: value too long (%zu characters, at most %zu)",
                       what, len, n - 1);
    memcpy(dst, value, len + 1);
    return KD_OK;
}

/* DNS-1123 label (namespaces) or subdomain (object names); empty is rejected. */
static int valid_dns(const char *s, size_t max, int allow_dots)
{
    size_t len = strlen(s);
    if (len == 0 || len > max)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
                 (allow_dots && c == '.');
        if (!ok)
            return 0;
    }
    return isalnum((unsigned char)s[0]) && isalnum((unsigned char)s[len - 1]);
}

static int parse_bool(const char *value, int *out)
{
    static const char *yes[] = {"1", "true", "yes", "on"};
    static const char *no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(value, yes[i]) == 0) {
            *out = 1;
            return KD_OK;
        }
        if (strcasecmp(value, no[i]) == 0) {
            *out = 0;
            return KD_OK;
        }
    }
    return KD_EINVAL;
}

static int parse_long(const char *value, long lo, long hi, long *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(value, &end, 10);
    if (end == value || *end != '\0' || errno != 0)
        return KD_EINVAL;
    if (v < lo || v > hi)
        return KD_ERANGE;
    *out = v;
    return KD_OK;
}

int opc_parse_duration(const char *text, long *ms)
{
    if (text == NULL || ms == NULL)
        return KD_EINVAL;
    char *end = NULL;
    errno = 0;
    double v = strtod(text, &end);
    if (end == text || errno != 0 || !isfinite(v) || v < 0 || isspace((unsigned char)text[0]))
        return KD_EINVAL;
    double scale;
    if (*end == '\0' || strcmp(end, "s") == 0)
        scale = 1000.0;
    else if (strcmp(end, "ms") == 0)
        scale = 1.0;
    else if (strcmp(end, "m") == 0)
        scale = 60000.0;
    else if (strcmp(end, "h") == 0)
        scale = 3600000.0;
    else
        return KD_EINVAL;
    double r = v * scale;
    if (r > 1e12) /* about 31 years: anything longer is a typo */
        return KD_ERANGE;
    *ms = (long)llround(r);
    return KD_OK;
}

int opc_parse_addr(const char *text, char *host, size_t hostlen, int *port)
{
    if (text == NULL || host == NULL || hostlen == 0 || port == NULL)
        return KD_EINVAL;
    const char *colon;
    const char *hs = text;
    size_t hl;
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (close == NULL || close[1] != ':')
            return KD_EINVAL;
        hs = text + 1;
        hl = (size_t)(close - hs);
        colon = close + 1;
        if (hl == 0)
            return KD_EINVAL;
    } else {
        colon = strrchr(text, ':');
        if (colon == NULL)
            return KD_EINVAL;
        hl = (size_t)(colon - text);
        if (memchr(text, ':', hl) != NULL) /* bare IPv6 needs brackets */
            return KD_EINVAL;
    }
    if (hl >= hostlen)
        return KD_ERANGE;
    long p;
    int rc = parse_long(colon + 1, 0, 65535, &p);
    if (rc != KD_OK)
        return rc;
    memcpy(host, hs, hl);
    host[hl] = '\0';
    *port = (int)p;
    return KD_OK;
}

static int set_kubeconfig(opc_config *c, const char *v, char *err, size_t n)
{
    return set_str(c->kubeconfig, sizeof c->kubeconfig, v, "kubeconfig", err, n);
}

static int set_context(opc_config *c, const char *v, char *err, size_t n)
{
    return set_str(c->context, sizeof c->context, v, "context", err, n);
}

static int set_namespaces(opc_config *c, const char *v, char *err, size_t n)
{
    c->n_namespaces = 0;
    const char *p = v;
    while (*p != '\0') {
        while (*p == ' ' || *p == ',')
            p++;
        if (*p == '\0')
            break;
        const char *start = p;
        while (*p != '\0' && *p != ',' && *p != ' ')
            p++;
        size_t len = (size_t)(p - start);
        char name[64];
        if (len >= sizeof name)
            return kd_errf(err, n, KD_EINVAL, "namespaces: '%.*s' is longer than 63 characters",
                           (int)len, start);
        memcpy(name, start, len);
        name[len] = '\0';
        if (!valid_dns(name, 63, 0))
            return kd_errf(err, n, KD_EINVAL,
                           "namespaces: '%s' is not a valid namespace name (lower-case "
                           "letters, digits and '-')",
                           name);
        int dup = 0;
        for (size_t i = 0; i < c->n_namespaces; i++)
            dup |= strcmp(c->namespaces[i], name) == 0;
        if (dup)
            continue;
        if (c->n_namespaces == OPC_MAX_NAMESPACES)
            return kd_errf(err, n, KD_ERANGE, "namespaces: more than %d namespaces",
                           OPC_MAX_NAMESPACES);
        memcpy(c->namespaces[c->n_namespaces++], name, len + 1);
    }
    return KD_OK;
}

static int set_namespace_field(char *dst, size_t size, const char *v, const char *what,
                               char *err, size_t n)
{
    if (v[0] != '\0' && !valid_dns(v, 63, 0))
        return kd_errf(err, n, KD_EINVAL, "%s: '%s' is not a valid namespace name", what, v);
    return set_str(dst, size, v, what, err, n);
}

static int set_operator_namespace(opc_config *c, const char *v, char *err, size_t n)
{
    return set_namespace_field(c->operator_namespace, sizeof c->operator_namespace, v,
                               "operator-namespace", err, n);
}

static int set_lease_namespace(opc_config *c, const char *v, char *err, size_t n)
{
    return set_namespace_field(c->lease_namespace, sizeof c->lease_namespace, v,
                               "lease-namespace", err, n);
}

static int set_leader_elect(opc_config *c, const char *v, char *err, size_t n)
{
    if (parse_bool(v, &c->leader_elect) != KD_OK)
        return kd_errf(err, n, KD_EINVAL, "leader-elect: '%s' is not a boolean (true/false)", v);
    return KD_OK;
}

static int set_allow_privileged(opc_config *c, const char *v, char *err, size_t n)
{
    if (parse_bool(v, &c->allow_privileged_pods) != KD_OK)
        return kd_errf(err, n, KD_EINVAL,
                       "allow-privileged-pods: '%s' is not a boolean (true/false)", v);
    return KD_OK;
}

static int set_network_policy(opc_config *c, const char *v, char *err, size_t n)
{
    if (parse_bool(v, &c->network_policy) != KD_OK)
        return kd_errf(err, n, KD_EINVAL, "network-policy: '%s' is not a boolean (true/false)",
                       v);
    return KD_OK;
}

/* "k=v,k=v" with label-like keys and values, at least one pair. */
static int set_operator_pod_labels(opc_config *c, const char *v, char *err, size_t n)
{
    size_t len = strlen(v);
    int ok = len > 0 && len < sizeof c->operator_pod_labels;
    const char *p = v;
    while (ok && *p != '\0') {
        size_t k = strcspn(p, "=,");
        ok = k > 0 && p[k] == '=';
        if (!ok)
            break;
        p += k + 1;
        size_t val = strcspn(p, ",=");
        ok = val <= 63 && p[val] != '=';
        for (size_t i = 0; ok && i < val; i++)
            ok = isalnum((unsigned char)p[i]) || p[i] == '-' || p[i] == '_' || p[i] == '.';
        p += val;
        if (*p == ',')
            ok = *++p != '\0';
    }
    if (!ok)
        return kd_errf(err, n, KD_EINVAL,
                       "operator-pod-labels: '%s' is not a list of key=value pairs", v);
    memcpy(c->operator_pod_labels, v, len + 1);
    return KD_OK;
}

static int set_object_name(char *dst, size_t size, const char *v, const char *what, char *err,
                           size_t n)
{
    if (!valid_dns(v, 253, 1))
        return kd_errf(err, n, KD_EINVAL,
                       "%s: '%s' is not a valid object name (lower-case letters, digits, "
                       "'-' and '.')",
                       what, v);
    return set_str(dst, size, v, what, err, n);
}

static int set_lease_name(opc_config *c, const char *v, char *err, size_t n)
{
    return set_object_name(c->lease_name, sizeof c->lease_name, v, "lease-name", err, n);
}

static int set_state_configmap(opc_config *c, const char *v, char *err, size_t n)
{
    return set_object_name(c->state_configmap, sizeof c->state_configmap, v, "state-configmap",
                           err, n);
}

static int set_lease_duration(opc_config *c, const char *v, char *err, size_t n)
{
    long ms;
    if (opc_parse_duration(v, &ms) != KD_OK)
        return kd_errf(err, n, KD_EINVAL, "lease-duration: '%s' is not a duration (e.g. 15s)", v);
    /* The renew deadline is 2/3 of the duration; below 2 s that is noise on a busy node. */
    if (ms < 2000 || ms > 3600000)
        return kd_errf(err, n, KD_ERANGE, "lease-duration: %s is outside [2s, 1h]", v);
    c->lease_duration_ms = ms;
    return KD_OK;
}

static int set_identity(opc_config *c, const char *v, char *err, size_t n)
{
    if (v[0] == '\0')
        return kd_errf(err, n, KD_EINVAL, "identity: must not be empty");
    return set_str(c->identity, sizeof c->identity, v, "identity", err, n);
}

static int set_metrics_addr(opc_config *c, const char *v, char *err, size_t n)
{
    int rc = opc_parse_addr(v, c->metrics_host, sizeof c->metrics_host, &c->metrics_port);
    if (rc != KD_OK)
        return kd_errf(err, n, rc,
                       "metrics-addr: '%s' is not host:port, :port or [ipv6]:port with a "
                       "port in [0, 65535]",
                       v);
    return KD_OK;
}

static int set_policy(opc_config *c, const char *v, char *err, size_t n)
{
    static const char *policies[] = {"static", "tiresias", "fair", "greedy", "pollux", "rl"};
    for (size_t i = 0; i < sizeof policies / sizeof policies[0]; i++)
        if (strcmp(v, policies[i]) == 0)
            return set_str(c->scheduler_policy, sizeof c->scheduler_policy, v, "scheduler-policy",
                           err, n);
    return kd_errf(err, n, KD_EINVAL,
                   "scheduler-policy: '%s' is not one of static, tiresias, fair, greedy, pollux, "
                   "rl",
                   v);
}

static int set_interval(opc_config *c, const char *v, char *err, size_t n)
{
    long ms;
    if (opc_parse_duration(v, &ms) != KD_OK)
        return kd_errf(err, n, KD_EINVAL, "scheduler-interval: '%s' is not a duration (e.g. 10s)",
                       v);
    if (ms < 100 || ms > 86400000)
        return kd_errf(err, n, KD_ERANGE, "scheduler-interval: %s is outside [100ms, 24h]", v);
    c->scheduler_interval_ms = ms;
    return KD_OK;
}

/* "time=1.0,cost=0.1": both keys optional, each at most once, non-negative finite. */
static int set_weights(opc_config *c, const char *v, char *err, size_t n)
{
    double w[2] = {c->weight_time, c->weight_cost};
    int seen[2] = {0, 0};
    static const char *keys[2] = {"time", "cost"};
    const char *p = v;
    while (*p != '\0') {
        const char *eq = strchr(p, '=');
        const char *comma = strchr(p, ',');
        if (comma == NULL)
            comma = p + strlen(p);
        if (eq == NULL || eq > comma)
            return kd_errf(err, n, KD_EINVAL, "weights: '%s' is not key=value[,key=value]", v);
        size_t klen = (size_t)(eq - p);
        int k = -1;
        for (int i = 0; i < 2; i++)
            if (strlen(keys[i]) == klen && strncmp(p, keys[i], klen) == 0)
                k = i;
        if (k < 0)
            return kd_errf(err, n, KD_EINVAL, "weights: unknown key '%.*s' (time, cost)",
                           (int)klen, p);
        if (seen[k])
            return kd_errf(err, n, KD_EINVAL, "weights: '%s' given twice", keys[k]);
        char num[64];
        size_t vlen = (size_t)(comma - eq - 1);
        if (vlen == 0 || vlen >= sizeof num)
            return kd_errf(err, n, KD_EINVAL, "weights: bad value for '%s'", keys[k]);
        memcpy(num, eq + 1, vlen);
        num[vlen] = '\0';
        char *end = NULL;
        double d = strtod(num, &end);
        if (end == num || *end != '\0' || !isfinite(d) || d < 0)
            return kd_errf(err, n, KD_EINVAL,
                           "weights: '%s' for '%s' is not a non-negative number", num, keys[k]);
        w[k] = d;
        seen[k] = 1;
        p = *comma == ',' ? comma + 1 : comma;
    }
    c->weight_time = w[0];
    c->weight_cost = w[1];
    return KD_OK;
}

static int set_default_qtable(opc_config *c, const char *v, char *err, size_t n)
{
    c->default_qtable_given = 1;
    return set_str(c->default_qtable, sizeof c->default_qtable, v, "default-qtable", err, n);
}

int opc_find_qtable(const char *exe, const char *system_path, char *out, size_t n)
{
    if (out == NULL || n == 0)
        return KD_EINVAL;
    out[0] = '\0';
    /* <prefix>/bin/kadet-operator -> <prefix>/share/kadet: an install, and the build tree,
     * where CMake copies the table to build/share/kadet beside build/bin. */
    if (exe != NULL && exe[0] == '/') {
        size_t dir = (size_t)(strrchr(exe, '/') - exe); /* end of <prefix>/bin */
        size_t plen = dir;
        while (plen > 0 && exe[plen - 1] != '/')
            plen--;
        if (dir > 0 && plen > 0) {
            plen--; /* <prefix> without its trailing slash; "" for /bin */
            int w = snprintf(out, n, "%.*s/" OPC_QTABLE_REL, (int)plen, exe);
            if (w > 0 && (size_t)w < n && access(out, R_OK) == 0)
                return KD_OK;
        }
    }
    if (system_path != NULL && system_path[0] != '\0' && access(system_path, R_OK) == 0) {
        int w = snprintf(out, n, "%s", system_path);
        if (w > 0 && (size_t)w < n)
            return KD_OK;
    }
    out[0] = '\0';
    return KD_ENOTFOUND;
}

static int set_runtime_image(opc_config *c, const char *v, char *err, size_t n)
{
    if (v[0] == '\0' || strpbrk(v, " \t\n") != NULL)
        return kd_errf(err, n, KD_EINVAL, "runtime-image: '%s' is not an image reference", v);
    return set_str(c->runtime_image, sizeof c->runtime_image, v, "runtime-image", err, n);
}

static int set_pull_policy(opc_config *c, const char *v, char *err, size_t n)
{
    if (strcmp(v, "Always") != 0 && strcmp(v, "IfNotPresent") != 0 && strcmp(v, "Never") != 0)
        return kd_errf(err, n, KD_EINVAL,
                       "runtime-pull-policy: '%s' is not Always, IfNotPresent or Never", v);
    return set_str(c->runtime_pull_policy, sizeof c->runtime_pull_policy, v,
                   "runtime-pull-policy", err, n);
}

static int set_log_level(opc_config *c, const char *v, char *err, size_t n)
{
    int level = kd_log_parse_level(v);
    if (level < 0)
        return kd_errf(err, n, KD_EINVAL, "log-level: '%s' is not debug, info, warn or error", v);
    c->log_level = level;
    return KD_OK;
}

static int set_workers(opc_config *c, const char *v, char *err, size_t n)
{
    long w;
    int rc = parse_long(v, 1, 64, &w);
    if (rc != KD_OK)
        return kd_errf(err, n, rc, "workers: '%s' is not an integer in [1, 64]", v);
    c->workers = (int)w;
    return KD_OK;
}

static const opc_option opc_options[] = {
    {"kubeconfig", "KUBECONFIG", "", "PATH[:PATH]",
     "kubeconfig file(s); empty: in-cluster service account, else ~/.kube/config",
     set_kubeconfig},
    {"context", "KADET_CONTEXT", "", "NAME", "kubeconfig context; empty: current-context",
     set_context},
    {"namespaces", "KADET_WATCH_NAMESPACES", "", "NS[,NS...]",
     "namespaces whose AgentJobs are managed; empty: all namespaces", set_namespaces},
    {"namespace", NULL, NULL, "NS[,NS...]", "same as --namespaces", set_namespaces},
    {"operator-namespace", "KADET_OPERATOR_NAMESPACE", NULL, "NS",
     "namespace of the Lease and the state ConfigMap; default: the pod's namespace, else "
     "\"default\"",
     set_operator_namespace},
    {"leader-elect", "KADET_LEADER_ELECT", "false", NULL,
     "act only while holding a coordination.k8s.io Lease (run with 2+ replicas)",
     set_leader_elect},
    {"lease-name", "KADET_LEASE_NAME", "kadet-operator", "NAME", "name of the Lease",
     set_lease_name},
    {"lease-namespace", "KADET_LEASE_NAMESPACE", NULL, "NS",
     "namespace of the Lease; default: the operator namespace", set_lease_namespace},
    {"lease-duration", "KADET_LEASE_DURATION", "15s", "DURATION",
     "a leader that does not renew for this long is replaced (renew deadline 2/3 of it)",
     set_lease_duration},
    {"identity", "KADET_IDENTITY", NULL, "ID", "holder identity in the Lease; default: host name",
     set_identity},
    {"metrics-addr", "KADET_METRICS_ADDR", ":8080", "ADDR",
     "listen address of /healthz, /readyz and /metrics (port 0: ephemeral)", set_metrics_addr},
    {"scheduler-policy", "KADET_SCHEDULER_POLICY", "rl", "POLICY",
     "default policy: static, tiresias, fair, greedy, pollux or rl", set_policy},
    {"scheduler-interval", "KADET_SCHEDULER_INTERVAL", "10s", "DURATION",
     "period of scheduling rounds (they also run on job and node changes)", set_interval},
    {"weights", "KADET_SCHEDULER_WEIGHTS", "time=1.0,cost=0.1", "time=W,cost=W",
     "default reward weights of 1/T and 1/C; a job's spec.scheduling.weights wins",
     set_weights},
    {"state-configmap", "KADET_STATE_CONFIGMAP", "kadet-scheduler-state", "NAME",
     "ConfigMap holding the learned scheduler state", set_state_configmap},
    {"default-qtable", "KADET_DEFAULT_QTABLE", NULL, "PATH",
     "rl table to start from when the state ConfigMap holds none; default: the shipped "
     "table, <prefix>/" OPC_QTABLE_REL " beside the binary's bin/ (an install or the build "
     "tree), else " OPC_QTABLE_SYSTEM " (empty: an empty table)",
     set_default_qtable},
    {"runtime-image", "KADET_RUNTIME_IMAGE", "ghcr.io/kadet/kadet:" KADET_VERSION, "IMAGE",
     "agent image when a job's pod template names none", set_runtime_image},
    {"runtime-pull-policy", "KADET_RUNTIME_PULL_POLICY", "IfNotPresent", "POLICY",
     "pull policy of the default agent image", set_pull_policy},
    {"log-level", "KADET_LOG_LEVEL", "info", "LEVEL", "debug, info, warn or error", set_log_level},
    {"workers", "KADET_WORKERS", "2", "N", "concurrent AgentJob reconciles, 1..64", set_workers},
    {"allow-privileged-pods", "KADET_ALLOW_PRIVILEGED_PODS", "false", NULL,
     "accept AgentJob pod templates beyond the restricted Pod Security Standard "
     "(privileged, host namespaces, hostPath, added capabilities, other service accounts)",
     set_allow_privileged},
    {"network-policy", "KADET_NETWORK_POLICY", "true", "BOOL",
     "create a NetworkPolicy per AgentJob admitting only its pods and the operator",
     set_network_policy},
    {"operator-pod-labels", "KADET_OPERATOR_POD_LABELS",
     "app.kubernetes.io/name=kadet,app.kubernetes.io/component=operator", "K=V,...",
     "labels of the operator's pods (the NetworkPolicy admits them to the metrics port)",
     set_operator_pod_labels},
};

#define OPC_N_OPTIONS (sizeof opc_options / sizeof opc_options[0])

/* A table row bound to the config it sets (the target of its kd_cli option). */
typedef struct opc_binding {
    opc_config *cfg;
    opc_setter set;
} opc_binding;

static int opc_apply(void *target, const char *value, char *err, size_t errlen)
{
    const opc_binding *b = target;
    return b->set(b->cfg, value, err, errlen);
}

/* The kd_cli view of opc_options (help and version are kd_cli's own). */
static void cli_table(opc_config *cfg, opc_binding *bind, kd_cli_opt *opts, kd_cli *cli,
                      const char *(*getenv_fn)(const char *name))
{
    int n = 0;
    for (size_t i = 0; i < OPC_N_OPTIONS; i++) {
        const opc_option *o = &opc_options[i];
        if (o->set == NULL)
            continue;
        bind[n] = (opc_binding){cfg, o->set};
        opts[n] = (kd_cli_opt){.name = o->flag, .env = o->env,
                               .type = o->metavar != NULL ? KD_CLI_FUNC : KD_CLI_FUNC_FLAG,
                               .target = &bind[n], .help = o->help,
                               .metavar = o->metavar != NULL ? o->metavar : "",
                               .set = opc_apply, .def = o->def};
        n++;
    }
    *cli = (kd_cli){
        .prog = "kadet-operator",
        .args = "",
        .summary = "kadet-operator manages AgentJobs (kadet.io/v1alpha1): it creates and scales "
                   "the\nagent pods of each job and runs the scheduler that decides their "
                   "number.\nEvery flag can also be set by the environment variable in "
                   "brackets; a flag wins\nover its variable. Durations take ms, s, m or h "
                   "(a bare number is seconds).",
        .opts = opts,
        .n_opts = n,
        .footer = "other environment variables:\n"
                  "  KUBERNETES_SERVICE_HOST, KUBERNETES_SERVICE_PORT\n"
                  "                          the API server in a pod (in-cluster config)\n"
                  "  HOME                    where ~/.kube/config is looked for\n"
                  "\n"
                  "exit status: 0 stopped by SIGTERM, 130 by SIGINT (Ctrl-C), 1 failed, "
                  "2 bad flag or variable\n",
        .getenv_fn = getenv_fn,
    };
}

/* Reads the in-cluster namespace file into ns when it holds a valid name. */
static void read_pod_namespace(const char *path, char *ns, size_t size)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return;
    char buf[128];
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = '\0';
    while (len > 0 && isspace((unsigned char)buf[len - 1]))
        buf[--len] = '\0';
    if (valid_dns(buf, 63, 0) && len < size)
        memcpy(ns, buf, len + 1);
}

static const char *real_getenv(const char *name) { return getenv(name); }

int opc_parse_env(opc_config *cfg, int argc, char *const argv[],
                  const char *(*getenv_fn)(const char *name), const char *ns_file,
                  opc_action *action, char *err, size_t errlen)
{
    if (cfg == NULL || action == NULL || getenv_fn == NULL)
        return kd_errf(err, errlen, KD_EINVAL, "opc_parse: NULL argument");
    memset(cfg, 0, sizeof *cfg);
    *action = OPC_RUN;
    int rc;

    for (size_t i = 0; i < OPC_N_OPTIONS; i++) {
        const opc_option *o = &opc_options[i];
        if (o->set == NULL || o->def == NULL)
            continue;
        rc = o->set(cfg, o->def, err, errlen);
        if (rc != KD_OK)
            return rc;
    }
    if (gethostname(cfg->identity, sizeof cfg->identity) != 0 || cfg->identity[0] == '\0')
        snprintf(cfg->identity, sizeof cfg->identity, "kadet-operator-%ld", (long)getpid());
    cfg->identity[sizeof cfg->identity - 1] = '\0';
    snprintf(cfg->operator_namespace, sizeof cfg->operator_namespace, "default");
    read_pod_namespace(ns_file != NULL ? ns_file : OPC_NS_FILE, cfg->operator_namespace,
                       sizeof cfg->operator_namespace);

    /* The environment, then the flags, through the common command-line layer; each
     * setter is reached through a binding of the table row to this cfg. */
    opc_binding bind[OPC_N_OPTIONS];
    kd_cli_opt opts[OPC_N_OPTIONS];
    kd_cli cli;
    cli_table(cfg, bind, opts, &cli, getenv_fn);
    kd_cli_action act;
    int first;
    rc = kd_cli_parse(&cli, argc, (char **)argv, &act, &first, err, errlen);
    if (rc != KD_OK)
        return rc;
    if (act != KD_CLI_RUN) {
        *action = act == KD_CLI_HELP ? OPC_HELP : OPC_VERSION;
        return KD_OK;
    }
    if (first < argc)
        return kd_errf(err, errlen, KD_EINVAL, "unexpected argument '%s' (see --help)",
                       argv[first]);

    if (cfg->lease_namespace[0] == '\0')
        memcpy(cfg->lease_namespace, cfg->operator_namespace, sizeof cfg->lease_namespace);
    if (!cfg->default_qtable_given) {
        char exe[4096];
        ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
        exe[len > 0 ? len : 0] = '\0';
        /* Not found is not an error: rl then starts from an empty table, and main() says
         * so with the places it looked in. */
        opc_find_qtable(exe, OPC_QTABLE_SYSTEM, cfg->default_qtable, sizeof cfg->default_qtable);
    }
    return KD_OK;
}

int opc_parse(opc_config *cfg, int argc, char *const argv[], opc_action *action, char *err,
              size_t errlen)
{
    return opc_parse_env(cfg, argc, argv, real_getenv, NULL, action, err, errlen);
}

void opc_usage(FILE *out, const char *prog)
{
    opc_config cfg;
    opc_binding bind[OPC_N_OPTIONS];
    kd_cli_opt opts[OPC_N_OPTIONS];
    kd_cli cli;
    cli_table(&cfg, bind, opts, &cli, real_getenv);
    cli.prog = prog;
    kd_cli_usage(&cli, out);
}

void opc_log(const opc_config *c)
{
    char ns[OPC_MAX_NAMESPACES * 64 + 1] = "";
    size_t off = 0;
    for (size_t i = 0; i < c->n_namespaces; i++) {
        int w = snprintf(ns + off, sizeof ns - off, "%s%s", i ? "," : "", c->namespaces[i]);
        if (w < 0 || (size_t)w >= sizeof ns - off)
            break;
        off += (size_t)w;
    }
    KD_INFO("config namespaces=%s operator_namespace=%s leader_elect=%d lease=%s/%s "
            "lease_duration_ms=%ld identity=%s metrics_addr=%s:%d policy=%s interval_ms=%ld "
            "weights=time:%g,cost:%g state_configmap=%s default_qtable=%s runtime_image=%s "
            "workers=%d allow_privileged_pods=%d network_policy=%d operator_pod_labels=%s "
            "kubeconfig=%s context=%s",
            c->n_namespaces ? ns : "*", c->operator_namespace, c->leader_elect,
            c->lease_namespace, c->lease_name, c->lease_duration_ms, c->identity,
            c->metrics_host, c->metrics_port, c->scheduler_policy, c->scheduler_interval_ms,
            c->weight_time, c->weight_cost, c->state_configmap,
            c->default_qtable[0] ? c->default_qtable : "(none)", c->runtime_image, c->workers,
            c->allow_privileged_pods, c->network_policy, c->operator_pod_labels,
            c->kubeconfig[0] ? c->kubeconfig : "(in-cluster or ~/.kube/config)",
            c->context[0] ? c->context : "(current)");
}
