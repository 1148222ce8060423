/*
 * checkpoint: the coordinator's durable copy of a job's training state.
 *
 * A checkpoint holds the parameters, the optimizer state and everything needed to
 * continue exactly where it was taken: generation, epoch, the epoch's global sample
 * cursor, the global step, the optimizer's step counter, the shuffle/initialisation seed
 * and a fingerprint of the job (model shape) so that a checkpoint of another model is
 * refused. It also keeps the evaluation of the last finished epoch (test accuracy, train
 * loss), so that a coordinator restarted from the final checkpoint can report the job's
 * result without any worker, and the adaptive batch size's state (the per-agent batch and
 * the smoothed gradient-noise estimates), so that a restarted coordinator continues with
 * the batch and learning rate it had. The file is a fixed little-endian header, the
 * float32 parameters, the float32 optimizer state and a CRC32 (zlib) of all of it.
 * Format 3 is written; formats 1 (no evaluation) and 2 (no batch) are still read.
 *
 * kd_ckpt_save writes DIR/checkpoint.tmp, fsyncs it, moves the current DIR/checkpoint.kdc
 * to DIR/checkpoint.prev.kdc, renames the temporary file into place and fsyncs DIR, so a
 * crash at any point leaves a complete latest or previous checkpoint. kd_ckpt_load
 * validates size, header and checksum and falls back to the previous checkpoint when
 * the latest is truncated or corrupt.
 */
#ifndef KD_CHECKPOINT_H
#define KD_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#define KD_CKPT_FILE "checkpoint.kdc"
#define KD_CKPT_PREV "checkpoint.prev.kdc"

typedef struct kd_ckpt {
    uint64_t fingerprint; /* job/model identity; load refuses a mismatch */
    uint32_t generation;  /* membership generation when taken */
    uint32_t epoch;       /* 0-based epoch in progress */
    uint64_t cursor;      /* samples of that epoch already trained */
    uint64_t step;        /* global steps taken since the start of training */
    uint64_t optim_t;     /* optimizer step counter */
    uint64_t seed;        /* initialisation and shuffle seed */
    size_t n_params;      /* floats in params */
    size_t n_state;       /* floats in state */
    float *params;        /* parameters (owned after a load) */
    float *state;         /* optimizer state (owned after a load; NULL when n_state 0) */
    uint32_t eval_epoch;  /* 1-based epoch that accuracy/train_loss belong to; 0 = none
                           * (no epoch finished yet, or a format 1 file) */
    double accuracy;      /* test accuracy after epoch eval_epoch */
    double train_loss;    /* mean training loss of epoch eval_epoch */
    uint32_t batch;       /* per-agent batch in effect; 0 = not recorded (formats 1, 2) */
    double noise_g2;      /* adaptive batch: smoothed |G|^2 estimate (0 = unknown) */
    double noise_s;       /* adaptive batch: smoothed noise trace S estimate */
    int format;           /* file format read (1, 2 or 3); ignored by save */
} kd_ckpt;

/* Atomically replaces DIR's checkpoint with c (params and state are borrowed), keeping
 * the one it replaces as the previous checkpoint. Creates DIR if missing. KD_EIO with the
 * failing path and errno text in err. */
int kd_ckpt_save(const char *dir, const kd_ckpt *c, char *err, size_t errlen);

/* Whether DIR can take a checkpoint: creates DIR if missing (as kd_ckpt_save does), then
 * writes, fsyncs and removes a one-byte probe file. KD_EIO with the path and errno text
 * in err. The coordinator calls it at start so that an unwritable directory is reported
 * at once rather than at the first checkpoint. */
int kd_ckpt_probe(const char *dir, char *err, size_t errlen);

/* Reads one checkpoint file into *out (allocating params and state). KD_ENOTFOUND when
 * the file does not exist, KD_ETRUNCATED, KD_EFORMAT or KD_ECHECKSUM when it is damaged,
 * KD_ECONFLICT when fingerprint is not 0 and differs from the file's; detail in err. */
int kd_ckpt_load_file(const char *path, uint64_t fingerprint, kd_ckpt *out, char *err,
                      size_t errlen);

/* Loads DIR's latest checkpoint, or the previous one when the latest is missing or
 * damaged (a warning is logged). KD_ENOTFOUND when neither exists; otherwise the error
 * of the previous checkpoint. *which is set to the file name used (may be NULL). */
int kd_ckpt_load(const char *dir, uint64_t fingerprint, kd_ckpt *out, const char **which,
                 char *err, size_t errlen);

/* Frees what a load allocated and zeroes *c; accepts NULL. */
void kd_ckpt_free(kd_ckpt *c);

#endif
