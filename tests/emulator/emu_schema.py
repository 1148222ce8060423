"""CustomResourceDefinition schemas and the Table output of the Kubernetes API emulator.

validate() enforces an OpenAPI v3 structural schema the way the API server does for
custom resources: defaults are applied, unknown fields are pruned (and reported, so that
fieldValidation=Strict can reject them), and type, required, enum, minimum/maximum,
length, pattern and item-count violations become 422 causes with the API server's wording.
A small subset of CEL (x-kubernetes-validations) is evaluated: comparisons, has(),
size(), &&, || and !, over self and oldSelf-free rules; rules outside that subset are
skipped rather than guessed.

to_table() renders objects as a meta.k8s.io/v1 Table: built-in kinds get the columns
kubectl users expect, custom resources get Name plus their additionalPrinterColumns.
"""

import re
import time

from emu_util import human_age, jsonpath, parse_rfc3339

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool))
    or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
}


def _jtype(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number" if isinstance(v, float) and not v.is_integer() else "integer"
    if isinstance(v, str):
        return "string"
    return "array" if isinstance(v, list) else "object"


def _fmt(v):
    if isinstance(v, str):
        return '"%s"' % v
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, (dict, list)):
        return "%s" % _jtype(v)
    return str(v)


def validate(schema, value, path, causes, pruned, root=True):
    """Validate value against schema in place (defaults applied, unknown fields pruned).
    causes collects (reason, field, message); pruned collects unknown field paths."""
    if schema is None:
        return
    if value is None:
        if not schema.get("nullable"):
            causes.append(("FieldValueTypeInvalid", path,
                           "Invalid value: \"null\": %s in body must be of type %s: \"null\""
                           % (path, schema.get("type", "object"))))
        return
    if schema.get("x-kubernetes-int-or-string"):
        if not (isinstance(value, str) or _TYPES["integer"](value)):
            causes.append(("FieldValueTypeInvalid", path,
                           "Invalid value: %s: %s in body must be of type int-or-string"
                           % (_fmt(value), path)))
        return
    t = schema.get("type")
    if t and t in _TYPES and not _TYPES[t](value):
        causes.append(("FieldValueTypeInvalid", path,
                       "Invalid value: \"%s\": %s in body must be of type %s: \"%s\""
                       % (_jtype(value), path, t, _jtype(value))))
        return
    if "enum" in schema and value not in schema["enum"]:
        causes.append(("FieldValueNotSupported", path, "Unsupported value: %s: supported values: %s"
                       % (_fmt(value), ", ".join(_fmt(e) for e in schema["enum"]))))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema:
            lo = schema["minimum"]
            if value < lo or (schema.get("exclusiveMinimum") and value == lo):
                causes.append(("FieldValueInvalid", path,
                               "Invalid value: %s: %s in body should be greater than %s%s"
                               % (_fmt(value), path, "" if schema.get("exclusiveMinimum")
                                  else "or equal to ", _fmt(lo))))
        if "maximum" in schema:
            hi = schema["maximum"]
            if value > hi or (schema.get("exclusiveMaximum") and value == hi):
                causes.append(("FieldValueInvalid", path,
                               "Invalid value: %s: %s in body should be less than %s%s"
                               % (_fmt(value), path, "" if schema.get("exclusiveMaximum")
                                  else "or equal to ", _fmt(hi))))
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            causes.append(("FieldValueInvalid", path, "Invalid value: %s: %s in body should be "
                           "at least %d chars long" % (_fmt(value), path, schema["minLength"])))
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            causes.append(("FieldValueTooLong", path, "Too long: may not be longer than %d"
                           % schema["maxLength"]))
        if "pattern" in schema:
            try:
                if not re.search(schema["pattern"], value):
                    causes.append(("FieldValueInvalid", path,
                                   "Invalid value: %s: %s in body should match '%s'"
                                   % (_fmt(value), path, schema["pattern"])))
            except re.error:
                pass
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            causes.append(("FieldValueInvalid", path, "Invalid value: %d: %s in body should have "
                           "at least %d items" % (len(value), path, schema["minItems"])))
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            causes.append(("FieldValueTooMany", path, "Too many: %d: must have at most %d items"
                           % (len(value), schema["maxItems"])))
        items = schema.get("items")
        if isinstance(items, dict):
            for i, it in enumerate(value):
                validate(items, it, "%s[%d]" % (path, i), causes, pruned, False)
    if isinstance(value, dict):
        props = schema.get("properties")
        addl = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields")
        if props is not None:
            for k, sub in props.items():
                if k not in value and isinstance(sub, dict) and "default" in sub:
                    value[k] = sub["default"]
        for k in list(value.keys()):
            sub_path = "%s.%s" % (path, k) if path else k
            if root and k in ("apiVersion", "kind", "metadata"):
                continue
            if props is not None and k in props:
                validate(props[k], value[k], sub_path, causes, pruned, False)
            elif isinstance(addl, dict):
                validate(addl, value[k], sub_path, causes, pruned, False)
            elif addl is True or preserve or (props is None and t != "object"):
                continue
            elif props is not None or t == "object":
                pruned.append(sub_path)
                del value[k]
        for k in schema.get("required", []):
            if k not in value:
                causes.append(("FieldValueRequired", "%s.%s" % (path, k) if path else k,
                               "Required value"))
    for sub in schema.get("allOf", []):
        validate(sub, value, path, causes, [], False)
    for rule in schema.get("x-kubernetes-validations", []):
        ok = cel_eval(rule.get("rule", ""), value)
        if ok is False:
            causes.append(("FieldValueInvalid", path, "Invalid value: \"%s\": %s"
                           % (_jtype(value), rule.get("message") or
                              "failed rule: %s" % rule.get("rule", ""))))


# ---------------------------------------------------------------- CEL subset

_CEL_TOKEN = re.compile(r"\s*(?:(\d+\.\d+|\d+)|(\"[^\"]*\"|'[^']*')|(&&|\|\||==|!=|>=|<=|[<>!()\.,+\-*/])|"
                        r"([A-Za-z_][A-Za-z0-9_]*))")


class _Unsupported(Exception):
    pass


class _Err:
    """A CEL evaluation error (such as a missing field) carried as a value, so that
    && and || can still short-circuit around it as CEL does."""


ERR = _Err()


def cel_eval(rule, self_value):
    """True/False for rules inside the supported subset, None when the rule uses
    anything else or fails to evaluate (the emulator then does not enforce it)."""
    toks = []
    pos = 0
    while pos < len(rule):
        m = _CEL_TOKEN.match(rule, pos)
        if not m or m.end() == pos:
            if rule[pos:].strip() == "":
                break
            return None
        num, s, op, ident = m.groups()
        toks.append(("num", float(num) if "." in num else int(num)) if num is not None else
                    ("str", s[1:-1]) if s is not None else ("op", op) if op else ("id", ident))
        pos = m.end()
    p = _CelParser(toks, self_value)
    try:
        v = p.expr()
        if p.i != len(toks):
            return None
    except (_Unsupported, IndexError, TypeError, KeyError, ZeroDivisionError):
        return None
    return v if isinstance(v, bool) else None


class _CelParser:
    def __init__(self, toks, self_value):
        self.t, self.i, self.self_value = toks, 0, self_value

    def is_op(self, v):
        return self.i < len(self.t) and self.t[self.i] == ("op", v)

    def take(self, v):
        if not self.is_op(v):
            raise _Unsupported()
        self.i += 1

    def expr(self):
        v = self.conj()
        while self.is_op("||"):
            self.i += 1
            r = self.conj()
            v = True if v is True or r is True else ERR if ERR in (v, r) else False
        return v

    def conj(self):
        v = self.cmp()
        while self.is_op("&&"):
            self.i += 1
            r = self.cmp()
            v = False if v is False or r is False else ERR if ERR in (v, r) else True
        return v

    def cmp(self):
        v = self.add()
        for op in ("==", "!=", ">=", "<=", "<", ">"):
            if self.is_op(op):
                self.i += 1
                r = self.add()
                if ERR in (v, r):
                    return ERR
                return {"==": v == r, "!=": v != r, ">=": v >= r, "<=": v <= r,
                        "<": v < r, ">": v > r}[op]
        return v

    def add(self):
        v = self.unary()
        while any(self.is_op(o) for o in "+-*/"):
            op = self.t[self.i][1]
            self.i += 1
            r = self.unary()
            if ERR in (v, r):
                v = ERR
            else:
                v = v + r if op == "+" else v - r if op == "-" else v * r if op == "*" else v / r
        return v

    def unary(self):
        if self.is_op("!"):
            self.i += 1
            v = self.unary()
            return ERR if v is ERR else not v
        return self.postfix()

    def postfix(self):
        kind, val = self.t[self.i]
        self.i += 1
        if kind in ("num", "str"):
            return val
        if (kind, val) == ("op", "("):
            v = self.expr()
            self.take(")")
            return v
        if kind == "id" and val in ("true", "false"):
            return val == "true"
        if kind == "id" and val == "has":
            self.take("(")
            if self.t[self.i] != ("id", "self"):
                raise _Unsupported()
            self.i += 1
            parent, name = self.chain(self.self_value, keep_last=True)
            self.take(")")
            return ERR if parent is ERR else isinstance(parent, dict) and name in parent
        if kind == "id" and val == "size":
            self.take("(")
            v = self.expr()
            self.take(")")
            return ERR if v is ERR else len(v)
        if kind == "id" and val == "self":
            return self.chain(self.self_value)
        raise _Unsupported()

    def chain(self, v, keep_last=False):
        """Follow .field selections; with keep_last, return (parent, last name)."""
        names = []
        while self.is_op("."):
            if self.i + 1 >= len(self.t) or self.t[self.i + 1][0] != "id":
                raise _Unsupported()
            names.append(self.t[self.i + 1][1])
            self.i += 2
        if keep_last:
            if not names:
                raise _Unsupported()
            names, last = names[:-1], names[-1]
        for n in names:
            v = v.get(n, ERR) if isinstance(v, dict) else ERR
        return (v, last) if keep_last else v


# ---------------------------------------------------------------- tables

def _col(name, typ="string", fmt="", prio=0, desc=""):
    return {"name": name, "type": typ, "format": fmt, "description": desc, "priority": prio}


def _age(obj, now):
    ts = parse_rfc3339(obj.get("metadata", {}).get("creationTimestamp"))
    return human_age(now - ts) if ts is not None else "<unknown>"


def _pod_row(o, now):
    st = o.get("status", {})
    cs = st.get("containerStatuses", [])
    n = len(o.get("spec", {}).get("containers", [])) or len(cs)
    ready = sum(1 for c in cs if c.get("ready"))
    phase = st.get("phase", "Pending")
    reason = st.get("reason") or phase
    for c in cs:
        term = c.get("state", {}).get("terminated")
        wait = c.get("state", {}).get("waiting")
        if wait and wait.get("reason"):
            reason = wait["reason"]
        elif term and term.get("reason"):
            reason = term["reason"]
    if o.get("metadata", {}).get("deletionTimestamp"):
        reason = "Terminating"
    restarts = sum(c.get("restartCount", 0) for c in cs)
    return [o["metadata"]["name"], "%d/%d" % (ready, n), reason, restarts, _age(o, now),
            st.get("podIP", "<none>"), o.get("spec", {}).get("nodeName", "<none>")]


def _node_row(o, now):
    conds = {c.get("type"): c.get("status") for c in o.get("status", {}).get("conditions", [])}
    status = "Ready" if conds.get("Ready") == "True" else "NotReady"
    if o.get("spec", {}).get("unschedulable"):
        status += ",SchedulingDisabled"
    roles = sorted(k.split("/", 1)[1] for k in o["metadata"].get("labels", {})
                   if k.startswith("node-role.kubernetes.io/"))
    return [o["metadata"]["name"], status, ",".join(roles) or "<none>", _age(o, now),
            o.get("status", {}).get("nodeInfo", {}).get("kubeletVersion", "")]


def _svc_row(o, now):
    spec = o.get("spec", {})
    ports = ",".join("%s/%s" % (p.get("port"), p.get("protocol", "TCP"))
                     for p in spec.get("ports", []))
    return [o["metadata"]["name"], spec.get("type", "ClusterIP"), spec.get("clusterIP", "<none>"),
            "<none>", ports or "<none>", _age(o, now)]


def _event_row(o, now):
    last = parse_rfc3339(o.get("lastTimestamp") or o.get("eventTime")
                         or o["metadata"].get("creationTimestamp"))
    inv = o.get("involvedObject", {})
    return [human_age(now - last) if last else "<unknown>", o.get("type", ""), o.get("reason", ""),
            "%s/%s" % ((inv.get("kind") or "").lower(), inv.get("name", "")), o.get("message", "")]


_BUILTIN = {
    "pods": ([_col("Name", fmt="name"), _col("Ready"), _col("Status"),
              _col("Restarts", "string"), _col("Age"), _col("IP", prio=1),
              _col("Node", prio=1)], _pod_row),
    "nodes": ([_col("Name", fmt="name"), _col("Status"), _col("Roles"), _col("Age"),
               _col("Version")], _node_row),
    "namespaces": ([_col("Name", fmt="name"), _col("Status"), _col("Age")],
                   lambda o, now: [o["metadata"]["name"], o.get("status", {}).get("phase", ""),
                                   _age(o, now)]),
    "services": ([_col("Name", fmt="name"), _col("Type"), _col("Cluster-IP"),
                  _col("External-IP"), _col("Port(s)"), _col("Age")], _svc_row),
    "configmaps": ([_col("Name", fmt="name"), _col("Data", "integer"), _col("Age")],
                   lambda o, now: [o["metadata"]["name"], len(o.get("data", {}))
                                   + len(o.get("binaryData", {})), _age(o, now)]),
    "secrets": ([_col("Name", fmt="name"), _col("Type"), _col("Data", "integer"), _col("Age")],
                lambda o, now: [o["metadata"]["name"], o.get("type", "Opaque"),
                                len(o.get("data", {})), _age(o, now)]),
    "events": ([_col("Last Seen"), _col("Type"), _col("Reason"), _col("Object"),
                _col("Message")], _event_row),
    "leases": ([_col("Name", fmt="name"), _col("Holder"), _col("Age")],
               lambda o, now: [o["metadata"]["name"],
                               o.get("spec", {}).get("holderIdentity", ""), _age(o, now)]),
    "customresourcedefinitions": ([_col("Name", fmt="name"), _col("Created At", "date")],
                                  lambda o, now: [o["metadata"]["name"],
                                                  o["metadata"].get("creationTimestamp")]),
}


def table_columns(rtype, version):
    """(column definitions, row function) for a resource type at a version."""
    if rtype.group == "" or rtype.plural in _BUILTIN and rtype.crd_name is None:
        if rtype.plural in _BUILTIN:
            return _BUILTIN[rtype.plural]
    cols = rtype.columns.get(version) if rtype.columns else None
    if not cols:
        return ([_col("Name", fmt="name"), _col("Age", "date")],
                lambda o, now: [o["metadata"]["name"], _age(o, now)])
    defs = [_col("Name", fmt="name", desc="Name must be unique within a namespace.")]
    defs += [_col(c["name"], c.get("type", "string"), c.get("format", ""), c.get("priority", 0),
                  c.get("description", "")) for c in cols]

    def row(o, now):
        cells = [o["metadata"]["name"]]
        for c in cols:
            v = jsonpath(o, c.get("jsonPath", ""))
            if v is not None and c.get("type") == "date":
                ts = parse_rfc3339(v)
                v = human_age(now - ts) if ts is not None else "<invalid>"
            elif isinstance(v, (dict, list)):
                v = str(v)
            cells.append(v)
        return cells
    return defs, row


def to_table(rtype, version, objs, include, list_meta):
    """A meta.k8s.io/v1 Table of objs; include is None, Metadata or Object."""
    defs, row = table_columns(rtype, version)
    now = time.time()
    rows = []
    for o in objs:
        if include == "None":
            embedded = None
        elif include == "Object":
            embedded = o
        else:
            embedded = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                        "metadata": o.get("metadata", {})}
        r = {"cells": row(o, now)}
        if embedded is not None:
            r["object"] = embedded
        rows.append(r)
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta,
            "columnDefinitions": defs, "rows": rows}
