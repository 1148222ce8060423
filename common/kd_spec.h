/*
 * kd_spec: the AgentJob resource (kadet.io/v1alpha1) decoded from a json_t into a C
 * struct with every default filled in.
 *
 * One decoder serves `kadet run` (YAML through kd_yaml) and the operator (JSON from the
 * Kubernetes API). Unknown fields are not fatal: each becomes a warning naming its path
 * (job->warnings). A wrong type or value is an error whose text names the path and the
 * offending value, for example
 *     spec.training.batchSize: expected a positive integer, got "abc"
 * and the decode fails (KD_EINVALID_OBJECT) so that nothing is trained or scheduled.
 * status and most of metadata are ignored: they belong to the API server.
 *
 * Ownership: strings in kd_agentjob are owned by it (freed by kd_agentjob_free);
 * job->template is a new reference (json_incref of the document's value) so it outlives
 * the document.
 */
#ifndef KD_SPEC_H
#define KD_SPEC_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define KD_SPEC_API_VERSION "kadet.io/v1alpha1"
#define KD_SPEC_KIND "AgentJob"
#define KD_SPEC_MAX_HIDDEN 15 /* hidden layers in model.hidden */
#define KD_SPEC_DEFAULT_DATA "/usr/share/datasets/fashion-mnist"
#define KD_SPEC_MAX_LAYERS 32 /* entries in model.layers */

typedef enum kd_spec_optimizer { KD_SPEC_OPT_SGD = 0, KD_SPEC_OPT_ADAM = 1 } kd_spec_optimizer;
typedef enum kd_spec_schedule {
    KD_SPEC_SCHED_CONSTANT = 0,
    KD_SPEC_SCHED_COSINE = 1,
    KD_SPEC_SCHED_STEP = 2
} kd_spec_schedule;
typedef enum kd_spec_sync { KD_SPEC_SYNC_ALLREDUCE = 0, KD_SPEC_SYNC_LOCAL_SGD = 1 } kd_spec_sync;
/* sync.exchange: what allreduce mode sends for the first layer (docs/runtime.md). */
typedef enum kd_spec_exchange {
    KD_SPEC_EXCHANGE_AUTO = 0,      /* factors when the cost model says they are cheaper */
    KD_SPEC_EXCHANGE_GRADIENTS = 1, /* the whole gradient through the ring allreduce */
    KD_SPEC_EXCHANGE_FACTORS = 2    /* layer 0's batch x width factors, all-gathered */
} kd_spec_exchange;
/* sync.compression: the number format of allreduce mode's gradient messages. */
typedef enum kd_spec_compression {
    KD_SPEC_COMPRESSION_NONE = 0, /* float32, as computed */
    KD_SPEC_COMPRESSION_BF16 = 1  /* bfloat16 (round to nearest even), half the bytes; sums
                                   * are accumulated in float32, control values stay float32 */
} kd_spec_compression;
/* spec.security.dataPlane: how worker-to-worker gradient traffic is protected when the job
 * has keys (docs/security.md); the control plane and metrics always use CURVE then. */
typedef enum kd_spec_data_plane {
    KD_SPEC_DATA_AUTHENTICATED = 0, /* each connection proves it holds the job key (ZAP,
                                     * PLAIN mechanism with a key-derived credential);
                                     * payloads in the clear */
    KD_SPEC_DATA_CURVE = 1          /* CURVE: authenticated and encrypted */
} kd_spec_data_plane;
typedef enum kd_spec_policy {
    KD_SPEC_POLICY_STATIC = 0,
    KD_SPEC_POLICY_FAIR = 1,
    KD_SPEC_POLICY_GREEDY = 2,
    KD_SPEC_POLICY_RL = 3
} kd_spec_policy;
typedef enum kd_spec_clean_pod {
    KD_SPEC_CLEAN_RUNNING = 0,
    KD_SPEC_CLEAN_ALL = 1,
    KD_SPEC_CLEAN_NONE = 2
} kd_spec_clean_pod;

/* spec.training.model.layers[i].type */
typedef enum kd_spec_layer_type {
    KD_LAYER_DENSE = 0,     /* units; flattens an image input implicitly */
    KD_LAYER_CONV2D = 1,    /* filters (units), kernel, stride (1), padding (0) */
    KD_LAYER_MAXPOOL2D = 2, /* size (kernel), stride (= size) */
    KD_LAYER_AVGPOOL2D = 3, /* size (kernel), stride (= size) */
    KD_LAYER_FLATTEN = 4,
    KD_LAYER_RELU = 5,
    KD_LAYER_DROPOUT = 6,   /* rate in [0, 1) */
    KD_LAYER_BATCHNORM = 7  /* refused by the decoder (docs/training.md) */
} kd_spec_layer_type;

/* One declared layer; fields a type does not use are 0. */
typedef struct kd_spec_layer {
    kd_spec_layer_type type;
    int units;   /* dense units, conv2d filters */
    int kernel;  /* conv2d kernel, pooling size (square) */
    int stride;  /* conv2d and pooling */
    int padding; /* conv2d zero padding on every side */
    double rate; /* dropout probability of zeroing an activation */
} kd_spec_layer;

/* An activation's shape per sample: channels x height x width, stored channels last
 * (height, width, channel order). A flat vector of n features is {n, 1, 1}; c = 0 means
 * "flat, size known only once the data is loaded" (CSV). */
typedef struct kd_spec_shape {
    int c, h, w;
} kd_spec_shape;

typedef struct kd_agentjob {
    char *name;                  /* metadata.name (required) */
    char *namespace_;            /* metadata.namespace, default "default" */

    int agents_min;              /* spec.agents.min >= 1, default 1 */
    int agents_max;              /* spec.agents.max >= min, default = min */
    int replicas;                /* spec.replicas in [min, max]; -1 = absent (scheduler) */
    json_t *template_;           /* spec.template (new reference) or NULL */
    int64_t agent_cpu_millis;    /* template's first container requests.cpu, 0 = unset */
    int64_t agent_memory_bytes;  /* template's first container requests.memory, 0 = unset */

    /* spec.training */
    char *dataset_format;        /* "idx" (default) or "csv" */
    char *dataset_path;          /* default KD_SPEC_DEFAULT_DATA */
    int dataset_label_column;    /* csv only: label column, -1 = last; default 0 */
    char *model_type;            /* "mlp" (the only type) */
    int n_hidden;                /* entries in hidden */
    int hidden[KD_SPEC_MAX_HIDDEN]; /* hidden layer widths, default {256, 128} */
    int n_layers;                /* entries in layers; 0 = the mlp shorthand (hidden) */
    kd_spec_layer layers[KD_SPEC_MAX_LAYERS]; /* model.layers, the last one dense */
    kd_spec_shape input_shape;   /* model.inputShape [c, h, w]; default idx [1, 28, 28],
                                  * csv {0, 1, 1} (flat, size from the data) */
    int epochs;                  /* >= 1, default 10 */
    int batch_size;              /* per agent, >= 1, default 64 */
    kd_spec_optimizer optimizer; /* default sgd */
    double learning_rate;        /* > 0, default 0.05 (sgd) / 0.001 (adam) */
    double momentum;             /* sgd, [0, 1), default 0 */
    double weight_decay;         /* >= 0, default 0 */
    double beta1, beta2;         /* adam, [0, 1), defaults 0.9 / 0.999 */
    double epsilon;              /* adam, > 0, default 1e-8 */
    kd_spec_schedule schedule;   /* optimizer.schedule(.type), default constant */
    double warmup_epochs;        /* optimizer.schedule.warmupEpochs >= 0, default 0 */
    double min_learning_rate;    /* optimizer.schedule.minLearningRate >= 0, default 0 */
    double step_epochs;          /* optimizer.schedule.stepEpochs > 0, default 1 */
    double gamma;                /* optimizer.schedule.gamma in (0, 1], default 0.1 */
    kd_spec_sync sync_mode;      /* default allreduce */
    int sync_period;             /* local-sgd steps between averages, default 8 (1 for allreduce) */
    kd_spec_exchange sync_exchange; /* allreduce only, default auto */
    kd_spec_compression sync_compression; /* allreduce only (local-sgd averages parameters,
                                           * uncompressed), default none */
    int adaptive_lr;             /* adaptive.learningRate, default 1 */
    int adaptive_batch;          /* adaptive.batchSize, default 0 */
    int max_batch_size;          /* adaptive.maxBatchSize: per-agent ceiling of the adapted
                                  * batch, >= batch_size; equals batch_size when
                                  * adaptive_batch is 0 */
    double target_accuracy;      /* (0, 1]; 0 = absent (train all epochs) */

    kd_spec_data_plane data_plane; /* spec.security.dataPlane, default authenticated */

    char *checkpoint_path;       /* spec.checkpoint.path, NULL = no checkpoints */
    int checkpoint_interval;     /* seconds, >= 1, default 60 */

    kd_spec_policy policy;       /* spec.scheduling.policy, default rl */
    double weight_time;          /* scheduling.weights.time >= 0, default 1.0 */
    double weight_cost;          /* scheduling.weights.cost >= 0, default 0.1 */
    int priority;                /* scheduling.priority, default 0 */

    int backoff_limit;           /* runPolicy.backoffLimit >= 0, default 3 */
    int64_t active_deadline;     /* runPolicy.activeDeadlineSeconds >= 0, 0 = none */
    int64_t ttl_after_finished;  /* runPolicy.ttlSecondsAfterFinished >= 0, -1 = never */
    kd_spec_clean_pod clean_pod_policy; /* default Running */
    int suspend;                 /* runPolicy.suspend, default 0 */

    char **warnings;             /* n_warnings messages "path: unknown field" (owned) */
    size_t n_warnings;
    size_t n_unknown_spec;       /* of them, unknown fields under spec (kadet run refuses
                                    those unless --allow-unknown-fields) */
} kd_agentjob;

/* Decodes a whole AgentJob document (apiVersion, kind, metadata, spec; status ignored).
 * doc is borrowed. Returns KD_OK, KD_EINVALID_OBJECT with the path-naming message in err
 * (job is then freed and zeroed), or KD_ENOMEM. Warnings are in job->warnings even on
 * success. */
int kd_agentjob_decode(const json_t *doc, kd_agentjob *job, char *err, size_t errlen);

/* Frees every owned field and zeroes *job; accepts NULL and a zeroed job. */
void kd_agentjob_free(kd_agentjob *job);

/* Parses a Kubernetes quantity: for cpu ("2", "0.5", "250m") into millicores, for
 * memory ("512Mi", "1Gi", "1G", "1000", "1e3") into bytes. KD_EINVAL on anything else. */
int kd_quantity_cpu_millis(const char *text, int64_t *millis);
int kd_quantity_bytes(const char *text, int64_t *bytes);

/* The largest per-agent batch a job running at `batch` (training.batchSize, or an
 * override of it) may reach: adaptive.maxBatchSize when the batch adapts, else `batch`
 * itself. The coordinator adapts within it and every worker sizes its buffers for it, so
 * both must use this one rule. */
int kd_spec_batch_ceiling(const kd_agentjob *j, int batch);

/* Output shapes of layers[0..n) for an input of shape `in` into out[0..n) (out[i] is
 * layer i's output). Errors name the layer and field under `path` (the path of the
 * layers list), e.g. "spec.training.model.layers[2].kernel: 7 is larger than its 5x5
 * input"; KD_EINVALID_OBJECT then. The last layer must be dense (its units are the
 * classes). Also refuses models whose parameters or per-sample activations exceed
 * 2^28 floats. Shared by the decoder and the runtime's model builder. */
int kd_spec_layer_shapes(const kd_spec_layer *layers, int n, kd_spec_shape in,
                         kd_spec_shape *out, const char *path, char *err, size_t errlen);

/* Decodes spec.training.model.layers (a JSON array, borrowed) into j->layers and checks
 * the shapes against j->input_shape. path is the list's path. kd_spec_model.c. */
int kd_spec_decode_layers(const json_t *list, const char *path, kd_agentjob *j, char *err,
                          size_t errlen);

/* A hash of the model's architecture (mlp widths, or every layer's type and numbers, and
 * the input shape) for checkpoint fingerprints: a checkpoint of another architecture
 * with the same parameter count is refused. */
uint64_t kd_spec_model_hash(const kd_agentjob *j);

/* Whether j's model is an MLP: the mlp shorthand, or layers of the form [flatten]
 * (dense relu)* dense, which the runtime trains as the MLP it is (fused kernels, the
 * factors exchange). Fills hidden[KD_SPEC_MAX_HIDDEN] / n_hidden when not NULL. */
int kd_spec_layers_as_mlp(const kd_agentjob *j, int *hidden, int *n_hidden);

/* The value as it appears in JSON, shortened to 48 characters, for "got ..." in the
 * decoder's messages (kd_spec.c and kd_spec_model.c). */
void kd_spec_show(const json_t *v, char *out, size_t len);

/* "conv2d", "dense", ... */
const char *kd_spec_layer_name(kd_spec_layer_type t);

/* Names of the enums as written in the manifest ("sgd", "cosine", "local-sgd", "rl",
 * "Running"...). */
const char *kd_spec_optimizer_name(kd_spec_optimizer v);
const char *kd_spec_schedule_name(kd_spec_schedule v);
const char *kd_spec_sync_name(kd_spec_sync v);
const char *kd_spec_exchange_name(kd_spec_exchange v);
const char *kd_spec_compression_name(kd_spec_compression v);
const char *kd_spec_policy_name(kd_spec_policy v);
const char *kd_spec_data_plane_name(kd_spec_data_plane v);
/* Parses "authenticated" or "curve"; -1 for anything else. */
int kd_spec_data_plane_parse(const char *text, kd_spec_data_plane *out);
const char *kd_spec_clean_pod_name(kd_spec_clean_pod v);

#endif
