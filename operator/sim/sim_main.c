/*
 * sim_main.c: the kadet-sim command line. Replays a workload under one or more policies
 * and prints (and optionally writes as JSON) the JCT statistics, or trains the rl policy
 * over a set of workloads and saves its Q-table in the format the operator loads.
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kd_clock.h"
#include "kd_cli.h"
#include "kd_clock.h"
#include "kd_error.h"
#include "kd_sched.h"
#include "opconfig.h"
#include "sched_qtable.h"
#include "sim.h"

#ifndef KADET_QTABLE_DEFAULT
#define KADET_QTABLE_DEFAULT "qtable-default.json"
#endif

/* Returns the next comma-separated item of *cur (NUL-terminating it in place) or NULL. */
static char *next_item(char **cur)
{
    while (*cur && **cur == ',')
        (*cur)++;
    if (!*cur || **cur == '\0')
        return NULL;
    char *item = *cur, *c = strchr(item, ',');
    if (c) {
        *c = '\0';
        *cur = c + 1;
    } else {
        *cur = NULL;
    }
    return item;
}

typedef struct sim_cli {
    const char *workload, *traces, *policies, *qtable, *summary, *train_wl, *jobs_csv;
    const char *train_init; /* table to continue training from */
    const char *train_baseline; /* --train-baseline: policy of the difference reward, "none" */
    int train, quiet, double_q, min_visits;
    long seed;
    double cooldown, margin;
    int n_las;          /* -1 = the policy core's default thresholds */
    double las_s[SCHED_LAS_MAX];
    sim_config cfg;
} sim_cli;

/* --batch-model: fixed or goodput (target: sim_config.batch_model). */
static int set_batch_model(void *target, const char *v, char *err, size_t errlen)
{
    int *model = target;
    if (strcmp(v, "fixed") == 0)
        *model = SIM_BATCH_FIXED;
    else if (strcmp(v, "goodput") == 0)
        *model = SIM_BATCH_GOODPUT;
    else
        return kd_errf(err, errlen, KD_EINVAL, "expected fixed or goodput, got \"%s\"", v);
    return KD_OK;
}

/* --tiresias-thresholds: ascending agent-hours, stored as seconds (target: sim_cli). */
static int set_las(void *target, const char *v, char *err, size_t errlen)
{
    sim_cli *cli = target;
    char buf[256], *cur = buf;
    if (strlen(v) >= sizeof(buf))
        return kd_errf(err, errlen, KD_ERANGE, "too long (at most %zu characters)",
                       sizeof(buf) - 1);
    snprintf(buf, sizeof(buf), "%s", v);
    int n = 0;
    for (char *tok = next_item(&cur); tok; tok = next_item(&cur)) {
        char *end;
        errno = 0;
        double x = strtod(tok, &end);
        if (n == SCHED_LAS_MAX)
            return kd_errf(err, errlen, KD_ERANGE, "at most %d thresholds", SCHED_LAS_MAX);
        if (end == tok || *end != '\0' || errno || !isfinite(x) || x < 1e-6 || x > 1e9)
            return kd_errf(err, errlen, KD_EINVAL,
                           "expected agent-hours in 1e-06..1e+09, got \"%s\"", tok);
        if (n > 0 && x * 3600.0 <= cli->las_s[n - 1])
            return kd_errf(err, errlen, KD_EINVAL, "thresholds must ascend, got \"%s\"", v);
        cli->las_s[n++] = x * 3600.0;
    }
    if (n == 0)
        return kd_errf(err, errlen, KD_EINVAL, "needs at least one value");
    cli->n_las = n;
    return KD_OK;
}

static const char sim_summary[] =
    "Replays a workload (CSV: name,time,application,num_replicas,batch_size) on a simulated\n"
    "cluster under each policy and reports average, p50 and p99 job completion time,\n"
    "makespan, utilisation and rescales per job; or, with --train, trains the rl policy\n"
    "over a set of workloads and saves its Q-table in the format kadet-operator loads.\n"
    "\n"
    "  kadet-sim --workload CSV [--policy P[,P...]] [options]\n"
    "  kadet-sim --train EPISODES --train-workloads CSV[,CSV...] --qtable OUT [options]";

static const char sim_footer[] =
    "Traces (per-application step times and statistical efficiency) come from the Pollux\n"
    "artifact (OSDI'21; this project keeps them in shared/data/pollux, see its SOURCE.md).\n"
    "kadet-sim looks for them, in order, in:\n"
    "  1. --traces DIR\n"
    "  2. $KADET_POLLUX_DIR/traces\n"
    "  3. the traces folder beside the workload's folder (DIR/../traces for DIR/W.csv: the\n"
    "     artifact's layout, workloads/ and traces/ side by side; with --train, the first\n"
    "     training workload's)\n"
    "and says where it looked when none is there.\n"
    "\n"
    "environment:\n"
    "  KADET_POLLUX_DIR   the Pollux data folder (holding traces/), see above\n"
    "  KADET_QTABLE       rl: the table to load when --qtable is not given; without either\n"
    "                     the shipped table (share/kadet/qtable-default.json beside the\n"
    "                     binary's bin/, then /usr/share/kadet, then the source tree's)\n"
    "\n"
    "exit status: 0 done, 1 a run or a write failed, 2 bad usage or input.\n";

/* Parses argv into cli. Returns 0 to run, 1 when help or the version was printed (exit
 * 0), 2 on a usage error (already reported). */
static int parse_args(int argc, char **argv, sim_cli *cli)
{
    long long train, nodes, slots, min_visits, seed;
    memset(cli, 0, sizeof(*cli));
    sim_config_default(&cli->cfg);
    cli->policies = "rl";
    cli->train_baseline = "auto";
    cli->seed = 1;
    cli->min_visits = -1;
    cli->margin = -1;
    cli->n_las = -1;
    train = 0;
    nodes = cli->cfg.nodes;
    slots = cli->cfg.slots;
    min_visits = -1;
    seed = cli->seed;
    const kd_cli_opt opts[] = {
        {.name = "workload", .type = KD_CLI_STR, .target = &cli->workload, .metavar = "CSV",
         .help = "workload to replay"},
        {.name = "policy", .type = KD_CLI_STR, .target = &cli->policies, .metavar = "LIST",
         .help = "comma list of static, tiresias, fair, greedy, pollux, rl", .def = "rl"},
        {.name = "traces", .type = KD_CLI_STR, .target = &cli->traces, .metavar = "DIR",
         .help = "Pollux traces folder (search order below)"},
        {.name = "qtable", .type = KD_CLI_STR, .target = &cli->qtable, .metavar = "FILE",
         .help = "rl: table to load (else $KADET_QTABLE, the shipped one); --train: saved here"},
        {.name = "summary-json", .type = KD_CLI_STR, .target = &cli->summary,
         .metavar = "PATH",
         .help = "write avg_jct, p50_jct, p99_jct, makespan, utilization, rescales as JSON"},
        {.name = "jobs-csv", .type = KD_CLI_STR, .target = &cli->jobs_csv, .metavar = "PATH",
         .help = "write one row per job (policy,name,application,arrival,...,jct)"},
        {.name = "train", .type = KD_CLI_INT, .target = &train, .lo = 1, .hi = 1e6,
         .metavar = "EPISODES", .help = "train rl for EPISODES episodes (workloads in turn)"},
        {.name = "train-workloads", .type = KD_CLI_STR, .target = &cli->train_wl,
         .metavar = "CSV[,CSV...]", .help = "workloads to train on"},
        {.name = "train-init", .type = KD_CLI_STR, .target = &cli->train_init,
         .metavar = "FILE", .help = "continue training from this table (its epsilon is reset)"},
        {.name = "train-baseline", .type = KD_CLI_STR, .target = &cli->train_baseline,
         .metavar = "auto|POLICY|none",
         .help = "rl's cluster reward relative to this policy on the same arrivals "
                 "(difference reward), or none; auto = greedy on the fixed batch model, "
                 "none on the goodput model", .def = "auto"},
        {.name = "nodes", .type = KD_CLI_INT, .target = &nodes, .lo = 1, .hi = 10000,
         .help = "nodes", .def = "16"},
        {.name = "slots", .type = KD_CLI_INT, .target = &slots, .lo = 1, .hi = 1024,
         .help = "agent slots per node", .def = "4"},
        {.name = "interval", .type = KD_CLI_DBL, .target = &cli->cfg.interval_s, .lo = 1,
         .hi = 86400, .metavar = "SECONDS", .help = "scheduling interval", .def = "60"},
        {.name = "restart", .type = KD_CLI_DBL, .target = &cli->cfg.restart_s, .lo = 0,
         .hi = 86400, .metavar = "SECONDS", .help = "stall on every change of a job's count",
         .def = "30"},
        {.name = "max-factor", .type = KD_CLI_DBL, .target = &cli->cfg.max_factor, .lo = 1,
         .hi = 1000, .metavar = "F", .help = "a job may grow to ceil(F * num_replicas) agents",
         .def = "2"},
        {.name = "alpha", .type = KD_CLI_DBL, .target = &cli->cfg.alpha, .lo = 0, .hi = 1e6,
         .metavar = "A", .help = "reward weight on time", .def = "1"},
        {.name = "beta", .type = KD_CLI_DBL, .target = &cli->cfg.beta, .lo = 0, .hi = 1e6,
         .metavar = "B", .help = "reward weight on cost", .def = "0"},
        {.name = "cooldown", .type = KD_CLI_DBL, .target = &cli->cooldown, .lo = 0,
         .hi = 86400, .metavar = "SECONDS", .help = "seconds between two changes of one job",
         .def = "0"},
        {.name = "seed", .type = KD_CLI_INT, .target = &seed, .lo = 0, .hi = 1e15,
         .help = "rl exploration seed", .def = "1"},
        {.name = "double-q", .type = KD_CLI_FLAG, .target = &cli->double_q,
         .help = "rl: Double Q-learning"},
        {.name = "min-visits", .type = KD_CLI_INT, .target = &min_visits, .lo = 1, .hi = 1e9,
         .help = "rl: updates before a learned Q counts", .def = "300"},
        {.name = "margin", .type = KD_CLI_DBL, .target = &cli->margin, .lo = 0, .hi = 1e3,
         .metavar = "M", .help = "rl: relative Q advantage needed to depart from greedy",
         .def = "0"},
        {.name = "batch-model", .type = KD_CLI_FUNC, .target = &cli->cfg.batch_model,
         .set = set_batch_model, .metavar = "fixed|goodput",
         .help = "fixed: a job keeps its batch and length; goodput: the Pollux artifact's",
         .def = "fixed"},
        {.name = "tiresias-thresholds", .type = KD_CLI_FUNC, .target = cli, .set = set_las,
         .metavar = "H[,H...]",
         .help = "tiresias queue limits in agent-hours, ascending (the artifact: 16)",
         .def = "1,10"},
        {.name = "trace-job", .type = KD_CLI_STR, .target = &cli->cfg.trace_job,
         .metavar = "NAME", .help = "print every decision about job NAME to stderr"},
        {.name = "quiet", .type = KD_CLI_FLAG, .target = &cli->quiet,
         .help = "print only the table"},
    };
    const kd_cli kc = {.prog = "kadet-sim", .args = "", .summary = sim_summary, .opts = opts,
                       .n_opts = (int)(sizeof(opts) / sizeof(opts[0])), .footer = sim_footer};
    kd_cli_action action;
    int first;
    char err[512];
    if (kd_cli_parse(&kc, argc, argv, &action, &first, err, sizeof(err)) != KD_OK)
        return kd_cli_fail(&kc, err);
    if (action == KD_CLI_HELP) {
        kd_cli_usage(&kc, stdout);
        return 1;
    }
    if (action == KD_CLI_VERSION) {
        printf("kadet-sim %s\n", KADET_VERSION);
        return 1;
    }
    if (first < argc) {
        snprintf(err, sizeof(err), "unexpected argument '%s'", argv[first]);
        return kd_cli_fail(&kc, err);
    }
    cli->train = (int)train;
    cli->cfg.nodes = (int)nodes;
    cli->cfg.slots = (int)slots;
    cli->min_visits = (int)min_visits;
    cli->seed = (long)seed;
    if (!cli->workload && !cli->train)
        return kd_cli_fail(&kc, "--workload CSV is required");
    if (cli->train && (!cli->train_wl || !cli->qtable))
        return kd_cli_fail(&kc, "--train needs --train-workloads and --qtable OUT");
    return 0;
}

static int is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The traces folder, in the order --help gives: --traces, $KADET_POLLUX_DIR/traces, the
 * traces folder beside the workload's folder (the artifact's layout). */
static int find_traces(const sim_cli *cli, char *out, size_t n, char *err, size_t errlen)
{
    const char *env = getenv("KADET_POLLUX_DIR");
    if (cli->traces) {
        if (snprintf(out, n, "%s", cli->traces) >= (int)n)
            return kd_errf(err, errlen, KD_ERANGE, "--traces: path too long");
        return KD_OK;
    }
    if (env && env[0]) {
        if (snprintf(out, n, "%s/traces", env) >= (int)n)
            return kd_errf(err, errlen, KD_ERANGE, "KADET_POLLUX_DIR: path too long");
        return KD_OK;
    }
    /* the first workload named: --workload, else the first of --train-workloads */
    char wl[2048];
    const char *src = cli->workload ? cli->workload : cli->train_wl;
    size_t len = src ? strcspn(src, cli->workload ? "" : ",") : 0;
    if (len == 0 || len >= sizeof(wl))
        return kd_errf(err, errlen, KD_ENOTFOUND,
                       "no Pollux traces: give --traces DIR or set KADET_POLLUX_DIR");
    memcpy(wl, src, len);
    wl[len] = '\0';
    char *slash = strrchr(wl, '/');
    const char *dir = ".";
    if (slash) {
        *slash = '\0';
        dir = wl[0] ? wl : "/";
    }
    if (snprintf(out, n, "%s/../traces", dir) >= (int)n)
        return kd_errf(err, errlen, KD_ERANGE, "workload path too long");
    if (is_dir(out))
        return KD_OK;
    return kd_errf(err, errlen, KD_ENOTFOUND,
                   "no Pollux traces: no --traces, KADET_POLLUX_DIR unset, and no %s; give "
                   "--traces DIR or set KADET_POLLUX_DIR to the Pollux data folder (the "
                   "artifact's, holding traces/; see kadet-sim --help)",
                   out);
}

/* The shipped rl table as kadet-operator finds it (<prefix>/share/kadet beside the
 * binary's bin/, then /usr/share/kadet), else the source tree's. */
static const char *shipped_qtable(char *buf, size_t n)
{
    char exe[4096];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    exe[len > 0 ? len : 0] = '\0';
    if (opc_find_qtable(exe, OPC_QTABLE_SYSTEM, buf, n) == KD_OK)
        return buf;
    return KADET_QTABLE_DEFAULT;
}

static void options_for(const sim_cli *cli, sched_options *o, int learn, int episodes_decisions)
{
    sched_options_default(o);
    o->seed = (uint64_t)cli->seed;
    o->cooldown_s = cli->cooldown;
    o->alpha = cli->cfg.alpha;
    o->beta = cli->cfg.beta;
    o->double_q = cli->double_q;
    o->learn = learn;
    if (cli->min_visits > 0)
        o->min_visits = cli->min_visits;
    if (cli->margin >= 0)
        o->margin = cli->margin;
    if (cli->n_las >= 0) {
        o->n_las = cli->n_las;
        for (int i = 0; i < cli->n_las; i++)
            o->las_s[i] = cli->las_s[i];
    }
    if (learn && episodes_decisions > 0) /* floor after 70% of the decisions given */
        o->epsilon_decay = pow(o->epsilon_min / o->epsilon, 1.0 / (0.7 * episodes_decisions));
}

static int train(const sim_cli *cli, sim_model *m)
{
    char err[512], list[4096];
    int nw = 0, rc = 0;
    sim_workload wl[64];

    snprintf(list, sizeof(list), "%s", cli->train_wl);
    char *cur = list;
    for (char *tok = next_item(&cur); tok; tok = next_item(&cur)) {
        if (nw == 64) {
            fprintf(stderr, "kadet-sim: at most 64 training workloads\n");
            rc = 2;
            goto out;
        }
        if (sim_workload_load(&wl[nw], m, tok, err, sizeof(err)) != KD_OK) {
            fprintf(stderr, "kadet-sim: %s\n", err);
            rc = 2;
            goto out;
        }
        nw++;
    }
    /* epsilon decays per decision; sized for 900 decisions per episode (a 160-job
     * workload takes 1,000-1,500), it reaches its floor in the first half of training */
    sched_options o;
    sched_policy *p = NULL;
    sim_result res;
    options_for(cli, &o, 1, cli->train * 900);
    if (sched_policy_create("rl", &o, &p, err, sizeof(err)) != KD_OK) {
        fprintf(stderr, "kadet-sim: %s\n", err);
        rc = 2;
        goto out;
    }
    if (cli->train_init) {
        if (sched_qtable_load(p, cli->train_init, err, sizeof(err)) != KD_OK) {
            fprintf(stderr, "kadet-sim: --train-init: %s\n", err);
            sched_policy_free(&p);
            rc = 2;
            goto out;
        }
        sched_rl_set_epsilon(p, o.epsilon);
    }
    /* the difference reward's baseline: the jobs another policy has in the system at each
     * decision of each training workload (deterministic, so run once) */
    sim_config cfg = cli->cfg;
    int nb = (int)((cfg.horizon_s > 0 ? cfg.horizon_s : 30 * 86400.0) / cfg.interval_s) + 2;
    double *base = NULL;
    /* auto: greedy on the fixed model; none on the goodput model, where greedy (1.7x
     * rl's JCT there) drifts so far from rl that the difference measures the drift, not
     * the held rule (held out, 1.0x: 0.944x pollux with it, 0.932x without) */
    const char *bname = cli->train_baseline;
    if (bname && strcmp(bname, "auto") == 0)
        bname = cfg.batch_model == SIM_BATCH_GOODPUT ? "none" : "greedy";
    int use_base = bname && strcmp(bname, "none") != 0;
    if (use_base) {
        sched_options bo;
        sched_policy *bp = NULL;
        options_for(cli, &bo, 0, 0);
        base = malloc(sizeof(double) * (size_t)nb * (size_t)nw);
        if (!base) {
            fprintf(stderr, "kadet-sim: out of memory\n");
            sched_policy_free(&p);
            rc = 1;
            goto out;
        }
        if (sched_policy_create(bname, &bo, &bp, err, sizeof(err)) != KD_OK) {
            fprintf(stderr, "kadet-sim: --train-baseline: %s\n", err);
            free(base);
            sched_policy_free(&p);
            rc = 2;
            goto out;
        }
        for (int k = 0; k < nw && rc == 0; k++) {
            sim_config bc = cli->cfg;
            bc.jobs_out = &base[(size_t)k * (size_t)nb];
            bc.jobs_cap = nb;
            for (int i = 0; i < nb; i++)
                bc.jobs_out[i] = -1;
            if (sim_run(m, &wl[k], &bc, bp, &res, NULL, err, sizeof(err)) != KD_OK &&
                res.finished == 0) {
                fprintf(stderr, "kadet-sim: baseline on workload %d: %s\n", k + 1, err);
                rc = 1;
            }
        }
        sched_policy_free(&bp);
        if (rc != 0) {
            free(base);
            sched_policy_free(&p);
            goto out;
        }
    }
    double t0 = kd_mono_s();
    for (int e = 0; e < cli->train; e++) {
        int k = e % nw;
        if (use_base) {
            cfg.baseline = &base[(size_t)k * (size_t)nb];
            cfg.n_baseline = nb;
        }
        if (sim_run(m, &wl[k], &cfg, p, &res, NULL, err, sizeof(err)) != KD_OK &&
            res.finished == 0) {
            fprintf(stderr, "kadet-sim: episode %d: %s\n", e, err);
            rc = 1;
            break;
        }
        if (!cli->quiet && (e + 1) % (nw > 0 ? nw : 1) == 0) {
            sched_rl_stats st;
            sched_rl_get_stats(p, &st);
            fprintf(stderr, "train episode=%d avg_jct=%.0f states=%ld updates=%ld epsilon=%.3f\n",
                    e + 1, res.avg_jct, st.states_visited, st.updates, st.epsilon);
        }
    }
    if (rc == 0) {
        if (sched_qtable_save(p, cli->qtable, err, sizeof(err)) != KD_OK) {
            fprintf(stderr, "kadet-sim: %s\n", err);
            rc = 1;
        } else if (!cli->quiet) {
            fprintf(stderr, "trained %d episodes in %.1fs, table saved to %s\n", cli->train,
                    kd_mono_s() - t0, cli->qtable);
        }
    }
    sched_policy_free(&p);
    free(base);
out:
    for (int i = 0; i < nw; i++)
        sim_workload_free(&wl[i]);
    return rc;
}

static json_t *result_json(const sim_result *r)
{
    return json_pack("{s:f,s:f,s:f,s:f,s:f,s:f,s:i,s:i}", "avg_jct", r->avg_jct, "p50_jct",
                     r->p50_jct, "p99_jct", r->p99_jct, "makespan", r->makespan, "utilization",
                     r->utilization, "rescales", r->rescales, "jobs", r->jobs, "finished",
                     r->finished);
}

int main(int argc, char **argv)
{
    sim_cli cli;
    sim_model m;
    sim_workload w = {0};
    char err[512], traces[2048], list[1024];
    int rc = 0, n_pol = 0;
    json_t *summary = NULL, *last = NULL;
    double *jct = NULL;
    FILE *jobs_fp = NULL;

    rc = parse_args(argc, argv, &cli);
    if (rc != 0)
        return rc == 1 ? 0 : 2;
    if (find_traces(&cli, traces, sizeof(traces), err, sizeof(err)) != KD_OK) {
        fprintf(stderr, "kadet-sim: %s\n", err);
        return 2;
    }
    sim_model_init(&m, traces);

    if (cli.train) {
        rc = train(&cli, &m);
        if (rc != 0 || !cli.workload) {
            sim_model_free(&m);
            return rc;
        }
    }
    if (sim_workload_load(&w, &m, cli.workload, err, sizeof(err)) != KD_OK) {
        fprintf(stderr, "kadet-sim: %s\n", err);
        sim_model_free(&m);
        return 2;
    }
    summary = json_object();
    jct = calloc((size_t)w.n_jobs, sizeof(double));
    if (cli.jobs_csv) {
        jobs_fp = fopen(cli.jobs_csv, "w");
        if (!jobs_fp)
            fprintf(stderr, "kadet-sim: cannot write %s: %s\n", cli.jobs_csv, strerror(errno));
        else
            fprintf(jobs_fp, "policy,name,application,arrival,replicas,batch,jct\n");
    }
    if (!cli.quiet)
        printf("workload %s: %d jobs, %d nodes x %d slots, interval %.0fs, restart %.0fs, "
               "%s batch model\n",
               cli.workload, w.n_jobs, cli.cfg.nodes, cli.cfg.slots, cli.cfg.interval_s,
               cli.cfg.restart_s,
               cli.cfg.batch_model == SIM_BATCH_GOODPUT ? "goodput" : "fixed");
    printf("%-9s %6s %9s %9s %9s %9s %6s %9s %8s\n", "policy", "jobs", "avg_jct", "p50_jct",
           "p99_jct", "makespan", "util", "rescales", "sim_s");
    snprintf(list, sizeof(list), "%s", cli.policies);
    char *cur = list;
    for (char *name = next_item(&cur); name; name = next_item(&cur)) {
        sched_options o;
        sched_policy *p = NULL;
        sim_result r;
        options_for(&cli, &o, 0, 0);
        if (sched_policy_create(name, &o, &p, err, sizeof(err)) != KD_OK) {
            fprintf(stderr, "kadet-sim: %s\n", err);
            rc = 2;
            break;
        }
        if (strcmp(name, "rl") == 0) {
            char shipped[4096];
            const char *qt = cli.qtable ? cli.qtable
                             : getenv("KADET_QTABLE") && getenv("KADET_QTABLE")[0]
                                 ? getenv("KADET_QTABLE")
                                 : shipped_qtable(shipped, sizeof(shipped));
            if (sched_qtable_load(p, qt, err, sizeof(err)) != KD_OK)
                fprintf(stderr, "kadet-sim: warning: %s; rl falls back to greedy\n", err);
        }
        double t0 = kd_mono_s();
        int rr = sim_run(&m, &w, &cli.cfg, p, &r, jct, err, sizeof(err));
        double el = kd_mono_s() - t0;
        sched_policy_free(&p);
        if (rr != KD_OK) {
            fprintf(stderr, "kadet-sim: %s: %s\n", name, err);
            rc = 1;
            if (r.finished == 0)
                continue;
        }
        if (jobs_fp)
            for (int i = 0; i < w.n_jobs; i++)
                fprintf(jobs_fp, "%s,%s,%s,%.0f,%d,%d,%.1f\n", name, w.jobs[i].name,
                        m.apps[w.jobs[i].app].name, w.jobs[i].arrival, w.jobs[i].request,
                        w.jobs[i].bsz, jct[i]);
        printf("%-9s %6d %9.0f %9.0f %9.0f %9.0f %6.2f %9.2f %8.3f\n", name, r.jobs, r.avg_jct,
               r.p50_jct, r.p99_jct, r.makespan, r.utilization, r.rescales, el);
        json_t *jr = result_json(&r);
        if (jr) {
            json_decref(last);
            last = json_incref(jr);
            json_object_set_new(summary, name, jr);
        }
        n_pol++;
    }
    fflush(stdout);
    if (cli.summary && summary) {
        json_t *doc = n_pol == 1 && last ? last : summary;
        if (json_dump_file(doc, cli.summary, JSON_INDENT(2) | JSON_REAL_PRECISION(10)) != 0) {
            fprintf(stderr, "kadet-sim: cannot write %s\n", cli.summary);
            rc = rc ? rc : 1;
        }
    }
    if (jobs_fp && fclose(jobs_fp) != 0) {
        fprintf(stderr, "kadet-sim: cannot write %s\n", cli.jobs_csv);
        rc = rc ? rc : 1;
    }
    free(jct);
    json_decref(last);
    json_decref(summary);
    sim_workload_free(&w);
    sim_model_free(&m);
    return rc;
}
