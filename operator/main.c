/*
 * kadet-operator: process shell of the operator. Parses the settings (opconfig), sets up
 * logging and the metrics registry, serves /healthz, /readyz and /metrics (httpd), loads
 * the cluster configuration and builds the Kubernetes client, starts the informers whose
 * caches the reconciler and the scheduler read (readiness waits for them), the AgentJob
 * controller (reconcile), the coordinators' metrics subscriptions (progress) and the
 * scheduler host (schedhost), runs leader election when asked (--leader-elect: only the
 * leader acts), and shuts down in order on SIGTERM or SIGINT.
 *
 * Signals are blocked in every thread before any thread starts and taken synchronously
 * with sigwait() here, so no work runs in a signal handler and every thread sees the same
 * shutdown. Components are stopped in reverse order after the signal (see
 * docs/operator.md, "Process lifecycle").
 */
#include <curl/curl.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "httpd.h"
#include "informer.h"
#include "jobkeys.h"
#include "kd_error.h"
#include "kd_log.h"
#include "kube_client.h"
#include "kube_config.h"
#include "leader.h"
#include "metrics.h"
#include "opconfig.h"
#include "progress.h"
#include "reconcile.h"
#include "schedhost.h"

/* The controllers of the process, shared by the callbacks that connect them. */
typedef struct op_controllers {
    op_metrics *metrics;
    rc_controller *rc;
    schedhost *sh;
    progress *pg;
} op_controllers;

static void set_acting(op_controllers *oc, int acting)
{
    opm_set(oc->metrics->leader, NULL, acting ? 1.0 : 0.0);
    if (oc->sh != NULL)
        schedhost_set_acting(oc->sh, acting);
    if (oc->rc != NULL)
        rc_controller_set_acting(oc->rc, acting);
}

/* Leader election callbacks: they run on the elector's thread and only flip flags (the
 * workers and the scheduler host check them), so they return at once. */
static void on_started_leading(void *ud)
{
    set_acting(ud, 1);
    KD_INFO("leading: this replica acts");
}

static void on_stopped_leading(void *ud)
{
    set_acting(ud, 0);
    KD_INFO("stopped leading: this replica stands by");
}

static void on_new_leader(void *ud, const char *identity)
{
    (void)ud;
    KD_INFO("leader observed holder=%s", identity[0] != '\0' ? identity : "(none)");
}

static void enqueue_cb(void *ud, const char *key)
{
    op_controllers *oc = ud;
    if (oc->rc != NULL)
        rc_controller_enqueue(oc->rc, key);
}

static void poke_cb(void *ud)
{
    op_controllers *oc = ud;
    if (oc->sh != NULL)
        schedhost_poke(oc->sh);
}

static int sched_lookup_cb(void *ud, const char *key, rc_sched_info *out)
{
    op_controllers *oc = ud;
    return oc->sh != NULL && schedhost_lookup(oc->sh, key, out);
}

static void progress_forget_cb(void *ud, const char *key)
{
    progress_forget(ud, key);
}

/* Loads the kubeconfig or the in-cluster configuration and builds the client. */
static int connect_cluster(const opc_config *cfg, kube_client **client, char *err,
                           size_t errlen)
{
    kube_config kc;
    memset(&kc, 0, sizeof kc);
    const char *context = cfg->context[0] != '\0' ? cfg->context : NULL;
    int rc = cfg->kubeconfig[0] != '\0'
                 ? kube_config_load(cfg->kubeconfig, context, &kc, err, errlen)
                 : kube_config_auto(context, &kc, err, errlen);
    if (rc != KD_OK)
        return rc;
    KD_INFO("cluster server=%s context=%s", kc.server, kc.context != NULL ? kc.context : "");
    rc = kube_client_new(&kc, NULL, client, err, errlen);
    kube_config_clear(&kc);
    return rc;
}

static const kube_resource op_agentjobs = {"kadet.io", "v1alpha1", "agentjobs", 1};

#define OP_MAX_INFORMERS (2 * OPC_MAX_NAMESPACES + 2)

/* The informers of the process and what the housekeeping tick last read from them. */
typedef struct op_informers {
    informer *inf[OP_MAX_INFORMERS];   /* started informers */
    char label[OP_MAX_INFORMERS][80];  /* "agentjobs/ns" style name for logs and checks */
    const char *resource[OP_MAX_INFORMERS]; /* plural, the watch-restarts metric label */
    int is_jobs[OP_MAX_INFORMERS];     /* 1 for AgentJob informers (jobs by phase) */
    long restarts[OP_MAX_INFORMERS];   /* watch errors + 410 relists already counted */
    size_t n;
} op_informers;

/* Keeps only the members of obj named in keep (NULL-terminated). */
static void keep_only(json_t *obj, const char *const *keep)
{
    const char *k;
    json_t *v;
    void *tmp;
    json_object_foreach_safe(obj, tmp, k, v)
    {
        size_t i = 0;
        while (keep[i] != NULL && strcmp(keep[i], k) != 0)
            i++;
        if (keep[i] == NULL)
            json_object_del(obj, k);
    }
}

/* The pod cache's transform (as client-go's SetTransform): the cache holds every pod of
 * the cluster, and its readers (rc_pod_from_json and the owned handlers in reconcile,
 * schedhost_pod_requests and the node accounting in schedhost) read metadata, status,
 * spec.nodeName and each container's resources only. Everything else of the spec
 * (image, command, env, volumes, probes, security contexts...) is dropped before the
 * object enters the cache: about half of a pod's memory as jansson objects. */
static void pod_transform(json_t *pod, void *ud)
{
    (void)ud;
    static const char *const spec_keep[] = {"nodeName", "containers", NULL};
    static const char *const container_keep[] = {"name", "resources", NULL};
    json_t *spec = json_object_get(pod, "spec");
    if (!json_is_object(spec))
        return;
    keep_only(spec, spec_keep);
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(spec, "containers"), i, c)
    {
        if (json_is_object(c))
            keep_only(c, container_keep);
    }
}

static int add_informer(op_informers *set, kube_client *client, const kube_resource *r,
                        const char *ns, const char *selector, int is_jobs,
                        const informer_handlers *h, informer **slot)
{
    size_t i = set->n;
    snprintf(set->label[i], sizeof set->label[i], "%s%s%s", r->plural, ns != NULL ? "/" : "",
             ns != NULL ? ns : "");
    informer_options o = {.name = set->label[i], .namespace = ns, .label_selector = selector};
    if (r == &KUBE_PODS)
        o.transform = pod_transform;
    int rc = informer_new(client, r, &o, h, &set->inf[i]);
    if (rc == KD_OK)
        rc = informer_start(set->inf[i]);
    if (rc != KD_OK) {
        informer_free(&set->inf[i]);
        return rc;
    }
    set->resource[i] = r->plural;
    set->is_jobs[i] = is_jobs;
    set->n++;
    *slot = set->inf[i];
    return KD_OK;
}

/* AgentJobs and the Services the operator owns, in each watched namespace (or all);
 * pods in every namespace (the scheduler subtracts the requests of every pod bound to a
 * node); nodes. Their handlers only enqueue keys (and poke the scheduler host); the
 * caches are what the controllers read, and /readyz means "caches synced". */
static int start_informers(op_informers *set, kube_client *client, const opc_config *cfg,
                           rc_controller *rc_ctl, rc_caches *caches)
{
    informer_handlers jobs_h = rc_controller_job_handlers(rc_ctl);
    informer_handlers owned_h = rc_controller_owned_handlers(rc_ctl);
    informer_handlers nodes_h = rc_controller_node_handlers(rc_ctl);
    size_t nns = cfg->n_namespaces > 0 ? cfg->n_namespaces : 1;
    int rc = KD_OK;
    for (size_t i = 0; i < nns && rc == KD_OK; i++) {
        const char *ns = cfg->n_namespaces > 0 ? cfg->namespaces[i] : NULL;
        rc = add_informer(set, client, &op_agentjobs, ns, NULL, 1, &jobs_h,
                          &caches->jobs[caches->n_jobs]);
        if (rc == KD_OK)
            caches->n_jobs++;
        if (rc == KD_OK)
            rc = add_informer(set, client, &KUBE_SERVICES, ns, "kadet.io/job-name", 0, &owned_h,
                              &caches->services[caches->n_services]);
        if (rc == KD_OK)
            caches->n_services++;
    }
    if (rc == KD_OK)
        rc = add_informer(set, client, &KUBE_PODS, NULL, NULL, 0, &owned_h, &caches->pods);
    if (rc == KD_OK)
        rc = add_informer(set, client, &KUBE_NODES, NULL, NULL, 0, &nodes_h, &caches->nodes);
    return rc;
}

static void stop_informers(op_informers *set)
{
    for (size_t i = 0; i < set->n; i++)
        informer_stop(set->inf[i]);
    for (size_t i = 0; i < set->n; i++)
        informer_free(&set->inf[i]);
    set->n = 0;
}

/* Readiness: every informer has applied its first list. */
static int informers_synced(void *arg, char *detail, size_t len)
{
    op_informers *set = arg;
    for (size_t i = 0; i < set->n; i++) {
        if (!informer_has_synced(set->inf[i])) {
            snprintf(detail, len, "%s not synced", set->label[i]);
            return 0;
        }
    }
    return 1;
}

/* The jobs whose per-job series exist, as "ns\x1fname" (housekeeping's thread only). */
static char **job_series;
static size_t n_job_series;

/* Per-job gauges of the jobs now listed; series of jobs no longer listed are removed.
 * keys is the new set (owned, stolen). */
static void job_series_update(op_metrics *m, char **keys, size_t n)
{
    for (size_t i = 0; i < n_job_series; i++) {
        int still = 0;
        for (size_t k = 0; k < n && !still; k++)
            still = strcmp(job_series[i], keys[k]) == 0;
        if (!still) {
            char *sep = strchr(job_series[i], '\x1f');
            if (sep != NULL) {
                *sep = '\0';
                op_metrics_remove_job(m, job_series[i], sep + 1);
            }
        }
        free(job_series[i]);
    }
    free(job_series);
    job_series = keys;
    n_job_series = n;
}

/* Once a second: watch restarts, AgentJobs by phase, per-job gauges into the metrics. */
static void housekeeping(op_informers *set, op_metrics *m)
{
    char **keys = NULL;
    size_t n_keys = 0;
    static const char *const phases[] = {"Pending", "Running", "Succeeded", "Failed",
                                         "Suspended"};
    double count[5] = {0, 0, 0, 0, 0};
    int have_jobs = 0;
    for (size_t i = 0; i < set->n; i++) {
        informer_stats st;
        informer_get_stats(set->inf[i], &st);
        long restarts = st.watch_errors + st.gone;
        if (restarts > set->restarts[i]) {
            const char *v[] = {set->resource[i]};
            opm_add(m->watch_restarts, v, (double)(restarts - set->restarts[i]));
            set->restarts[i] = restarts;
        }
        if (!set->is_jobs[i] || !informer_has_synced(set->inf[i]))
            continue;
        have_jobs = 1;
        json_t *jobs = informer_list(set->inf[i]);
        size_t idx;
        json_t *job;
        json_array_foreach(jobs, idx, job)
        {
            const char *phase =
                json_string_value(json_object_get(json_object_get(job, "status"), "phase"));
            size_t p = 0; /* no phase yet: Pending */
            for (size_t k = 0; phase != NULL && k < 5; k++)
                if (strcmp(phase, phases[k]) == 0)
                    p = k;
            count[p] += 1;
            const json_t *md = json_object_get(job, "metadata");
            const char *ns = json_string_value(json_object_get(md, "namespace"));
            const char *name = json_string_value(json_object_get(md, "name"));
            if (ns == NULL || name == NULL)
                continue;
            op_metrics_set_job(m, ns, name, json_object_get(job, "status"));
            size_t len = strlen(ns) + strlen(name) + 2;
            char *key = malloc(len);
            char **grown = key != NULL ? realloc(keys, (n_keys + 1) * sizeof *keys) : NULL;
            if (grown == NULL) {
                free(key);
                continue;
            }
            snprintf(key, len, "%s\x1f%s", ns, name);
            keys = grown;
            keys[n_keys++] = key;
        }
        json_decref(jobs);
    }
    for (size_t k = 0; have_jobs && k < 5; k++) {
        const char *v[] = {phases[k]};
        opm_set(m->jobs, v, count[k]);
    }
    if (have_jobs)
        job_series_update(m, keys, n_keys);
    else {
        for (size_t i = 0; i < n_keys; i++)
            free(keys[i]);
        free(keys);
    }
}

int main(int argc, char **argv)
{
    /* One malloc arena for the whole process (before any thread starts). glibc would give
     * each of the ~10 threads that allocate (informers, workers, scheduler host, progress,
     * httpd) its own arena, each keeping its freed chunks and its high-water mark: 1-2.5 MB
     * more peak RSS, varying from run to run with which thread decoded what. The threads
     * are mostly idle, so one arena costs no measurable contention. MALLOC_ARENA_MAX in
     * the environment still decides when set. */
    if (getenv("MALLOC_ARENA_MAX") == NULL)
        mallopt(M_ARENA_MAX, 1);
    kd_log_set_component("operator");
    opc_config cfg;
    opc_action action;
    char err[512] = "";
    int rc = opc_parse(&cfg, argc, argv, &action, err, sizeof err);
    if (rc != KD_OK) {
        fprintf(stderr, "kadet-operator: %s (see kadet-operator --help)\n", err);
        return 2;
    }
    if (action == OPC_HELP) {
        opc_usage(stdout, "kadet-operator");
        return 0;
    }
    if (action == OPC_VERSION) {
        printf("kadet-operator %s\n", KADET_VERSION);
        return 0;
    }
    kd_log_set_level((kd_log_level)cfg.log_level);

    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    signal(SIGPIPE, SIG_IGN); /* a scraper hanging up must not kill the operator */

    KD_INFO("starting version=%s", KADET_VERSION);
    opc_log(&cfg);
    if (!cfg.default_qtable_given && cfg.default_qtable[0] == '\0' &&
        strcmp(cfg.scheduler_policy, "rl") == 0)
        KD_WARN("no shipped rl table found looked_in=<prefix>/%s,%s: rl starts from an empty "
                "table and decides as greedy until it has learned (set --default-qtable)",
                OPC_QTABLE_REL, OPC_QTABLE_SYSTEM);

    op_metrics metrics;
    rc = op_metrics_init(&metrics, err, sizeof err);
    if (rc != KD_OK) {
        KD_ERROR("metrics init failed err=\"%s\"", err);
        return 1;
    }
    /* Without election this replica acts alone; with it, the lease component sets 1. */
    opm_set(metrics.leader, NULL, cfg.leader_elect ? 0.0 : 1.0);

    op_httpd *httpd = NULL;
    rc = op_httpd_start(&httpd, cfg.metrics_host, cfg.metrics_port, metrics.reg, err,
                        sizeof err);
    if (rc != KD_OK) {
        KD_ERROR("http server failed err=\"%s\"", err);
        op_metrics_free(&metrics);
        return 1;
    }
    KD_INFO("serving endpoints=/healthz,/readyz,/metrics addr=%s port=%d",
            cfg.metrics_host[0] ? cfg.metrics_host : "0.0.0.0", op_httpd_port(httpd));

    int status = 1;
    kube_client *client = NULL;
    kube_client *informer_client = NULL;
    leader_elector *elector = NULL;
    op_informers informers;
    memset(&informers, 0, sizeof informers);
    rc_caches caches;
    memset(&caches, 0, sizeof caches);
    op_controllers oc = {.metrics = &metrics};
    /* The operator's CURVE keypair (Secret kadet-operator-curve), loaded on first use: its
     * public key goes into every job's key Secret, its secret key subscribes to metrics. */
    jobkeys_cache opkeys;
    jobkeys_cache_init(&opkeys, cfg.operator_namespace, JOBKEYS_OPERATOR_SECRET);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    rc = connect_cluster(&cfg, &client, err, sizeof err);
    if (rc != KD_OK) {
        KD_ERROR("cluster configuration failed err=\"%s\"", err);
        goto out;
    }
    /* The informers retry with their own interruptible backoff; retries inside the client
     * would only delay informer_stop (up to a few seconds against a dead API server). */
    kube_client_options once = {.max_attempts = 1};
    rc = kube_client_clone(client, &once, &informer_client, err, sizeof err);
    if (rc != KD_OK) {
        KD_ERROR("kube client failed err=\"%s\"", err);
        goto out;
    }
    /* The controllers exist before the informers so that the first list's events are
     * queued; they act once the caches are synced (and, with election, when leading). */
    progress_options po = {.notify_interval_s = 3.0, .notify = enqueue_cb, .ud = &oc};
    rc = progress_new(&po, &oc.pg);
    if (rc == KD_OK) {
        rc_options ro = {
            .client = client,
            .metrics = &metrics,
            .podspec = {.image = cfg.runtime_image,
                        .pull_policy = cfg.runtime_pull_policy,
                        .allow_privileged = cfg.allow_privileged_pods,
                        .keys = 1,
                        .network_policy = cfg.network_policy,
                        .operator_namespace = cfg.operator_namespace,
                        .operator_labels = cfg.operator_pod_labels},
            .operator_keys = &opkeys,
            .workers = cfg.workers,
            .progress_interval_s = 3.0,
            .sched_lookup = sched_lookup_cb,
            .sched_ud = &oc,
            .on_change = poke_cb,
            .change_ud = &oc,
            .progress_lookup = progress_lookup_cb,
            .progress_watch = progress_watch_cb,
            .progress_forget = progress_forget_cb,
            .progress_ud = oc.pg,
            .progress_job_key = progress_job_key_cb,
            .progress_operator_key = progress_operator_key_cb,
            .progress_send_batch = progress_send_batch_cb,
        };
        rc = rc_controller_new(&ro, &oc.rc, err, sizeof err);
    }
    if (rc != KD_OK) {
        KD_ERROR("controller setup failed err=%s", kd_strerror(rc));
        goto out;
    }
    rc = start_informers(&informers, informer_client, &cfg, oc.rc, &caches);
    if (rc == KD_OK) {
        rc_controller_set_caches(oc.rc, &caches);
        schedhost_options so = {
            .client = client,
            .metrics = &metrics,
            .progress = oc.pg,
            .policy = cfg.scheduler_policy,
            .interval_s = (double)cfg.scheduler_interval_ms / 1000.0,
            .weight_time = cfg.weight_time,
            .weight_cost = cfg.weight_cost,
            .state_namespace = cfg.operator_namespace,
            .state_name = cfg.state_configmap,
            .default_qtable = cfg.default_qtable,
            .persist_interval_s = 60,
            .enqueue = enqueue_cb,
            .ud = &oc,
        };
        rc = schedhost_new(&so, &caches, &oc.sh, err, sizeof err);
        if (rc != KD_OK)
            KD_ERROR("scheduler host failed err=\"%s\"", err);
    }
    if (rc == KD_OK)
        rc = progress_start(oc.pg);
    if (rc == KD_OK)
        rc = rc_controller_start(oc.rc);
    if (rc == KD_OK)
        rc = schedhost_start(oc.sh);
    if (rc == KD_OK && !cfg.leader_elect)
        set_acting(&oc, 1);
    if (rc == KD_OK)
        rc = op_httpd_add_check(httpd, "informers", informers_synced, &informers);
    if (rc != KD_OK) {
        KD_ERROR("informers failed err=%s", kd_strerror(rc));
        goto out;
    }
    KD_INFO("informers started count=%zu", informers.n);
    if (cfg.leader_elect) {
        double lease_s = (double)cfg.lease_duration_ms / 1000.0;
        leader_options lo = {
            .namespace = cfg.lease_namespace,
            .name = cfg.lease_name,
            .identity = cfg.identity,
            .lease_duration_s = lease_s,
            .renew_deadline_s = lease_s * 2.0 / 3.0,
            .retry_period_s = lease_s * 2.0 / 15.0,
            .on_started = on_started_leading,
            .on_stopped = on_stopped_leading,
            .on_new_leader = on_new_leader,
            .ud = &oc,
        };
        rc = leader_new(client, &lo, &elector, err, sizeof err);
        if (rc == KD_OK)
            rc = leader_start(elector);
        if (rc != KD_OK) {
            KD_ERROR("leader election failed err=\"%s\"", err);
            goto out;
        }
        KD_INFO("leader election lease=%s/%s identity=%s", cfg.lease_namespace, cfg.lease_name,
                cfg.identity);
    }

    const struct timespec tick = {1, 0};
    op_httpd_set_started(httpd);
    int sig;
    unsigned ticks = 0;
    long dropped_seen = 0;
    do {
        sig = sigtimedwait(&stop_signals, NULL, &tick);
        if (sig < 0) {
            housekeeping(&informers, &metrics);
            /* Malformed coordinator metrics messages, dropped by progress. */
            long dropped = progress_dropped(oc.pg);
            if (dropped > dropped_seen) {
                const char *v[] = {"metrics-sub"};
                opm_add(metrics.errors, v, (double)(dropped - dropped_seen));
                dropped_seen = dropped;
            }
        }
        /* Watch events replace cached objects all the time; hand the freed pages back
         * every few seconds so that RSS follows the live cache, not its history. */
        if (sig < 0 && ++ticks % 5 == 0)
            malloc_trim(0);
    } while (sig < 0 && (errno == EAGAIN || errno == EINTR));
    if (sig < 0) {
        KD_ERROR("waiting for signals failed errno=%d", errno);
        goto out;
    }
    KD_INFO("shutting down signal=%s", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    /* SIGTERM is how Kubernetes stops a pod: a clean stop. Ctrl-C reports itself as the
     * shells do. */
    status = sig == SIGINT ? 130 : 0;
out:
    op_httpd_set_shutting_down(httpd);
    /* The scheduler host saves its table while this replica still leads; then the
     * workers finish their current sync. */
    schedhost_stop(oc.sh);
    rc_controller_stop(oc.rc);
    /* Releasing the Lease next lets a standby take over while we finish stopping. */
    leader_free(&elector);
    stop_informers(&informers);
    schedhost_free(&oc.sh);
    rc_controller_free(&oc.rc);
    progress_free(&oc.pg);
    jobkeys_cache_destroy(&opkeys);
    kube_client_free(&informer_client);
    kube_client_free(&client);
    curl_global_cleanup();
    op_httpd_stop(&httpd);
    op_metrics_free(&metrics);
    KD_INFO("stopped status=%d", status);
    return status;
}
