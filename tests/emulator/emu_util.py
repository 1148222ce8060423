"""Pure helpers of the Kubernetes API emulator: API errors as Status objects, label and
field selectors, JSON merge patch, a strategic-merge-patch subset (what kubectl apply
sends), JSON patch, simple JSONPath for printer columns, and human-readable ages.

Nothing here touches the store or the network, so each piece is testable on its own and
the server module stays about HTTP and semantics.
"""

import copy
import datetime
import json
import re


class ApiError(Exception):
    """An error answered to the client as a metav1.Status with the given HTTP code."""

    def __init__(self, code, reason, message, details=None, headers=None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or {}

    def status(self):
        st = {"kind": "Status", "apiVersion": "v1", "metadata": {},
              "status": "Failure", "message": self.message, "reason": self.reason,
              "code": self.code}
        if self.details is not None:
            st["details"] = self.details
        return st


def bad_request(msg):
    return ApiError(400, "BadRequest", msg)


def not_found(resource, group, name):
    qual = resource if not group else "%s.%s" % (resource, group)
    return ApiError(404, "NotFound", '%s "%s" not found' % (qual, name),
                    {"name": name, "group": group, "kind": resource})


def conflict(resource, group, name, msg):
    qual = resource if not group else "%s.%s" % (resource, group)
    return ApiError(409, "Conflict",
                    'Operation cannot be fulfilled on %s "%s": %s' % (qual, name, msg),
                    {"name": name, "group": group, "kind": resource})


def invalid(kind, group, name, causes):
    """422 Invalid with field causes; causes are (reason, field, message) tuples."""
    qual = kind if not group else "%s.%s" % (kind, group)
    text = "; ".join("%s: %s" % (f, m) if f else m for (_, f, m) in causes)
    if len(causes) > 1:
        text = "[" + ", ".join("%s: %s" % (f, m) if f else m for (_, f, m) in causes) + "]"
    return ApiError(422, "Invalid", '%s "%s" is invalid: %s' % (qual, name, text),
                    {"name": name, "group": group, "kind": kind,
                     "causes": [{"reason": r, "message": m, "field": f}
                                for (r, f, m) in causes]})


def now_rfc3339(ts=None):
    t = datetime.datetime.fromtimestamp(ts, datetime.timezone.utc) if ts is not None \
        else datetime.datetime.now(datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text):
    """Seconds since the epoch, or None when text is not an RFC 3339 timestamp."""
    if not isinstance(text, str):
        return None
    try:
        t = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.timezone.utc)
    return t.timestamp()


def human_age(seconds):
    """The same rounding as k8s.io/apimachinery/pkg/util/duration.HumanDuration."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return "%ds" % s
    m = s // 60
    if m < 10:
        return "%dm%ds" % (m, s % 60) if s % 60 else "%dm" % m
    if m < 180:
        return "%dm" % m
    h = m // 60
    if h < 8:
        return "%dh%dm" % (h, m % 60) if m % 60 else "%dh" % h
    if h < 48:
        return "%dh" % h
    d = h // 24
    if h < 24 * 8:
        return "%dd%dh" % (d, h % 24) if h % 24 else "%dd" % d
    if d < 365 * 2:
        return "%dd" % d
    return "%dy%dd" % (d // 365, d % 365) if d < 365 * 8 else "%dy" % (d // 365)


# ---------------------------------------------------------------- selectors

_LABEL_KEY = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def parse_label_selector(text):
    """Parse a label selector into (key, op, values) requirements; op is one of
    '=', '!=', 'in', 'notin', 'exists', '!'. Raises ApiError 400 on bad syntax."""
    reqs = []
    if not text:
        return reqs
    i, n = 0, len(text)

    def skip_ws(j):
        while j < n and text[j] == " ":
            j += 1
        return j

    while True:
        i = skip_ws(i)
        if i >= n:
            break
        neg = False
        if text[i] == "!":
            neg = True
            i = skip_ws(i + 1)
        m = re.match(r"[A-Za-z0-9][-A-Za-z0-9_./]*", text[i:])
        if not m:
            raise bad_request("unable to parse requirement: invalid label selector %r" % text)
        key = m.group(0)
        if not _LABEL_KEY.match(key):
            raise bad_request("unable to parse requirement: invalid label key %r" % key)
        i = skip_ws(i + len(key))
        if neg:
            reqs.append((key, "!", ()))
        elif i >= n or text[i] == ",":
            reqs.append((key, "exists", ()))
        elif text.startswith("==", i) or text.startswith("!=", i) or text[i] == "=":
            op = "!=" if text.startswith("!=", i) else "="
            i += 2 if text.startswith("==", i) or op == "!=" else 1
            i = skip_ws(i)
            m = re.match(r"[-A-Za-z0-9_.]*", text[i:])
            reqs.append((key, op, (m.group(0),)))
            i = skip_ws(i + len(m.group(0)))
        else:
            m = re.match(r"(in|notin)\s*\(([^)]*)\)", text[i:])
            if not m:
                raise bad_request("unable to parse requirement: invalid label selector %r" % text)
            vals = tuple(v.strip() for v in m.group(2).split(",") if v.strip())
            reqs.append((key, m.group(1), vals))
            i = skip_ws(i + len(m.group(0)))
        if i < n:
            if text[i] != ",":
                raise bad_request("unable to parse requirement: invalid label selector %r" % text)
            i += 1
    return reqs


def labels_match(reqs, labels):
    labels = labels or {}
    for key, op, vals in reqs:
        has = key in labels
        v = labels.get(key)
        if op == "=" and v != vals[0]:
            return False
        if op == "!=" and has and v == vals[0]:
            return False
        if op == "in" and (not has or v not in vals):
            return False
        if op == "notin" and has and v in vals:
            return False
        if op == "exists" and not has:
            return False
        if op == "!" and has:
            return False
    return True


def parse_field_selector(text):
    """Field selectors: comma-separated path=value, path==value or path!=value."""
    reqs = []
    if not text:
        return reqs
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        m = re.match(r"^([A-Za-z0-9_.\-\[\]]+)\s*(==|!=|=)\s*(.*)$", part)
        if not m:
            raise bad_request("invalid field selector: %r" % part)
        reqs.append((m.group(1), "!=" if m.group(2) == "!=" else "=", m.group(3)))
    return reqs


def field_value(obj, path):
    cur = obj
    for p in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(p)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def fields_match(reqs, obj):
    for path, op, val in reqs:
        v = field_value(obj, path)
        if (op == "=") != (v == val):
            return False
    return True


# ---------------------------------------------------------------- patches

def merge_patch(target, patch):
    """RFC 7386 JSON merge patch; returns a new value, never modifies its inputs."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


_MERGE_KEYS = ("name", "containerPort", "port", "mountPath", "devicePath", "ip",
               "type", "topologyKey", "key")


def _merge_key(items):
    for k in _MERGE_KEYS:
        if items and all(isinstance(it, dict) and k in it for it in items):
            return k
    return None


def strategic_merge_patch(target, patch):
    """The subset of strategic merge patch that kubectl apply and kubectl patch send:
    maps merge as in a merge patch, lists of objects merge by their usual merge key
    (name, containerPort, ...), and the $patch, $setElementOrder, $retainKeys and
    $deleteFromPrimitiveList directives are honoured. Lists without a merge key are
    replaced, as for a merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    retain = patch.get("$retainKeys")
    orders = {}
    for k, v in patch.items():
        if k in ("$patch", "$retainKeys"):
            continue
        if k.startswith("$setElementOrder/"):
            orders[k.split("/", 1)[1]] = v
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            field = k.split("/", 1)[1]
            if isinstance(out.get(field), list) and isinstance(v, list):
                out[field] = [x for x in out[field] if x not in v]
            continue
        if v is None:
            out.pop(k, None)
        elif isinstance(v, list):
            out[k] = _smp_list(out.get(k), v)
        else:
            out[k] = strategic_merge_patch(out.get(k), v)
    for field, order in orders.items():
        cur = out.get(field)
        if isinstance(cur, list) and isinstance(order, list):
            key = _merge_key(order)
            if key:
                pos = {o.get(key): i for i, o in enumerate(order) if isinstance(o, dict)}
                cur.sort(key=lambda it: pos.get(it.get(key) if isinstance(it, dict) else None,
                                                len(pos)))
    if isinstance(retain, list):
        out = {k: v for k, v in out.items() if k in retain}
    return out


def _smp_list(cur, patch):
    key = _merge_key([p for p in patch if not (isinstance(p, dict) and "$patch" in p
                                               and len(p) == 1)])
    if not key or not isinstance(cur, list) or not all(isinstance(c, dict) for c in cur):
        if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
            return [copy.deepcopy(p) for p in patch if not (isinstance(p, dict) and "$patch" in p)]
        return [strategic_merge_patch(None, p) if isinstance(p, dict) else copy.deepcopy(p)
                for p in patch]
    out = [copy.deepcopy(c) for c in cur]
    for p in patch:
        idx = next((i for i, c in enumerate(out) if c.get(key) == p.get(key)), None)
        if p.get("$patch") == "delete":
            if idx is not None:
                out.pop(idx)
        elif idx is None:
            out.append(strategic_merge_patch(None, p))
        else:
            out[idx] = strategic_merge_patch(out[idx], p)
    return out


def _pointer(path):
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request("invalid JSON pointer %r" % path)
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc, parts):
    cur = doc
    for p in parts:
        if isinstance(cur, list):
            cur = cur[int(p)]
        else:
            cur = cur[p]
    return cur


def json_patch(doc, ops):
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test)."""
    if not isinstance(ops, list):
        raise bad_request("a JSON patch must be a list of operations")
    doc = copy.deepcopy(doc)
    try:
        for op in ops:
            kind = op.get("op")
            parts = _pointer(op.get("path", ""))
            if kind in ("move", "copy"):
                value = copy.deepcopy(_walk(doc, _pointer(op.get("from", ""))))
                if kind == "move":
                    doc = json_patch(doc, [{"op": "remove", "path": op.get("from")}])
                kind = "add"
            else:
                value = op.get("value")
            if kind == "test":
                if _walk(doc, parts) != value:
                    raise ApiError(422, "Invalid", "the test operation failed at %s" % op["path"])
                continue
            if not parts:
                doc = copy.deepcopy(value)
                continue
            parent = _walk(doc, parts[:-1])
            last = parts[-1]
            if kind == "add":
                if isinstance(parent, list):
                    parent.insert(len(parent) if last == "-" else int(last), copy.deepcopy(value))
                else:
                    parent[last] = copy.deepcopy(value)
            elif kind == "remove":
                if isinstance(parent, list):
                    parent.pop(int(last))
                else:
                    del parent[last]
            elif kind == "replace":
                if isinstance(parent, list):
                    parent[int(last)] = copy.deepcopy(value)
                else:
                    if last not in parent:
                        raise KeyError(last)
                    parent[last] = copy.deepcopy(value)
            else:
                raise bad_request("unknown JSON patch operation %r" % kind)
    except (KeyError, IndexError, ValueError, TypeError, AttributeError) as e:
        raise ApiError(422, "Invalid", "the JSON patch could not be applied: %s" % e)
    return doc


# ---------------------------------------------------------------- JSONPath subset

def jsonpath(obj, path):
    """Evaluate the JSONPath subset used by printer columns: .a.b, [n], [*] and
    [?(@.k=="v")]. Returns the first match or None."""
    toks = re.findall(r"\.([A-Za-z0-9_\-]+)|\[(\d+|\*|\?\(@\.[A-Za-z0-9_.\-]+\s*==\s*"
                      r"[\"'][^\"']*[\"']\))\]", path.strip().lstrip("{").rstrip("}"))
    cur = [obj]
    for name, idx in toks:
        nxt = []
        for c in cur:
            if name:
                if isinstance(c, dict) and name in c:
                    nxt.append(c[name])
            elif idx == "*":
                if isinstance(c, list):
                    nxt.extend(c)
            elif idx.isdigit():
                if isinstance(c, list) and int(idx) < len(c):
                    nxt.append(c[int(idx)])
            else:
                m = re.match(r"\?\(@\.([A-Za-z0-9_.\-]+)\s*==\s*[\"']([^\"']*)[\"']\)", idx)
                if isinstance(c, list):
                    nxt.extend(it for it in c
                               if field_value(it, m.group(1)) == m.group(2))
        cur = nxt
    return cur[0] if cur else None


def dumps(obj):
    return json.dumps(obj, separators=(",", ":")).encode()
