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
#include <time.h>

#include "kd_clock.h"
#include "kd_error.h"
#include "kd_sched.h"
#include "sched_qtable.h"
#include "sim.h"

#ifndef KADET_QTABLE_DEFAULT
#define KADET_QTABLE_DEFAULT "qtable-default.json"
#endif
#ifndef KADET_POLLUX_DEFAULT
#define KADET_POLLUX_DEFAULT "../shared/data/pollux"
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

static void usage(FILE *out)
{
    fprintf(out,
        "usage: kadet-sim --workload CSV [--policy P[,P...]] [options]\n"
        "       kadet-sim --train EPISODES --train-workloads CSV[,CSV...] --qtable OUT [options]\n"
        "\n"
        "Replays a workload (name,time,application,num_replicas,batch_size) on a simulated\n"
        "cluster under each policy and reports average, p50 and p99 job completion time,\n"
        "makespan, utilisation and rescales per job.\n"
        "\n"
        "  --workload CSV        workload to replay\n"
        "  --traces DIR          Pollux traces (default $KADET_POLLUX_DIR/traces, else\n"
        "                        %s/traces)\n"
        "  --policy LIST         static, tiresias, fair, greedy, pollux, rl (comma list;\n"
        "                        default rl)\n"
        "  --qtable FILE         rl: table to load (default $KADET_QTABLE, else the shipped\n"
        "                        %s); with --train: where to save\n"
        "  --summary-json PATH   write {avg_jct,p50_jct,p99_jct,makespan,utilization,rescales}\n"
        "                        (one object per policy when several are given)\n"
        "  --jobs-csv PATH       write policy,name,application,arrival,replicas,batch,jct\n"
        "  --train N             train rl for N episodes (workloads taken in turn)\n"
        "  --train-workloads L   comma list of workload CSVs to train on\n"
        "  --train-init FILE     continue training from this table (its epsilon is reset)\n"
        "  --nodes N             nodes (16)          --slots N      agent slots per node (4)\n"
        "  --interval S          scheduling interval seconds (60)\n"
        "  --restart S           stall on every change of a job's count (30)\n"
        "  --max-factor F        a job may grow to ceil(F * num_replicas) agents (2)\n"
        "  --alpha A --beta B    reward weights on time and cost (1, 0)\n"
        "  --cooldown S          seconds between two changes of one job (0)\n"
        "  --seed N              rl exploration seed (1)   --double-q   Double Q-learning\n"
        "  --min-visits N        rl: updates before a learned Q counts (300)\n"
        "  --margin M            rl: relative Q advantage needed to depart from greedy (0)\n"
        "  --batch-model M       fixed (default): a job keeps its batch and its length in\n"
        "                        iterations; goodput: the Pollux artifact's model (step time\n"
        "                        per placement, progress at gain / step time per epoch, batch\n"
        "                        re-chosen by elastic policies' jobs)\n"
        "  --tiresias-thresholds L  tiresias queue limits in agent-hours, ascending comma\n"
        "                        list (1,10; the artifact: 16)\n"
        "  --trace-job NAME      print every decision about job NAME to stderr\n"
        "  --quiet               only the table          --help\n",
        KADET_POLLUX_DEFAULT, KADET_QTABLE_DEFAULT);
}

typedef struct sim_cli {
    const char *workload, *traces, *policies, *qtable, *summary, *train_wl, *jobs_csv;
    const char *train_init; /* table to continue training from */
    int train, quiet, double_q, min_visits;
    long seed;
    double cooldown, margin;
    int n_las;          /* -1 = the policy core's default thresholds */
    double las_s[SCHED_LAS_MAX];
    sim_config cfg;
} sim_cli;

static int parse_num(const char *opt, const char *v, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double x = v ? strtod(v, &end) : 0;
    if (!v || end == v || *end != '\0' || errno || !isfinite(x) || x < lo || x > hi) {
        fprintf(stderr, "kadet-sim: %s needs a number in [%g, %g], got '%s'\n", opt, lo, hi,
                v ? v : "");
        return -1;
    }
    *out = x;
    return 0;
}

static int parse_args(int argc, char **argv, sim_cli *cli)
{
    memset(cli, 0, sizeof(*cli));
    sim_config_default(&cli->cfg);
    cli->policies = "rl";
    cli->seed = 1;
    cli->min_visits = -1;
    cli->margin = -1;
    cli->n_las = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        double x;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        } else if (strcmp(a, "--quiet") == 0) {
            cli->quiet = 1;
            continue;
        } else if (strcmp(a, "--double-q") == 0) {
            cli->double_q = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "kadet-sim: %s needs a value (or unknown option)\n", a);
            return -1;
        }
        i++;
        if (strcmp(a, "--workload") == 0) cli->workload = v;
        else if (strcmp(a, "--traces") == 0) cli->traces = v;
        else if (strcmp(a, "--policy") == 0) cli->policies = v;
        else if (strcmp(a, "--qtable") == 0) cli->qtable = v;
        else if (strcmp(a, "--summary-json") == 0) cli->summary = v;
        else if (strcmp(a, "--train-workloads") == 0) cli->train_wl = v;
        else if (strcmp(a, "--jobs-csv") == 0) cli->jobs_csv = v;
        else if (strcmp(a, "--train-init") == 0) cli->train_init = v;
        else if (strcmp(a, "--train") == 0) {
            if (parse_num(a, v, 1, 1e6, &x)) return -1;
            cli->train = (int)x;
        } else if (strcmp(a, "--nodes") == 0) {
            if (parse_num(a, v, 1, 10000, &x)) return -1;
            cli->cfg.nodes = (int)x;
        } else if (strcmp(a, "--slots") == 0) {
            if (parse_num(a, v, 1, 1024, &x)) return -1;
            cli->cfg.slots = (int)x;
        } else if (strcmp(a, "--interval") == 0) {
            if (parse_num(a, v, 1, 86400, &cli->cfg.interval_s)) return -1;
        } else if (strcmp(a, "--restart") == 0) {
            if (parse_num(a, v, 0, 86400, &cli->cfg.restart_s)) return -1;
        } else if (strcmp(a, "--max-factor") == 0) {
            if (parse_num(a, v, 1, 1000, &cli->cfg.max_factor)) return -1;
        } else if (strcmp(a, "--alpha") == 0) {
            if (parse_num(a, v, 0, 1e6, &cli->cfg.alpha)) return -1;
        } else if (strcmp(a, "--beta") == 0) {
            if (parse_num(a, v, 0, 1e6, &cli->cfg.beta)) return -1;
        } else if (strcmp(a, "--cooldown") == 0) {
            if (parse_num(a, v, 0, 86400, &cli->cooldown)) return -1;
        } else if (strcmp(a, "--min-visits") == 0) {
            if (parse_num(a, v, 1, 1e9, &x)) return -1;
            cli->min_visits = (int)x;
        } else if (strcmp(a, "--margin") == 0) {
            if (parse_num(a, v, 0, 1e3, &cli->margin)) return -1;
        } else if (strcmp(a, "--batch-model") == 0) {
            if (strcmp(v, "fixed") == 0) {
                cli->cfg.batch_model = SIM_BATCH_FIXED;
            } else if (strcmp(v, "goodput") == 0) {
                cli->cfg.batch_model = SIM_BATCH_GOODPUT;
            } else {
                fprintf(stderr, "kadet-sim: --batch-model is fixed or goodput, got '%s'\n", v);
                return -1;
            }
        } else if (strcmp(a, "--tiresias-thresholds") == 0) {
            char buf[256], *cur = buf;
            if (strlen(v) >= sizeof(buf)) {
                fprintf(stderr, "kadet-sim: --tiresias-thresholds too long\n");
                return -1;
            }
            snprintf(buf, sizeof(buf), "%s", v);
            cli->n_las = 0;
            for (char *tok = next_item(&cur); tok; tok = next_item(&cur)) {
                if (cli->n_las == SCHED_LAS_MAX) {
                    fprintf(stderr, "kadet-sim: at most %d tiresias thresholds\n",
                            SCHED_LAS_MAX);
                    return -1;
                }
                if (parse_num(a, tok, 1e-6, 1e9, &x)) return -1;
                if (cli->n_las > 0 && x * 3600.0 <= cli->las_s[cli->n_las - 1]) {
                    fprintf(stderr, "kadet-sim: --tiresias-thresholds must ascend\n");
                    return -1;
                }
                cli->las_s[cli->n_las++] = x * 3600.0;
            }
            if (cli->n_las == 0) {
                fprintf(stderr, "kadet-sim: --tiresias-thresholds needs at least one value\n");
                return -1;
            }
        } else if (strcmp(a, "--trace-job") == 0) {
            cli->cfg.trace_job = v;
        } else if (strcmp(a, "--seed") == 0) {
            if (parse_num(a, v, 0, 1e15, &x)) return -1;
            cli->seed = (long)x;
        } else {
            fprintf(stderr, "kadet-sim: unknown option %s (see --help)\n", a);
            return -1;
        }
    }
    if (!cli->workload && !cli->train) {
        fprintf(stderr, "kadet-sim: --workload CSV is required (see --help)\n");
        return -1;
    }
    if (cli->train && (!cli->train_wl || !cli->qtable)) {
        fprintf(stderr, "kadet-sim: --train needs --train-workloads and --qtable OUT\n");
        return -1;
    }
    return 0;
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
    double t0 = kd_mono_s();
    for (int e = 0; e < cli->train; e++) {
        int k = e % nw;
        if (sim_run(m, &wl[k], &cli->cfg, p, &res, NULL, err, sizeof(err)) != KD_OK &&
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

    if (parse_args(argc, argv, &cli) != 0)
        return 2;
    if (cli.traces)
        snprintf(traces, sizeof(traces), "%s", cli.traces);
    else if (getenv("KADET_POLLUX_DIR"))
        snprintf(traces, sizeof(traces), "%s/traces", getenv("KADET_POLLUX_DIR"));
    else
        snprintf(traces, sizeof(traces), "%s/traces", KADET_POLLUX_DEFAULT);
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
            const char *qt = cli.qtable ? cli.qtable
                             : getenv("KADET_QTABLE") ? getenv("KADET_QTABLE")
                                                      : KADET_QTABLE_DEFAULT;
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
