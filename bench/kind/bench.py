#!/usr/bin/env python3
"""`make bench-kind`: PaymentPipelines on real pods, against plain pods.

Run by bench/kind/run.sh, which brings the kind cluster to a known state (the
four images loaded, the operator installed watching every namespace) and
passes what it found (kubectl, kubeconfig, the node container, the pause
image, the adapted example manifest, the image sizes). Python 3.11 stdlib only.

For every round (`--repeat`, 2) and every count N (`--counts`, 1 and 10), in
the same run and on the same node, two points, in alternating order:

  pipelines  a fresh namespace `bench-kind-<N>-<r>` with the example's Secrets,
             then N PaymentPipelines in one `kubectl apply`; timed from the
             apply to each pipeline's Ready=True at its current generation,
             polling `kubectl get paymentpipelines,deployments,pods -o json`
             every `--poll-s` (0.5 s); milestones on the way (the operator's
             Deployments created, pods Running, pods Ready);
  ceiling    a fresh namespace `bench-kind-ceiling-<N>-<r>` and 3N Deployments
             of the pause image the node carries (imagePullPolicy Never: what
             Kubernetes alone needs to start 3N pods here), in one apply, timed
             to all Available the same way.

Each namespace is then deleted and timed until it is gone (bounded). The node
container's memory (its cgroup: usage, and working set = usage - inactive
file cache) and the operator pod's are sampled every 0.5 s: the idle baseline
before the apply, the peak during the ramp and the value once all are Ready.

Writes bench/results/kind-<UTC stamp>.json and .md (the .md is the combined
report's kind section, bench/report/report.py, plus every run). Cleans up its
namespaces (label paystream.io/bench=kind) and the Kafka topics under its
prefixes also when interrupted.
"""

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "bench", "report"))
import report  # noqa: E402  (fmt, median_spread, section_kind)

LABEL = "paystream.io/bench"
LABEL_VALUE = "kind"
MIB = 1024 * 1024


def log(msg):
    print(f"[bench-kind] {msg}", file=sys.stderr, flush=True)


# ---- Manifests (pure; tested in test_bench.py) ------------------------------------


def split_docs(text):
    """The YAML documents of a multi-document manifest, as text."""
    docs, cur = [], []
    for line in text.splitlines():
        if line.strip() == "---":
            docs.append("\n".join(cur))
            cur = []
        else:
            cur.append(line)
    docs.append("\n".join(cur))
    return [d.strip("\n") + "\n" for d in docs if re.search(r"^kind:", d, re.M)]


def doc_kind(doc):
    m = re.search(r"^kind:\s*(\S+)", doc, re.M)
    return m.group(1) if m else None


def _indent(line):
    return len(line) - len(line.lstrip(" "))


def _significant(line):
    s = line.strip()
    return s and not s.startswith("#")


def find_block(lines, path):
    """(start, end) of the key at `path` (a list of keys) in block-style YAML:
    `start` is the key's line, `end` the first line after its block. Only the
    subset the example uses: mappings by indentation, scalars, flow lists."""
    lo, hi, indent = 0, len(lines), 0
    start = None
    for depth, key in enumerate(path):
        if depth > 0:
            child = next((_indent(l) for l in lines[lo:hi] if _significant(l)), None)
            if child is None or child <= indent:
                raise KeyError(".".join(path[: depth + 1]))
            indent = child
        pat = re.compile(r"^" + " " * indent + re.escape(key) + r":(\s|$)")
        start = next((i for i in range(lo, hi) if pat.match(lines[i])), None)
        if start is None:
            raise KeyError(".".join(path[: depth + 1]))
        end = start + 1
        while end < hi and (not _significant(lines[end]) or _indent(lines[end]) > indent):
            end += 1
        # Trailing blank or comment lines belong to what follows.
        while end > start + 1 and not _significant(lines[end - 1]):
            end -= 1
        lo, hi = start + 1, end
    return start, hi


def set_key(lines, path, value):
    """Sets a scalar (or flow) value, dropping any block under the key; adds
    the key at the end of its parent's block when it is missing."""
    try:
        s, e = find_block(lines, path)
        ind = _indent(lines[s])
        lines[s:e] = [" " * ind + f"{path[-1]}: {value}"]
    except KeyError:
        ps, pe = find_block(lines, path[:-1])
        child = next((_indent(l) for l in lines[ps + 1 : pe] if _significant(l)), _indent(lines[ps]) + 2)
        lines[pe:pe] = [" " * child + f"{path[-1]}: {value}"]
    return lines


def drop_key(lines, path):
    try:
        s, e = find_block(lines, path)
        del lines[s:e]
    except KeyError:
        pass
    return lines


def pipeline_doc(template, name, prefix, tables=None, partitions=1, server_id=None):
    """The PaymentPipeline `name` of a point: the example's (as
    pipeline_manifest adapts it to the cluster) with its own name, topic
    prefix and replica server id (MariaDB drops a replica's binlog connection
    when another one announces the same id: producers sharing the default
    would take turns), deleteTopicsOnDelete, one partition, the consumer and
    the API at one replica without autoscaling, and optionally fewer tables."""
    lines = template.rstrip("\n").split("\n")
    set_key(lines, ["metadata", "name"], name)
    if server_id is not None:
        set_key(lines, ["spec", "source", "serverId"], str(int(server_id)))
    set_key(lines, ["spec", "kafka", "topicPrefix"], prefix)
    set_key(lines, ["spec", "kafka", "deleteTopicsOnDelete"], "true")
    if partitions:
        set_key(lines, ["spec", "kafka", "partitions"], str(int(partitions)))
    if tables:
        set_key(lines, ["spec", "source", "tables"], "[" + ", ".join(tables) + "]")
    for workload in ("consumer", "api"):
        try:
            find_block(lines, ["spec", workload])
        except KeyError:
            set_key(lines, ["spec", workload], "{}")
        s, _ = find_block(lines, ["spec", workload])
        if lines[s].rstrip().endswith("{}"):
            lines[s] = lines[s].rstrip()[: -len("{}")].rstrip()
        drop_key(lines, ["spec", workload, "autoscaling"])
        drop_key(lines, ["spec", workload, "replicas"])
        s, e = find_block(lines, ["spec", workload])
        lines[e:e] = [" " * (_indent(lines[s]) + 2) + "replicas: 1"]
    # kubectl apply must not see a `placement` with KWOK's selector; the kind
    # manifest has none, and neither does this.
    drop_key(lines, ["spec", "placement"])
    return "\n".join(lines) + "\n"


def ceiling_docs(count, image, namespace):
    """3 x `count` Deployments of `image` (the pause image): JSON documents."""
    docs = []
    for i in range(1, count + 1):
        for w in ("producer", "consumer", "api"):
            name = f"c{i}-{w}"
            labels = {"app.kubernetes.io/name": name, LABEL: LABEL_VALUE}
            docs.append(
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": name, "namespace": namespace, "labels": labels},
                    "spec": {
                        "replicas": 1,
                        "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
                        "template": {
                            "metadata": {"labels": labels},
                            "spec": {"containers": [{"name": w, "image": image, "imagePullPolicy": "Never"}]},
                        },
                    },
                }
            )
    return docs


def namespace_doc(name):
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {LABEL: LABEL_VALUE}}}


# ---- Reading the cluster's state (pure) --------------------------------------------


def cond(obj, ctype):
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return c
    return None


def pipeline_ready(obj):
    """Ready=True, set for the pipeline's current generation."""
    c = cond(obj, "Ready")
    if not c or c.get("status") != "True":
        return False
    gen = (obj.get("metadata") or {}).get("generation")
    seen = c.get("observedGeneration", (obj.get("status") or {}).get("observedGeneration"))
    return gen is None or seen is None or seen == gen


def deployment_available(obj):
    st, spec = obj.get("status") or {}, obj.get("spec") or {}
    gen = (obj.get("metadata") or {}).get("generation")
    if gen is not None and st.get("observedGeneration") != gen:
        return False
    want = spec.get("replicas", 1)
    c = cond(obj, "Available")
    return (st.get("availableReplicas") or 0) >= want and bool(c) and c.get("status") == "True"


def pod_running(obj):
    return (obj.get("status") or {}).get("phase") == "Running"


def pod_ready(obj):
    c = cond(obj, "Ready")
    return bool(c) and c.get("status") == "True"


def by_kind(items):
    out = {"PaymentPipeline": [], "Deployment": [], "Pod": []}
    for it in items or []:
        out.setdefault(it.get("kind"), []).append(it)
    return out


class Tracker:
    """Turns successive snapshots of a namespace into times: when each
    pipeline (or Deployment) turned Ready for good, the first snapshot where
    all of them are Ready at once, and the namespace's milestones. A pipeline
    that is Ready, then not, counts from its last turn to Ready; it is listed
    in `flapped`, and `early` lists the pipelines whose first Ready came
    before their three pods were Ready (the same snapshot)."""

    def __init__(self, kind, expected):
        self.kind = kind  # "pipelines" or "ceiling"
        self.expected = expected  # pipelines, or Deployments for the ceiling
        self.ready_since = {}  # name -> start of its current Ready streak
        self.first_ready = {}  # name -> its first Ready
        self.flapped = set()
        self.early = {}  # name -> its pods Ready at its first Ready (pipelines)
        self.milestones = {}
        self.restarts = 0
        self.all_ready = False

    def _mark(self, key, t, cond_):
        if cond_ and key not in self.milestones:
            self.milestones[key] = t

    def observe(self, t, items):
        k = by_kind(items)
        deps, pods = k["Deployment"], k["Pod"]
        n_deps = self.expected * 3 if self.kind == "pipelines" else self.expected
        self._mark("deployments_created", t, len(deps) >= n_deps)
        live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
        self._mark("pods_running", t, len(live) >= n_deps and all(pod_running(p) for p in live))
        self._mark("pods_ready", t, len(live) >= n_deps and all(pod_ready(p) for p in live))
        self._mark("deployments_available", t, len(deps) >= n_deps and all(deployment_available(d) for d in deps))
        self.restarts = max(
            [self.restarts]
            + [sum(cs.get("restartCount") or 0 for cs in (p.get("status") or {}).get("containerStatuses") or []) for p in live]
        )
        objs = k["PaymentPipeline"] if self.kind == "pipelines" else deps
        done = pipeline_ready if self.kind == "pipelines" else deployment_available
        now_ready = 0
        for o in objs:
            name = (o.get("metadata") or {}).get("name")
            if not name:
                continue
            if done(o):
                now_ready += 1
                self.ready_since.setdefault(name, t)
                if name not in self.first_ready:
                    self.first_ready[name] = t
                    if self.kind == "pipelines":
                        own = [p for p in live if any((p.get("metadata") or {}).get("name", "").startswith(f"{name}-{w}-")
                                                      for w in ("producer", "consumer", "api"))]
                        n = sum(1 for p in own if pod_ready(p))
                        if n < 3:
                            self.early[name] = n
            elif name in self.ready_since:
                del self.ready_since[name]
                self.flapped.add(name)
        self.all_ready = now_ready >= self.expected
        self._mark("all_ready", t, self.all_ready)
        return self.all_ready

    def figures(self):
        times = sorted(self.ready_since.values())
        return {
            "ready": len(times),
            "all_ready": self.all_ready,
            "time_to_all_ready_s": rnd(self.milestones["all_ready"]) if self.all_ready else None,
            "first_ready_s": rnd(times[0]) if times else None,
            "median_ready_s": rnd(statistics.median(times)) if times else None,
            "ready_times_s": [rnd(x) for x in times],
            "first_ready_ever_s": rnd(min(self.first_ready.values())) if self.first_ready else None,
            "flapped": sorted(self.flapped),
            "ready_before_its_pods": dict(sorted(self.early.items())),
            "milestones_s": {k: rnd(v) for k, v in sorted(self.milestones.items(), key=lambda kv: kv[1])},
            "pod_restarts": self.restarts,
        }


def rnd(x, d=2):
    return None if x is None else round(x, d)


# ---- Memory ---------------------------------------------------------------------------


def parse_memory_stat(text):
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            out[parts[0]] = int(parts[1])
    return out


class Cgroup:
    """A memory cgroup, v1 (memory.usage_in_bytes) or v2 (memory.current)."""

    def __init__(self, path):
        self.path = path
        self.v2 = os.path.exists(os.path.join(path, "memory.current"))

    def read(self):
        """(usage bytes, working set bytes) or None when gone."""
        try:
            with open(os.path.join(self.path, "memory.current" if self.v2 else "memory.usage_in_bytes")) as f:
                usage = int(f.read().strip())
            with open(os.path.join(self.path, "memory.stat")) as f:
                st = parse_memory_stat(f.read())
        except (OSError, ValueError):
            return None
        inactive = st.get("inactive_file" if self.v2 else "total_inactive_file", 0)
        return usage, max(0, usage - inactive)


def find_container_cgroup(container_id, roots=("/sys/fs/cgroup/memory", "/sys/fs/cgroup")):
    """The memory cgroup directory of a Docker container, by its full id
    (cgroupfs: <root>/docker/<id>; systemd: <root>/system.slice/docker-<id>.scope)."""
    if not container_id:
        return None
    for root in roots:
        for rel in (f"docker/{container_id}", f"system.slice/docker-{container_id}.scope", container_id):
            p = os.path.join(root, rel)
            if os.path.isdir(p) and (os.path.exists(os.path.join(p, "memory.stat"))):
                return p
        # Any depth up to 3 (a dockerd with a --cgroup-parent).
        base_depth = root.rstrip("/").count("/")
        for dirpath, dirnames, _ in os.walk(root):
            if dirpath.count("/") - base_depth >= 3:
                dirnames[:] = []
                continue
            for d in dirnames:
                if container_id in d and os.path.exists(os.path.join(dirpath, d, "memory.stat")):
                    return os.path.join(dirpath, d)
    return None


def find_pod_cgroup(node_cgroup, pod_uid):
    """The pod's cgroup under the node container's (kubelet's cgroupfs or
    systemd driver names the pod by its UID, dashes or underscores)."""
    if not node_cgroup or not pod_uid:
        return None
    names = (pod_uid, pod_uid.replace("-", "_"))
    for dirpath, dirnames, _ in os.walk(node_cgroup):
        for d in dirnames:
            if any(n in d for n in names) and not d.startswith(("cri-containerd", "docker")):
                return os.path.join(dirpath, d)
    return None


def parse_docker_mem(s):
    """'1.21GiB / 23.5GiB' -> bytes of the first figure."""
    m = re.match(r"\s*([\d.]+)\s*([KMGT]?i?B)", s or "")
    if not m:
        return None
    unit = {"B": 1, "KiB": 1024, "MiB": MIB, "GiB": 1024 * MIB, "TiB": 1024**4, "kB": 1000, "KB": 1000,
            "MB": 10**6, "GB": 10**9, "TB": 10**12}.get(m.group(2))
    return int(float(m.group(1)) * unit) if unit else None


class Sampler(threading.Thread):
    """Samples the node's and the operator pod's memory every `period` s."""

    def __init__(self, node_cg, period=0.5, docker_stats=None):
        super().__init__(daemon=True)
        self.node_cg, self.period, self.docker_stats = node_cg, period, docker_stats
        self.op_cg = None
        self.samples = []  # (t, node_usage, node_ws, op_usage, op_ws)
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def run(self):
        nxt = time.monotonic()
        while not self.stop.is_set():
            node = self.node_cg.read() if self.node_cg else None
            if node is None and self.docker_stats:
                b = self.docker_stats()
                node = (b, None) if b is not None else None
            op = self.op_cg.read() if self.op_cg else None
            with self.lock:
                self.samples.append(
                    (time.monotonic(), node[0] if node else None, node[1] if node else None,
                     op[0] if op else None, op[1] if op else None)
                )
            nxt = max(nxt + self.period, time.monotonic())
            self.stop.wait(max(0.0, nxt - time.monotonic()))

    def window(self, t0, t1):
        with self.lock:
            return [s for s in self.samples if t0 <= s[0] <= t1]

    def first_after(self, t):
        with self.lock:
            return next((s for s in self.samples if s[0] >= t), None)


def memory_figures(sampler, t_idle, t0, t_ready, t_end, col):
    """Idle (median before the apply), peak (apply to all Ready or end) and at
    all Ready (first sample after it), in MiB, of sample column `col`."""

    def mib(v):
        return None if v is None else round(v / MIB, 1)

    idle = [s[col] for s in sampler.window(t_idle, t0) if s[col] is not None]
    ramp = [s[col] for s in sampler.window(t0, t_ready if t_ready is not None else t_end) if s[col] is not None]
    at = sampler.first_after(t_ready) if t_ready is not None else None
    return {
        "idle": mib(statistics.median(idle)) if idle else None,
        "peak": mib(max(ramp)) if ramp else None,
        "at_ready": mib(at[col]) if at and at[col] is not None else None,
    }


# ---- The cluster -------------------------------------------------------------------------


class Interrupted(Exception):
    pass


class Kube:
    def __init__(self, kubectl, kubeconfig):
        self.base = [kubectl, "--kubeconfig", kubeconfig]

    def run(self, *args, stdin=None, timeout=120, check=True):
        p = subprocess.run(self.base + list(args), input=stdin, capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {p.stderr.strip() or p.stdout.strip()}")
        return p

    def json(self, *args, timeout=60):
        return json.loads(self.run(*args, "-o", "json", timeout=timeout).stdout)

    def apply(self, text, namespace=None):
        args = ["apply", "-f", "-"] + (["-n", namespace] if namespace else [])
        return self.run(*args, stdin=text)

    def namespace_exists(self, name):
        p = self.run("get", "namespace", name, "-o", "name", "--ignore-not-found", check=False, timeout=30)
        if p.returncode != 0:
            return True  # unknown: treat as still there
        return bool(p.stdout.strip())


def poll_until(kube, namespace, resources, tracker, t0, timeout, period):
    """Polls the namespace every `period` s (no sleep beyond the cadence) until
    the tracker has everything Ready or `timeout` s have passed since t0.
    Returns (all ready, polls, failed polls)."""
    polls = failed = 0
    nxt = time.monotonic()
    while True:
        try:
            p = kube.run("-n", namespace, "get", resources, "-o", "json", timeout=30, check=False)
            t = time.monotonic() - t0
            polls += 1
            if p.returncode == 0:
                if tracker.observe(t, json.loads(p.stdout).get("items")):
                    return True, polls, failed
            else:
                failed += 1
        except (subprocess.TimeoutExpired, ValueError):
            failed += 1
        if time.monotonic() - t0 > timeout:
            return False, polls, failed
        nxt = max(nxt + period, time.monotonic())
        time.sleep(max(0.0, nxt - time.monotonic()))


def delete_namespace(kube, name, timeout, period=0.5):
    """Deletes the namespace and waits until it is gone: (seconds, gone)."""
    t0 = time.monotonic()
    kube.run("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)
    nxt = t0
    while kube.namespace_exists(name):
        if time.monotonic() - t0 > timeout:
            return rnd(time.monotonic() - t0), False
        nxt = max(nxt + period, time.monotonic())
        time.sleep(max(0.0, nxt - time.monotonic()))
    return rnd(time.monotonic() - t0), True


def wait_for(check, timeout, what, period=0.5):
    t0 = nxt = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"{what}: not there after {timeout} s")
        nxt = max(nxt + period, time.monotonic())
        time.sleep(max(0.0, nxt - time.monotonic()))


def wait_gone(kube, name, timeout):
    if kube.namespace_exists(name):
        log(f"namespace {name} still exists (an earlier run?): deleting it first")
        _, gone = delete_namespace(kube, name, timeout)
        if not gone:
            raise RuntimeError(f"namespace {name} from an earlier run is still there after {timeout} s")


class Bench:
    def __init__(self, args):
        self.a = args
        self.kube = Kube(args.kubectl, args.kubeconfig)
        self.created = []  # namespaces this run made
        self.server_ids = 0  # producers' server ids handed out
        self.sampler = None
        self.run_id = args.run_id or f"{int(time.time()) % 0xFFFFFF:06x}"
        with open(args.manifest) as f:
            docs = split_docs(f.read())
        self.secrets = "---\n".join(d for d in docs if doc_kind(d) == "Secret")
        pipes = [d for d in docs if doc_kind(d) == "PaymentPipeline"]
        if not pipes:
            raise SystemExit(f"{args.manifest} has no PaymentPipeline")
        self.template = pipes[0]
        self.tables = [t for t in (args.tables or "").replace(",", " ").split() if t]

    def prefix(self, count, rnd_, i):
        return f"bk{self.run_id}-{count}-{rnd_}-{i}"

    def pipelines_text(self, count, rnd_):
        docs = []
        for i in range(1, count + 1):
            # Unique among the run's producers, and away from the default 5701
            # of the e2e suite's `demo`.
            self.server_ids += 1
            docs.append(pipeline_doc(self.template, f"pipe-{i}", self.prefix(count, rnd_, i), self.tables,
                                     self.a.partitions, self.a.server_id_base + self.server_ids))
        return "---\n".join(docs)

    # -- operator pod ---------------------------------------------------------------
    def operator_pod(self):
        try:
            pods = self.kube.json("-n", self.a.operator_ns, "get", "pods", "-l",
                                  "app.kubernetes.io/name=paystream-operator")["items"]
        except Exception as e:  # noqa: BLE001
            log(f"operator pod: {e}")
            return None
        pods = [p for p in pods if pod_running(p) and not p["metadata"].get("deletionTimestamp")]
        return pods[0] if pods else None

    def operator_leading(self):
        """A Ready operator pod holds the Lease: a re-installed operator first
        waits for its predecessor's Lease to expire, which no point may time."""
        pod = self.operator_pod()
        if not pod or not pod_ready(pod):
            return False
        p = self.kube.run("-n", self.a.operator_ns, "get", "lease", self.a.lease, "-o",
                          "jsonpath={.spec.holderIdentity}", check=False)
        return p.returncode == 0 and p.stdout.strip() == pod["metadata"]["name"]

    def track_operator(self):
        pod = self.operator_pod()
        uid = pod["metadata"]["uid"] if pod else None
        cg = find_pod_cgroup(self.a.node_cgroup, uid)
        if self.sampler:
            self.sampler.op_cg = Cgroup(cg) if cg else None
        return {"pod": pod["metadata"]["name"] if pod else None, "cgroup": cg,
                "restarts": sum(cs.get("restartCount") or 0 for cs in (pod or {}).get("status", {}).get("containerStatuses") or [])}

    # -- one point ------------------------------------------------------------------
    def point(self, kind, count, rnd_):
        ns = f"bench-kind-{count}-{rnd_}" if kind == "pipelines" else f"bench-kind-ceiling-{count}-{rnd_}"
        run = {"kind": kind, "count": count, "run": rnd_, "namespace": ns,
               "objects": count if kind == "pipelines" else 3 * count}
        log(f"---- {kind}, {count}, round {rnd_}: namespace {ns}")
        try:
            wait_gone(self.kube, ns, self.a.delete_timeout)
            self.created.append(ns)
            self.kube.apply(json.dumps(namespace_doc(ns)))
            # Pods of a namespace without its default ServiceAccount are refused
            # (the ReplicaSet controller then backs off): wait for it first.
            wait_for(lambda: self.kube.run("-n", ns, "get", "serviceaccount", "default", check=False).returncode == 0,
                     30, f"the default ServiceAccount of {ns}")
            if kind == "pipelines":
                self.kube.apply(self.secrets, ns)
                text = self.pipelines_text(count, rnd_)
                resources = "paymentpipelines.paystream.io,deployments,pods"
                tracker = Tracker("pipelines", count)
                run["operator"] = self.track_operator()
            else:
                text = json.dumps({"apiVersion": "v1", "kind": "List",
                                   "items": ceiling_docs(count, self.a.pause_image, ns)})
                resources = "deployments,pods"
                tracker = Tracker("ceiling", 3 * count)
            t_idle = time.monotonic()
            # The idle baseline: a measurement window, not a wait for anything.
            time.sleep(self.a.idle_s)
            t0 = time.monotonic()
            self.kube.apply(text, ns)
            apply_s = time.monotonic() - t0
            ok, polls, failed = poll_until(self.kube, ns, resources, tracker, t0, self.a.ready_timeout, self.a.poll_s)
            t_end = time.monotonic()
            run.update(tracker.figures())
            run.update({"apply_s": rnd(apply_s), "ramp_s": rnd(t_end - t0), "polls": polls, "failed_polls": failed,
                        "poll_period_s": rnd((t_end - t0) / polls, 3) if polls else None})
            t_ready = t0 + tracker.milestones["all_ready"] if ok else None
            if self.sampler:
                # The value "at all Ready" needs a sample after it.
                if t_ready is not None:
                    deadline = time.monotonic() + 3 * self.a.poll_s
                    while self.sampler.first_after(t_ready) is None and time.monotonic() < deadline:
                        time.sleep(0.1)
                run["node_memory_mib"] = memory_figures(self.sampler, t_idle, t0, t_ready, t_end, 2)
                run["node_memory_usage_mib"] = memory_figures(self.sampler, t_idle, t0, t_ready, t_end, 1)
                run["operator_memory_mib"] = memory_figures(self.sampler, t_idle, t0, t_ready, t_end, 4)
            log(f"{kind} {count} round {rnd_}: "
                + (f"all {run['objects']} Ready at {run['time_to_all_ready_s']} s" if ok
                   else f"only {run['ready']} of {run['objects']} Ready after {run['ramp_s']} s")
                + f" (first {run['first_ready_s']} s, median {run['median_ready_s']} s; apply took {run['apply_s']} s;"
                + f" milestones {run['milestones_s']})"
                + (f"; Ready before their pods: {run['ready_before_its_pods']}" if run.get("ready_before_its_pods") else "")
                + (f"; Ready, then not: {run['flapped']}" if run.get("flapped") else ""))
            if not ok:
                run["diagnosis"] = self.diagnose(ns)
        except Interrupted:
            raise
        except Exception as e:  # noqa: BLE001  (a failed point must not cost the others)
            run["error"] = str(e)[:2000]
            log(f"{kind} {count} round {rnd_} failed: {e}")
        secs, gone = delete_namespace(self.kube, ns, self.a.delete_timeout)
        run["delete_s"], run["deleted"] = (secs if gone else None), gone
        if gone:
            self.created.remove(ns)
            if kind == "pipelines" and self.a.kafka_tool:
                # The finalizers delete the topics (deleteTopicsOnDelete): check.
                left = topics_under(self.a.kafka_tool, self.prefix(count, rnd_, ""))
                run["topics_left_after_deletion"] = None if left is None else len(left)
                if left:
                    run["topics_left_names"] = left[:12]
        log(f"{kind} {count} round {rnd_}: namespace deleted in {secs} s" if gone
            else f"{kind} {count} round {rnd_}: namespace {ns} NOT gone after {secs} s")
        return run

    def diagnose(self, ns):
        p = self.kube.run("-n", ns, "get", "paymentpipelines,pods", "-o", "wide", check=False)
        out = (p.stdout or p.stderr)[-3000:]
        log(f"not all Ready in {ns}:\n{out}")
        return out

    # -- the run --------------------------------------------------------------------
    def run(self):
        started = time.time()
        t_start = time.monotonic()
        node_cg = find_container_cgroup(self.a.node_container_id)
        self.a.node_cgroup = node_cg
        docker_stats = None
        if not node_cg and self.a.docker:
            def docker_stats():
                p = subprocess.run([self.a.docker, "stats", "--no-stream", "--format", "{{.MemUsage}}", self.a.node],
                                   capture_output=True, text=True, timeout=30)
                return parse_docker_mem(p.stdout) if p.returncode == 0 else None
        log(f"node {self.a.node}: memory cgroup {node_cg or '(not found: docker stats, usage only)'}")
        self.sampler = Sampler(Cgroup(node_cg) if node_cg else None, 0.5, docker_stats)
        self.sampler.start()
        t = time.monotonic()
        wait_for(self.operator_leading, 180, "an operator pod that is Ready and holds the Lease")
        log(f"the operator leads ({time.monotonic() - t:.1f} s after the install)")
        op = self.track_operator()
        log(f"operator pod {op['pod']}: memory cgroup {op['cgroup']}")
        others = 0
        try:
            others = len(self.kube.json("get", "paymentpipelines.paystream.io", "-A")["items"])
        except Exception as e:  # noqa: BLE001
            log(f"listing PaymentPipelines: {e}")
        runs = []
        try:
            for r in range(1, self.a.repeat + 1):
                for count in self.a.counts:
                    order = ("pipelines", "ceiling") if r % 2 else ("ceiling", "pipelines")
                    for kind in order:
                        t = time.monotonic()
                        runs.append(self.point(kind, count, r))
                        log(f"stage {kind} {count} round {r}: {time.monotonic() - t:.1f} s")
        finally:
            self.sampler.stop.set()
            leftovers = self.cleanup()
        doc = {
            "benchmark": "kind",
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "wall_s": rnd(time.monotonic() - t_start, 1),
            "machine": machine(),
            "cluster": {
                "name": self.a.cluster, "node": self.a.node, "node_image": self.a.node_image,
                "kubernetes": self.server_version(), "node_memory_cgroup": node_cg,
                "node_memory": "cgroup working set, usage less inactive file cache" if node_cg else "docker stats, usage",
            },
            "config": {
                "counts": self.a.counts, "repeat": self.a.repeat, "poll_s": self.a.poll_s, "idle_s": self.a.idle_s,
                "ready_timeout_s": self.a.ready_timeout, "delete_timeout_s": self.a.delete_timeout,
                "tables": self.tables or "the example's", "partitions": self.a.partitions,
                "order": "round 1: pipelines then ceiling per count; round 2 the other way, and so on",
            },
            "pipeline_shape": (
                "examples/paymentpipeline.yaml as e2e/kind/lib.sh pipeline_manifest adapts it (the stack at the gateway), "
                f"tables {self.tables or 'of the example'}, partitions {self.a.partitions}, deleteTopicsOnDelete, "
                f"its own serverId (from {self.a.server_id_base + 1} up), "
                "consumer and API at 1 replica without autoscaling: 3 Deployments (real pods) per pipeline"
            ),
            "ceiling_shape": f"3 Deployments per pipeline of {self.a.pause_image} (imagePullPolicy Never, no probes)",
            "operator": {"namespace": self.a.operator_ns, "watch_namespace_found": self.a.watch_found,
                         "watch_namespace_during_run": "", "restored_after": self.a.watch_found not in ("", None, "(not installed)")},
            "other_pipelines_in_cluster": others,
            "images": self.images(),
            "runs": runs,
            "leftovers": leftovers,
        }
        doc["summary"] = [
            {k: v for k, v in row.items() if k not in ("stuck", "errors")} for row in report.kind_results(doc)
        ]
        doc["ratios"] = {k: v for k, v in report.key_ratios({"kind": doc}).items() if k.startswith("kind_")}
        return doc

    def server_version(self):
        try:
            return self.kube.json("version")["serverVersion"]["gitVersion"]
        except Exception:  # noqa: BLE001
            return None

    def images(self):
        out = {}
        try:
            with open(self.a.images_json) as f:
                out = json.load(f)
        except (OSError, ValueError, TypeError) as e:
            out = {"error": f"{self.a.images_json}: {e}"}
        out["node"] = {"ref": self.a.node_image, "size_bytes": self.a.node_image_bytes}
        out["pause"] = {"ref": self.a.pause_image}
        return out

    def cleanup(self):
        """Deletes what this run made and is still there; sweeps its topics.
        Bounded (the deletion timeout per namespace); a second Ctrl-C does not
        cut it short (run.sh's trap deletes by label if it is killed)."""
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            try:
                signal.signal(s, signal.SIG_IGN)
            except ValueError:  # not the main thread (tests)
                pass
        left = {}
        for ns in list(self.created):
            log(f"cleanup: deleting namespace {ns}")
            secs, gone = delete_namespace(self.kube, ns, self.a.delete_timeout)
            if gone:
                self.created.remove(ns)
        if self.created:
            left["namespaces"] = list(self.created)
            log(f"cleanup: namespaces still there: {self.created}")
        if self.a.kafka_tool:
            left["topics_swept"] = sweep_topics(self.a.kafka_tool, f"bk{self.run_id}-")
        return left


def list_topics(tool):
    p = subprocess.run(["bash", tool, "topics", "--list"], capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise OSError(p.stderr.strip()[-300:])
    return p.stdout.split()


def topics_under(tool, prefix):
    try:
        return sorted(t for t in list_topics(tool) if t.startswith(prefix))
    except (OSError, subprocess.TimeoutExpired) as e:
        log(f"listing topics: {e}")
        return None


def sweep_topics(tool, prefix):
    """Deletes the topics under `prefix` a deletion left behind; how many."""
    try:
        topics = [t for t in list_topics(tool) if t.startswith(prefix)]
        if topics:
            log(f"cleanup: {len(topics)} topics under {prefix} left: deleting them")
            subprocess.run(["bash", tool, "topics", "--delete", "--topic", re.escape(prefix) + ".*"],
                           capture_output=True, text=True, timeout=120)
        return len(topics)
    except (OSError, subprocess.TimeoutExpired) as e:
        log(f"cleanup: listing topics: {e}")
        return None


def machine():
    mem = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = round(int(line.split()[1]) / 1024)
    except OSError:
        pass
    return {"cores": os.cpu_count(), "memory_mib": mem, "uname": " ".join(os.uname())}


# ---- The part's Markdown --------------------------------------------------------------


def markdown(doc, name):
    lines = [f"# kind benchmark, {doc.get('date')}", ""]
    lines += [f"`make bench-kind` on {doc['machine'].get('cores')} cores, node image `{doc['cluster'].get('node_image')}`, "
              f"Kubernetes {doc['cluster'].get('kubernetes')}; {doc['config']['repeat']} rounds; "
              f"{doc.get('other_pipelines_in_cluster', 0)} other PaymentPipelines in the cluster. JSON: `{name}.json`.", ""]
    lines += report.section_kind(doc, {})
    lines += ["## Every run", "",
              "| what | N | round | all Ready s | first / median s | milestones s | node MiB idle / peak / at Ready | operator MiB peak | deletion s | restarts |",
              "| --- | ---: | ---: | ---: | --- | --- | --- | ---: | ---: | ---: |"]
    f = report.fmt
    for r in doc["runs"]:
        nm, om = r.get("node_memory_mib") or {}, r.get("operator_memory_mib") or {}
        ms = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in (r.get("milestones_s") or {}).items())
        ready = f(r.get("time_to_all_ready_s")) if r.get("all_ready") else f"{r.get('ready', 0)} of {r['objects']} Ready"
        if r.get("error"):
            ready = f"failed: {r['error'][:80]}"
        lines.append(
            f"| {r['kind']} | {r['count']} | {r['run']} | {ready} | {f(r.get('first_ready_s'))} / {f(r.get('median_ready_s'))} | {ms} | "
            f"{f(nm.get('idle'))} / {f(nm.get('peak'))} / {f(nm.get('at_ready'))} | {f(om.get('peak')) if r['kind'] == 'pipelines' else '–'} | "
            f"{f(r.get('delete_s')) if r.get('deleted', True) else 'not gone'} | {r.get('pod_restarts', 0)} |"
        )
    if doc.get("leftovers"):
        lines += ["", f"Left after the run: {json.dumps(doc['leftovers'])}."]
    return "\n".join(lines) + "\n"


# ---- main ---------------------------------------------------------------------------------


def parse_args(argv=None):
    env = os.environ.get
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kubectl", default=env("KUBECTL", "kubectl"))
    ap.add_argument("--kubeconfig", default=env("KIND_KUBECONFIG"))
    ap.add_argument("--manifest", required=True, help="pipeline_manifest's output: Secrets + one PaymentPipeline")
    ap.add_argument("--counts", default=env("BENCH_KIND_COUNTS", "1 10"))
    ap.add_argument("--repeat", type=int, default=int(env("BENCH_KIND_REPEAT", "2")))
    ap.add_argument("--tables", default=env("BENCH_KIND_TABLES", ""),
                    help="tables each pipeline captures (default: the example's four, which the consumer reads)")
    ap.add_argument("--partitions", type=int, default=int(env("BENCH_KIND_PARTITIONS", "1")))
    ap.add_argument("--server-id-base", type=int, default=int(env("BENCH_KIND_SERVER_ID_BASE", "58000")),
                    help="the producers announce server ids from base+1 up, one per pipeline of the run")
    ap.add_argument("--poll-s", type=float, default=float(env("BENCH_KIND_POLL_S", "0.5")))
    ap.add_argument("--idle-s", type=float, default=float(env("BENCH_KIND_IDLE_S", "5")))
    ap.add_argument("--ready-timeout", type=float, default=float(env("BENCH_KIND_READY_TIMEOUT", "420")))
    ap.add_argument("--delete-timeout", type=float, default=float(env("BENCH_KIND_DELETE_TIMEOUT", "240")))
    ap.add_argument("--pause-image", default="registry.k8s.io/pause:3.10")
    ap.add_argument("--cluster", default="paystream")
    ap.add_argument("--node", default="paystream-control-plane")
    ap.add_argument("--node-container-id", default=None)
    ap.add_argument("--node-image", default=None)
    ap.add_argument("--node-image-bytes", type=int, default=None)
    ap.add_argument("--docker", default=env("PAYSTREAM_DOCKER_CLI"))
    ap.add_argument("--images-json", default=None)
    ap.add_argument("--operator-ns", default="paystream-system")
    ap.add_argument("--lease", default="paystream-operator", help="the operator's Lease (in --operator-ns)")
    ap.add_argument("--watch-found", default=None, help="the operator's watchNamespace before the run")
    ap.add_argument("--kafka-tool", default=os.path.join(REPO, "stack", "kafka", "tool.sh"))
    ap.add_argument("--results", default=os.path.join(REPO, "bench", "results"))
    ap.add_argument("--run-id", default=None)
    ap.add_argument("--dry-run", action="store_true", help="print the manifests of the first round and exit")
    a = ap.parse_args(argv)
    a.counts = [int(c) for c in a.counts.replace(",", " ").split()]
    a.node_cgroup = None
    return a


def main(argv=None):
    a = parse_args(argv)
    b = Bench(a)
    if a.dry_run:
        for count in a.counts:
            print(f"# ---- namespace bench-kind-{count}-1: Secrets, then in one apply:")
            print(b.pipelines_text(count, 1))
            print(f"# ---- namespace bench-kind-ceiling-{count}-1, in one apply: {3 * count} Deployments of {a.pause_image}")
            print(json.dumps(ceiling_docs(count, a.pause_image, f"bench-kind-ceiling-{count}-1")[0], indent=2))
        return 0

    interrupted = []

    def on_term(signum, _frame):
        # Once: a second signal (Ctrl-C reaches both run.sh and this process)
        # must not cut the cleanup short.
        if not interrupted:
            interrupted.append(signum)
            raise Interrupted(f"signal {signum}")

    handlers = {s: signal.signal(s, on_term) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        doc = b.run()
    except Interrupted as e:
        log(f"interrupted ({e}); cleaned up, no result written")
        return 130
    finally:
        for s, h in handlers.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
    os.makedirs(a.results, exist_ok=True)
    name = "kind-" + time.strftime("%Y-%m-%dT%H%M%SZ", time.gmtime())
    with open(os.path.join(a.results, name + ".json"), "w") as f:
        json.dump(doc, f, indent=2)
    md = markdown(doc, name)
    with open(os.path.join(a.results, name + ".md"), "w") as f:
        f.write(md)
    print(md)
    log(f"written {os.path.join(a.results, name)}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
