/*
 * podspec_policy: what the operator allows an AgentJob's pod template to ask for, and the
 * security objects it adds around the job's pods (docs/security-pods.md).
 *
 * - podspec_check_template refuses a template that asks for more than the "restricted"
 *   Pod Security Standard allows (privileged containers, host namespaces and ports,
 *   hostPath volumes, added capabilities, privilege escalation, running as root, an
 *   unconfined seccomp or proc mount, another service account), naming the field, unless
 *   the administrator allows privileged templates (podspec_options.allow_privileged).
 *   Whoever may create an AgentJob must not get any pod the operator's own permissions
 *   allow.
 * - podspec_restrict fills in the restricted profile where the template says nothing, so
 *   that a stricter template keeps its values and an empty one passes the profile.
 * - podspec_keys_secret and podspec_network_policy build the job's CURVE key Secret and its
 *   NetworkPolicy, both owned by the AgentJob so that the garbage collector removes them.
 *
 * Pure: JSON in, JSON out; key generation is the caller's (jobkeys.c).
 */
#include "podspec.h"

#include <stdio.h>
#include <string.h>

#include "jobkeys.h"
#include "kd_error.h"

#define TPL "spec.template.spec"
#define ALLOW_HINT "(an administrator can allow it: operator flag --allow-privileged-pods)"

/* Refusal naming `path`; always returns KD_EINVALID_OBJECT. */
static int refuse(char *err, size_t errlen, const char *path, const char *why)
{
    return kd_errf(err, errlen, KD_EINVALID_OBJECT, "%s: %s is not allowed %s", path, why,
                   ALLOW_HINT);
}

/* The securityContext fields a container or the pod may set that lift the profile. */
static int check_security_context(const json_t *sc, const char *path, int container,
                                  char *err, size_t errlen)
{
    char p[256];
    if (!json_is_object(sc))
        return KD_OK;
    if (container && json_is_true(json_object_get(sc, "privileged"))) {
        snprintf(p, sizeof p, "%s.securityContext.privileged", path);
        return refuse(err, errlen, p, "a privileged container");
    }
    if (container && json_is_true(json_object_get(sc, "allowPrivilegeEscalation"))) {
        snprintf(p, sizeof p, "%s.securityContext.allowPrivilegeEscalation", path);
        return refuse(err, errlen, p, "privilege escalation");
    }
    if (json_is_false(json_object_get(sc, "runAsNonRoot"))) {
        snprintf(p, sizeof p, "%s.securityContext.runAsNonRoot", path);
        return refuse(err, errlen, p, "running as root");
    }
    const json_t *uid = json_object_get(sc, "runAsUser");
    if (json_is_integer(uid) && json_integer_value(uid) == 0) {
        snprintf(p, sizeof p, "%s.securityContext.runAsUser", path);
        return refuse(err, errlen, p, "running as root");
    }
    const char *sp = json_string_value(
        json_object_get(json_object_get(sc, "seccompProfile"), "type"));
    if (sp != NULL && strcmp(sp, "Unconfined") == 0) {
        snprintf(p, sizeof p, "%s.securityContext.seccompProfile.type", path);
        return refuse(err, errlen, p, "an unconfined seccomp profile");
    }
    const char *pm = json_string_value(json_object_get(sc, "procMount"));
    if (container && pm != NULL && strcmp(pm, "Default") != 0) {
        snprintf(p, sizeof p, "%s.securityContext.procMount", path);
        return refuse(err, errlen, p, "an unmasked proc mount");
    }
    size_t i;
    const json_t *cap;
    json_array_foreach(json_object_get(json_object_get(sc, "capabilities"), "add"), i, cap)
    {
        /* The restricted profile allows NET_BIND_SERVICE and nothing else. */
        const char *c = json_string_value(cap);
        if (c != NULL && (strcmp(c, "NET_BIND_SERVICE") == 0 ||
                          strcmp(c, "CAP_NET_BIND_SERVICE") == 0))
            continue;
        snprintf(p, sizeof p, "%s.securityContext.capabilities.add[%zu]", path, i);
        return refuse(err, errlen, p, "adding capabilities");
    }
    return KD_OK;
}

static int check_containers(const json_t *pspec, const char *field, char *err, size_t errlen)
{
    size_t i, k;
    const json_t *c, *port;
    char path[160];
    json_array_foreach(json_object_get(pspec, field), i, c)
    {
        snprintf(path, sizeof path, TPL ".%s[%zu]", field, i);
        int rc = check_security_context(json_object_get(c, "securityContext"), path, 1, err,
                                        errlen);
        if (rc != KD_OK)
            return rc;
        json_array_foreach(json_object_get(c, "ports"), k, port)
        {
            const json_t *hp = json_object_get(port, "hostPort");
            if (json_is_integer(hp) && json_integer_value(hp) != 0) {
                char p[224];
                snprintf(p, sizeof p, "%s.ports[%zu].hostPort", path, k);
                return refuse(err, errlen, p, "a host port");
            }
        }
    }
    return KD_OK;
}

int podspec_check_template(const kd_agentjob *spec, const podspec_options *o, char *err,
                           size_t errlen)
{
    const json_t *pspec = json_object_get(spec->template_, "spec");
    size_t i;
    const json_t *v;
    /* The operator's own volume name: a template volume of that name would replace the
     * job's keys (refused even for an administrator: it is never what anyone wants). */
    json_array_foreach(json_object_get(pspec, "volumes"), i, v)
    {
        const char *n = json_string_value(json_object_get(v, "name"));
        if (n != NULL && strcmp(n, PODSPEC_KEYS_VOLUME) == 0)
            return kd_errf(err, errlen, KD_EINVALID_OBJECT,
                           TPL ".volumes[%zu].name: \"%s\" is reserved for the job's keys", i,
                           PODSPEC_KEYS_VOLUME);
    }
    if (o != NULL && o->allow_privileged)
        return KD_OK;
    if (!json_is_object(pspec))
        return KD_OK;
    static const char *const host_ns[] = {"hostNetwork", "hostPID", "hostIPC"};
    for (size_t k = 0; k < sizeof host_ns / sizeof host_ns[0]; k++)
        if (json_is_true(json_object_get(pspec, host_ns[k]))) {
            char p[64];
            snprintf(p, sizeof p, TPL ".%s", host_ns[k]);
            return refuse(err, errlen, p, "a host namespace");
        }
    static const char *const sa_fields[] = {"serviceAccountName", "serviceAccount"};
    for (size_t k = 0; k < 2; k++) {
        const char *sa = json_string_value(json_object_get(pspec, sa_fields[k]));
        if (sa != NULL && sa[0] != '\0' && strcmp(sa, "default") != 0) {
            char p[64];
            snprintf(p, sizeof p, TPL ".%s", sa_fields[k]);
            return refuse(err, errlen, p, "another service account than \"default\"");
        }
    }
    json_array_foreach(json_object_get(pspec, "volumes"), i, v)
    {
        if (json_object_get(v, "hostPath") != NULL) {
            char p[64];
            snprintf(p, sizeof p, TPL ".volumes[%zu].hostPath", i);
            return refuse(err, errlen, p, "a hostPath volume");
        }
    }
    int rc = check_security_context(json_object_get(pspec, "securityContext"), TPL, 0, err,
                                    errlen);
    if (rc == KD_OK)
        rc = check_containers(pspec, "initContainers", err, errlen);
    if (rc == KD_OK)
        rc = check_containers(pspec, "containers", err, errlen);
    if (rc == KD_OK)
        rc = check_containers(pspec, "ephemeralContainers", err, errlen);
    return rc;
}

/* obj[key], created as an empty object when absent; NULL when it holds something else. */
static json_t *object_at(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    if (v == NULL) {
        v = json_object();
        if (json_object_set_new(obj, key, v) != 0)
            return NULL;
    }
    return json_is_object(v) ? v : NULL;
}

static void set_default(json_t *obj, const char *key, json_t *value)
{
    if (obj != NULL && json_object_get(obj, key) == NULL)
        json_object_set_new(obj, key, value);
    else
        json_decref(value);
}

static void restrict_container(json_t *c)
{
    json_t *sc = object_at(c, "securityContext");
    if (sc == NULL)
        return;
    /* The API server refuses allowPrivilegeEscalation false beside privileged true (an
     * administrator allowed it) or CAP_SYS_ADMIN: leave it unset there. */
    int sys_admin = json_is_true(json_object_get(sc, "privileged"));
    size_t i;
    json_t *cap;
    json_t *caps = object_at(sc, "capabilities");
    json_array_foreach(json_object_get(caps, "add"), i, cap)
    {
        const char *s = json_string_value(cap);
        if (s != NULL && (strcmp(s, "SYS_ADMIN") == 0 || strcmp(s, "CAP_SYS_ADMIN") == 0))
            sys_admin = 1;
    }
    if (!sys_admin)
        set_default(sc, "allowPrivilegeEscalation", json_false());
    if (caps == NULL)
        return;
    json_t *drop = json_object_get(caps, "drop");
    if (drop == NULL) {
        json_object_set_new(caps, "drop", json_pack("[s]", "ALL"));
        return;
    }
    if (!json_is_array(drop))
        return;
    json_array_foreach(drop, i, cap)
    {
        if (json_is_string(cap) && strcmp(json_string_value(cap), "ALL") == 0)
            return;
    }
    json_array_append_new(drop, json_string("ALL"));
}

void podspec_restrict(json_t *pspec)
{
    json_t *sc = object_at(pspec, "securityContext");
    if (sc != NULL) {
        set_default(sc, "runAsNonRoot", json_true());
        /* The kadet images' user; any image then runs as non-root, and fsGroup makes the
         * root-owned key files (mode 0440) readable by it. */
        set_default(sc, "runAsUser", json_integer(PODSPEC_DEFAULT_UID));
        set_default(sc, "runAsGroup", json_integer(PODSPEC_DEFAULT_UID));
        set_default(sc, "fsGroup", json_integer(PODSPEC_DEFAULT_UID));
        set_default(sc, "seccompProfile", json_pack("{s:s}", "type", "RuntimeDefault"));
    }
    /* Agents never call the API server: no token in their pods unless the template asks. */
    set_default(pspec, "automountServiceAccountToken", json_false());
    static const char *const lists[] = {"initContainers", "containers"};
    for (size_t k = 0; k < 2; k++) {
        size_t i;
        json_t *c;
        json_array_foreach(json_object_get(pspec, lists[k]), i, c)
        {
            if (json_is_object(c))
                restrict_container(c);
        }
    }
}

int podspec_keys_secret_name(const char *job, char *out, size_t len)
{
    int n = snprintf(out, len, "%s-keys", job);
    return n < 0 || (size_t)n >= len || n > 253 ? KD_ETOOBIG : KD_OK;
}

int podspec_network_policy_name(const char *job, char *out, size_t len)
{
    int n = snprintf(out, len, "%s-agents", job);
    return n < 0 || (size_t)n >= len || n > 253 ? KD_ETOOBIG : KD_OK;
}

/* Standard base64 of a key's text (a Secret's data value). New string. */
static json_t *base64_string(const char *text)
{
    char out[4 * ((PODSPEC_KEY_MAX + 2) / 3) + 1];
    if (strlen(text) > PODSPEC_KEY_MAX)
        return NULL;
    jobkeys_base64(text, out, sizeof out);
    return json_string(out);
}

int podspec_keys_secret(const json_t *job, const kd_agentjob *spec, const char *agent_pub,
                        const char *agent_key, const char *operator_pub, json_t **out,
                        char *err, size_t errlen)
{
    char name[PODSPEC_NAME_MAX];
    if (podspec_keys_secret_name(spec->name, name, sizeof name) != KD_OK)
        return kd_errf(err, errlen, KD_ETOOBIG, "job name too long for a Secret name");
    json_t *owner = NULL;
    int rc = podspec_owner_ref(job, &owner, err, errlen);
    if (rc != KD_OK)
        return rc;
    json_t *data = json_object();
    const char *names[] = {"agent.pub", "agent.key", "operator.pub"};
    const char *texts[] = {agent_pub, agent_key, operator_pub};
    int bad = data == NULL || agent_pub == NULL || agent_key == NULL;
    for (int i = 0; i < 3 && !bad; i++) {
        if (texts[i] == NULL || texts[i][0] == '\0')
            continue; /* only operator.pub may be missing (checked above) */
        json_t *v = base64_string(texts[i]);
        bad = v == NULL || json_object_set_new(data, names[i], v) != 0;
    }
    if (bad || json_object_size(data) < 2) {
        json_decref(owner);
        json_decref(data);
        return kd_errf(err, errlen, KD_EINVAL, "key text missing or longer than %d bytes",
                       PODSPEC_KEY_MAX);
    }
    *out = json_pack("{s:s, s:s, s:{s:s, s:s, s:{s:s}, s:[o]}, s:s, s:o}", "apiVersion", "v1",
                     "kind", "Secret", "metadata", "name", name, "namespace", spec->namespace_,
                     "labels", PODSPEC_LABEL_JOB, spec->name, "ownerReferences", owner, "type",
                     "Opaque", "data", data);
    return *out != NULL ? KD_OK : KD_ENOMEM;
}

/* "k=v,k=v" -> {k: v, ...}; NULL when malformed. */
static json_t *labels_of(const char *text)
{
    json_t *m = json_object();
    const char *p = text;
    while (m != NULL && p != NULL && *p != '\0') {
        const char *comma = strchr(p, ',');
        size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
        char kv[320];
        if (len == 0 || len >= sizeof kv) {
            json_decref(m);
            return NULL;
        }
        memcpy(kv, p, len);
        kv[len] = '\0';
        char *eq = strchr(kv, '=');
        if (eq == NULL || eq == kv) {
            json_decref(m);
            return NULL;
        }
        *eq = '\0';
        json_object_set_new(m, kv, json_string(eq + 1));
        p = comma != NULL ? comma + 1 : NULL;
    }
    return m;
}

int podspec_network_policy(const json_t *job, const kd_agentjob *spec, const podspec_options *o,
                           json_t **out, char *err, size_t errlen)
{
    char name[PODSPEC_NAME_MAX];
    if (podspec_network_policy_name(spec->name, name, sizeof name) != KD_OK)
        return kd_errf(err, errlen, KD_ETOOBIG, "job name too long for a NetworkPolicy name");
    json_t *op_labels = labels_of(o->operator_labels != NULL ? o->operator_labels : "");
    if (op_labels == NULL)
        return kd_errf(err, errlen, KD_EINVAL, "operator pod labels \"%s\": expected k=v,k=v",
                       o->operator_labels);
    json_t *owner = NULL;
    int rc = podspec_owner_ref(job, &owner, err, errlen);
    if (rc != KD_OK) {
        json_decref(op_labels);
        return rc;
    }
    /* From the job's own pods: every agent port. From the operator: the control port (its
     * BATCH messages, admitted by its key) and the metrics port, the one it subscribes to.
     * Everything else reaching the job's pods is dropped. */
    json_t *peers = json_pack(
        "{s:[{s:{s:{s:s}}}], s:[{s:s, s:i}, {s:s, s:i}, {s:s, s:i}]}", "from", "podSelector",
        "matchLabels", PODSPEC_LABEL_JOB, spec->name, "ports", "protocol", "TCP", "port",
        PODSPEC_CONTROL_PORT, "protocol", "TCP", "port", PODSPEC_METRICS_PORT, "protocol", "TCP",
        "port", PODSPEC_DATA_PORT);
    json_t *from_op = json_pack("{s:o}", "podSelector", json_pack("{s:o}", "matchLabels",
                                                                  op_labels));
    if (from_op != NULL && o->operator_namespace != NULL && o->operator_namespace[0] != '\0')
        json_object_set_new(from_op, "namespaceSelector",
                            json_pack("{s:{s:s}}", "matchLabels", "kubernetes.io/metadata.name",
                                      o->operator_namespace));
    json_t *operator = json_pack("{s:[o], s:[{s:s, s:i}, {s:s, s:i}]}", "from", from_op, "ports",
                                 "protocol", "TCP", "port", PODSPEC_CONTROL_PORT, "protocol",
                                 "TCP", "port", PODSPEC_METRICS_PORT);
    json_t *np = json_pack(
        "{s:s, s:s, s:{s:s, s:s, s:{s:s}, s:[o]}, s:{s:{s:{s:s}}, s:[s], s:[o, o]}}",
        "apiVersion", "networking.k8s.io/v1", "kind", "NetworkPolicy", "metadata", "name", name,
        "namespace", spec->namespace_, "labels", PODSPEC_LABEL_JOB, spec->name,
        "ownerReferences", owner, "spec", "podSelector", "matchLabels", PODSPEC_LABEL_JOB,
        spec->name, "policyTypes", "Ingress", "ingress", peers, operator);
    if (np == NULL)
        return KD_ENOMEM;
    *out = np;
    return KD_OK;
}
