/*
 * sched_qtable: the rl policy's learned table as JSON, the format the operator keeps in
 * the ConfigMap `kadet-scheduler-state` and the Helm chart ships as the default
 * (operator/scheduler/qtable-default.json). Separate from kd_sched.h because it needs
 * jansson while the policy core needs only libc and libm.
 *
 * Format (docs/scheduler.md): {"format": "kadet-qtable", "version": 2, "features": {...},
 * "actions": [-2,-1,0,1,2], "double_q": bool, "epsilon": e, "updates": n,
 * "entries": [{"s": [count, eff, free, queue, progress], "n": visits, "q": [...],
 * "q2": [...]}], "cluster": {the cluster layer, same entry layout}}; only visited states
 * are stored. Version 1 (no "cluster") is still read.
 *
 * A table that fails validation is rejected as a whole with a readable error; the policy
 * then holds an empty table, so every state is unvisited and rl decides like greedy.
 */
#ifndef KD_SCHED_QTABLE_H
#define KD_SCHED_QTABLE_H

#include <jansson.h>
#include <stddef.h>

#include "kd_sched.h"

/* Serialises the rl policy's table; *out is a new reference the caller owns. Returns
 * KD_OK, KD_EINVAL (not an rl policy) or KD_ENOMEM. */
int sched_qtable_to_json(const sched_policy *p, json_t **out, char *err, size_t errlen);

/* Replaces the rl policy's table with the one in doc (borrowed). On any error (KD_EFORMAT,
 * KD_ERANGE, KD_EINVAL; detail in err) the table is emptied: the policy falls back to
 * greedy until it learns again. */
int sched_qtable_from_json(sched_policy *p, const json_t *doc, char *err, size_t errlen);

/* The same through a file: written atomically (temporary file, fsync, rename). */
int sched_qtable_save(const sched_policy *p, const char *path, char *err, size_t errlen);
int sched_qtable_load(sched_policy *p, const char *path, char *err, size_t errlen);

/* The same through text (the ConfigMap's data value). *out is malloc'ed; caller frees. */
int sched_qtable_dumps(const sched_policy *p, char **out, char *err, size_t errlen);
int sched_qtable_loads(sched_policy *p, const char *text, char *err, size_t errlen);

#endif
