/*
 * sched_qtable.c: the rl policy's table to and from JSON (format in sched_qtable.h and
 * docs/scheduler.md). Loading validates everything before trusting it: a table written
 * for other feature buckets or actions, a number that is not finite, a state out of
 * range or listed twice, is rejected as a whole, and the policy is left with an empty
 * table (so it decides like greedy) rather than with half of a foreign one.
 */
#include "sched_qtable.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kd_error.h"
#include "sched_internal.h"

#define SCHED_QT_FORMAT "kadet-qtable"
#define SCHED_QT_VERSION 3 /* 2 adds "cluster" (the cluster layer), 3 its actions 5-6;
                              1 and 2 are still read */

static const char *const sched_qt_c_feature_names[4] = {"jobs", "queue", "goodput", "spread"};
static const int sched_qt_c_dims[4] = {SCHED_C_JOBS, SCHED_C_QUEUE, SCHED_C_GP, SCHED_C_SPREAD};
static const char *const sched_qt_c_actions[SCHED_C_ACTIONS] = {
    "greedy-table", "goodput-k0", "goodput-k0.5", "goodput-k1", "goodput-k2",
    "greedy-p0.4-preempt0.5", "greedy-p0.5-preempt0.5"};

static const char *const sched_qt_feature_names[6] = {"count", "efficiency", "free",
                                                      "queue", "progress", "time_left"};
static const int sched_qt_dims[6] = {SCHED_F_COUNT, SCHED_F_EFF,  SCHED_F_FREE,
                                     SCHED_F_QUEUE, SCHED_F_PROG, SCHED_F_TIME};

static int qt_is_rl(const sched_policy *p)
{
    return p && p->kind == SCHED_RL && p->rl;
}

/* The cluster layer as {"features":{...},"actions":[...],"hold":H,"updates":U,
 * "entries":[{"s":[4 ints],"n":[7],"q":[7],"q2":[7]}]}; visited states only (version 2
 * had the first 5 actions). */
static int qt_cluster_to_json(const sched_rlc *c, json_t *doc)
{
    json_t *cl = json_object(), *feats = json_object(), *acts = json_array(),
           *entries = json_array();
    int bad = !cl || !feats || !acts || !entries;
    if (bad || json_object_set_new(doc, "cluster", cl)) {
        json_decref(cl);
        json_decref(feats);
        json_decref(acts);
        json_decref(entries);
        return -1;
    }
    bad |= json_object_set_new(cl, "features", feats);
    bad |= json_object_set_new(cl, "actions", acts);
    bad |= json_object_set_new(cl, "hold", json_integer(SCHED_C_HOLD));
    bad |= json_object_set_new(cl, "updates", json_integer(c->updates));
    bad |= json_object_set_new(cl, "entries", entries);
    if (bad)
        return -1;
    for (int f = 0; f < 4; f++)
        bad |= json_object_set_new(feats, sched_qt_c_feature_names[f],
                                   json_integer(sched_qt_c_dims[f]));
    for (int a = 0; a < SCHED_C_ACTIONS; a++)
        bad |= json_array_append_new(acts, json_string(sched_qt_c_actions[a]));
    for (int st = 0; st < SCHED_C_STATES && !bad; st++) {
        int any = 0;
        for (int a = 0; a < SCHED_C_ACTIONS; a++)
            any |= c->visits[st * SCHED_C_ACTIONS + a] > 0;
        if (!any)
            continue;
        json_t *e = json_object(), *sv = json_array(), *nv = json_array(), *qv = json_array(),
               *q2v = json_array();
        if (!e || !sv || !nv || !qv || !q2v || json_array_append_new(entries, e)) {
            json_decref(e);
            json_decref(sv);
            json_decref(nv);
            json_decref(qv);
            json_decref(q2v);
            return -1;
        }
        bad |= json_object_set_new(e, "s", sv);
        bad |= json_object_set_new(e, "n", nv);
        bad |= json_object_set_new(e, "q", qv);
        bad |= json_object_set_new(e, "q2", q2v);
        int rem = st, f[4];
        for (int k = 3; k >= 0; k--) {
            f[k] = rem % sched_qt_c_dims[k];
            rem /= sched_qt_c_dims[k];
        }
        for (int k = 0; k < 4; k++)
            bad |= json_array_append_new(sv, json_integer(f[k]));
        for (int a = 0; a < SCHED_C_ACTIONS; a++) {
            int x = st * SCHED_C_ACTIONS + a;
            bad |= json_array_append_new(nv, json_integer(c->visits[x]));
            bad |= json_array_append_new(qv, json_real(c->q1[x]));
            bad |= json_array_append_new(q2v, json_real(c->q2[x]));
        }
    }
    return bad ? -1 : 0;
}

int sched_qtable_to_json(const sched_policy *p, json_t **out, char *err, size_t errlen)
{
    if (!out)
        return kd_errf(err, errlen, KD_EINVAL, "no output pointer");
    *out = NULL;
    if (!qt_is_rl(p))
        return kd_errf(err, errlen, KD_EINVAL, "only the rl policy has a Q-table");
    const sched_rl *rl = p->rl;
    json_t *doc = json_object(), *feats, *acts, *entries;
    /* the containers go into doc at once so that one json_decref(doc) frees everything */
    if (!doc || json_object_set_new(doc, "format", json_string(SCHED_QT_FORMAT)) ||
        json_object_set_new(doc, "version", json_integer(SCHED_QT_VERSION)) ||
        json_object_set_new(doc, "features", json_object()) ||
        json_object_set_new(doc, "actions", json_array()) ||
        json_object_set_new(doc, "double_q", json_boolean(rl->q2 != NULL)) ||
        json_object_set_new(doc, "epsilon", json_real(rl->epsilon)) ||
        json_object_set_new(doc, "updates", json_integer(rl->updates)) ||
        json_object_set_new(doc, "entries", json_array()))
        goto nomem;
    feats = json_object_get(doc, "features");
    acts = json_object_get(doc, "actions");
    entries = json_object_get(doc, "entries");
    for (int f = 0; f < 6; f++)
        if (json_object_set_new(feats, sched_qt_feature_names[f], json_integer(sched_qt_dims[f])))
            goto nomem;
    for (int a = -2; a <= 2; a++)
        if (json_array_append_new(acts, json_integer(a)))
            goto nomem;
    for (int s = 0; s < SCHED_N_STATES; s++) {
        size_t base = (size_t)s * SCHED_N_ACTIONS;
        int any = 0;
        for (int a = 0; a < SCHED_N_ACTIONS; a++)
            any |= rl->visits[base + a] > 0;
        if (!any)
            continue;
        json_t *e = json_object(), *sv = json_array(), *nv = json_array(), *qv = json_array(),
               *q2v = rl->q2 ? json_array() : NULL;
        if (!e || !sv || !nv || !qv || (rl->q2 && !q2v) || json_array_append_new(entries, e)) {
            json_decref(e);
            json_decref(sv);
            json_decref(nv);
            json_decref(qv);
            json_decref(q2v);
            goto nomem;
        }
        /* unpack the index, last feature fastest (as sched_rl_state() packs it) */
        int rem = s, f[6];
        for (int k = 5; k >= 0; k--) {
            f[k] = rem % sched_qt_dims[k];
            rem /= sched_qt_dims[k];
        }
        int bad = 0;
        for (int k = 0; k < 6; k++)
            bad |= json_array_append_new(sv, json_integer(f[k]));
        for (int a = 0; a < SCHED_N_ACTIONS; a++) {
            bad |= json_array_append_new(nv, json_integer(rl->visits[base + a]));
            bad |= json_array_append_new(qv, json_real(rl->q1[base + a]));
            if (q2v)
                bad |= json_array_append_new(q2v, json_real(rl->q2[base + a]));
        }
        bad |= json_object_set_new(e, "s", sv);
        bad |= json_object_set_new(e, "n", nv);
        bad |= json_object_set_new(e, "q", qv);
        if (q2v)
            bad |= json_object_set_new(e, "q2", q2v);
        if (bad)
            goto nomem;
    }
    if (qt_cluster_to_json(&rl->c, doc) != 0)
        goto nomem;
    *out = doc;
    return KD_OK;
nomem:
    json_decref(doc);
    return kd_errf(err, errlen, KD_ENOMEM, "out of memory serialising the Q-table");
}

/* Reads an array of exactly n numbers (integers when ints) into out. */
static int qt_numbers(const json_t *arr, int n, int ints, double *out)
{
    if (!json_is_array(arr) || (int)json_array_size(arr) != n)
        return -1;
    for (int i = 0; i < n; i++) {
        const json_t *v = json_array_get(arr, (size_t)i);
        if (ints ? !json_is_integer(v) : !json_is_number(v))
            return -1;
        out[i] = json_number_value(v);
        if (!isfinite(out[i]))
            return -1;
    }
    return 0;
}

/* na: the actions of the table's version (SCHED_C_ACTIONS_V2 for version 2, whose
 * actions are the first ones of today's; the others start unvisited). */
static int qt_parse_cluster(sched_rlc *c, const json_t *cl, int na, char *err, size_t errlen)
{
    double v[SCHED_C_ACTIONS], q[SCHED_C_ACTIONS], q2[SCHED_C_ACTIONS], n[SCHED_C_ACTIONS];
    if (!json_is_object(cl))
        return kd_errf(err, errlen, KD_EFORMAT, "Q-table: version %d needs a \"cluster\" object",
                       na == SCHED_C_ACTIONS ? SCHED_QT_VERSION : 2);
    const json_t *feats = json_object_get(cl, "features");
    for (int f = 0; f < 4; f++) {
        const json_t *d = json_is_object(feats) ? json_object_get(feats, sched_qt_c_feature_names[f])
                                                : NULL;
        if (!json_is_integer(d) || json_integer_value(d) != sched_qt_c_dims[f])
            return kd_errf(err, errlen, KD_EFORMAT,
                           "Q-table: cluster feature \"%s\" must have %d buckets",
                           sched_qt_c_feature_names[f], sched_qt_c_dims[f]);
    }
    const json_t *acts = json_object_get(cl, "actions");
    if (!json_is_array(acts) || json_array_size(acts) != (size_t)na)
        return kd_errf(err, errlen, KD_EFORMAT, "Q-table: cluster \"actions\" must list %d",
                       na);
    for (int a = 0; a < na; a++) {
        const json_t *x = json_array_get(acts, (size_t)a);
        if (!json_is_string(x) || strcmp(json_string_value(x), sched_qt_c_actions[a]) != 0)
            return kd_errf(err, errlen, KD_EFORMAT, "Q-table: cluster action %d must be \"%s\"",
                           a, sched_qt_c_actions[a]);
    }
    const json_t *hold = json_object_get(cl, "hold");
    if (!json_is_integer(hold) || json_integer_value(hold) != SCHED_C_HOLD)
        return kd_errf(err, errlen, KD_EFORMAT, "Q-table: cluster \"hold\" must be %d",
                       SCHED_C_HOLD);
    const json_t *upd = json_object_get(cl, "updates");
    if (upd && (!json_is_integer(upd) || json_integer_value(upd) < 0))
        return kd_errf(err, errlen, KD_ERANGE, "Q-table: cluster \"updates\" must be >= 0");
    const json_t *entries = json_object_get(cl, "entries");
    if (!json_is_array(entries) || json_array_size(entries) > SCHED_C_STATES)
        return kd_errf(err, errlen, KD_EFORMAT,
                       "Q-table: cluster \"entries\" must be an array of at most %d",
                       SCHED_C_STATES);
    for (size_t e = 0; e < json_array_size(entries); e++) {
        const json_t *en = json_array_get(entries, e);
        if (!json_is_object(en) || qt_numbers(json_object_get(en, "s"), 4, 1, v) != 0 ||
            qt_numbers(json_object_get(en, "n"), na, 1, n) != 0 ||
            qt_numbers(json_object_get(en, "q"), na, 0, q) != 0 ||
            qt_numbers(json_object_get(en, "q2"), na, 0, q2) != 0)
            return kd_errf(err, errlen, KD_EFORMAT,
                           "Q-table: cluster entry %zu needs s[4], n, q, q2[%d]", e, na);
        for (int a = na; a < SCHED_C_ACTIONS; a++)
            n[a] = q[a] = q2[a] = 0;
        int st = 0;
        for (int f = 0; f < 4; f++) {
            if (v[f] < 0 || v[f] >= sched_qt_c_dims[f])
                return kd_errf(err, errlen, KD_ERANGE,
                               "Q-table: cluster entry %zu: %s = %g out of [0, %d)", e,
                               sched_qt_c_feature_names[f], v[f], sched_qt_c_dims[f]);
            st = st * sched_qt_c_dims[f] + (int)v[f];
        }
        for (int a = 0; a < SCHED_C_ACTIONS; a++)
            if (c->visits[st * SCHED_C_ACTIONS + a] > 0)
                return kd_errf(err, errlen, KD_EFORMAT,
                               "Q-table: cluster entry %zu: state listed twice", e);
        for (int a = 0; a < SCHED_C_ACTIONS; a++) {
            if (n[a] < 0 || n[a] > 4e9)
                return kd_errf(err, errlen, KD_ERANGE,
                               "Q-table: cluster entry %zu: visit count out of range", e);
            int x = st * SCHED_C_ACTIONS + a;
            c->visits[x] = (unsigned)n[a];
            c->q1[x] = q[a];
            c->q2[x] = q2[a];
        }
    }
    c->updates = upd ? (long)json_integer_value(upd) : 0;
    return KD_OK;
}

static int qt_parse(sched_policy *p, const json_t *doc, char *err, size_t errlen)
{
    sched_rl *rl = p->rl;
    double v[6];

    if (!json_is_object(doc))
        return kd_errf(err, errlen, KD_EFORMAT, "Q-table: not a JSON object");
    const json_t *fmt = json_object_get(doc, "format");
    if (!json_is_string(fmt) || strcmp(json_string_value(fmt), SCHED_QT_FORMAT) != 0)
        return kd_errf(err, errlen, KD_EFORMAT, "Q-table: \"format\" is not \"%s\"",
                       SCHED_QT_FORMAT);
    const json_t *ver = json_object_get(doc, "version");
    if (!json_is_integer(ver) || json_integer_value(ver) < 1 ||
        json_integer_value(ver) > SCHED_QT_VERSION)
        return kd_errf(err, errlen, KD_EFORMAT, "Q-table: unsupported \"version\" (want 1..%d)",
                       SCHED_QT_VERSION);
    if (json_integer_value(ver) >= 2) {
        int rc = qt_parse_cluster(&rl->c, json_object_get(doc, "cluster"),
                                  json_integer_value(ver) == 2 ? SCHED_C_ACTIONS_V2
                                                               : SCHED_C_ACTIONS,
                                  err, errlen);
        if (rc != KD_OK)
            return rc;
    }
    const json_t *feats = json_object_get(doc, "features");
    if (!json_is_object(feats))
        return kd_errf(err, errlen, KD_EFORMAT, "Q-table: \"features\" missing");
    for (int f = 0; f < 6; f++) {
        const json_t *d = json_object_get(feats, sched_qt_feature_names[f]);
        if (!json_is_integer(d) || json_integer_value(d) != sched_qt_dims[f])
            return kd_errf(err, errlen, KD_EFORMAT,
                           "Q-table: feature \"%s\" must have %d buckets (table was written "
                           "for another state encoding)", sched_qt_feature_names[f],
                           sched_qt_dims[f]);
    }
    if (qt_numbers(json_object_get(doc, "actions"), SCHED_N_ACTIONS, 1, v) != 0 ||
        v[0] != -2 || v[1] != -1 || v[2] != 0 || v[3] != 1 || v[4] != 2)
        return kd_errf(err, errlen, KD_EFORMAT, "Q-table: \"actions\" must be [-2,-1,0,1,2]");
    const json_t *eps = json_object_get(doc, "epsilon");
    if (eps && (!json_is_number(eps) || !(json_number_value(eps) >= 0) ||
                json_number_value(eps) > 1))
        return kd_errf(err, errlen, KD_ERANGE, "Q-table: \"epsilon\" must be in [0, 1]");
    const json_t *upd = json_object_get(doc, "updates");
    if (upd && (!json_is_integer(upd) || json_integer_value(upd) < 0))
        return kd_errf(err, errlen, KD_ERANGE, "Q-table: \"updates\" must be >= 0");
    const json_t *entries = json_object_get(doc, "entries");
    if (!json_is_array(entries))
        return kd_errf(err, errlen, KD_EFORMAT, "Q-table: \"entries\" is not an array");
    if (json_array_size(entries) > (size_t)SCHED_N_STATES)
        return kd_errf(err, errlen, KD_ERANGE, "Q-table: more entries than states (%d)",
                       SCHED_N_STATES);

    for (size_t e = 0; e < json_array_size(entries); e++) {
        const json_t *en = json_array_get(entries, e);
        double q[SCHED_N_ACTIONS], q2[SCHED_N_ACTIONS], n[SCHED_N_ACTIONS];
        if (!json_is_object(en) || qt_numbers(json_object_get(en, "s"), 6, 1, v) != 0)
            return kd_errf(err, errlen, KD_EFORMAT,
                           "Q-table: entry %zu: \"s\" must be 6 integers", e);
        int s = 0;
        for (int f = 0; f < 6; f++) {
            if (v[f] < 0 || v[f] >= sched_qt_dims[f])
                return kd_errf(err, errlen, KD_ERANGE,
                               "Q-table: entry %zu: feature %s = %g out of [0, %d)", e,
                               sched_qt_feature_names[f], v[f], sched_qt_dims[f]);
            s = s * sched_qt_dims[f] + (int)v[f];
        }
        if (qt_numbers(json_object_get(en, "n"), SCHED_N_ACTIONS, 1, n) != 0)
            return kd_errf(err, errlen, KD_EFORMAT,
                           "Q-table: entry %zu: \"n\" must be %d integers", e, SCHED_N_ACTIONS);
        if (qt_numbers(json_object_get(en, "q"), SCHED_N_ACTIONS, 0, q) != 0)
            return kd_errf(err, errlen, KD_EFORMAT,
                           "Q-table: entry %zu: \"q\" must be %d finite numbers", e,
                           SCHED_N_ACTIONS);
        const json_t *q2j = json_object_get(en, "q2");
        if (q2j && qt_numbers(q2j, SCHED_N_ACTIONS, 0, q2) != 0)
            return kd_errf(err, errlen, KD_EFORMAT,
                           "Q-table: entry %zu: \"q2\" must be %d finite numbers", e,
                           SCHED_N_ACTIONS);
        size_t base = (size_t)s * SCHED_N_ACTIONS;
        for (int a = 0; a < SCHED_N_ACTIONS; a++)
            if (rl->visits[base + a] > 0)
                return kd_errf(err, errlen, KD_EFORMAT, "Q-table: entry %zu: state listed twice",
                               e);
        for (int a = 0; a < SCHED_N_ACTIONS; a++) {
            if (n[a] < 0 || n[a] > 4e9)
                return kd_errf(err, errlen, KD_ERANGE,
                               "Q-table: entry %zu: visit count %g out of range", e, n[a]);
            /* a table without q2 seeds both Double-Q tables; one with q2 loaded into a
             * single-table policy keeps their mean */
            double qa = q2j ? 0.5 * (q[a] + q2[a]) : q[a];
            rl->q1[base + a] = rl->q2 ? q[a] : qa;
            if (rl->q2)
                rl->q2[base + a] = q2j ? q2[a] : q[a];
            rl->visits[base + a] = (unsigned)n[a];
        }
    }
    if (eps)
        rl->epsilon = json_number_value(eps);
    rl->updates = upd ? (long)json_integer_value(upd) : 0;
    return KD_OK;
}

int sched_qtable_from_json(sched_policy *p, const json_t *doc, char *err, size_t errlen)
{
    if (!qt_is_rl(p))
        return kd_errf(err, errlen, KD_EINVAL, "only the rl policy has a Q-table");
    sched_rl_clear(p->rl);
    int rc = qt_parse(p, doc, err, errlen);
    if (rc != KD_OK)
        sched_rl_clear(p->rl); /* all or nothing: an empty table means greedy */
    return rc;
}

int sched_qtable_dumps(const sched_policy *p, char **out, char *err, size_t errlen)
{
    json_t *doc;
    if (!out)
        return kd_errf(err, errlen, KD_EINVAL, "no output pointer");
    *out = NULL;
    int rc = sched_qtable_to_json(p, &doc, err, errlen);
    if (rc != KD_OK)
        return rc;
    *out = json_dumps(doc, JSON_COMPACT | JSON_REAL_PRECISION(10));
    json_decref(doc);
    if (!*out)
        return kd_errf(err, errlen, KD_ENOMEM, "out of memory serialising the Q-table");
    return KD_OK;
}

int sched_qtable_loads(sched_policy *p, const char *text, char *err, size_t errlen)
{
    json_error_t je;
    if (!qt_is_rl(p))
        return kd_errf(err, errlen, KD_EINVAL, "only the rl policy has a Q-table");
    if (!text) {
        sched_rl_clear(p->rl);
        return kd_errf(err, errlen, KD_EINVAL, "Q-table: no text");
    }
    json_t *doc = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    if (!doc) {
        sched_rl_clear(p->rl);
        return kd_errf(err, errlen, KD_EPARSE, "Q-table: invalid JSON at line %d column %d: %s",
                       je.line, je.column, je.text);
    }
    int rc = sched_qtable_from_json(p, doc, err, errlen);
    json_decref(doc);
    return rc;
}

int sched_qtable_save(const sched_policy *p, const char *path, char *err, size_t errlen)
{
    char *text, tmp[4096];
    int rc = sched_qtable_dumps(p, &text, err, errlen);
    if (rc != KD_OK)
        return rc;
    if (!path || snprintf(tmp, sizeof(tmp), "%s.tmpXXXXXX", path) >= (int)sizeof(tmp)) {
        free(text);
        return kd_errf(err, errlen, KD_EINVAL, "Q-table: bad path");
    }
    int fd = mkstemp(tmp);
    if (fd < 0) {
        free(text);
        return kd_errf(err, errlen, KD_EIO, "Q-table: cannot create %s: %s", tmp,
                       strerror(errno));
    }
    /* mkstemp creates 0600; the table is meant to be read by others (chart, ConfigMap) */
    (void)fchmod(fd, 0644);
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    int ok = off == len && write(fd, "\n", 1) == 1 && fsync(fd) == 0;
    ok = close(fd) == 0 && ok;
    free(text);
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return kd_errf(err, errlen, KD_EIO, "Q-table: cannot write %s: %s", path, strerror(e));
    }
    return KD_OK;
}

int sched_qtable_load(sched_policy *p, const char *path, char *err, size_t errlen)
{
    json_error_t je;
    if (!qt_is_rl(p))
        return kd_errf(err, errlen, KD_EINVAL, "only the rl policy has a Q-table");
    json_t *doc = path ? json_load_file(path, JSON_REJECT_DUPLICATES, &je) : NULL;
    if (!doc) {
        sched_rl_clear(p->rl);
        return kd_errf(err, errlen, path && je.line < 0 ? KD_EIO : KD_EPARSE,
                       "Q-table %s: %s%s (line %d column %d)", path ? path : "(null)",
                       je.line < 0 ? "cannot read: " : "invalid JSON: ", je.text, je.line,
                       je.column);
    }
    int rc = sched_qtable_from_json(p, doc, err, errlen);
    json_decref(doc);
    return rc;
}
