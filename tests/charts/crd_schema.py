"""Validates objects against a CRD's OpenAPI v3 schema, the subset kadet's CRD uses.

Standard library only. It implements what the API server checks for the AgentJob CRD:
type, required, enum, minimum/maximum (with exclusiveMinimum/exclusiveMaximum),
minLength/maxLength, pattern, minItems/maxItems, items, properties, date-time format,
unknown fields (kubectl's strict field validation rejects them; the API server would prune
them), x-kubernetes-preserve-unknown-fields, and x-kubernetes-validations rules of the form
"self.a OP self.b" or "self.a OP <number>". A keyword or rule outside that subset raises
UnsupportedSchema instead of being skipped, so the validator never passes something the
API server would reject only because it did not understand the schema. Error texts follow
the API server's wording ("spec.agents.min: Invalid value: 0: ...").
"""

import json
import re

SUPPORTED = {
    "type", "description", "required", "properties", "items", "enum", "minimum",
    "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength",
    "pattern", "minItems", "maxItems", "format", "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-validations", "x-kubernetes-list-type", "x-kubernetes-list-map-keys",
}
FORMATS = {"int64", "int32", "float", "double", "date-time"}
DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
RULE = re.compile(r"^\s*self\.([A-Za-z_]\w*)\s*(>=|<=|==|!=|>|<)\s*"
                  r"(?:self\.([A-Za-z_]\w*)|(-?\d+(?:\.\d+)?))\s*$")
OPS = {
    ">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b, ">": lambda a, b: a > b, "<": lambda a, b: a < b,
}


class UnsupportedSchema(Exception):
    """The schema uses a keyword or rule this validator does not implement."""


def _show(value):
    return json.dumps(value) if isinstance(value, str) else repr(value).replace("True", "true")


def _json_type(value):
    """The JSON type name the API server reports for a value of the wrong type."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _type_ok(value, t):
    if t == "object":
        return isinstance(value, dict)
    if t == "array":
        return isinstance(value, list)
    if t == "string":
        return isinstance(value, str)
    if t == "boolean":
        return isinstance(value, bool)
    if t == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if t == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    raise UnsupportedSchema("type %r" % t)


def _rules(value, schema, path, errors):
    for rule in schema.get("x-kubernetes-validations", []):
        m = RULE.match(rule.get("rule", ""))
        if not m:
            raise UnsupportedSchema("CEL rule %r" % rule.get("rule"))
        left = value.get(m.group(1))
        right = value.get(m.group(3)) if m.group(3) else float(m.group(4))
        if left is None or right is None:
            errors.append("%s: Invalid value: \"object\": no such key: %s"
                          % (path, m.group(1) if left is None else m.group(3)))
        elif not OPS[m.group(2)](left, right):
            errors.append("%s: Invalid value: \"object\": %s"
                          % (path, rule.get("message", "failed rule: " + rule["rule"])))


def validate(value, schema, path, errors):
    """Appends to errors one message per violation of schema by value at path."""
    unknown = set(schema) - SUPPORTED
    if unknown:
        raise UnsupportedSchema("keywords %s at %s" % (sorted(unknown), path))
    t = schema.get("type")
    if t is None and not schema.get("x-kubernetes-preserve-unknown-fields"):
        raise UnsupportedSchema("schema without type at %s" % path)
    if value is None:
        errors.append("%s: Invalid value: \"null\": %s in body must be of type %s: \"null\""
                      % (path, path, t))
        return
    if t is not None and not _type_ok(value, t):
        kind = _json_type(value)
        errors.append("%s: Invalid value: \"%s\": %s in body must be of type %s: \"%s\""
                      % (path, kind, path, t, kind))
        return
    fmt = schema.get("format")
    if fmt is not None and fmt not in FORMATS:
        raise UnsupportedSchema("format %r at %s" % (fmt, path))
    if fmt == "date-time" and not DATE_TIME.match(value):
        errors.append("%s: Invalid value: %s: %s in body must be of type date-time"
                      % (path, _show(value), path))
    if "enum" in schema and value not in schema["enum"]:
        errors.append("%s: Unsupported value: %s: supported values: %s"
                      % (path, _show(value), ", ".join(_show(e) for e in schema["enum"])))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema:
            lo = schema["minimum"]
            if schema.get("exclusiveMinimum") and not value > lo:
                errors.append("%s: Invalid value: %s: %s in body should be greater than %s"
                              % (path, _show(value), path, lo))
            elif value < lo:
                errors.append("%s: Invalid value: %s: %s in body should be greater than or "
                              "equal to %s" % (path, _show(value), path, lo))
        if "maximum" in schema:
            hi = schema["maximum"]
            if schema.get("exclusiveMaximum") and not value < hi:
                errors.append("%s: Invalid value: %s: %s in body should be less than %s"
                              % (path, _show(value), path, hi))
            elif value > hi:
                errors.append("%s: Invalid value: %s: %s in body should be less than or "
                              "equal to %s" % (path, _show(value), path, hi))
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            errors.append("%s: Invalid value: %s: %s in body should be at least %d chars long"
                          % (path, _show(value), path, schema["minLength"]))
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append("%s: Too long: may not be longer than %d" % (path, schema["maxLength"]))
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append("%s: Invalid value: %s: %s in body should match '%s'"
                          % (path, _show(value), path, schema["pattern"]))
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errors.append("%s: Invalid value: %d: %s in body should have at least %d items"
                          % (path, len(value), path, schema["minItems"]))
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append("%s: Too many: %d: must have at most %d items"
                          % (path, len(value), schema["maxItems"]))
        if "items" in schema:
            for i, item in enumerate(value):
                validate(item, schema["items"], "%s[%d]" % (path, i), errors)
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                errors.append("%s.%s: Required value" % (path, key))
        for key, item in value.items():
            if key in props:
                validate(item, props[key], "%s.%s" % (path, key), errors)
            elif not schema.get("x-kubernetes-preserve-unknown-fields"):
                errors.append("unknown field \"%s.%s\"" % (path, key))
        _rules(value, schema, path, errors)


NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def validate_object(obj, crd):
    """Errors of one object against the CRD: kind and version served, metadata.name, and
    the schema of that version (metadata itself is the API server's business)."""
    spec = crd["spec"]
    group, kind = spec["group"], spec["names"]["kind"]
    version = obj.get("apiVersion", "")
    if obj.get("kind") != kind:
        return ["kind: expected %s, got %s" % (kind, obj.get("kind"))]
    served = [v for v in spec["versions"] if "%s/%s" % (group, v["name"]) == version
              and v.get("served")]
    if not served:
        return ['no matches for kind "%s" in version "%s"' % (kind, version)]
    name = (obj.get("metadata") or {}).get("name", "")
    if not isinstance(name, str) or not NAME.match(name) or len(name) > 253:
        return ["metadata.name: Invalid value: %s: a lowercase RFC 1123 subdomain" % _show(name)]
    errors = []
    schema = dict(served[0]["schema"]["openAPIV3Schema"])
    body = {k: v for k, v in obj.items() if k != "metadata"}
    props = dict(schema.get("properties", {}))
    props.pop("metadata", None)
    schema["properties"] = props
    for key, item in body.items():
        if key in props:
            validate(item, props[key], key, errors)
        elif key not in ("apiVersion", "kind"):
            errors.append("unknown field \"%s\"" % key)
    for key in schema.get("required", []):
        if key not in obj:
            errors.append("%s: Required value" % key)
    return errors
