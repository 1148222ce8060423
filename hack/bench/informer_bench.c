/*
 * informer_bench: the two client figures of the Kubernetes client.
 *
 *  1. Initial sync: bulk-load N pods into the emulator (POST /_emulator/bulk), then
 *     time an informer's paginated list from start to has-synced, and report the
 *     process RSS after the sync (VmRSS) and its peak (VmHWM).
 *  2. Change latency: M times, merge-patch an annotation of one pod through the API
 *     and time until the informer's update handler sees that value (from just before
 *     the PATCH is sent, so the request itself is included). Median, p90, max.
 *
 * Usage: kube-informer-bench --kubeconfig FILE [--pods N] [--changes M] [--page P]
 * Prints one line per figure; exit status 1 if the run itself failed.
 */
#include "kd_clock.h"
#include "informer.h"
#include "kd_error.h"
#include "kd_log.h"
#include "kube_client.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* VmRSS / VmHWM in MiB from /proc/self/status. */
static double proc_mib(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double v = -1;
    size_t fl = strlen(field);
    while (f != NULL && fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, field, fl) == 0 && line[fl] == ':') {
            v = strtod(line + fl + 1, NULL) / 1024.0;
        }
    }
    if (f != NULL) {
        fclose(f);
    }
    return v;
}

struct latency {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    long want;      /* annotation value the main thread waits for */
    double seen_at; /* when the handler saw it */
};

static void on_update(void *ud, json_t *old_obj, json_t *obj)
{
    (void)old_obj;
    struct latency *l = ud;
    json_t *md = json_object_get(obj, "metadata");
    const char *name = json_string_value(json_object_get(md, "name"));
    if (name == NULL || strcmp(name, "bench-0") != 0) {
        return;
    }
    const char *v = json_string_value(
        json_object_get(json_object_get(md, "annotations"), "kadet.io/bench-seq"));
    if (v == NULL) {
        return;
    }
    double t = kd_mono_ms();
    pthread_mutex_lock(&l->mu);
    if (atol(v) == l->want) {
        l->seen_at = t;
        pthread_cond_broadcast(&l->cond);
    }
    pthread_mutex_unlock(&l->mu);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int bulk_load(kube_client *c, long pods)
{
    const long batch = 1000;
    for (long start = 0; start < pods; start += batch) {
        json_t *objs = json_array();
        for (long i = start; i < pods && i < start + batch; i++) {
            char name[32];
            snprintf(name, sizeof name, "bench-%ld", i);
            json_array_append_new(
                objs, json_pack("{s:s,s:s,s:{s:s,s:s,s:{s:s,s:s}},s:{s:[{s:s,s:s,s:{s:{s:s,"
                                "s:s}}}],s:s}}",
                                "apiVersion", "v1", "kind", "Pod", "metadata", "name", name,
                                "namespace", "default", "labels", "app", "bench", "kadet.io/role",
                                "worker", "spec", "containers", "name", "agent", "image",
                                "kadet:latest", "resources", "requests", "cpu", "500m",
                                "memory", "256Mi", "nodeName", "node-1"));
        }
        json_t *body = json_pack("{s:o}", "objects", objs);
        kube_error e;
        int rc = kube_request(c, "POST", "/_emulator/bulk", NULL, body, NULL, NULL, &e);
        json_decref(body);
        if (rc != KD_OK) {
            fprintf(stderr, "bulk load failed: %s (%s)\n", kd_strerror(rc), e.message);
            return rc;
        }
    }
    return KD_OK;
}

int main(int argc, char **argv)
{
    const char *kubeconfig = NULL;
    long pods = 10000, changes = 100, page = 500;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--kubeconfig") == 0 && i + 1 < argc) {
            kubeconfig = argv[++i];
        } else if (strcmp(argv[i], "--pods") == 0 && i + 1 < argc) {
            pods = strtol(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--changes") == 0 && i + 1 < argc) {
            changes = strtol(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--page") == 0 && i + 1 < argc) {
            page = strtol(argv[++i], NULL, 10);
        } else {
            fprintf(stderr, "usage: %s --kubeconfig FILE [--pods N] [--changes M] "
                            "[--page P]\n", argv[0]);
            return 2;
        }
    }
    if (pods < 1 || changes < 1 || page < 1) {
        fprintf(stderr, "informer_bench: --pods, --changes and --page must be >= 1\n");
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    kd_log_set_level(KD_LOG_WARN);
    kube_config cfg;
    char err[512];
    if (kube_config_load(kubeconfig, NULL, &cfg, err, sizeof err) != KD_OK) {
        fprintf(stderr, "informer_bench: %s\n", err);
        return 1;
    }
    kube_client *c = NULL;
    if (kube_client_new(&cfg, NULL, &c, err, sizeof err) != KD_OK) {
        fprintf(stderr, "informer_bench: %s\n", err);
        return 1;
    }
    kube_config_clear(&cfg);
    double t_load = kd_mono_ms();
    if (bulk_load(c, pods) != KD_OK) {
        return 1;
    }
    printf("bulk-loaded %ld pods in %.2f s\n", pods, (kd_mono_ms() - t_load) / 1000.0);
    double rss0 = proc_mib("VmRSS");

    struct latency lat = {.want = -1};
    pthread_mutex_init(&lat.mu, NULL);
    pthread_cond_init(&lat.cond, NULL);
    informer_handlers h = {.on_update = on_update, .ud = &lat};
    informer_options o = {.label_selector = "app=bench", .page_size = page};
    informer *inf = NULL;
    double t0 = kd_mono_ms();
    if (informer_new(c, &KUBE_PODS, &o, &h, &inf) != KD_OK || informer_start(inf) != KD_OK ||
        informer_wait_synced(inf, 120000) != KD_OK) {
        fprintf(stderr, "informer_bench: the informer did not sync\n");
        return 1;
    }
    double sync_s = (kd_mono_ms() - t0) / 1000.0;
    size_t cached = informer_size(inf);
    printf("initial sync: %zu pods in %.2f s (page size %ld); client RSS %.1f MiB after "
           "sync (%.1f MiB before), peak %.1f MiB\n",
           cached, sync_s, page, proc_mib("VmRSS"), rss0, proc_mib("VmHWM"));

    double *ms = calloc((size_t)changes, sizeof *ms);
    int failed = 0;
    for (long k = 0; k < changes && ms != NULL; k++) {
        char v[32];
        snprintf(v, sizeof v, "%ld", k);
        json_t *patch = json_pack("{s:{s:{s:s}}}", "metadata", "annotations",
                                  "kadet.io/bench-seq", v);
        pthread_mutex_lock(&lat.mu);
        lat.want = k;
        lat.seen_at = 0;
        pthread_mutex_unlock(&lat.mu);
        double sent = kd_mono_ms();
        kube_error e;
        int rc = kube_patch(c, &KUBE_PODS, "default", "bench-0", NULL, patch, NULL, &e);
        json_decref(patch);
        if (rc != KD_OK) {
            fprintf(stderr, "patch failed: %s (%s)\n", kd_strerror(rc), e.message);
            failed = 1;
            break;
        }
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_sec += 10;
        pthread_mutex_lock(&lat.mu);
        while (lat.seen_at == 0) {
            if (pthread_cond_timedwait(&lat.cond, &lat.mu, &dl) != 0) {
                break;
            }
        }
        double seen = lat.seen_at;
        pthread_mutex_unlock(&lat.mu);
        if (seen == 0) {
            fprintf(stderr, "change %ld never reached the handler\n", k);
            failed = 1;
            break;
        }
        ms[k] = seen - sent;
    }
    if (!failed && ms != NULL) {
        qsort(ms, (size_t)changes, sizeof *ms, cmp_double);
        printf("change -> handler latency over %ld changes: median %.1f ms, p90 %.1f ms, "
               "max %.1f ms\n",
               changes, ms[changes / 2], ms[(changes * 9) / 10 < changes ? (changes * 9) / 10
                                                                          : changes - 1],
               ms[changes - 1]);
    }
    free(ms);
    informer_free(&inf);
    kube_client_free(&c);
    curl_global_cleanup();
    return failed ? 1 : 0;
}
