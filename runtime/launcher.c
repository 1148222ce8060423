/* launcher: the distributed `kadet run`. It starts `kadet coordinator` and N
 * `kadet worker` processes of this same binary (/proc/self/exe, so `ps` shows them by
 * role), follows the coordinator's metrics to print progress, and changes N while
 * training: pinned by --agents, forced by --agents-schedule, or decided by the
 * scheduling policy of the job (operator/scheduler, the same code the operator runs)
 * from a snapshot of the local machine (free CPUs) and the job's measured throughput.
 * Scale-up spawns workers (they join at the next step boundary); scale-down sends
 * SIGTERM to the newest workers (they leave at the next step boundary). While the
 * workers' math threads fit the CPUs this process may use, each worker is bound to CPUs
 * of its own (--cpu-bind), as mpirun binds ranks to cores. */
#define _GNU_SOURCE /* sched_setaffinity, cpu_set_t */
#include <dirent.h>
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "kd_curve.h"
#include "kd_error.h"
#include "kd_log.h"
#include "kd_metrics.h"
#include "kd_spec.h"
#include "kd_wire.h"
#include "kd_train.h"
#include "launcher.h"
#include "kd_sched.h"
#include "run_output.h"

#define MAX_WORKERS 64

typedef struct child {
    pid_t pid;        /* 0 = free slot */
    int stopping;     /* SIGTERM sent */
    double started;   /* when it was spawned */
    int block;        /* CPU block it is bound to, -1 = none */
} child;

typedef struct launch {
    const kd_launch_opts *o;
    char exe[4096];
    char dir[64];            /* private temporary directory */
    char ctl_ep[256], met_ep[256];
    pid_t coord;
    child w[MAX_WORKERS];
    int spawned;             /* workers spawned so far (names, sample logs) */
    int target;              /* desired agent count */
    int last_agents;         /* agent count last printed */
    int last_batch;          /* per-agent batch last printed */
    double t0;
    sched_policy *policy;    /* NULL when pinned or scheduled by hand */
    sched_tp tp[MAX_WORKERS]; /* measured throughput by agent count */
    int n_tp;
    double last_change;
    double last_speed;       /* last samples/s reported */
    int cur_agents;          /* agents in the running world (from metrics) */
    double progress;
    char ckpt_dir[4200];     /* checkpoints: --checkpoint-dir or our temporary directory */
    int restarts;            /* coordinator restarts so far */
    int worker_failures;     /* workers that failed since training last made progress */
    long long last_step;     /* highest step the metrics have shown */
    int finished;            /* the job is over (DONE seen): replace no worker */
    int end_printed;         /* the final state line was printed */
    int ckpt_warned;         /* the "checkpoints cannot be written" warning is shown */
    int printed_epoch;       /* last epoch whose progress line was printed */
    double last_line;        /* when the last progress line was printed */
    char why[256];           /* reason of the policy's last decision */
    cpu_set_t avail;         /* CPUs this process may use */
    int cpus[CPU_SETSIZE];   /* their numbers, in order */
    int blocks;              /* CPU blocks of --threads CPUs each; 0 = no binding */
    /* Co-adaptation (docs/scheduler.md): the coordinator's measurements, the goodput
     * model built from them, and the batch the policy chose with the count, sent to the
     * coordinator as the operator would (BATCH, with this run's operator key). */
    sched_cfg cfg[SCHED_GP_MAX_CFG]; /* measured configurations (metrics' configs) */
    int n_cfg;
    double noise;            /* the coordinator's noise scale, 0 = not measured */
    int cur_batch;           /* per-agent batch of the running world */
    double goodput[MAX_WORKERS]; /* goodput model at 1..n agents ... */
    int gbatch[MAX_WORKERS]; /* ... with the batch chosen for each count */
    int decided_batch;       /* the policy's batch, 0 = it does not choose */
    double prior_k;          /* the policy's speed-model prior, for the goodput model */
    double batch_sent_at;    /* when BATCH was last sent */
    char op_pub[KD_CURVE_KEY_LEN + 1], op_sec[KD_CURVE_KEY_LEN + 1]; /* "" = no keys */
    const kd_curve_keys *keys; /* the job's keys (the coordinator's server key) */
    void *ctl;               /* DEALER to the coordinator for BATCH, opened when needed */
} launch;

static volatile sig_atomic_t launch_sigint;

static void on_sigint(int sig)
{
    launch_sigint = sig;
}

/* The CPUs of block b (--threads of them), or every CPU this process may use. */
static void block_set(const launch *l, int b, cpu_set_t *set)
{
    if (b < 0) {
        *set = l->avail;
        return;
    }
    CPU_ZERO(set);
    for (int i = 0; i < l->o->threads; i++)
        CPU_SET(l->cpus[b * l->o->threads + i], set);
}

/* Binds every thread of a running worker (ZeroMQ's and OpenBLAS's too) to set. */
static void bind_threads(pid_t pid, const cpu_set_t *set)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/task", (long)pid);
    DIR *d = opendir(path);
    if (d == NULL)
        return; /* gone: reap will see it */
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        long tid = strtol(e->d_name, NULL, 10);
        if (tid > 0 && sched_setaffinity((pid_t)tid, sizeof *set, set) != 0)
            KD_DEBUG("run: sched_setaffinity tid=%ld: %s", tid, strerror(errno));
    }
    closedir(d);
}

static int live_workers(const launch *l)
{
    int n = 0;
    for (int i = 0; i < MAX_WORKERS; i++)
        n += l->w[i].pid > 0;
    return n;
}

/* A block no live worker holds, or -1. */
static int free_block(const launch *l)
{
    for (int b = 0; b < l->blocks; b++) {
        int used = 0;
        for (int i = 0; i < MAX_WORKERS && !used; i++)
            used = l->w[i].pid > 0 && l->w[i].block == b;
        if (!used)
            return b;
    }
    return -1;
}

/* CPU placement after the workers changed: while every live worker (leaving ones too,
 * until they are gone) can have a block of its own, the unbound ones get one; beyond
 * that the bound ones are released to every CPU, so that the kernel shares the CPUs
 * evenly in a world that waits for its slowest member. Two agents on two vCPUs, each
 * with its ZeroMQ I/O thread on its own CPU, ran 5% faster and spread less (docs/
 * runtime.md). */
static void place_workers(launch *l)
{
    if (l->blocks == 0)
        return;
    int fit = live_workers(l) <= l->blocks;
    for (int i = 0; i < MAX_WORKERS; i++) {
        child *w = &l->w[i];
        if (w->pid <= 0 || (w->block >= 0) == fit)
            continue;
        w->block = fit ? free_block(l) : -1;
        cpu_set_t set;
        block_set(l, w->block, &set);
        bind_threads(w->pid, &set);
        KD_DEBUG("run: worker pid=%ld cpu block %d", (long)w->pid, w->block);
    }
}

static pid_t spawn(launch *l, char *const argv[], int block)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        /* If this launcher dies without stopping its processes (kill -9, SIGPIPE of
         * `kadet run | head`), they get SIGTERM and stop at a step boundary: orphaned
         * workers would otherwise wait for a coordinator for ever. */
        if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != parent)
            _exit(127);
        /* The processes' logs go to the run's log file, not between the progress lines. */
        if (l->o->log_fd >= 0 && (dup2(l->o->log_fd, STDOUT_FILENO) < 0 ||
                                  dup2(l->o->log_fd, STDERR_FILENO) < 0))
            _exit(127);
        /* Before exec, so that every thread the worker starts inherits it. */
        if (block >= 0) {
            cpu_set_t set;
            block_set(l, block, &set);
            sched_setaffinity(0, sizeof set, &set);
        }
        execv(l->exe, argv);
        fprintf(stderr, "kadet run: exec %s: %s\n", l->exe, strerror(errno));
        _exit(127);
    }
    return pid;
}

static int alive_workers(const launch *l)
{
    int n = 0;
    for (int i = 0; i < MAX_WORKERS; i++)
        n += l->w[i].pid > 0 && !l->w[i].stopping;
    return n;
}

static void spawn_worker(launch *l)
{
    int slot = -1;
    for (int i = 0; i < MAX_WORKERS && slot < 0; i++)
        if (l->w[i].pid == 0)
            slot = i;
    if (slot < 0)
        return;
    char name[64], threads[16], log[4200];
    snprintf(name, sizeof name, "w%d-%ld", l->spawned, (long)getpid());
    snprintf(threads, sizeof threads, "%d", l->o->threads);
    char *argv[16];
    int k = 0;
    argv[k++] = "kadet";
    argv[k++] = "worker";
    argv[k++] = "--coordinator";
    argv[k++] = l->ctl_ep;
    argv[k++] = "--name";
    argv[k++] = name;
    argv[k++] = "--threads";
    argv[k++] = threads;
    if (l->o->sample_log_dir != NULL) {
        snprintf(log, sizeof log, "%s/samples-%s.log", l->o->sample_log_dir, name);
        argv[k++] = "--sample-log";
        argv[k++] = log;
    }
    if (l->o->log_level != NULL) {
        argv[k++] = "--log-level";
        argv[k++] = (char *)l->o->log_level;
    }
    /* Local workers talk over Unix domain sockets: same ZeroMQ data plane, without the
     * TCP stack on the loopback path (measured faster for large transfers). */
    char bind[4200];
    if (getenv("KADET_RUN_TCP") == NULL) {
        snprintf(bind, sizeof bind, "ipc://%s/%s.data", l->dir, name);
        argv[k++] = "--bind";
        argv[k++] = bind;
    }
    argv[k] = NULL;
    int block = l->blocks > 0 && live_workers(l) < l->blocks ? free_block(l) : -1;
    pid_t pid = spawn(l, argv, block);
    if (pid > 0) {
        l->w[slot] = (child){pid, 0, kd_now(), block};
        l->spawned++;
    }
}

/* Scale to the target: spawn, or SIGTERM the newest workers. */
static void reconcile(launch *l)
{
    if (l->finished)
        return;
    int n = alive_workers(l);
    while (n < l->target) {
        spawn_worker(l);
        n++;
    }
    while (n > l->target) {
        int newest = -1;
        for (int i = 0; i < MAX_WORKERS; i++)
            if (l->w[i].pid > 0 && !l->w[i].stopping &&
                (newest < 0 || l->w[i].started > l->w[newest].started))
                newest = i;
        if (newest < 0)
            break;
        kill(l->w[newest].pid, SIGTERM);
        l->w[newest].stopping = 1;
        n--;
    }
}

static void reap(launch *l, int *coord_status)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        if (pid == l->coord) {
            *coord_status = status;
            l->coord = 0;
            continue;
        }
        for (int i = 0; i < MAX_WORKERS; i++)
            if (l->w[i].pid == pid) {
                int ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
                if (!l->w[i].stopping && !ok) {
                    KD_WARN("run: worker exited unexpectedly pid=%ld status=%d", (long)pid,
                            status);
                    l->worker_failures++;
                }
                /* Unasked, a worker exits 0 only on the coordinator's DONE: the job is
                 * over (a coordinator that found it complete answers every JOIN so),
                 * and a replacement would only be told the same. */
                if (!l->w[i].stopping && ok)
                    l->finished = 1;
                l->w[i].pid = 0;
            }
    }
}

/* --agents-schedule "0:2,30:4": the count of the last entry whose time has come. */
static int scheduled_count(const char *sched, double t)
{
    int count = -1;
    const char *p = sched;
    while (p != NULL && *p != '\0') {
        double at;
        int n, used = 0;
        if (sscanf(p, "%lf:%d%n", &at, &n, &used) != 2)
            return count;
        if (t >= at)
            count = n;
        p = strchr(p + used, ',');
        if (p != NULL)
            p++;
    }
    return count;
}

int kd_launch_schedule_valid(const char *sched, int lo, int hi)
{
    const char *p = sched;
    double prev = -1;
    while (*p != '\0') {
        double at;
        int n, used = 0;
        if (sscanf(p, "%lf:%d%n", &at, &n, &used) != 2 || at < prev || at < 0 || n < lo ||
            n > hi)
            return -1;
        prev = at;
        p += used;
        if (*p == ',')
            p++;
        else if (*p != '\0')
            return -1;
    }
    return prev < 0 ? -1 : 0;
}

/* The scheduling interface: a snapshot of this machine and the job in, the desired
 * agent count out, from the job's policy (the same code the operator runs). */
static int policy_decide(launch *l)
{
    const kd_agentjob *job = l->o->job;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    sched_node node = {.cpu = ncpu > 0 ? (double)ncpu : 1.0, .mem = 0, .slots = 0};
    sched_job sj = {
        .id = "local",
        .min = job->agents_min,
        .max = job->agents_max,
        .pin = 0,
        .request = job->replicas > 0 ? job->replicas : 0,
        .cpu_per_agent = (double)l->o->threads,
        .current = alive_workers(l),
        .age_s = kd_now() - l->t0,
        .attained_s = 0,
        .since_change_s = kd_now() - l->last_change,
        .tp = l->tp,
        .n_tp = l->n_tp,
        .progress = l->progress,
        .alpha = job->weight_time,
        .beta = job->weight_cost,
        .priority = job->priority,
    };
    /* The goodput model from the coordinator's measurements, the batch within the job's
     * bounds (a policy that allocates by goodput then chooses it with the count). */
    if (l->n_cfg > 0) {
        sched_goodput_in gi = {l->cfg, l->n_cfg, l->noise,
                               l->decided_batch > 0 ? l->decided_batch
                               : l->cur_batch > 0   ? l->cur_batch
                                                    : job->batch_size,
                               job->batch_size, kd_spec_batch_ceiling(job, job->batch_size),
                               l->prior_k};
        sched_job_set_goodput(&sj, &gi,
                              job->agents_max < MAX_WORKERS ? job->agents_max : MAX_WORKERS,
                              job->adaptive_batch, l->goodput, l->gbatch);
    }
    sched_snapshot s = {.nodes = &node, .n_nodes = 1, .jobs = &sj, .n_jobs = 1,
                        .interval_s = 5.0, .restart_s = 1.0};
    sched_decision d;
    char err[256];
    if (sched_decide(l->policy, &s, &d, err, sizeof err) != KD_OK) {
        KD_WARN("run: scheduler: %s", err);
        return l->target;
    }
    if (d.desired > 0) {
        /* Some policies name themselves in the reason ("rl: ..."): once is enough. */
        const char *name = sched_policy_name(l->policy), *reason = d.reason;
        size_t nl = strlen(name);
        if (strncmp(reason, name, nl) == 0 && strncmp(reason + nl, ": ", 2) == 0)
            reason += nl + 2;
        snprintf(l->why, sizeof l->why, "scheduler %s: %s", name, reason);
        if (d.batch > 0 && d.batch != l->decided_batch)
            KD_INFO("run: scheduler %s chose batch=%d agents=%d noise_scale=%.0f", name,
                    d.batch, d.desired, l->noise);
        if (d.batch > 0)
            l->decided_batch = d.batch;
    }
    return d.desired > 0 ? d.desired : l->target;
}

/* Sends the policy's batch to the coordinator while the running world has another one,
 * at most every 5 s: a BATCH message over CURVE with this run's operator key, the one
 * sender the coordinator takes it from (docs/security.md). */
static void send_batch(launch *l, void *zctx)
{
    if (l->decided_batch <= 0 || l->decided_batch == l->cur_batch || l->op_pub[0] == '\0' ||
        l->ctl_ep[0] == '\0' || kd_now() - l->batch_sent_at < 5.0)
        return;
    l->batch_sent_at = kd_now();
    if (l->ctl == NULL) {
        int linger = 0;
        l->ctl = zmq_socket(zctx, ZMQ_DEALER);
        if (l->ctl == NULL)
            return;
        zmq_setsockopt(l->ctl, ZMQ_LINGER, &linger, sizeof linger);
        if (kd_curve_client(l->ctl, l->keys->pub, l->op_pub, l->op_sec) != 0 ||
            zmq_connect(l->ctl, l->ctl_ep) != 0) {
            KD_WARN("run: cannot reach the coordinator for the batch: %s",
                    zmq_strerror(zmq_errno()));
            zmq_close(l->ctl);
            l->ctl = NULL;
            return;
        }
    }
    char body[KD_WIRE_BATCH_BODY_MAX];
    unsigned char hdr[KD_WIRE_HDR_SIZE];
    size_t n = kd_wire_batch_encode(l->decided_batch, hdr, body);
    if (zmq_send(l->ctl, hdr, sizeof hdr, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
        zmq_send(l->ctl, body, n, ZMQ_DONTWAIT) < 0)
        KD_DEBUG("run: batch not sent: %s", zmq_strerror(zmq_errno()));
    else
        KD_INFO("run: batch %d sent to the coordinator (running %d)", l->decided_batch,
                l->cur_batch);
}

static void record_speed(launch *l, int agents, double speed)
{
    if (agents <= 0 || speed <= 0)
        return;
    for (int i = 0; i < l->n_tp; i++)
        if (l->tp[i].agents == agents) {
            l->tp[i].samples_per_s = 0.7 * l->tp[i].samples_per_s + 0.3 * speed;
            return;
        }
    if (l->n_tp < MAX_WORKERS)
        l->tp[l->n_tp++] = (sched_tp){agents, speed};
}

/* The progress line of an evaluated epoch, from its record in the coordinator's metrics
 * (last_epoch: epoch, accuracy, train_loss, lr, samples_per_s, agents, batch). */
static void print_epoch(launch *l, const kd_metrics_epoch *rec, int epochs)
{
    kd_run_line line = {
        .t = kd_now() - l->t0,
        .epoch = rec->epoch,
        .epochs = epochs,
        .agents = rec->agents,
        .batch = rec->batch,
        .lr = (rec->has & KD_MET_EPOCH_LR) ? rec->lr : -1.0,
        .loss = rec->train_loss,
        .evaluated = 1,
        .test_acc = rec->accuracy,
        .samples_per_s = rec->samples_per_s,
    };
    if (l->o->quiet)
        return;
    kd_run_line_print(stdout, &line);
    l->printed_epoch = line.epoch;
    l->last_line = kd_now();
}

/* A line while an epoch runs, when no epoch ended for a while (long epochs). */
static void print_running(launch *l, const kd_metrics *m)
{
    kd_run_line line = {
        .t = kd_now() - l->t0,
        .epoch = (int)m->epoch,
        .epochs = m->epochs,
        .agents = m->agents,
        .batch = m->batch,
        .lr = (m->has & KD_MET_LR) ? m->lr : -1.0,
        .loss = m->loss,
        .evaluated = m->epochs_done > 0,
        .test_acc = m->accuracy,
        .samples_per_s = m->samples_per_s,
        .in_progress = 1,
    };
    kd_run_line_print(stdout, &line);
    l->last_line = kd_now();
}

#define LAUNCH_QUIET_LINE_S 10.0 /* a running line when no epoch ended for this long */

static void on_metrics(launch *l, const char *text, size_t len)
{
    kd_metrics *m = malloc(sizeof *m);
    char err[256];
    if (m == NULL)
        return;
    if (kd_metrics_decode(text, len, m, err, sizeof err) != KD_OK) {
        KD_DEBUG("run: metrics dropped: %s", err);
        free(m);
        return;
    }
    int agents = m->agents, epoch = (int)m->epoch, epochs = m->epochs;
    double sps = m->samples_per_s;
    const char *state = (m->has & KD_MET_STATE) ? m->state : NULL;
    const char *ckpt = (m->has & KD_MET_CHECKPOINT) ? m->checkpoint : NULL;
    if (ckpt != NULL && strcmp(ckpt, "failing") == 0 && !l->ckpt_warned) {
        const char *why = (m->has & KD_MET_CHECKPOINT_ERROR) ? m->checkpoint_error : NULL;
        fprintf(stderr,
                "kadet run: warning: checkpoints cannot be written (%s); training goes on, "
                "but a restarted coordinator would resume from an older checkpoint or from "
                "epoch 0\n",
                why != NULL ? why : "no detail");
        l->ckpt_warned = 1;
    } else if (ckpt != NULL && strcmp(ckpt, "ok") == 0 && l->ckpt_warned) {
        fprintf(stderr, "kadet run: checkpoints are written again\n");
        l->ckpt_warned = 0;
    }
    if (m->step > l->last_step) {
        l->last_step = m->step;
        l->worker_failures = 0;
    }
    if (m->has & KD_MET_CONFIGS) {
        l->n_cfg = 0;
        for (int i = 0; i < m->n_configs && l->n_cfg < SCHED_GP_MAX_CFG; i++)
            if (m->configs[i].step_ms > 0)
                l->cfg[l->n_cfg++] = (sched_cfg){m->configs[i].agents, m->configs[i].batch,
                                                 m->configs[i].step_ms / 1000.0,
                                                 m->configs[i].compute_ms / 1000.0};
    }
    if (m->has & KD_MET_NOISE)
        l->noise = m->noise_scale;
    /* Every newly evaluated epoch gets its line (the coordinator publishes at each). */
    if ((m->has & KD_MET_LAST_EPOCH) && m->last_epoch.epoch > l->printed_epoch)
        print_epoch(l, &m->last_epoch, epochs);
    if (state != NULL && (strcmp(state, "succeeded") == 0 || strcmp(state, "failed") == 0)) {
        l->finished = l->end_printed = 1;
        free(m);
        return;
    }
    if (state != NULL && strcmp(state, "running") == 0) {
        if (agents != l->cur_agents)
            l->last_change = kd_now();
        l->cur_agents = agents;
        /* Skip the first seconds after a change: they include the rescale itself. */
        if (kd_now() - l->last_change > 2.0)
            record_speed(l, agents, sps);
        if (epochs > 0)
            l->progress = (double)(epoch - 1) / epochs;
        if (!l->o->quiet && kd_now() - l->last_line >= LAUNCH_QUIET_LINE_S)
            print_running(l, m);
    }
    int batch = m->batch;
    if (l->last_batch > 0 && batch != l->last_batch && state != NULL &&
        strcmp(state, "running") == 0) {
        if (batch == l->decided_batch)
            printf("[%6.1fs] batch %d -> %d per agent (scheduler %s: goodput with the "
                   "measured gradient noise)\n",
                   kd_now() - l->t0, l->last_batch, batch, sched_policy_name(l->policy));
        else
            printf("[%6.1fs] batch %d -> %d per agent (adaptive: measured gradient noise)\n",
                   kd_now() - l->t0, l->last_batch, batch);
        fflush(stdout);
    }
    if (state != NULL && strcmp(state, "running") == 0) {
        l->last_agents = agents;
        l->last_batch = batch;
        l->cur_batch = batch;
    }
    free(m);
}

static int read_endpoints(launch *l, const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    char line[300];
    int got = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, "control=", 8) == 0)
            got |= snprintf(l->ctl_ep, sizeof l->ctl_ep, "%s", line + 8) > 0;
        if (strncmp(line, "metrics=", 8) == 0)
            got |= (snprintf(l->met_ep, sizeof l->met_ep, "%s", line + 8) > 0) << 1;
    }
    fclose(f);
    return got == 3 ? 0 : -1;
}

static void start_coordinator(launch *l, const char *epfile, const char *summary)
{
    char seed[32], epochs[16], maxs[32], initial[16], batch[16], maxa[16];
    snprintf(seed, sizeof seed, "%llu", l->o->seed);
    snprintf(epochs, sizeof epochs, "%d", l->o->epochs);
    snprintf(maxs, sizeof maxs, "%ld", l->o->max_samples);
    snprintf(initial, sizeof initial, "%d", l->target);
    snprintf(batch, sizeof batch, "%d", l->o->batch);
    snprintf(maxa, sizeof maxa, "%d", l->o->job->agents_max > l->target
                                          ? l->o->job->agents_max : l->target);
    char *argv[48];
    int k = 0;
    argv[k++] = "kadet";
    argv[k++] = "coordinator";
    argv[k++] = "--job";
    argv[k++] = (char *)l->o->file;
    /* A restarted coordinator binds the same endpoints, so that the workers (which keep
     * reconnecting) and our metrics subscription find it again. */
    argv[k++] = "--bind";
    argv[k++] = l->ctl_ep[0] != '\0' ? l->ctl_ep : "tcp://127.0.0.1:*";
    argv[k++] = "--metrics-bind";
    argv[k++] = l->met_ep[0] != '\0' ? l->met_ep : "tcp://127.0.0.1:*";
    argv[k++] = "--endpoint-file";
    argv[k++] = (char *)epfile;
    argv[k++] = "--summary-json";
    argv[k++] = (char *)summary;
    argv[k++] = "--seed";
    argv[k++] = seed;
    argv[k++] = "--initial-agents";
    argv[k++] = initial;
    argv[k++] = "--max-agents";
    argv[k++] = maxa;
    if (l->o->epochs > 0) {
        argv[k++] = "--epochs";
        argv[k++] = epochs;
    }
    if (l->o->batch > 0) {
        argv[k++] = "--batch-size";
        argv[k++] = batch;
    }
    if (l->o->max_samples > 0) {
        argv[k++] = "--max-samples";
        argv[k++] = maxs;
    }
    const char *pairs[][2] = {{"--data", l->o->data},
                              {"--lr-scaling", l->o->lr_scaling},
                              {"--checkpoint-dir", l->ckpt_dir},
                              {"--range-log", l->o->range_log},
                              {"--log-level", l->o->log_level}};
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++)
        if (pairs[i][1] != NULL) {
            argv[k++] = (char *)pairs[i][0];
            argv[k++] = (char *)pairs[i][1];
        }
    argv[k] = NULL;
    l->coord = spawn(l, argv, -1);
}

static void stop_all(launch *l)
{
    for (int i = 0; i < MAX_WORKERS; i++)
        if (l->w[i].pid > 0)
            kill(l->w[i].pid, SIGTERM);
    if (l->coord > 0)
        kill(l->coord, SIGTERM);
    double until = kd_now() + 8.0;
    int st;
    while (kd_now() < until) {
        int left = l->coord > 0;
        reap(l, &st);
        for (int i = 0; i < MAX_WORKERS; i++)
            left += l->w[i].pid > 0;
        if (left == 0)
            return;
        usleep(20000);
    }
    for (int i = 0; i < MAX_WORKERS; i++)
        if (l->w[i].pid > 0)
            kill(l->w[i].pid, SIGKILL);
    if (l->coord > 0)
        kill(l->coord, SIGKILL);
    while (waitpid(-1, &st, 0) > 0) {
    }
}

int kd_launch_run(const kd_launch_opts *o, json_t **summary_out)
{
    *summary_out = NULL;
    launch *l = calloc(1, sizeof *l);
    if (l == NULL)
        return 1;
    l->o = o;
    l->t0 = l->last_change = kd_now();
    snprintf(l->why, sizeof l->why, "spec.agents.min");
    ssize_t n = readlink("/proc/self/exe", l->exe, sizeof l->exe - 1);
    if (n <= 0) {
        fprintf(stderr, "kadet run: cannot find my own executable\n");
        free(l);
        return 1;
    }
    l->exe[n] = '\0';
    if (o->cpu_bind && sched_getaffinity(0, sizeof l->avail, &l->avail) == 0) {
        int ncpu = 0;
        for (int c = 0; c < CPU_SETSIZE; c++)
            if (CPU_ISSET(c, &l->avail))
                l->cpus[ncpu++] = c;
        l->blocks = o->threads > 0 ? ncpu / o->threads : 0;
    }
    snprintf(l->dir, sizeof l->dir, "/tmp/kadet-run.XXXXXX");
    if (mkdtemp(l->dir) == NULL) {
        fprintf(stderr, "kadet run: mkdtemp: %s\n", strerror(errno));
        free(l);
        return 1;
    }
    /* Ephemeral job keys, readable only by us, for every process of this run (they
     * inherit KADET_KEYS_DIR); removed at exit. KADET_RUN_NO_KEYS=1 runs unauthenticated
     * (the benchmark's "none" row). */
    char keydir[128];
    static kd_curve_keys keys;
    snprintf(keydir, sizeof keydir, "%s/keys", l->dir);
    const char *nokeys = getenv("KADET_RUN_NO_KEYS");
    if (nokeys != NULL && strcmp(nokeys, "1") == 0) {
        unsetenv(KD_CURVE_ENV);
        keydir[0] = '\0';
    } else {
        char kerr[600] = "";
        errno = 0;
        if (mkdir(keydir, 0700) != 0 || kd_curve_make(keydir, kerr, sizeof kerr) != KD_OK ||
            /* This run's operator keypair (the launcher hosts the policy, as the operator
             * does): the coordinator admits it and takes BATCH from it only. */
            kd_curve_make_operator(keydir, l->op_pub, l->op_sec, kerr, sizeof kerr) != KD_OK ||
            kd_curve_load(keydir, &keys, kerr, sizeof kerr) != KD_OK) {
            fprintf(stderr, "kadet run: cannot make the job's keys in %s: %s\n", keydir,
                    kerr[0] != '\0' ? kerr : strerror(errno));
            kd_curve_unmake(keydir);
            rmdir(keydir);
            rmdir(l->dir);
            free(l);
            return 1;
        }
        setenv(KD_CURVE_ENV, keydir, 1);
        l->keys = &keys;
        setenv("KADET_DATA_PLANE", kd_spec_data_plane_name(o->job->data_plane), 1);
    }
    char epfile[128], summary[128];
    snprintf(epfile, sizeof epfile, "%s/endpoints", l->dir);
    snprintf(summary, sizeof summary, "%s/summary.json", l->dir);
    const kd_agentjob *job = o->job;
    /* A local run checkpoints into its own directory unless told otherwise: the spec's
     * path is usually a pod volume (/checkpoints) that does not exist here. */
    if (o->checkpoint_dir != NULL)
        snprintf(l->ckpt_dir, sizeof l->ckpt_dir, "%s", o->checkpoint_dir);
    else
        snprintf(l->ckpt_dir, sizeof l->ckpt_dir, "%s/checkpoints", l->dir);
    if (o->agents > 0)
        l->target = o->agents;
    else if (o->schedule != NULL)
        l->target = scheduled_count(o->schedule, 0) > 0 ? scheduled_count(o->schedule, 0)
                                                        : job->agents_min;
    else {
        char err[256];
        sched_options so;
        sched_options_default(&so);
        so.learn = 0; /* a local run acts on what the policy knows; it does not explore */
        l->prior_k = so.prior_k; /* the operator's scheduler host uses the same */
        const char *name = kd_spec_policy_name(job->policy);
        if (sched_policy_create(name, &so, &l->policy, err, sizeof err) != KD_OK) {
            KD_WARN("run: scheduler %s unavailable (%s), using greedy", name, err);
            sched_policy_create("greedy", &so, &l->policy, err, sizeof err);
        }
        l->target = job->replicas > 0 ? job->replicas : job->agents_min;
        if (l->policy != NULL)
            l->target = policy_decide(l);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    int rc = 1, coord_status = -1;
    void *zctx = zmq_ctx_new(), *sub = NULL;
    start_coordinator(l, epfile, summary);
    double until = kd_now() + 15.0;
    while (read_endpoints(l, epfile) != 0) {
        reap(l, &coord_status);
        if (l->coord == 0 || kd_now() > until) {
            fprintf(stderr, "kadet run: the coordinator did not start\n");
            goto out;
        }
        usleep(20000);
    }
    sub = zmq_socket(zctx, ZMQ_SUB);
    /* Metrics are one short JSON object; a longer frame is not from our coordinator
     * (libzmq would allocate whatever length a stray peer announces). */
    int64_t max_frame = 64 * 1024;
    zmq_setsockopt(sub, ZMQ_MAXMSGSIZE, &max_frame, sizeof max_frame);
    zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "", 0);
    if (keys.enabled)
        kd_curve_job_client(sub, &keys, 0);
    zmq_connect(sub, l->met_ep);
    KD_INFO("run: coordinator pid=%ld control=%s agents=%d", (long)l->coord, l->ctl_ep,
            l->target);
    printf("[%6.1fs] starting %d agent%s (%s)\n", kd_now() - l->t0, l->target,
           l->target == 1 ? "" : "s",
           o->agents > 0 ? "--agents" : o->schedule != NULL ? "--agents-schedule" : l->why);
    fflush(stdout);
    l->last_line = kd_now();
    reconcile(l);
    place_workers(l);
    double last_decide = kd_now();
    for (;;) {
        if (l->coord == 0 && coord_status != -1 &&
            !(WIFEXITED(coord_status) && WEXITSTATUS(coord_status) == 0) &&
            l->restarts < job->backoff_limit && !launch_sigint) {
            /* kill -9 of the coordinator: start it again; it resumes from the latest
             * checkpoint (or the workers' newer state) and the workers rejoin it. */
            l->restarts++;
            printf("[%6.1fs] coordinator died (status %d), restart %d/%d\n", kd_now() - l->t0,
                   coord_status, l->restarts, job->backoff_limit);
            fflush(stdout);
            coord_status = -1;
            start_coordinator(l, epfile, summary);
        }
        if (l->coord == 0 || launch_sigint)
            break;
        zmq_pollitem_t it = {sub, 0, ZMQ_POLLIN, 0};
        zmq_poll(&it, 1, 100);
        static char buf[KD_METRICS_TEXT_MAX];
        int len;
        /* A frame longer than the buffer was truncated by zmq_recv: not a message. */
        while ((len = zmq_recv(sub, buf, sizeof buf, ZMQ_DONTWAIT)) > 0)
            if ((size_t)len <= sizeof buf)
                on_metrics(l, buf, (size_t)len);
        reap(l, &coord_status);
        /* Workers that fail again and again before a step is trained (a missing dataset,
         * a model that does not fit) would otherwise be respawned for ever. */
        if (l->worker_failures >= 3 * (l->target > 0 ? l->target : 1) + job->backoff_limit) {
            fprintf(stderr, "kadet run: %d workers failed without training a step; "
                    "their errors follow\n", l->worker_failures);
            goto out;
        }
        double t = kd_now() - l->t0;
        int want = l->target;
        if (o->agents > 0)
            want = o->agents;
        else if (o->schedule != NULL) {
            int s = scheduled_count(o->schedule, t);
            if (s > 0)
                want = s;
        } else if (l->policy != NULL && kd_now() - last_decide > 5.0) {
            want = policy_decide(l);
            last_decide = kd_now();
        }
        if (l->policy != NULL && l->keys != NULL)
            send_batch(l, zctx);
        if (want != l->target) {
            printf("[%6.1fs] agents %d -> %d (%s)\n", t, l->target, want,
                   o->schedule != NULL ? "--agents-schedule" : l->why);
            fflush(stdout);
            l->target = want;
            l->last_change = kd_now();
        }
        if (l->coord > 0)
            reconcile(l);
        place_workers(l);
    }
    if (launch_sigint) {
        fprintf(stderr, "kadet run: interrupted\n");
        rc = 128 + (int)launch_sigint; /* 130 for Ctrl-C, as shells report it */
        goto out;
    }
    /* The coordinator is gone: the workers got DONE and exit on their own. */
    until = kd_now() + 5.0;
    while (alive_workers(l) + 0 > 0 && kd_now() < until) {
        reap(l, &coord_status);
        int left = 0;
        for (int i = 0; i < MAX_WORKERS; i++)
            left += l->w[i].pid > 0;
        if (left == 0)
            break;
        usleep(20000);
    }
    if (!(WIFEXITED(coord_status) && WEXITSTATUS(coord_status) == 0)) {
        fprintf(stderr, "kadet run: the coordinator failed (status %d)\n", coord_status);
        goto out;
    }
    json_error_t e;
    *summary_out = json_load_file(summary, 0, &e);
    if (*summary_out == NULL) {
        fprintf(stderr, "kadet run: no summary from the coordinator: %s\n", e.text);
        goto out;
    }
    rc = 0;
out:
    stop_all(l);
    if (rc == 1 && o->log_path != NULL) {
        fprintf(stderr, "kadet run: the last warnings and errors of the coordinator and "
                        "workers (all in %s):\n", o->log_path);
        if (kd_run_log_show_errors(o->log_path, stderr, 8) == 0)
            fprintf(stderr, "  (none)\n");
    }
    if (sub != NULL)
        zmq_close(sub);
    if (l->ctl != NULL)
        zmq_close(l->ctl);
    memset(l->op_sec, 0, sizeof l->op_sec);
    zmq_ctx_term(zctx);
    sched_policy_free(&l->policy);
    unlink(epfile);
    unlink(summary);
    if (o->checkpoint_dir == NULL) {
        const char *names[] = {"checkpoint.kdc", "checkpoint.prev.kdc", "checkpoint.tmp"};
        char p[4400];
        for (int i = 0; i < 3; i++) {
            snprintf(p, sizeof p, "%s/%s", l->ckpt_dir, names[i]);
            unlink(p);
        }
        rmdir(l->ckpt_dir);
    }
    if (keydir[0] != '\0') {
        kd_curve_unmake(keydir);
        rmdir(keydir);
    }
    rmdir(l->dir);
    free(l);
    return rc;
}
