/*
 * kube_verbs: the API verbs on top of kube_request: path building per resource,
 * list validation (a list whose items are not objects with a name and a
 * resourceVersion is an error, not something to cache), pagination, and the
 * DeleteOptions body.
 */
#include "kube_internal.h"

#include "kd_error.h"

#include <stdlib.h>
#include <string.h>

/* --- verbs ----------------------------------------------------------------------- */

int kube_get_sub(kube_client *c, const kube_resource *r, const char *ns, const char *name,
                 const char *subresource, json_t **out, kube_error *e)
{
    char path[1024];
    int rc = kube__path(r, kube__ns(c, r, ns, 0), name, subresource, path, sizeof path, e);
    if (rc != KD_OK) {
        return rc;
    }
    if (name == NULL || *name == '\0') {
        return kube__fail(e, KD_EINVAL, "get: empty name");
    }
    return kube_request(c, "GET", path, NULL, NULL, NULL, out, e);
}

int kube_get(kube_client *c, const kube_resource *r, const char *ns, const char *name,
             json_t **out, kube_error *e)
{
    return kube_get_sub(c, r, ns, name, NULL, out, e);
}

int kube_list(kube_client *c, const kube_resource *r, const char *ns,
              const kube_list_opts *o, json_t **out, kube_error *e)
{
    char path[1024], query[4096];
    int rc = kube__path(r, kube__ns(c, r, ns, 1), NULL, NULL, path, sizeof path, e);
    if (rc != KD_OK) {
        return rc;
    }
    if (kube__query(o, 0, query, sizeof query) != KD_OK) {
        return kube__fail(e, KD_ETOOBIG, "list: query too long");
    }
    json_t *list = NULL;
    rc = kube__request(c, "GET", path, query, NULL, NULL, &list, e,
                       o != NULL ? o->cancel : NULL);
    if (rc != KD_OK) {
        return rc;
    }
    json_t *items = json_object_get(list, "items");
    json_t *md = json_object_get(list, "metadata");
    json_t *cont = json_object_get(md, "continue");
    if (!json_is_array(items) && !json_is_null(items) && items != NULL) {
        rc = kube__fail(e, KD_EFORMAT, "list %s: items: expected an array", path);
    } else if (md != NULL && !json_is_object(md)) {
        rc = kube__fail(e, KD_EFORMAT, "list %s: metadata: expected an object", path);
    } else if (!json_is_string(json_object_get(md, "resourceVersion"))) {
        rc = kube__fail(e, KD_EFORMAT, "list %s: metadata.resourceVersion: expected a string",
                        path);
    } else if (cont != NULL && !json_is_string(cont) && !json_is_null(cont)) {
        rc = kube__fail(e, KD_EFORMAT, "list %s: metadata.continue: expected a string", path);
    } else {
        size_t i;
        json_t *it;
        json_array_foreach(items, i, it)
        {
            if (!json_is_object(it) || kube_object_rv(it) == NULL ||
                !json_is_string(json_object_get(json_object_get(it, "metadata"), "name"))) {
                rc = kube__fail(e, KD_EFORMAT,
                                "list %s: items[%zu]: expected an object with "
                                "metadata.name and metadata.resourceVersion",
                                path, i);
                break;
            }
        }
    }
    if (rc != KD_OK) {
        json_decref(list);
        return rc;
    }
    if (out != NULL) {
        *out = list;
    } else {
        json_decref(list);
    }
    return KD_OK;
}

int kube_list_all(kube_client *c, const kube_resource *r, const char *ns,
                  const kube_list_opts *o, json_t **items_out, char **rv_out, kube_error *e)
{
    *items_out = NULL;
    *rv_out = NULL;
    kube_list_opts po = {0};
    if (o != NULL) {
        po = *o;
    }
    int restarted = 0;
    json_t *items = json_array();
    char *cont = NULL;
    char *rv = NULL;
    int rc = items != NULL ? KD_OK : KD_ENOMEM;
    while (rc == KD_OK) {
        po.continue_token = cont;
        json_t *page = NULL;
        rc = kube_list(c, r, ns, &po, &page, e);
        if (rc == KD_EGONE && cont != NULL && !restarted) {
            /* The continue token expired: start over once, from the latest state. */
            restarted = 1;
            json_array_clear(items);
            free(cont);
            cont = NULL;
            po.resource_version = NULL;
            rc = KD_OK;
            continue;
        }
        if (rc != KD_OK) {
            break;
        }
        json_t *md = json_object_get(page, "metadata");
        json_array_extend(items, json_object_get(page, "items"));
        free(rv);
        rv = strdup(json_string_value(json_object_get(md, "resourceVersion")));
        const char *next = json_string_value(json_object_get(md, "continue"));
        free(cont);
        cont = next != NULL && *next != '\0' ? strdup(next) : NULL;
        if (rv == NULL || (next != NULL && *next != '\0' && cont == NULL)) {
            rc = kube__fail(e, KD_ENOMEM, "out of memory");
        }
        json_decref(page);
        if (cont == NULL) {
            break;
        }
        /* Later pages must come from the snapshot of the first. */
        po.resource_version = NULL;
    }
    free(cont);
    if (rc != KD_OK) {
        json_decref(items);
        free(rv);
        return rc;
    }
    *items_out = items;
    *rv_out = rv;
    return KD_OK;
}

int kube_create(kube_client *c, const kube_resource *r, const char *ns, json_t *obj,
                json_t **out, kube_error *e)
{
    char path[1024];
    int rc = kube__path(r, kube__ns(c, r, ns, 0), NULL, NULL, path, sizeof path, e);
    if (rc != KD_OK) {
        return rc;
    }
    return kube_request(c, "POST", path, NULL, obj, NULL, out, e);
}

int kube_update(kube_client *c, const kube_resource *r, const char *ns, const char *name,
                const char *subresource, json_t *obj, json_t **out, kube_error *e)
{
    if (name == NULL) {
        name = json_string_value(json_object_get(json_object_get(obj, "metadata"), "name"));
    }
    if (name == NULL || *name == '\0') {
        return kube__fail(e, KD_EINVAL, "update: no name");
    }
    char path[1024];
    int rc = kube__path(r, kube__ns(c, r, ns, 0), name, subresource, path, sizeof path, e);
    if (rc != KD_OK) {
        return rc;
    }
    return kube_request(c, "PUT", path, NULL, obj, NULL, out, e);
}

int kube_patch(kube_client *c, const kube_resource *r, const char *ns, const char *name,
               const char *subresource, json_t *patch, json_t **out, kube_error *e)
{
    if (name == NULL || *name == '\0') {
        return kube__fail(e, KD_EINVAL, "patch: no name");
    }
    char path[1024];
    int rc = kube__path(r, kube__ns(c, r, ns, 0), name, subresource, path, sizeof path, e);
    if (rc != KD_OK) {
        return rc;
    }
    return kube_request(c, "PATCH", path, NULL, patch, "application/merge-patch+json", out, e);
}

int kube_delete(kube_client *c, const kube_resource *r, const char *ns, const char *name,
                const kube_delete_opts *o, json_t **out, kube_error *e)
{
    if (name == NULL || *name == '\0') {
        return kube__fail(e, KD_EINVAL, "delete: no name");
    }
    char path[1024];
    int rc = kube__path(r, kube__ns(c, r, ns, 0), name, NULL, path, sizeof path, e);
    if (rc != KD_OK) {
        return rc;
    }
    json_t *body = NULL;
    if (o != NULL) {
        body = json_pack("{s:s,s:s}", "apiVersion", "v1", "kind", "DeleteOptions");
        if (body == NULL) {
            return kube__fail(e, KD_ENOMEM, "out of memory");
        }
        if (o->propagation != NULL) {
            json_object_set_new(body, "propagationPolicy", json_string(o->propagation));
        }
        if (o->set_grace) {
            json_object_set_new(body, "gracePeriodSeconds", json_integer(o->grace_period_s));
        }
        if (o->precondition_uid != NULL || o->precondition_rv != NULL) {
            json_t *pre = json_object();
            if (o->precondition_uid != NULL) {
                json_object_set_new(pre, "uid", json_string(o->precondition_uid));
            }
            if (o->precondition_rv != NULL) {
                json_object_set_new(pre, "resourceVersion", json_string(o->precondition_rv));
            }
            json_object_set_new(body, "preconditions", pre);
        }
    }
    rc = kube_request(c, "DELETE", path, NULL, body, NULL, out, e);
    json_decref(body);
    return rc;
}
