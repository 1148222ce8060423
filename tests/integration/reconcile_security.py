#!/usr/bin/env python3
"""The operator's pod security against the Kubernetes API emulator (simulated pods):
a pod template asking for a privileged container, a host namespace, a hostPath volume,
added capabilities or another service account makes Valid=False naming the field and no
pod is created; fixing it starts the job. Every agent pod carries the restricted profile
and the job's key Secret; the Secret (agent.pub, agent.key, operator.pub) and the job's
NetworkPolicy are owned by the AgentJob and collected with it; a deleted key Secret comes
back with the same key; the operator's own key Secret is made once. An operator started with --allow-privileged-pods and
--network-policy=false runs the privileged template and creates no NetworkPolicy."""

import base64
import json
import re

import reconcile_harness as h
from reconcile_harness import check, wait_for

Z85 = re.compile(r"^[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")


def owned_by(obj, job):
    return any(r.get("kind") == "AgentJob" and r.get("uid") == job["metadata"]["uid"]
               and r.get("controller") and r.get("blockOwnerDeletion")
               for r in obj["metadata"].get("ownerReferences", []))


def with_pod(name, pod_fields=None, container_fields=None):
    job = h.sample_job(name, agents=(1, 2), replicas=1)
    pspec = job["spec"]["template"]["spec"]
    pspec.update(pod_fields or {})
    pspec["containers"][0].update(container_fields or {})
    return job


ESCAPES = [
    ({}, {"securityContext": {"privileged": True}},
     "spec.template.spec.containers[0].securityContext.privileged"),
    ({"hostPID": True}, {}, "spec.template.spec.hostPID"),
    ({"hostNetwork": True}, {}, "spec.template.spec.hostNetwork"),
    ({"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}, {},
     "spec.template.spec.volumes[0].hostPath"),
    ({}, {"securityContext": {"capabilities": {"add": ["SYS_PTRACE"]}}},
     "spec.template.spec.containers[0].securityContext.capabilities.add[0]"),
    ({"serviceAccountName": "kadet-operator"}, {}, "spec.template.spec.serviceAccountName"),
]


def test_refusals(c):
    for i, (pod, cont, field) in enumerate(ESCAPES):
        name = "esc-%d" % i
        c.apply(with_pod(name, pod, cont))
        cond = wait_for(lambda n=name: c.condition(n, "Valid"), 15, "Valid on " + name)
        check(cond["status"] == "False" and cond["reason"] == "InvalidSpec",
              "%s: Valid %r" % (name, cond))
        check(field in cond["message"] and "--allow-privileged-pods" in cond["message"],
              "%s: message does not name %s: %r" % (name, field, cond["message"]))
        wait_for(lambda n=name: any(e["reason"] == "InvalidSpec" and e["type"] == "Warning"
                                    for e in c.events(n)), 10, "InvalidSpec event " + name)
        check(not c.pods(name), "%s: pods created for a refused template" % name)
        check(c.get_json("secret", name + "-keys") is None, "%s: Secret made" % name)
    # The first one corrected: it runs.
    c.kubectl("patch", "aj", "esc-0", "--type", "json", "-p", json.dumps(
        [{"op": "remove", "path": "/spec/template/spec/containers/0/securityContext"}]))
    wait_for(lambda: len(c.live_pods("esc-0", "worker")) == 1, 15, "corrected job's worker")
    check(c.condition("esc-0", "Valid")["status"] == "True", "Valid after the fix")
    for i in range(len(ESCAPES)):
        c.kubectl("delete", "aj", "esc-%d" % i, "--wait=false")


def test_profile_keys_and_policy(c):
    c.apply(h.sample_job("sec", agents=(1, 3), replicas=2))
    wait_for(lambda: len(c.live_pods("sec", "worker")) == 2, 15, "sec workers")
    job = c.job("sec")
    for p in c.live_pods("sec"):
        n = p["metadata"]["name"]
        psc = p["spec"]["securityContext"]
        check(psc.get("runAsNonRoot") is True and psc.get("seccompProfile") ==
              {"type": "RuntimeDefault"} and psc.get("fsGroup") == 65532,
              "%s pod securityContext %r" % (n, psc))
        csc = p["spec"]["containers"][0]["securityContext"]
        check(csc.get("allowPrivilegeEscalation") is False and
              csc.get("capabilities", {}).get("drop") == ["ALL"],
              "%s container securityContext %r" % (n, csc))
        vol = [v for v in p["spec"]["volumes"] if v["name"] == "kadet-keys"]
        check(vol and vol[0]["secret"] == {"secretName": "sec-keys", "defaultMode": 0o440},
              "%s keys volume %r" % (n, vol))
        env = {e["name"]: e.get("value") for e in p["spec"]["containers"][0]["env"]}
        check(env.get("KADET_KEYS_DIR") == "/var/run/kadet/keys", "%s env %r" % (n, env))
    sec = c.get_json("secret", "sec-keys")
    check(sec is not None and owned_by(sec, job), "key Secret missing or not owned: %r" % sec)
    data = {k: base64.b64decode(v).decode() for k, v in sec["data"].items()}
    check(sorted(data) == ["agent.key", "agent.pub", "operator.pub"], "Secret keys %r"
          % sorted(data))
    check(all(Z85.match(v) for v in data.values()), "keys are not Z85: %r" % data)
    op = c.get_json("secret", "kadet-operator-curve")
    check(op is not None, "the operator's key Secret is missing")
    check(base64.b64decode(op["data"]["operator.pub"]).decode() == data["operator.pub"],
          "operator.pub differs from the operator's key")
    np = c.get_json("networkpolicy", "sec-agents")
    check(np is not None and owned_by(np, job), "NetworkPolicy missing or not owned: %r" % np)
    check(np["spec"]["podSelector"] == {"matchLabels": {"kadet.io/job-name": "sec"}},
          "NetworkPolicy selects %r" % np["spec"]["podSelector"])
    ports = sorted(p["port"] for p in np["spec"]["ingress"][0]["ports"])
    check(ports == [7070, 7071, 7072], "job ports %r" % ports)
    check([p["port"] for p in np["spec"]["ingress"][1]["ports"]] == [7070, 7071],
          "operator port %r" % np["spec"]["ingress"][1])
    # A Secret deleted by mistake comes back with the next pods, with the same key (it is
    # derived from the operator's key and the job's uid): the running pods keep working.
    c.kubectl("delete", "secret", "sec-keys")
    c.kubectl("scale", "aj", "sec", "--replicas=3")
    again = wait_for(lambda: c.get_json("secret", "sec-keys"), 15, "sec-keys restored")
    check(again["data"] == sec["data"], "restored Secret holds another key")
    # A second job gets its own keys.
    c.apply(h.sample_job("sec2", agents=(1, 1)))
    sec2 = wait_for(lambda: c.get_json("secret", "sec2-keys"), 15, "sec2 key Secret")
    check(sec2["data"]["agent.key"] != sec["data"]["agent.key"], "two jobs share a key")
    # Deleting the job collects its Secret and NetworkPolicy.
    c.kubectl("delete", "aj", "sec", "--wait=false")
    wait_for(lambda: c.get_json("secret", "sec-keys") is None and
             c.get_json("networkpolicy", "sec-agents") is None, 20,
             "Secret and NetworkPolicy collected")
    c.kubectl("delete", "aj", "sec2", "--wait=false")


def test_administrator_allows(c):
    op = c.operator("op-admin", extra=["--scheduler-interval", "1s", "--allow-privileged-pods",
                                       "--network-policy=false"])
    op.wait_ready()
    c.apply(with_pod("priv", {"hostPID": True}, {"securityContext": {"privileged": True}}))
    wait_for(lambda: len(c.live_pods("priv", "worker")) == 1, 15, "privileged job's worker")
    w = c.live_pods("priv", "worker")[0]
    check(w["spec"].get("hostPID") is True and
          w["spec"]["containers"][0]["securityContext"].get("privileged") is True,
          "the allowed template was changed: %r" % w["spec"])
    check("allowPrivilegeEscalation" not in w["spec"]["containers"][0]["securityContext"],
          "allowPrivilegeEscalation beside privileged")
    check(c.get_json("secret", "priv-keys") is not None, "no key Secret")
    check(c.get_json("networkpolicy", "priv-agents") is None,
          "NetworkPolicy created with --network-policy=false")
    return op


def main():
    with h.Cluster(nodes=2, cpu="8") as c:
        op = c.operator(extra=["--scheduler-interval", "1s"])
        op.wait_ready()
        test_refusals(c)
        test_profile_keys_and_policy(c)
        log = op.log()
        check(" error " not in log, "errors in the operator log:\n" + log)
        op.stop()
        test_administrator_allows(c)
    print("ok")


if __name__ == "__main__":
    main()
