"""Tests of bench/kind/bench.py without a cluster:
`python3 -m unittest discover -s bench/kind -t bench/kind`. The last test runs
the whole benchmark against a fake kubectl (a script that keeps its objects in
a JSON file and turns each one Ready a few polls after its apply)."""

import contextlib
import io
import json
import os
import sys
import tempfile
import textwrap
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

# What e2e/kind/lib.sh pipeline_manifest prints (gateway 172.18.0.1).
MANIFEST = """\
# A PaymentPipeline for the local stack
apiVersion: v1
kind: Secret
metadata:
  name: mariadb-cdc
type: Opaque
stringData:
  username: paystream_cdc
  password: paystream-cdc
---
apiVersion: v1
kind: Secret
metadata:
  name: api-jwt
type: Opaque
stringData:
  # HS256, at least 32 bytes
  secret: 0123456789abcdef0123456789abcdef
---
apiVersion: paystream.io/v1alpha1
kind: PaymentPipeline
metadata:
  name: demo
spec:
  source:
    host: 172.18.0.1
    port: 13306
    database: payments
    tables: [users, packages, purchases, payments]
    credentialsSecretRef:
      name: mariadb-cdc
  kafka:
    bootstrapServers: 172.18.0.1:19094
    topicPrefix: demo
    partitions: 3
    replicationFactor: 1
    topicConfig:
      retention.ms: "604800000"
  redis:
    mode: Standalone
    endpoints: ["172.18.0.1:16379"]
    credentialsSecretRef:
      name: redis
  consumer:
    autoscaling:
      minReplicas: 1
      maxReplicas: 6        # capped at kafka.partitions (3)
      targetLagPerReplica: 10000
  api:
    jwtSecretRef:
      name: api-jwt
      key: secret
    databaseCredentialsSecretRef:
      name: mariadb-app
    autoscaling:
      minReplicas: 1
      maxReplicas: 3
      targetCpuUtilization: 50
      scaleDownStabilizationSeconds: 30
"""


class Manifests(unittest.TestCase):
    def test_split(self):
        docs = bench.split_docs(MANIFEST)
        self.assertEqual([bench.doc_kind(d) for d in docs], ["Secret", "Secret", "PaymentPipeline"])

    def test_pipeline_doc(self):
        tpl = bench.split_docs(MANIFEST)[-1]
        out = bench.pipeline_doc(tpl, "pipe-3", "bkx-10-2-3", ["users"], 1, server_id=58003)
        self.assertIn("\n    serverId: 58003\n  kafka:\n", out)
        self.assertIn("\n  name: pipe-3\n", out)
        self.assertIn("\n    topicPrefix: bkx-10-2-3\n", out)
        self.assertIn("\n    deleteTopicsOnDelete: true\n", out)
        self.assertIn("\n    partitions: 1\n", out)
        self.assertIn("\n    tables: [users]\n", out)
        self.assertIn("\n  consumer:\n    replicas: 1\n  api:\n", out)
        self.assertTrue(out.endswith("      name: mariadb-app\n    replicas: 1\n"), out)
        self.assertNotIn("autoscaling", out)
        self.assertNotIn("demo", out)
        # The rest is the example's.
        self.assertIn('      retention.ms: "604800000"\n', out)
        self.assertIn("    bootstrapServers: 172.18.0.1:19094\n", out)
        # No table list given: the example's stays.
        self.assertIn("[users, packages, purchases, payments]", bench.pipeline_doc(tpl, "p", "x", [], 1))

    def test_the_example_itself(self):
        with open(os.path.join(REPO, "examples", "paymentpipeline.yaml")) as f:
            tpl = [d for d in bench.split_docs(f.read()) if bench.doc_kind(d) == "PaymentPipeline"][0]
        out = bench.pipeline_doc(tpl, "pipe-1", "bk-1", ["users"], 1)
        self.assertNotIn("placement", out)
        self.assertNotIn("kwok", out)
        self.assertEqual(out.count("replicas: 1"), 2)
        self.assertEqual(out.count("deleteTopicsOnDelete"), 1)

    def test_find_block(self):
        lines = ["a:", "  b:", "    c: 1", "  # note", "  d: 2", "e: 3"]
        self.assertEqual(bench.find_block(lines, ["a"]), (0, 5))
        self.assertEqual(bench.find_block(lines, ["a", "b"]), (1, 3))
        self.assertEqual(bench.find_block(lines, ["a", "d"]), (4, 5))
        with self.assertRaises(KeyError):
            bench.find_block(lines, ["a", "x"])
        with self.assertRaises(KeyError):
            bench.find_block(lines, ["e", "f"])

    def test_ceiling(self):
        docs = bench.ceiling_docs(2, "registry.k8s.io/pause:3.10", "ns")
        self.assertEqual(len(docs), 6)
        self.assertEqual(len({d["metadata"]["name"] for d in docs}), 6)
        c = docs[0]["spec"]["template"]["spec"]["containers"][0]
        self.assertEqual((c["image"], c["imagePullPolicy"]), ("registry.k8s.io/pause:3.10", "Never"))


def pipeline(name, ready=None, gen=1, observed=1):
    st = {"conditions": [{"type": "Ready", "status": ready, "observedGeneration": observed}]} if ready else {}
    return {"kind": "PaymentPipeline", "metadata": {"name": name, "generation": gen}, "status": st}


def deployment(name, available):
    return {"kind": "Deployment", "metadata": {"name": name, "generation": 1}, "spec": {"replicas": 1},
            "status": {"observedGeneration": 1, "availableReplicas": 1 if available else 0,
                       "conditions": [{"type": "Available", "status": "True" if available else "False"}]}}


def pod(name, phase, ready, restarts=0):
    return {"kind": "Pod", "metadata": {"name": name},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                       "containerStatuses": [{"restartCount": restarts}]}}


class State(unittest.TestCase):
    def test_ready_needs_the_current_generation(self):
        self.assertTrue(bench.pipeline_ready(pipeline("a", "True")))
        self.assertFalse(bench.pipeline_ready(pipeline("a", "True", gen=2, observed=1)))
        self.assertFalse(bench.pipeline_ready(pipeline("a", "False")))
        self.assertFalse(bench.pipeline_ready(pipeline("a")))

    def test_tracker(self):
        t = bench.Tracker("pipelines", 1)
        self.assertFalse(t.observe(0.5, [pipeline("p")]))
        deps = [deployment(f"p-{w}", False) for w in ("producer", "consumer", "api")]
        self.assertFalse(t.observe(1.0, [pipeline("p")] + deps))
        pods = [pod(f"p-{w}-x1", "Running", False) for w in ("producer", "consumer", "api")]
        self.assertFalse(t.observe(1.5, [pipeline("p")] + deps + pods))
        pods = [pod(f"p-{w}-x1", "Running", True, restarts=1) for w in ("producer", "consumer", "api")]
        deps = [deployment(f"p-{w}", True) for w in ("producer", "consumer", "api")]
        self.assertFalse(t.observe(2.0, [pipeline("p", "False")] + deps + pods))
        self.assertTrue(t.observe(2.5, [pipeline("p", "True")] + deps + pods))
        f = t.figures()
        self.assertEqual((f["time_to_all_ready_s"], f["first_ready_s"], f["ready"]), (2.5, 2.5, 1))
        self.assertEqual(f["milestones_s"], {"deployments_created": 1.0, "pods_running": 1.5, "pods_ready": 2.0,
                                             "deployments_available": 2.0, "all_ready": 2.5})
        self.assertEqual(f["pod_restarts"], 1)
        self.assertEqual((f["flapped"], f["ready_before_its_pods"]), ([], {}))
        # Ready before its pods, then not, then Ready for good: counted from
        # the last turn, and listed.
        t = bench.Tracker("pipelines", 2)
        self.assertFalse(t.observe(1.0, [pipeline("a", "True"), pipeline("b")]))
        self.assertFalse(t.observe(2.0, [pipeline("a", "False"), pipeline("b", "True")] + pods))
        self.assertFalse(t.observe(3.0, [pipeline("a", "True"), pipeline("b", "False")]))
        self.assertTrue(t.observe(4.0, [pipeline("a", "True"), pipeline("b", "True")]))
        f = t.figures()
        self.assertEqual((f["time_to_all_ready_s"], f["ready_times_s"], f["first_ready_ever_s"]), (4.0, [3.0, 4.0], 1.0))
        self.assertEqual((f["flapped"], f["ready_before_its_pods"]), (["a", "b"], {"a": 0, "b": 0}))
        c = bench.Tracker("ceiling", 2)
        self.assertFalse(c.observe(1.0, [deployment("a", True), deployment("b", False)]))
        self.assertTrue(c.observe(2.0, [deployment("a", True), deployment("b", True)]))
        self.assertEqual(c.figures()["first_ready_s"], 1.0)
        self.assertIsNone(bench.Tracker("ceiling", 2).figures()["time_to_all_ready_s"])


class Memory(unittest.TestCase):
    def test_cgroup_v1_and_pod(self):
        with tempfile.TemporaryDirectory() as d:
            node = os.path.join(d, "docker", "abc123")
            podcg = os.path.join(node, "kubelet", "kubepods", "besteffort", "pod1234-5678")
            os.makedirs(os.path.join(podcg, "cri-containerd-xyz"))
            for p, usage, inactive in ((node, 300 * bench.MIB, 100 * bench.MIB), (podcg, 30 * bench.MIB, 0)):
                with open(os.path.join(p, "memory.usage_in_bytes"), "w") as f:
                    f.write(f"{usage}\n")
                with open(os.path.join(p, "memory.stat"), "w") as f:
                    f.write(f"cache 5\ntotal_inactive_file {inactive}\n")
            self.assertEqual(bench.find_container_cgroup("abc123", roots=(d,)), node)
            self.assertIsNone(bench.find_container_cgroup("nope", roots=(d,)))
            self.assertEqual(bench.find_pod_cgroup(node, "1234-5678"), podcg)
            self.assertEqual(bench.Cgroup(node).read(), (300 * bench.MIB, 200 * bench.MIB))
            self.assertIsNone(bench.Cgroup(os.path.join(d, "gone")).read())

    def test_docker_stats(self):
        self.assertEqual(bench.parse_docker_mem("1.5GiB / 23.5GiB"), int(1.5 * 1024 * bench.MIB))
        self.assertEqual(bench.parse_docker_mem("512MiB / 1GiB"), 512 * bench.MIB)
        self.assertIsNone(bench.parse_docker_mem("--"))

    def test_figures(self):
        s = bench.Sampler(None)
        s.samples = [(t, None, v * bench.MIB, None, None) for t, v in
                     ((0, 100), (1, 110), (2, 105), (3, 500), (4, 400), (5, 300), (6, 900))]
        f = bench.memory_figures(s, 0, 2.5, 4.5, 6, 2)
        self.assertEqual(f, {"idle": 105.0, "peak": 500.0, "at_ready": 300.0})
        self.assertEqual(bench.memory_figures(s, 0, 2.5, None, 5.5, 2)["peak"], 500.0)
        self.assertEqual(bench.memory_figures(s, 0, 2.5, None, 5.5, 4), {"idle": None, "peak": None, "at_ready": None})


FAKE_KUBECTL = r'''#!/usr/bin/env python3
# A fake kubectl for test_bench.py: objects in $FAKE_STATE, each Ready after
# two polls of its namespace; namespaces gone two checks after their deletion.
import json, os, re, sys
path = os.environ["FAKE_STATE"]
st = json.load(open(path)) if os.path.exists(path) else {"ns": {}, "objs": {}, "polls": {}}
a = sys.argv[1:]
a = a[2:] if a[:1] == ["--kubeconfig"] else a
ns = None
if a[:1] == ["-n"]:
    ns, a = a[1], a[2:]
def save():
    json.dump(st, open(path, "w"))
def docs(text):
    try:
        d = json.loads(text)
        return d["items"] if d.get("kind") == "List" else [d]
    except ValueError:
        out = []
        for doc in text.split("---"):
            k = re.search(r"^kind: (\S+)", doc, re.M)
            n = re.search(r"^  name: (\S+)", doc, re.M)
            if k and n:
                out.append({"kind": k.group(1), "metadata": {"name": n.group(1)}})
        return out
if a[0] == "apply":
    if "-n" in a:
        ns = a[a.index("-n") + 1]
    for d in docs(sys.stdin.read()):
        if d["kind"] == "Namespace":
            st["ns"][d["metadata"]["name"]] = 0
        elif d["kind"] != "Secret":
            st["objs"].setdefault(ns, []).append([d["kind"], d["metadata"]["name"]])
    save()
elif a[0] == "delete":
    st["ns"][a[2]] = 1
    st["objs"].pop(a[2], None)
    save()
elif a[:2] == ["get", "namespace"]:
    left = st["ns"].get(a[2])
    if left is not None and left > 0:
        st["ns"][a[2]] = left + 1
        if left >= 2:
            del st["ns"][a[2]]
    save()
    print("namespace/" + a[2] if a[2] in st["ns"] else "")
elif a[:2] == ["get", "serviceaccount"]:
    pass
elif a[0] == "version":
    print(json.dumps({"serverVersion": {"gitVersion": "v1.33.13"}}))
elif a[:2] == ["get", "pods"]:
    print(json.dumps({"items": [{"metadata": {"name": "op-1", "uid": "u-1"},
                                 "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}]}))
elif a[:2] == ["get", "lease"]:
    print("op-1")
elif a[:2] == ["get", "paymentpipelines.paystream.io"]:
    print(json.dumps({"items": []}))
elif a[0] == "get" and a[-1] == "json":
    polls = st["polls"][ns] = st["polls"].get(ns, 0) + 1
    save()
    items = []
    for kind, name in st["objs"].get(ns, []):
        ok = polls >= 2
        if kind == "PaymentPipeline":
            items.append({"kind": kind, "metadata": {"name": name, "generation": 1},
                          "status": {"conditions": [{"type": "Ready", "status": "True" if ok else "False", "observedGeneration": 1}]}})
            for w in ("producer", "consumer", "api"):
                items.append({"kind": "Deployment", "metadata": {"name": f"{name}-{w}", "generation": 1}, "spec": {"replicas": 1},
                              "status": {"observedGeneration": 1, "availableReplicas": 1, "conditions": [{"type": "Available", "status": "True"}]}})
        else:
            items.append({"kind": kind, "metadata": {"name": name, "generation": 1}, "spec": {"replicas": 1},
                          "status": {"observedGeneration": 1, "availableReplicas": 1 if ok else 0,
                                     "conditions": [{"type": "Available", "status": "True" if ok else "False"}]}})
    print(json.dumps({"items": items}))
else:
    print("fake kubectl: " + " ".join(a), file=sys.stderr)
'''


class FakeCluster(unittest.TestCase):
    def test_a_whole_run(self):
        with tempfile.TemporaryDirectory() as d:
            kubectl = os.path.join(d, "kubectl")
            with open(kubectl, "w") as f:
                f.write(FAKE_KUBECTL)
            os.chmod(kubectl, 0o755)
            manifest = os.path.join(d, "pipeline.yaml")
            with open(manifest, "w") as f:
                f.write(MANIFEST)
            images = os.path.join(d, "images.json")
            with open(images, "w") as f:
                json.dump({"images": [{"target": "api", "ref": "x/api:1", "size_bytes": 1000000}]}, f)
            os.environ["FAKE_STATE"] = os.path.join(d, "state.json")
            results = os.path.join(d, "results")
            argv = ["--kubectl", kubectl, "--kubeconfig", "/dev/null", "--manifest", manifest, "--counts", "1 2",
                    "--repeat", "2", "--poll-s", "0.05", "--idle-s", "0", "--ready-timeout", "10",
                    "--delete-timeout", "10", "--images-json", images, "--kafka-tool", "", "--results", results,
                    "--node-image", "paystream.local/kind-node:t", "--node-image-bytes", "2000000",
                    "--watch-found", "paystream"]
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                self.assertEqual(bench.main(argv), 0)
            out = [f for f in os.listdir(results) if f.endswith(".json")]
            self.assertEqual(len(out), 1)
            with open(os.path.join(results, out[0])) as f:
                doc = json.load(f)
            self.assertEqual(len(doc["runs"]), 8)
            self.assertTrue(all(r["all_ready"] and r["deleted"] for r in doc["runs"]), doc["runs"])
            self.assertEqual([r["kind"] for r in doc["runs"][:4]], ["pipelines", "ceiling", "pipelines", "ceiling"])
            self.assertEqual([r["kind"] for r in doc["runs"][4:6]], ["ceiling", "pipelines"])
            self.assertEqual(sorted(doc["ratios"]), ["kind_1_operator_over_pods_ceiling", "kind_2_operator_over_pods_ceiling"])
            self.assertEqual([s["count"] for s in doc["summary"]], [1, 2])
            self.assertTrue(doc["operator"]["restored_after"])
            self.assertEqual(doc["leftovers"], {})
            with open(os.path.join(results, out[0][:-5] + ".md")) as f:
                md = f.read()
            self.assertIn("## kind: PaymentPipelines on real pods", md)
            self.assertIn("| kind node `paystream.local/kind-node:t` | 2.0 | |", md)
            self.assertIn("## Every run", md)
            with open(os.environ["FAKE_STATE"]) as f:
                self.assertEqual(json.load(f)["ns"], {})


if __name__ == "__main__":
    unittest.main()
