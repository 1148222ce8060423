"""Decoding of the Kubernetes protobuf envelope for the few request bodies kubectl sends
as protobuf: its typed `create` subcommands (kubectl create namespace / configmap /
secret / service / serviceaccount) post application/vnd.kubernetes.protobuf, which
every real API server accepts, and typed clients (helm uninstall) send DeleteOptions so.
Responses stay JSON (kubectl accepts both).

The envelope is the magic "k8s\\0" followed by a runtime.Unknown message (typeMeta,
raw); raw is the object's own message, decoded here with the field numbers of
k8s.io/api core/v1 and apimachinery meta/v1 generated.proto. Unknown fields are skipped.
"""

import base64
import datetime

from emu_util import ApiError

MAGIC = b"k8s\x00"


def _varint(buf, i):
    shift = result = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def fields(buf):
    """[(field number, value)] of a message; value is an int or bytes."""
    out, i = [], 0
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(buf, i)
        elif wt == 2:
            n, i = _varint(buf, i)
            if i + n > len(buf):
                raise ValueError("truncated field %d" % num)
            v, i = buf[i:i + n], i + n
        elif wt == 1:
            v, i = int.from_bytes(buf[i:i + 8], "little"), i + 8
        elif wt == 5:
            v, i = int.from_bytes(buf[i:i + 4], "little"), i + 4
        else:
            raise ValueError("unsupported wire type %d" % wt)
        out.append((num, v))
    return out


# Schemas: field number -> (json name, kind[, sub-schema]); kinds: s string, i int,
# b bool, B bytes (base64 in JSON), m message, ms map<string,string>, mB map<string,bytes>,
# t Time; a trailing "*" marks a repeated field.
TIME = "t"
OWNER_REF = {1: ("kind", "s"), 3: ("name", "s"), 4: ("uid", "s"), 5: ("apiVersion", "s"),
             6: ("controller", "b"), 7: ("blockOwnerDeletion", "b")}
OBJECT_META = {1: ("name", "s"), 2: ("generateName", "s"), 3: ("namespace", "s"),
               5: ("uid", "s"), 6: ("resourceVersion", "s"), 7: ("generation", "i"),
               8: ("creationTimestamp", TIME), 11: ("labels", "ms"),
               12: ("annotations", "ms"), 13: ("ownerReferences", "m*", OWNER_REF),
               14: ("finalizers", "s*")}
INT_OR_STRING = {1: ("type", "i"), 2: ("intVal", "i"), 3: ("strVal", "s")}
SERVICE_PORT = {1: ("name", "s"), 2: ("protocol", "s"), 3: ("port", "i"),
                4: ("targetPort", "ios", INT_OR_STRING), 5: ("nodePort", "i"),
                6: ("appProtocol", "s")}
# meta/v1 DeleteOptions: client-go's typed clients (helm uninstall deleting its release
# Secret) send it as protobuf in the body of a DELETE.
DELETE_OPTIONS = {1: ("gracePeriodSeconds", "i"),
                  2: ("preconditions", "m", {1: ("uid", "s"), 2: ("resourceVersion", "s")}),
                  3: ("orphanDependents", "b"), 4: ("propagationPolicy", "s"),
                  5: ("dryRun", "s*")}
SCHEMAS = {
    ("v1", "DeleteOptions"): DELETE_OPTIONS,
    ("meta.k8s.io/v1", "DeleteOptions"): DELETE_OPTIONS,
    ("v1", "ConfigMap"): {1: ("metadata", "m", OBJECT_META), 2: ("data", "ms"),
                          3: ("binaryData", "mB"), 4: ("immutable", "b")},
    ("v1", "Secret"): {1: ("metadata", "m", OBJECT_META), 2: ("data", "mB"), 3: ("type", "s"),
                       4: ("stringData", "ms"), 5: ("immutable", "b")},
    ("v1", "Namespace"): {1: ("metadata", "m", OBJECT_META),
                          2: ("spec", "m", {1: ("finalizers", "s*")})},
    ("v1", "ServiceAccount"): {1: ("metadata", "m", OBJECT_META)},
    ("v1", "Service"): {1: ("metadata", "m", OBJECT_META), 2: ("spec", "m", {
        1: ("ports", "m*", SERVICE_PORT), 2: ("selector", "ms"), 3: ("clusterIP", "s"),
        4: ("type", "s"), 5: ("externalIPs", "s*"), 7: ("sessionAffinity", "s"),
        10: ("externalName", "s"), 18: ("clusterIPs", "s*")})},
}


def _signed(v):
    return v - (1 << 64) if v >= 1 << 63 else v


def _message(buf, schema):
    out = {}
    for num, v in fields(buf):
        spec = schema.get(num)
        if spec is None:
            continue
        name, kind = spec[0], spec[1]
        rep = kind.endswith("*")
        kind = kind.rstrip("*")
        if kind == "s":
            val = bytes(v).decode()
        elif kind == "i":
            val = _signed(v)
        elif kind == "b":
            val = bool(v)
        elif kind == "B":
            val = base64.b64encode(bytes(v)).decode()
        elif kind == "m":
            val = _message(v, spec[2])
        elif kind == "ios":
            ios = _message(v, spec[2])
            val = ios.get("strVal", "") if ios.get("type") == 1 else ios.get("intVal", 0)
        elif kind == TIME:
            t = _message(v, {1: ("seconds", "i"), 2: ("nanos", "i")})
            val = datetime.datetime.fromtimestamp(t.get("seconds", 0), datetime.timezone.utc)\
                .strftime("%Y-%m-%dT%H:%M:%SZ")
        elif kind in ("ms", "mB"):
            entry = dict((n, x) for n, x in fields(v))
            key = bytes(entry.get(1, b"")).decode()
            raw = bytes(entry.get(2, b""))
            out.setdefault(name, {})[key] = raw.decode() if kind == "ms" \
                else base64.b64encode(raw).decode()
            continue
        else:
            continue
        if rep:
            out.setdefault(name, []).append(val)
        elif val not in ("", 0, False) or kind in ("m", "ios"):
            # Go's zero values are always on the wire; JSON (omitempty) leaves them out.
            out[name] = val
    return out


def decode(body):
    """The JSON object of a protobuf request body; ApiError 415/400 when it cannot be."""
    if not body.startswith(MAGIC):
        raise ApiError(400, "BadRequest", "protobuf body without the k8s envelope")
    try:
        env = _message(body[4:], {1: ("typeMeta", "m", {1: ("apiVersion", "s"),
                                                        2: ("kind", "s")}),
                                  2: ("raw", "B")})
        tm = env.get("typeMeta", {})
        key = (tm.get("apiVersion"), tm.get("kind"))
        if key not in SCHEMAS:
            raise ApiError(415, "UnsupportedMediaType", "the emulator decodes protobuf only for "
                           "%s; send %s %s as application/json" % (
                               ", ".join(k for _, k in sorted(SCHEMAS)), key[0], key[1]))
        obj = _message(base64.b64decode(env.get("raw", "")), SCHEMAS[key])
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, "BadRequest", "malformed protobuf body: %s" % e)
    obj["apiVersion"], obj["kind"] = key
    return obj
