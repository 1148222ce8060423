"""CustomResourceDefinitions in the Kubernetes API emulator: checking that a CRD is
complete and well typed enough to serve (names, scope, one storage version, structural
schema keywords, subresources, printer columns), and turning it into a served resource
type reported Established, as the API server's CRD controllers do.
"""

from emu_store import ResourceType, check_shape
from emu_util import invalid



def check_crd(store, crd):
    """422 unless the CRD is complete and well typed enough to serve."""
    check_shape(store.types_gr[("apiextensions.k8s.io", "customresourcedefinitions")],
                crd)
    spec = crd.get("spec") if isinstance(crd.get("spec"), dict) else {}
    names = spec.get("names") if isinstance(spec.get("names"), dict) else {}
    causes = []
    for f, v in (("spec.group", spec.get("group")), ("spec.names.plural", names.get("plural")),
                 ("spec.names.kind", names.get("kind"))):
        if not isinstance(v, str) or not v:
            causes.append(("FieldValueRequired", f, "Required value"))
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        causes.append(("FieldValueNotSupported", "spec.scope", "Unsupported value: %r: "
                       "supported values: \"Cluster\", \"Namespaced\"" % spec.get("scope")))
    versions = spec.get("versions")
    if not isinstance(versions, list) or not versions:
        causes.append(("FieldValueRequired", "spec.versions", "Required value"))
    elif sum(1 for v in versions if isinstance(v, dict) and v.get("storage")) != 1:
        causes.append(("FieldValueInvalid", "spec.versions",
                       "Invalid value: must have exactly one version marked as storage "
                       "version"))
    else:
        for i, v in enumerate(versions):
            causes += _check_crd_version(v, "spec.versions[%d]" % i)
    for f in ("shortNames", "categories"):
        if names.get(f) is not None and not (isinstance(names[f], list) and all(
                isinstance(x, str) for x in names[f])):
            causes.append(("FieldValueInvalid", "spec.names." + f,
                           "Invalid value: must be a list of strings"))
    name = crd.get("metadata", {}).get("name")
    if not causes and name != "%s.%s" % (names["plural"], spec["group"]):
        causes.append(("FieldValueInvalid", "metadata.name", "Invalid value: %r: must be "
                       "spec.names.plural+\".\"+spec.group" % name))
    if causes:
        raise invalid("CustomResourceDefinition", "apiextensions.k8s.io", name or "", causes)

def _check_schema(sch, path):
    """Causes for a structurally broken OpenAPI schema (the keywords the emulator
    evaluates must have the types OpenAPI gives them)."""
    def bad(field, want):
        return [("FieldValueInvalid", "%s.%s" % (path, field), "Invalid value: must be %s"
                 % want)]
    if not isinstance(sch, dict):
        return [("FieldValueInvalid", path, "Invalid value: must be an object")]
    causes = []
    if "type" in sch and sch["type"] not in ("object", "array", "string", "integer",
                                             "number", "boolean"):
        causes += bad("type", "one of object, array, string, integer, number, boolean")
    for f in ("minimum", "maximum"):
        if f in sch and (not isinstance(sch[f], (int, float)) or isinstance(sch[f], bool)):
            causes += bad(f, "a number")
    for f in ("minLength", "maxLength", "minItems", "maxItems"):
        if f in sch and (not isinstance(sch[f], int) or isinstance(sch[f], bool)):
            causes += bad(f, "an integer")
    if "pattern" in sch and not isinstance(sch["pattern"], str):
        causes += bad("pattern", "a string")
    if "enum" in sch and not isinstance(sch["enum"], list):
        causes += bad("enum", "a list")
    if "required" in sch and not (isinstance(sch["required"], list) and all(
            isinstance(x, str) for x in sch["required"])):
        causes += bad("required", "a list of strings")
    rules = sch.get("x-kubernetes-validations")
    if rules is not None and not (isinstance(rules, list) and all(
            isinstance(r, dict) and isinstance(r.get("rule"), str) for r in rules)):
        causes += bad("x-kubernetes-validations", "a list of {rule, message}")
    props = sch.get("properties")
    if props is not None:
        if not isinstance(props, dict):
            causes += bad("properties", "an object")
        else:
            for k, sub in props.items():
                causes += _check_schema(sub, "%s.properties[%s]" % (path, k))
    for f in ("items", "additionalProperties"):
        sub = sch.get(f)
        if sub is not None and not isinstance(sub, bool):
            causes += _check_schema(sub, "%s.%s" % (path, f))
    if sch.get("allOf") is not None:
        if not isinstance(sch["allOf"], list):
            causes += bad("allOf", "a list")
        else:
            for i, sub in enumerate(sch["allOf"]):
                causes += _check_schema(sub, "%s.allOf[%d]" % (path, i))
    return causes

def _check_crd_version(v, path):
    if not isinstance(v, dict) or not isinstance(v.get("name"), str) or not v["name"]:
        return [("FieldValueRequired", path + ".name", "Required value")]
    causes = []
    schema = v.get("schema")
    if schema is not None and not (isinstance(schema, dict) and isinstance(
            schema.get("openAPIV3Schema", {}), dict)):
        causes.append(("FieldValueInvalid", path + ".schema.openAPIV3Schema",
                       "Invalid value: must be an object"))
    if isinstance(schema, dict) and isinstance(schema.get("openAPIV3Schema"), dict):
        causes += _check_schema(schema["openAPIV3Schema"],
                                    path + ".schema.openAPIV3Schema")
    subs = v.get("subresources")
    if subs is not None and not (isinstance(subs, dict) and all(
            isinstance(x, (dict, type(None))) for x in subs.values())):
        causes.append(("FieldValueInvalid", path + ".subresources",
                       "Invalid value: must be an object of objects"))
    elif isinstance(subs, dict) and isinstance(subs.get("scale"), dict):
        for f in ("specReplicasPath", "statusReplicasPath", "labelSelectorPath"):
            val = subs["scale"].get(f)
            if val is not None and not (isinstance(val, str) and val.startswith(".")):
                causes.append(("FieldValueInvalid", "%s.subresources.scale.%s" % (path, f),
                               "Invalid value: must be a JSON path starting with '.'"))
    cols = v.get("additionalPrinterColumns")
    if cols is not None and not (isinstance(cols, list) and all(
            isinstance(c, dict) and isinstance(c.get("name"), str) and
            isinstance(c.get("jsonPath"), str) for c in cols)):
        causes.append(("FieldValueInvalid", path + ".additionalPrinterColumns",
                       "Invalid value: each column needs a name and a jsonPath"))
    return causes

def establish_crd(store, crd):
    """Serve the CRD's resource and report it Established, like the API server's
    CRD controllers do right after creation."""
    spec = crd["spec"]
    names = spec["names"]
    served = [v for v in spec["versions"] if v.get("served", True)]
    served.sort(key=lambda v: not v.get("storage"))
    rt = ResourceType(spec["group"], [v["name"] for v in served], names["plural"],
                      names["kind"], spec["scope"] == "Namespaced",
                      names.get("shortNames", []), (), names.get("singular"),
                      names.get("categories", []), crd["metadata"]["name"])
    if names.get("listKind"):
        rt.list_kind = names["listKind"]
    for v in served:
        rt.schemas[v["name"]] = (v.get("schema") or {}).get("openAPIV3Schema")
        rt.columns[v["name"]] = v.get("additionalPrinterColumns") or []
        subs = v.get("subresources") or {}
        if "status" in subs:
            rt.subresources.add("status")
        if "scale" in subs:
            sc = subs["scale"] or {}
            rt.subresources.add("scale")
            rt.scale = (sc.get("specReplicasPath", ".spec.replicas"),
                        sc.get("statusReplicasPath", ".status.replicas"),
                        sc.get("labelSelectorPath"))
    store.add_type(rt)
    status = {"acceptedNames": names, "storedVersions": [rt.versions[0]],
              "conditions": [
                  {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                   "message": "no conflicts found",
                   "lastTransitionTime": crd["metadata"]["creationTimestamp"]},
                  {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                   "message": "the initial names have been accepted",
                   "lastTransitionTime": crd["metadata"]["creationTimestamp"]}]}
    crt = store.types_gr[("apiextensions.k8s.io", "customresourcedefinitions")]
    return store.update(crt, "", crd["metadata"]["name"],
                             {"metadata": {"name": crd["metadata"]["name"]},
                              "status": status}, "v1", "status", None, False)
