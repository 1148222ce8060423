/*
 * schedhost: the scheduler host's thread, snapshot building and state persistence (see
 * schedhost.h). The snapshot is rebuilt from the caches every round, so a missed event
 * costs at most one interval; what the caches cannot give (attained service, the time of
 * a job's last change) is remembered per job here.
 */
#include "schedhost.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kd_clock.h"
#include "kd_error.h"
#include "kd_log.h"
#include "kd_spec.h"
#include "kube_map.h"
#include "reconcile_plan.h"
#include "sched_qtable.h"

#define SH_MAX_TP 16
#define SH_MIN_GAP_S 0.5 /* least time between two change-driven rounds */

/* What the host remembers per job between rounds. */
typedef struct sh_job {
    rc_sched_info info;   /* last decision */
    int have;             /* info is set */
    double changed_at;    /* monotonic time of the last change of the decision */
    double attained;      /* agent-seconds held so far */
    double seen_at;       /* monotonic time of the last round that saw the job */
    int current;          /* agents it held then */
    int seen_round;       /* round number that last saw the job */
} sh_job;

struct schedhost {
    schedhost_options opt;
    char *policy_name, *state_ns, *state_name, *default_qtable;
    const rc_caches *caches;  /* owned by the caller, outlives the host */
    sched_policy *policy;
    pthread_t thread;
    int started;
    pthread_mutex_t mu;       /* guards everything below */
    pthread_cond_t cv;
    int stop;
    int poked;
    int acting;
    int loaded;               /* the table was loaded for this leadership term */
    kube_map *jobs;           /* key -> sh_job */
    double last_persist;
    int round;
    int inited;               /* mu and cv initialised */
    atomic_long rounds;
    double prior_k;           /* the policy's speed-model prior, for goodput models */
};

static char *dup_or_empty(const char *s)
{
    return strdup(s != NULL ? s : "");
}

int schedhost_new(const schedhost_options *o, const rc_caches *caches, schedhost **out,
                  char *err, size_t errlen)
{
    schedhost *h = calloc(1, sizeof *h);
    if (h == NULL)
        return KD_ENOMEM;
    h->opt = *o;
    if (h->opt.interval_s <= 0)
        h->opt.interval_s = 10;
    if (h->opt.debounce_s <= 0)
        h->opt.debounce_s = 0.1;
    if (h->opt.persist_interval_s <= 0)
        h->opt.persist_interval_s = 60;
    h->caches = caches;
    h->policy_name = dup_or_empty(o->policy != NULL ? o->policy : "rl");
    h->state_ns = dup_or_empty(o->state_namespace);
    h->state_name = dup_or_empty(o->state_name);
    h->default_qtable = dup_or_empty(o->default_qtable);
    h->jobs = kube_map_new(free);
    sched_options so;
    sched_options_default(&so);
    h->prior_k = so.prior_k;
    so.alpha = o->weight_time >= 0 ? o->weight_time : so.alpha;
    so.beta = o->weight_cost >= 0 ? o->weight_cost : so.beta;
    so.learn = 1;           /* the operator keeps learning; the table is persisted */
    so.cooldown_s = 2.0 * h->opt.interval_s; /* no job changes twice in a row */
    so.seed = (uint64_t)time(NULL);
    int rc = h->policy_name && h->state_ns && h->state_name && h->default_qtable && h->jobs
                 ? sched_policy_create(h->policy_name, &so, &h->policy, err, errlen)
                 : KD_ENOMEM;
    if (rc != KD_OK) {
        schedhost_free(&h);
        return rc;
    }
    h->opt.policy = h->policy_name;
    pthread_mutex_init(&h->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&h->cv, &ca);
    pthread_condattr_destroy(&ca);
    h->inited = 1;
    *out = h;
    return KD_OK;
}

/* --- pure helpers ----------------------------------------------------------------------- */

void schedhost_pod_requests(const json_t *pod, double *cpu_millis, double *mem_bytes)
{
    *cpu_millis = 0;
    *mem_bytes = 0;
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(json_object_get(pod, "spec"), "containers"), i, c)
    {
        const json_t *res = json_object_get(c, "resources");
        const json_t *req = json_object_get(res, "requests");
        const json_t *lim = json_object_get(res, "limits");
        const char *cpu = json_string_value(json_object_get(req, "cpu"));
        const char *mem = json_string_value(json_object_get(req, "memory"));
        if (cpu == NULL)
            cpu = json_string_value(json_object_get(lim, "cpu"));
        if (mem == NULL)
            mem = json_string_value(json_object_get(lim, "memory"));
        int64_t v;
        if (cpu != NULL && kd_quantity_cpu_millis(cpu, &v) == KD_OK)
            *cpu_millis += (double)v;
        if (mem != NULL && kd_quantity_bytes(mem, &v) == KD_OK)
            *mem_bytes += (double)v;
    }
}

/* New agents may go to a node that is Ready (not lost, the reconciler's rule) and not
 * cordoned. */
static int node_usable(const json_t *node)
{
    return !json_is_true(json_object_get(json_object_get(node, "spec"), "unschedulable")) &&
           !rc_node_lost(node);
}

int schedhost_build_nodes(const json_t *nodes, const json_t *pods,
                          int (*is_agent)(void *ud, const json_t *pod), void *ud,
                          sched_node **out, const char ***names, int *n)
{
    size_t nn = json_array_size(nodes);
    sched_node *sn = calloc(nn > 0 ? nn : 1, sizeof *sn);
    const char **nm = calloc(nn > 0 ? nn : 1, sizeof *nm);
    if (sn == NULL || nm == NULL) {
        free(sn);
        free(nm);
        return KD_ENOMEM;
    }
    int k = 0;
    size_t i;
    json_t *node;
    json_array_foreach(nodes, i, node)
    {
        if (!node_usable(node))
            continue;
        const char *name = json_string_value(json_object_get(json_object_get(node, "metadata"), "name"));
        const json_t *alloc = json_object_get(json_object_get(node, "status"), "allocatable");
        int64_t cpu = 0, mem = 0;
        const char *cs = json_string_value(json_object_get(alloc, "cpu"));
        const char *ms = json_string_value(json_object_get(alloc, "memory"));
        if (name == NULL || cs == NULL || kd_quantity_cpu_millis(cs, &cpu) != KD_OK)
            continue;
        if (ms == NULL || kd_quantity_bytes(ms, &mem) != KD_OK)
            mem = 0;
        sn[k].cpu = (double)cpu / 1000.0;
        sn[k].mem = (double)mem;
        sn[k].slots = 0;
        nm[k] = name;
        k++;
    }
    json_t *pod;
    json_array_foreach(pods, i, pod)
    {
        const char *on = json_string_value(json_object_get(json_object_get(pod, "spec"), "nodeName"));
        const char *ph = json_string_value(json_object_get(json_object_get(pod, "status"), "phase"));
        if (on == NULL || (ph != NULL && (strcmp(ph, "Succeeded") == 0 || strcmp(ph, "Failed") == 0)))
            continue;
        if (is_agent != NULL && is_agent(ud, pod))
            continue;
        for (int j = 0; j < k; j++) {
            if (strcmp(nm[j], on) != 0)
                continue;
            double c, m;
            schedhost_pod_requests(pod, &c, &m);
            sn[j].cpu -= c / 1000.0;
            if (sn[j].mem > 0)
                sn[j].mem -= m;
            /* A node filled by other pods must not read as "not limiting" (<= 0). */
            if (sn[j].cpu <= 0)
                sn[j].cpu = 1e-6;
            if (sn[j].mem <= 0 && m > 0)
                sn[j].mem = 1;
            break;
        }
    }
    *out = sn;
    *n = k;
    if (names != NULL)
        *names = nm;
    else
        free(nm);
    return KD_OK;
}

/* --- state ConfigMap ------------------------------------------------------------------- */

static void load_table(schedhost *h)
{
    if (strcmp(h->policy_name, "rl") != 0)
        return; /* only rl learns a table */
    char err[512] = "";
    kube_error e;
    json_t *cm = NULL;
    int rc = h->state_name[0] != '\0'
                 ? kube_get(h->opt.client, &KUBE_CONFIGMAPS, h->state_ns, h->state_name, &cm, &e)
                 : KD_ENOTFOUND;
    const char *text = json_string_value(json_object_get(json_object_get(cm, "data"), "qtable.json"));
    if (rc == KD_OK && text != NULL) {
        rc = sched_qtable_loads(h->policy, text, err, sizeof err);
        if (rc == KD_OK)
            KD_INFO("scheduler state loaded configmap=%s/%s", h->state_ns, h->state_name);
        else
            KD_WARN("scheduler state refused configmap=%s/%s err=\"%s\"", h->state_ns,
                    h->state_name, err);
    } else if (h->default_qtable[0] != '\0') {
        if (rc != KD_OK && rc != KD_ENOTFOUND)
            KD_WARN("scheduler state unreadable configmap=%s/%s err=\"%s\"", h->state_ns,
                    h->state_name, e.message);
        rc = sched_qtable_load(h->policy, h->default_qtable, err, sizeof err);
        if (rc == KD_OK)
            KD_INFO("scheduler state loaded file=%s", h->default_qtable);
        else
            KD_WARN("scheduler default table refused file=%s err=\"%s\"", h->default_qtable, err);
    }
    json_decref(cm);
}

/* Creates or updates the ConfigMap with the table (rl only; other policies learn
 * nothing). Called on the host's thread or from stop, never concurrently. */
static void save_table(schedhost *h)
{
    if (strcmp(h->policy_name, "rl") != 0 || h->state_name[0] == '\0')
        return;
    char err[256];
    char *text = NULL;
    if (sched_qtable_dumps(h->policy, &text, err, sizeof err) != KD_OK) {
        KD_WARN("scheduler state not serialised err=\"%s\"", err);
        return;
    }
    kube_error e;
    json_t *cm = NULL;
    int rc = kube_get(h->opt.client, &KUBE_CONFIGMAPS, h->state_ns, h->state_name, &cm, &e);
    if (rc == KD_ENOTFOUND) {
        json_t *obj = json_pack("{s:s, s:s, s:{s:s, s:s}, s:{s:s}}", "apiVersion", "v1", "kind",
                                "ConfigMap", "metadata", "name", h->state_name, "namespace",
                                h->state_ns, "data", "qtable.json", text);
        rc = obj != NULL ? kube_create(h->opt.client, &KUBE_CONFIGMAPS, h->state_ns, obj, NULL, &e)
                         : KD_ENOMEM;
        json_decref(obj);
    } else if (rc == KD_OK) {
        json_t *obj = json_deep_copy(cm);
        json_t *data = json_object_get(obj, "data");
        if (!json_is_object(data)) {
            data = json_object();
            json_object_set_new(obj, "data", data);
        }
        json_object_set_new(data, "qtable.json", json_string(text));
        rc = kube_update(h->opt.client, &KUBE_CONFIGMAPS, h->state_ns, h->state_name, NULL, obj,
                         NULL, &e);
        json_decref(obj);
    }
    if (rc == KD_OK)
        KD_INFO("scheduler state saved configmap=%s/%s bytes=%zu", h->state_ns, h->state_name,
                strlen(text));
    else
        KD_WARN("scheduler state not saved configmap=%s/%s err=\"%s\"", h->state_ns,
                h->state_name, e.message);
    json_decref(cm);
    free(text);
}

/* --- one round --------------------------------------------------------------------------- */

#define SH_MAX_GOODPUT 256 /* agent counts a job's goodput table covers */

typedef struct round_job {
    char key[600];
    kd_agentjob spec;
    sched_tp tp[SH_MAX_TP];
    sched_cfg cfg[SCHED_GP_MAX_CFG];   /* measured configurations (progress) */
    double goodput[SH_MAX_GOODPUT];    /* goodput model at 1..n agents ... */
    int gbatch[SH_MAX_GOODPUT];        /* ... with the batch chosen for each count */
} round_job;

typedef struct agent_index {
    kube_map *current; /* "ns/job" -> count of live workers (stored as (void *)(intptr_t)) */
    kube_map *in_snapshot;
} agent_index;

static int pod_job_key(const json_t *pod, char *key, size_t len, int *worker)
{
    const json_t *md = json_object_get(pod, "metadata");
    const json_t *labels = json_object_get(md, "labels");
    const char *job = json_string_value(json_object_get(labels, "kadet.io/job-name"));
    const char *role = json_string_value(json_object_get(labels, "kadet.io/role"));
    const char *ns = json_string_value(json_object_get(md, "namespace"));
    if (job == NULL || role == NULL || ns == NULL)
        return 0;
    *worker = strcmp(role, "worker") == 0;
    int n = snprintf(key, len, "%s/%s", ns, job);
    return n > 0 && (size_t)n < len;
}

static int is_agent(void *ud, const json_t *pod)
{
    agent_index *ai = ud;
    char key[600];
    int worker = 0;
    return pod_job_key(pod, key, sizeof key, &worker) && worker &&
           kube_map_has(ai->in_snapshot, key);
}

static int job_schedulable(const json_t *job)
{
    const json_t *md = json_object_get(job, "metadata");
    if (json_object_get(md, "deletionTimestamp") != NULL)
        return 0;
    const char *ph = json_string_value(json_object_get(json_object_get(job, "status"), "phase"));
    return ph == NULL || (strcmp(ph, "Succeeded") != 0 && strcmp(ph, "Failed") != 0);
}

/* The kind of a decision's reason, for a metric label of bounded cardinality: its
 * leading words without the policy's name, numbers or details ("pinned to 3" ->
 * "pinned_to", "in cool-down (12s since last change)" -> "in_cool_down"). */
void schedhost_reason_kind(const char *policy, const char *reason, char *out, size_t n)
{
    size_t pl = strlen(policy), k = 0;
    if (strncmp(reason, policy, pl) == 0 && strncmp(reason + pl, ": ", 2) == 0)
        reason += pl + 2;
    for (const char *p = reason; *p != '\0' && k + 1 < n; p++) {
        char c = *p;
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c >= 'a' && c <= 'z')
            out[k++] = c;
        else if ((c == ' ' || c == '-') && k > 0 && out[k - 1] != '_')
            out[k++] = '_';
        else if (c != ' ' && c != '-')
            break; /* a number, a colon, a parenthesis: the details start */
    }
    while (k > 0 && out[k - 1] == '_')
        k--;
    out[k] = '\0';
    if (k == 0)
        snprintf(out, n, "unspecified");
}

static void count_action(schedhost *h, int from, int to, const char *reason)
{
    const char *v[] = {h->policy_name, to > from ? "up" : to < from ? "down" : "hold"};
    opm_add(h->opt.metrics->sched_decisions, v, 1);
    char kind[48];
    schedhost_reason_kind(h->policy_name, reason != NULL ? reason : "", kind, sizeof kind);
    const char *r[] = {h->policy_name, kind};
    opm_add(h->opt.metrics->sched_reasons, r, 1);
}

/* Jobs not seen this round are finished or gone: close their rl transition, drop their
 * metrics series. */
typedef struct sweep_ctx {
    schedhost *h;
    char **gone;
    size_t n, cap;
} sweep_ctx;

static int sweep(void *ud, const char *key, void *value)
{
    sweep_ctx *s = ud;
    sh_job *j = value;
    if (j->seen_round == s->h->round)
        return 0;
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 16;
        char **g = realloc(s->gone, nc * sizeof *g);
        if (g == NULL)
            return 1;
        s->gone = g;
        s->cap = nc;
    }
    s->gone[s->n++] = strdup(key);
    return 0;
}

static void run_round(schedhost *h)
{
    json_t *jobs = rc_caches_list_jobs(h->caches);
    json_t *pods = h->caches->pods != NULL ? informer_list(h->caches->pods) : json_array();
    json_t *nodes = h->caches->nodes != NULL ? informer_list(h->caches->nodes) : json_array();
    size_t njobs = json_array_size(jobs);
    round_job *rj = calloc(njobs > 0 ? njobs : 1, sizeof *rj);
    sched_job *sj = calloc(njobs > 0 ? njobs : 1, sizeof *sj);
    sched_decision *dec = calloc(njobs > 0 ? njobs : 1, sizeof *dec);
    agent_index ai = {kube_map_new(NULL), kube_map_new(NULL)};
    sched_node *sn = NULL;
    int nn = 0, n = 0;
    double now = kd_mono_s(), wall = (double)time(NULL);
    h->round++;
    if (jobs == NULL || pods == NULL || nodes == NULL || rj == NULL || sj == NULL ||
        dec == NULL || ai.current == NULL || ai.in_snapshot == NULL)
        goto out;

    size_t i;
    json_t *obj;
    json_array_foreach(pods, i, obj)
    {
        char key[600];
        int worker = 0;
        const json_t *md = json_object_get(obj, "metadata");
        const char *ph = json_string_value(json_object_get(json_object_get(obj, "status"), "phase"));
        if (!pod_job_key(obj, key, sizeof key, &worker) || !worker ||
            json_object_get(md, "deletionTimestamp") != NULL ||
            (ph != NULL && (strcmp(ph, "Succeeded") == 0 || strcmp(ph, "Failed") == 0)))
            continue;
        intptr_t c = (intptr_t)kube_map_get(ai.current, key);
        kube_map_put(ai.current, key, (void *)(c + 1));
    }
    json_array_foreach(jobs, i, obj)
    {
        round_job *r = &rj[n];
        char err[256];
        if (!job_schedulable(obj) || kube_object_key(obj, r->key, sizeof r->key) != KD_OK ||
            kd_agentjob_decode(obj, &r->spec, err, sizeof err) != KD_OK)
            continue;
        if (r->spec.suspend) {
            kd_agentjob_free(&r->spec);
            continue;
        }
        pthread_mutex_lock(&h->mu);
        sh_job *st = kube_map_get(h->jobs, r->key);
        if (st == NULL) {
            st = calloc(1, sizeof *st);
            if (st != NULL && kube_map_put(h->jobs, r->key, st) != KD_OK) {
                free(st);
                st = NULL;
            }
            if (st != NULL) {
                st->changed_at = -1;
                st->seen_at = now;
            }
        }
        sched_job *j = &sj[n];
        j->id = r->key;
        j->min = r->spec.agents_min;
        j->max = r->spec.agents_max;
        j->pin = r->spec.replicas > 0 ? r->spec.replicas : 0;
        j->request = 0;
        j->cpu_per_agent = (double)r->spec.agent_cpu_millis / 1000.0;
        j->mem_per_agent = (double)r->spec.agent_memory_bytes;
        /* What the job holds is what the reconciler enforces (status.agents.desired):
         * pods still being created are already its agents, or a decision made while they
         * start would count them as free and flip back. Live pods only before that. */
        const json_t *sd = json_object_get(
            json_object_get(json_object_get(obj, "status"), "agents"), "desired");
        j->current = json_is_integer(sd) ? (int)json_integer_value(sd)
                                         : (int)(intptr_t)kube_map_get(ai.current, r->key);
        const char *created = json_string_value(
            json_object_get(json_object_get(obj, "metadata"), "creationTimestamp"));
        double ct = rc_parse_time(created);
        j->age_s = ct > 0 && wall > ct ? wall - ct : 0;
        if (st != NULL) {
            st->attained += (double)st->current * (now - st->seen_at);
            st->seen_at = now;
            st->current = j->current;
            st->seen_round = h->round;
            j->attained_s = st->attained;
            j->since_change_s = st->changed_at < 0 ? -1 : now - st->changed_at;
        } else {
            j->since_change_s = -1;
        }
        int decided_batch = st != NULL && st->have ? st->info.batch : 0;
        pthread_mutex_unlock(&h->mu);
        rc_progress_info pi;
        if (h->opt.progress != NULL) {
            j->n_tp = progress_throughput(h->opt.progress, r->key, r->tp, SH_MAX_TP);
            j->tp = r->tp;
            int have_pi = progress_get(h->opt.progress, r->key, &pi);
            if (have_pi && r->spec.epochs > 0) {
                double f = (double)(pi.epoch > 0 ? pi.epoch - 1 : 0) / r->spec.epochs;
                j->progress = f < 0 ? 0 : f > 1 ? 1 : f;
            }
            /* The goodput model from the coordinator's measurements (the same inputs
             * kadet-sim's goodput model gives the policy): throughput per configuration
             * and the noise scale; the batch within the job's declared bounds. */
            int ncfg = progress_configs(h->opt.progress, r->key, r->cfg, SCHED_GP_MAX_CFG);
            if (have_pi && ncfg > 0) {
                sched_goodput_in gi = {r->cfg, ncfg, pi.noise_scale,
                                       decided_batch > 0 ? decided_batch
                                       : pi.batch > 0    ? pi.batch
                                                         : r->spec.batch_size,
                                       r->spec.batch_size,
                                       kd_spec_batch_ceiling(&r->spec, r->spec.batch_size),
                                       h->prior_k};
                sched_job_set_goodput(j, &gi, j->max < SH_MAX_GOODPUT ? j->max : SH_MAX_GOODPUT,
                                      r->spec.adaptive_batch, r->goodput, r->gbatch);
            }
        }
        j->remaining = 0;
        j->alpha = r->spec.weight_time;
        j->beta = r->spec.weight_cost;
        j->priority = r->spec.priority;
        kube_map_put(ai.in_snapshot, r->key, NULL);
        n++;
    }
    if (schedhost_build_nodes(nodes, pods, is_agent, &ai, &sn, NULL, &nn) != KD_OK)
        goto out;
    if (n > 0) {
        sched_snapshot snap = {sn, nn, sj, n, h->opt.interval_s, 2.0};
        char err[256];
        int rc = sched_decide(h->policy, &snap, dec, err, sizeof err);
        if (rc != KD_OK) {
            const char *v[] = {"scheduler"};
            opm_add(h->opt.metrics->errors, v, 1);
            KD_WARN("scheduling round failed err=\"%s\"", err);
            goto out;
        }
    }
    for (int k = 0; k < n; k++) {
        int changed = 0;
        pthread_mutex_lock(&h->mu);
        sh_job *st = kube_map_get(h->jobs, rj[k].key);
        if (st != NULL) {
            changed = !st->have || st->info.desired != dec[k].desired;
            if (changed)
                st->changed_at = now;
            st->have = 1;
            st->info.desired = dec[k].desired;
            snprintf(st->info.policy, sizeof st->info.policy, "%s", h->policy_name);
            snprintf(st->info.reason, sizeof st->info.reason, "%s", dec[k].reason);
            st->info.pred_speed = dec[k].pred_speed;
            st->info.pred_cost = dec[k].pred_cost;
            st->info.pred_reward = dec[k].pred_reward;
            if (dec[k].batch != st->info.batch && dec[k].desired > 0)
                changed = 1; /* a new batch is a decision the reconciler must carry out */
            st->info.batch = dec[k].desired > 0 ? dec[k].batch : st->info.batch;
        }
        pthread_mutex_unlock(&h->mu);
        count_action(h, sj[k].current, dec[k].desired, dec[k].reason);
        const char *sum_v[] = {h->policy_name};
        double sum = 0;
        opm_get(h->opt.metrics->sched_reward_sum, sum_v, &sum);
        if (isfinite(dec[k].pred_reward))
            opm_set(h->opt.metrics->sched_reward_sum, sum_v, sum + dec[k].pred_reward);
        char ns[600];
        snprintf(ns, sizeof ns, "%s", rj[k].key);
        char *slash = strchr(ns, '/');
        if (slash != NULL) {
            *slash = '\0';
            const char *lv[] = {ns, slash + 1};
            opm_set(h->opt.metrics->sched_reward, lv, dec[k].pred_reward);
        }
        if (changed) {
            KD_INFO("scheduled job=%s current=%d desired=%d policy=%s speed=%.1f reason=\"%s\"",
                    rj[k].key, sj[k].current, dec[k].desired, h->policy_name,
                    dec[k].pred_speed, dec[k].reason);
            if (h->opt.enqueue != NULL)
                h->opt.enqueue(h->opt.ud, rj[k].key);
        }
    }
    /* Forget jobs that left the snapshot. */
    sweep_ctx sw = {h, NULL, 0, 0};
    pthread_mutex_lock(&h->mu);
    kube_map_foreach(h->jobs, sweep, &sw);
    for (size_t g = 0; g < sw.n; g++) {
        if (sw.gone[g] == NULL)
            continue;
        sched_observe(h->policy, sw.gone[g], 0, 1);
        kube_map_del(h->jobs, sw.gone[g]);
        char *slash = strchr(sw.gone[g], '/');
        if (slash != NULL) {
            *slash = '\0';
            const char *lv[] = {sw.gone[g], slash + 1};
            opm_remove(h->opt.metrics->sched_reward, lv);
        }
        free(sw.gone[g]);
    }
    pthread_mutex_unlock(&h->mu);
    free(sw.gone);
out:
    for (int k = 0; k < n; k++)
        kd_agentjob_free(&rj[k].spec);
    free(rj);
    free(sj);
    free(dec);
    free(sn);
    kube_map_free(&ai.current);
    kube_map_free(&ai.in_snapshot);
    json_decref(jobs);
    json_decref(pods);
    json_decref(nodes);
    atomic_fetch_add(&h->rounds, 1);
}

/* --- thread ------------------------------------------------------------------------------ */

static void *host_main(void *arg)
{
    schedhost *h = arg;
    double next = kd_mono_s(), last_round = -1e9;
    pthread_mutex_lock(&h->mu);
    while (!h->stop) {
        double now = kd_mono_s();
        if (!h->poked && now < next) {
            double wait = next - now;
            struct timespec ts;
            kd_mono_after(wait, &ts);
            pthread_cond_timedwait(&h->cv, &h->mu, &ts);
            continue;
        }
        if (h->poked) {
            /* Let a burst of events (a job's pods created together) settle first, and
             * keep change-driven rounds at least SH_MIN_GAP_S apart: a busy cluster
             * changes pods all the time, and every round reads every cached pod. */
            h->poked = 0;
            pthread_mutex_unlock(&h->mu);
            double wait = h->opt.debounce_s;
            double gap = last_round + SH_MIN_GAP_S - kd_mono_s();
            if (gap > wait)
                wait = gap;
            struct timespec d = {(time_t)wait, (long)((wait - floor(wait)) * 1e9)};
            nanosleep(&d, NULL);
            pthread_mutex_lock(&h->mu);
            h->poked = 0;
            if (h->stop)
                break;
        }
        int acting = h->acting, loaded = h->loaded;
        pthread_mutex_unlock(&h->mu);
        int synced = rc_caches_synced(h->caches);
        if (acting && synced) {
            if (!loaded) {
                load_table(h);
                pthread_mutex_lock(&h->mu);
                h->loaded = 1;
                h->last_persist = kd_mono_s();
                pthread_mutex_unlock(&h->mu);
            }
            run_round(h);
            last_round = kd_mono_s();
            if (kd_mono_s() - h->last_persist >= h->opt.persist_interval_s) {
                save_table(h);
                h->last_persist = kd_mono_s();
            }
        }
        /* Caches still filling: look again soon rather than a whole interval later. */
        next = kd_mono_s() + (acting && !synced ? 0.2 : h->opt.interval_s);
        pthread_mutex_lock(&h->mu);
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

int schedhost_start(schedhost *h)
{
    if (pthread_create(&h->thread, NULL, host_main, h) != 0)
        return KD_ENOMEM;
    h->started = 1;
    return KD_OK;
}

void schedhost_poke(schedhost *h)
{
    pthread_mutex_lock(&h->mu);
    h->poked = 1;
    pthread_cond_signal(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

void schedhost_set_acting(schedhost *h, int acting)
{
    pthread_mutex_lock(&h->mu);
    h->acting = acting ? 1 : 0;
    if (!acting)
        h->loaded = 0; /* the next term reloads what the leader of the meantime saved */
    h->poked = 1;
    pthread_cond_signal(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

int schedhost_lookup(void *ud, const char *key, rc_sched_info *out)
{
    schedhost *h = ud;
    pthread_mutex_lock(&h->mu);
    sh_job *j = h->acting ? kube_map_get(h->jobs, key) : NULL;
    int have = j != NULL && j->have;
    if (have)
        *out = j->info;
    pthread_mutex_unlock(&h->mu);
    return have;
}

long schedhost_rounds(schedhost *h)
{
    return atomic_load(&h->rounds);
}

void schedhost_stop(schedhost *h)
{
    if (h == NULL || !h->started)
        return;
    pthread_mutex_lock(&h->mu);
    h->stop = 1;
    pthread_cond_signal(&h->cv);
    int save = h->acting && h->loaded;
    pthread_mutex_unlock(&h->mu);
    pthread_join(h->thread, NULL);
    h->started = 0;
    if (save)
        save_table(h);
}

void schedhost_free(schedhost **hp)
{
    if (hp == NULL || *hp == NULL)
        return;
    schedhost *h = *hp;
    if (h->started)
        schedhost_stop(h);
    sched_policy_free(&h->policy);
    kube_map_free(&h->jobs);
    free(h->policy_name);
    free(h->state_ns);
    free(h->state_name);
    free(h->default_qtable);
    if (h->inited) {
        pthread_mutex_destroy(&h->mu);
        pthread_cond_destroy(&h->cv);
    }
    free(h);
    *hp = NULL;
}
