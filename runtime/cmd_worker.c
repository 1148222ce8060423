/* `kadet worker`: one agent of a distributed job; options and environment map onto
 * kd_worker_config (worker.h). */
#include <stdlib.h>
#include <string.h>

#include "kd_curve.h"
#include "kd_error.h"
#include "kd_log.h"
#include "launcher.h"
#include "kd_spec.h"
#include "worker.h"

int kd_cmd_worker(int argc, char **argv)
{
    kd_worker_config cfg;
    kd_worker_config_default(&cfg);
    long long threads = cfg.threads, timeout = cfg.comm_timeout_ms,
              chunk = (long long)(cfg.chunk_bytes / 1024), ctimeout = cfg.coord_timeout_ms;
    const char *level = "info", *keys_dir = NULL, *plane = NULL;
    const kd_opt opts[] = {
        {"coordinator", "KADET_COORDINATOR", KD_OPT_STR, &cfg.coordinator, 0, 0,
         "coordinator control endpoint, e.g. tcp://coord:7070 (required)"},
        {"bind", "KADET_BIND", KD_OPT_STR, &cfg.bind, 0, 0,
         "data endpoint to bind (default tcp://127.0.0.1:*)"},
        {"advertise", "KADET_ADVERTISE", KD_OPT_STR, &cfg.advertise, 0, 0,
         "host or IP peers use to reach this worker (default: the bound address)"},
        {"name", "KADET_NAME", KD_OPT_STR, &cfg.name, 0, 0,
         "unique worker name (default host-pid-random)"},
        {"threads", "KADET_THREADS", KD_OPT_INT, &threads, 1, 256, "math threads (default 1)"},
        {"comm-timeout-ms", "KADET_COMM_TIMEOUT_MS", KD_OPT_INT, &timeout, 50, 600000,
         "silence after which a peer counts as dead (default 1500)"},
        {"chunk-kib", "KADET_CHUNK_KIB", KD_OPT_INT, &chunk, 4, 16384,
         "allreduce chunk size in KiB (default 1024)"},
        {"coordinator-timeout-ms", "KADET_COORDINATOR_TIMEOUT_MS", KD_OPT_INT, &ctimeout, 100,
         600000, "silence after which the coordinator counts as lost (default 4000)"},
        {"sample-log", "KADET_SAMPLE_LOG", KD_OPT_STR, &cfg.sample_log, 0, 0,
         "debug: append \"epoch sample-id\" for every sample trained"},
        {"keys-dir", "KADET_KEYS_DIR", KD_OPT_STR, &keys_dir, 0, 0,
         "the job's CURVE keys (agent.pub, agent.key; docs/security.md); none = "
         "unauthenticated"},
        {"data-plane", "KADET_DATA_PLANE", KD_OPT_STR, &plane, 0, 0,
         "authenticated or curve: the data endpoint's mode until the job says (default "
         "authenticated; spec.security.dataPlane decides)"},
        {"log-level", "KADET_LOG_LEVEL", KD_OPT_STR, &level, 0, 0,
         "debug, info, warn or error (default info)"},
    };
    int n = (int)(sizeof opts / sizeof opts[0]);
    int st = kd_opts_parse("worker", "", "Runs one agent of a distributed kadet job: joins the "
                           "coordinator, trains its share\nof every global batch and "
                           "allreduces gradients with its peers over ZeroMQ.",
                           opts, n, argc, argv, NULL);
    if (st != 0)
        return st == 1 ? 0 : st;
    if (cfg.coordinator == NULL) {
        fprintf(stderr, "kadet worker: --coordinator (or KADET_COORDINATOR) is required\n");
        return 2;
    }
    int lv = kd_log_parse_level(level);
    if (lv < 0) {
        fprintf(stderr, "kadet worker: --log-level: invalid value \"%s\"\n", level);
        return 2;
    }
    kd_log_set_level((kd_log_level)lv);
    kd_log_set_component("worker");
    kd_spec_data_plane dp = KD_SPEC_DATA_AUTHENTICATED;
    if (plane != NULL && kd_spec_data_plane_parse(plane, &dp) != 0) {
        fprintf(stderr, "kadet worker: --data-plane: invalid value \"%s\" (authenticated or "
                "curve)\n", plane);
        return 2;
    }
    cfg.data_curve = dp == KD_SPEC_DATA_CURVE;
    static kd_curve_keys keys;
    char kerr[600];
    if (kd_curve_load(keys_dir, &keys, kerr, sizeof kerr) != KD_OK) {
        fprintf(stderr, "kadet worker: %s\n", kerr);
        return 2;
    }
    cfg.keys = &keys;
    cfg.threads = (int)threads;
    cfg.comm_timeout_ms = (int)timeout;
    cfg.chunk_bytes = (size_t)chunk * 1024;
    cfg.coord_timeout_ms = (int)ctimeout;
    return kd_worker_run(&cfg);
}
