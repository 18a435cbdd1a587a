#!/usr/bin/env python3
"""The combined benchmark report of `make bench`.

Reads the newest result of each part (api, cdc, freshness, rebuild, operator, kind) written
under bench/results/ since --since (a Unix time; `make bench` passes the time
it started), and writes

  bench/results/<date>.json   every part's result, plus the key figures and ratios
  bench/results/<date>.md     the report: how to read it, tables, plots, and where
                              paystream is behind
  bench/results/<date>/*.png  the plots

A part that did not produce a result in this run is reported as missing, not
fatal. The plots need matplotlib: the script installs it from PyPI into a venv
under $PAYSTREAM_CACHE/bench-venv (default ~/.cache/paystream/bench-venv) and
re-runs itself there; without it the report is written without plots.

Every part's JSON is read defensively: fields may be absent or renamed while the
parts evolve, so each figure is looked up along a few known paths.
"""

import argparse
import glob
import json
import math
import os
import subprocess
import sys
import time

PARTS = ("api", "cdc", "freshness", "rebuild", "operator", "kind")
REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
MATPLOTLIB = "matplotlib>=3.7,<4"
VENV_FLAG = "PAYSTREAM_BENCH_REPORT_IN_VENV"


# ---- Pure helpers (tested in test_report.py) ----------------------------------



EXPLANATIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "explanations.md")


def explanations(missing):
    """The hand-written causes of the gaps (bench/report/explanations.md),
    which the generated list above cannot know; a note when it is absent."""
    lines = ["### Why", ""]
    try:
        with open(EXPLANATIONS) as f:
            lines += f.read().rstrip("\n").splitlines()
    except OSError:
        lines += ["_No explanations file (bench/report/explanations.md)._"]
    if missing:
        lines += ["", f"Parts missing from this run: {', '.join(missing)}."]
    return lines + [""]

def dig(d, *paths, default=None):
    """The first value found along one of `paths` ("a.b.0.c") in nested dicts
    and lists; `default` when none leads anywhere or the value is null."""
    for path in paths:
        v = d
        for k in path.split("."):
            if isinstance(v, dict):
                v = v.get(k)
            elif isinstance(v, list) and k.lstrip("-").isdigit() and -len(v) <= int(k) < len(v):
                v = v[int(k)]
            else:
                v = None
            if v is None:
                break
        if v is not None:
            return v
    return default


def num(v):
    """A finite float, or None."""
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def median_spread(values):
    """(median, min, max) of the numbers among `values`; Nones when there are none."""
    v = sorted(x for x in (num(x) for x in values) if x is not None)
    if not v:
        return None, None, None
    n = len(v)
    m = v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2
    return m, v[0], v[-1]


def ratio(a, b):
    a, b = num(a), num(b)
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt(v, digits=1):
    v = num(v)
    if v is None:
        return "n/a"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def fmt_spread(m, lo, hi, digits=1):
    """`m (lo–hi)`, or just `m` when there is no spread to show."""
    if num(lo) is None or num(hi) is None or fmt(lo, digits) == fmt(hi, digits):
        return fmt(m, digits)
    return f"{fmt(m, digits)} ({fmt(lo, digits)}–{fmt(hi, digits)})"


def fmt_ratio(r):
    r = num(r)
    if r is None:
        return "n/a"
    return f"{r:.2f}×" if abs(r) >= 0.1 else f"{r:.2g}×"


def newest(results_dir, part, since):
    """(newest `<part>-*.json` written at or after `since`, newest of any age)."""
    files = [f for f in glob.glob(os.path.join(results_dir, f"{part}-*.json")) if os.path.isfile(f)]
    files.sort(key=lambda f: (os.path.getmtime(f), os.path.basename(f)))
    fresh = [f for f in files if os.path.getmtime(f) >= since]
    return (fresh[-1] if fresh else None), (files[-1] if files else None)


def spread_of(point, key):
    """(median, min, max) of `key` in an aggregated point (`key`, `key_min`,
    `key_max`, as bench/api/helper.py writes them)."""
    point = point or {}
    return num(point.get(key)), num(point.get(f"{key}_min")), num(point.get(f"{key}_max"))


# ---- Reading each part ----------------------------------------------------------

API_TARGETS = (
    ("cached", "API cached read"),
    ("near", "API cached read, near cache"),
    ("mysql", "API, MySQL direct (no cache)"),
    ("ceiling", "HTTP ceiling (constant body)"),
)


def api_levels(d):
    """Per connection level: offered rate, per-target throughput and open-loop
    latency (median, min, max), redis-benchmark, ratios."""
    out = []
    for lvl in dig(d, "levels", default=[]) or []:
        if not isinstance(lvl, dict):
            continue
        row = {
            "connections": num(lvl.get("connections")),
            "rate": num(lvl.get("open_loop_rate")),
            "repeats": dig(lvl, "repeats", "cached.repeats", "cached.throughput.repeats"),
            "targets": {},
        }
        for name, _ in API_TARGETS:
            t = lvl.get(name) or {}
            row["targets"][name] = {
                "rps": spread_of(t.get("throughput"), "rps"),
                "p50": spread_of(t.get("open_loop"), "p50_ms"),
                "p99": spread_of(t.get("open_loop"), "p99_ms"),
                "errors": sum(
                    num(dig(t, f"{k}.{e}")) or 0
                    for k in ("throughput", "open_loop")
                    for e in ("errors", "non_2xx")
                ),
            }
        rb = lvl.get("redis_benchmark") or {}
        row["redis"] = {"rps": spread_of(rb, "rps"), "p50": spread_of(rb, "p50_ms"), "p99": spread_of(rb, "p99_ms")}
        row["ratios"] = lvl.get("ratios") or {}
        if row["connections"] is not None:
            out.append(row)
    out.sort(key=lambda r: r["connections"])
    return out


FRESHNESS_STAGES = (
    ("commit_to_event_built", "commit → event built (binlog read, decode)"),
    ("event_built_to_kafka", "event built → readable in Kafka (producer's transaction)"),
    ("kafka_to_redis", "Kafka → Redis (consumer)"),
    ("redis_to_api", "Redis → API answer"),
)


def agg_of(a):
    """(median, min, max) of an aggregate `{"median", "min", "max"}` or a bare number."""
    if isinstance(a, dict):
        return num(a.get("median")), num(a.get("min")), num(a.get("max"))
    return num(a), None, None


def freshness_rates(d):
    """Per offered rate: achieved rate, p50/p99 (median, min, max), commit->Redis p50."""
    out = []
    for r in dig(d, "rates", default=[]) or []:
        if not isinstance(r, dict) or num(r.get("rate")) is None:
            continue

        def agg(k):
            return agg_of(r.get(k))

        out.append(
            {
                "rate": num(r["rate"]),
                "achieved": agg("achieved_rate"),
                "p50": agg("p50_ms"),
                "p99": agg("p99_ms"),
                "redis_p50": agg("redis_p50_ms"),
                "redis_p99": agg("redis_p99_ms"),
                "samples": num(r.get("samples")),
                "missing": num(r.get("missing")),
                "repetitions": num(r.get("repetitions")),
                "api_mysql_reads": num(r.get("api_mysql_reads")),
                "stages": {k: agg_of(v) for k, v in (r.get("stages_p50_ms") or {}).items()},
                "producer_commit_ms": agg("producer_mean_commit_ms"),
            }
        )
    out.sort(key=lambda r: r["rate"])
    return out


CDC_FIELDS = {
    "rows_per_second": ("median.rows_per_second", "rows_per_second", "backlog.rows_per_second", "drain.rows_per_second"),
    "streaming_rows_per_second": ("median.streaming_rows_per_second", "streaming_rows_per_second", "backlog.streaming_rows_per_second"),
    "p50_ms": ("median.p50_ms", "p50_ms", "latency.p50_ms"),
    "p99_ms": ("median.p99_ms", "p99_ms", "latency.p99_ms"),
    "peak_rss_kib": ("median.peak_rss_kib", "peak_rss_kib"),
    "rate": ("median.target_rate", "latency.target_rate", "config.rate", "target_rate"),
}
CDC_RUN_FIELDS = {
    "rows_per_second": ("backlog.rows_per_second", "rows_per_second"),
    "streaming_rows_per_second": ("backlog.streaming_rows_per_second", "streaming_rows_per_second"),
    "p50_ms": ("latency.p50_ms", "p50_ms"),
    "p99_ms": ("latency.p99_ms", "p99_ms"),
    "peak_rss_kib": ("peak_rss_kib",),
}


def cdc_engines(d):
    """{engine: {field: (median, min, max)}}; the older single-engine layout
    (backlog/latency at the top level) is read as engine "paystream"."""
    engines = d.get("engines") if isinstance(d.get("engines"), dict) else None
    if engines is None:
        engines = {"paystream": d}
    out = {}
    for name, e in engines.items():
        if not isinstance(e, dict):
            continue
        if e.get("error") and not e.get("median"):
            out[name] = {"error": str(e.get("error"))}
            continue
        runs = [r for r in (e.get("runs") or []) if isinstance(r, dict)]
        row = {}
        for field, paths in CDC_FIELDS.items():
            m = num(dig(e, *paths))
            if runs and field in CDC_RUN_FIELDS:
                rm, lo, hi = median_spread(dig(r, *CDC_RUN_FIELDS[field]) for r in runs)
                row[field] = (m if m is not None else rm, lo, hi)
            else:
                row[field] = (m, None, None)
        out[name] = row
    return out


def cdc_ceiling(d):
    c = d.get("ceiling") if isinstance(d.get("ceiling"), dict) else {}
    return {
        "raw": num(dig(c, "median.raw_rows_per_second", "raw_rows_per_second", "raw.rows_per_second")),
        "decoded": num(dig(c, "median.decoded_rows_per_second", "decoded_rows_per_second", "decoded.rows_per_second")),
        "tool": dig(c, "tool"),
    }


def operator_runs(d):
    """Every run of the operator result that has a pipeline count."""
    return [r for r in dig(d, "results", default=[]) or [] if isinstance(r, dict) and num(r.get("pipelines")) is not None]


# Figure -> (JSON paths, count only runs that got every pipeline Ready). A
# per-pipeline p99 of a partial run covers only the pipelines that got Ready
# and would flatter the median.
OPERATOR_FIGURES = {
    "time_to_ready_s": (("time_to_all_ready_s", "time_to_ready_s"), False),
    "p99_ready_s": (("per_pipeline_time_to_ready_s.p99",), True),
    "peak_rss_mib": (("operator.peak_rss_mib_vmhwm", "operator.peak_rss_mib"), False),
    "idle_cpu_percent": (("operator.cpu_percent_idle",), False),
    "idle_reads_per_min": (("idle.operator_requests.per_minute.reads", "idle.reads_per_minute"), False),
    "idle_writes_per_min": (("idle.operator_requests.per_minute.writes", "idle.writes_per_minute"), False),
}


def operator_results(d):
    """Per pipeline count over its runs: how many runs and how many ended all
    Ready, and (median, min, max) of time to all Ready, per-pipeline p99, peak
    RSS, idle CPU and idle requests. A run that did not get every pipeline
    Ready adds nothing to the time to Ready; `stuck` lists those runs."""
    by_count = {}
    for r in operator_runs(d):
        by_count.setdefault(num(r["pipelines"]), []).append(r)
    out = []
    for n, runs in sorted(by_count.items()):
        row = {"pipelines": n, "runs": len(runs), "runs_all_ready": sum(1 for r in runs if dig(r, "all_ready") is True)}
        for key, (paths, all_ready_only) in OPERATOR_FIGURES.items():
            counted = [r for r in runs if not all_ready_only or dig(r, "all_ready") is not False]
            row[key] = median_spread([dig(r, *paths) for r in counted])
        row["errors"] = [str(dig(r, "error")) for r in runs if dig(r, "error") is not None]
        row["stuck"] = [
            {"ready": num(dig(r, "ready")), "ramp_s": num(dig(r, "ramp_s")), "run": dig(r, "run")}
            for r in runs
            if dig(r, "all_ready") is False or (num(dig(r, "time_to_all_ready_s", "time_to_ready_s")) is None and num(dig(r, "ready")) is not None)
        ]
        out.append(row)
    return out


def kind_runs(d, kind):
    """The runs of the kind result of one kind ("pipelines" or "ceiling")."""
    return [r for r in dig(d, "runs", default=[]) or []
            if isinstance(r, dict) and r.get("kind") == kind and num(r.get("count")) is not None]


# Figure -> JSON paths in a run of the kind result (node memory falls back to
# the cgroup's usage when the working set was not available).
KIND_FIGURES = {
    "time_to_all_ready_s": ("time_to_all_ready_s",),
    "first_ready_s": ("first_ready_s",),
    "median_ready_s": ("median_ready_s",),
    "delete_s": ("delete_s",),
    "node_idle_mib": ("node_memory_mib.idle", "node_memory_usage_mib.idle"),
    "node_peak_mib": ("node_memory_mib.peak", "node_memory_usage_mib.peak"),
    "node_at_ready_mib": ("node_memory_mib.at_ready", "node_memory_usage_mib.at_ready"),
    "operator_peak_mib": ("operator_memory_mib.peak",),
    "operator_at_ready_mib": ("operator_memory_mib.at_ready",),
}
KIND_MILESTONES = (
    ("deployments_created", "Deployments created"),
    ("pods_running", "pods Running"),
    ("pods_ready", "pods Ready"),
    ("deployments_available", "Deployments Available"),
    ("all_ready", "all Ready"),
)


def kind_results(d):
    """Per count N of the kind result: the pipelines' runs and the ceiling's
    (3N pause Deployments) of the same run, each figure as (median, min, max)
    over the rounds; `ratio` is the pipelines' median time to all Ready over
    the ceiling's, `round_ratios` the same per round (paired by round)."""
    pipes, ceil = kind_runs(d, "pipelines"), kind_runs(d, "ceiling")
    out = []
    for n in sorted({num(r["count"]) for r in pipes + ceil}):
        pr = [r for r in pipes if num(r["count"]) == n]
        cr = [r for r in ceil if num(r["count"]) == n]
        row = {"count": n, "runs": len(pr), "runs_all_ready": sum(1 for r in pr if r.get("all_ready") is True),
               "ceiling_runs": len(cr), "ceiling_all_ready": sum(1 for r in cr if r.get("all_ready") is True)}
        for key, paths in KIND_FIGURES.items():
            row[key] = median_spread([dig(r, *paths) for r in pr])
            row[f"ceiling_{key}"] = median_spread([dig(r, *paths) for r in cr])
        row["milestones"] = {k: median_spread([dig(r, f"milestones_s.{k}") for r in pr]) for k, _ in KIND_MILESTONES}
        row["ceiling_milestones"] = {k: median_spread([dig(r, f"milestones_s.{k}") for r in cr]) for k, _ in KIND_MILESTONES}
        row["ratio"] = ratio(row["time_to_all_ready_s"][0], row["ceiling_time_to_all_ready_s"][0])
        by_round = {r.get("run"): r for r in cr}
        row["round_ratios"] = median_spread(
            [ratio(r.get("time_to_all_ready_s"), (by_round.get(r.get("run")) or {}).get("time_to_all_ready_s")) for r in pr]
        )
        idle, after = row["node_idle_mib"][0], row["node_at_ready_mib"][0]
        row["node_added_per_pipeline_mib"] = (after - idle) / n if num(idle) is not None and num(after) is not None and n else None
        row["errors"] = [f"{r.get('kind')} round {r.get('run')}: {r['error']}" for r in pr + cr if r.get("error")]
        row["stuck"] = [
            {"kind": r.get("kind"), "run": r.get("run"), "ready": num(r.get("ready")), "objects": num(r.get("objects")),
             "ramp_s": num(r.get("ramp_s"))}
            for r in pr + cr if r.get("all_ready") is False and not r.get("error")
        ]
        row["not_deleted"] = [f"{r.get('kind')} round {r.get('run')}" for r in pr + cr if r.get("deleted") is False]
        row["early"] = [
            {"run": r.get("run"), "pipelines": len(r.get("ready_before_its_pods") or {}), "flapped": len(r.get("flapped") or []),
             "first_ready_ever_s": num(r.get("first_ready_ever_s"))}
            for r in pr if r.get("ready_before_its_pods") or r.get("flapped")
        ]
        row["topics_left"] = [
            (r.get("run"), num(r.get("topics_left_after_deletion")),
             sorted({t.split(".", 1)[1] for t in r.get("topics_left_names") or [] if "." in t}))
            for r in pr if num(r.get("topics_left_after_deletion"))
        ]
        out.append(row)
    return out


def key_ratios(parts):
    """Ratios between figures measured in the same run; None where a side is missing."""
    r = {}
    api = api_levels(parts["api"]) if parts.get("api") else []
    for lvl in api:
        c = int(lvl["connections"])
        t = lvl["targets"]
        r[f"api_{c}_cached_over_ceiling_rps"] = ratio(t["cached"]["rps"][0], t["ceiling"]["rps"][0])
        r[f"api_{c}_cached_over_mysql_rps"] = ratio(t["cached"]["rps"][0], t["mysql"]["rps"][0])
        r[f"api_{c}_cached_over_redis_benchmark_rps"] = ratio(t["cached"]["rps"][0], lvl["redis"]["rps"][0])
        r[f"api_{c}_near_over_cached_rps"] = ratio(t["near"]["rps"][0], t["cached"]["rps"][0])
        r[f"api_{c}_mysql_over_cached_p99"] = ratio(t["mysql"]["p99"][0], t["cached"]["p99"][0])
        r[f"api_{c}_cached_over_ceiling_p99"] = ratio(t["cached"]["p99"][0], t["ceiling"]["p99"][0])
    if parts.get("cdc"):
        e = cdc_engines(parts["cdc"])
        ps, dz = e.get("paystream", {}), e.get("debezium", {})
        ceil = cdc_ceiling(parts["cdc"])
        g = lambda row, k: (row.get(k) or (None,))[0]  # noqa: E731
        r["cdc_paystream_over_debezium_rows_per_second"] = ratio(g(ps, "rows_per_second"), g(dz, "rows_per_second"))
        r["cdc_paystream_over_debezium_p50"] = ratio(g(ps, "p50_ms"), g(dz, "p50_ms"))
        r["cdc_paystream_over_debezium_p99"] = ratio(g(ps, "p99_ms"), g(dz, "p99_ms"))
        r["cdc_paystream_over_debezium_rss"] = ratio(g(ps, "peak_rss_kib"), g(dz, "peak_rss_kib"))
        r["cdc_paystream_over_raw_ceiling_rows_per_second"] = ratio(g(ps, "rows_per_second"), ceil["raw"])
        r["cdc_debezium_over_raw_ceiling_rows_per_second"] = ratio(g(dz, "rows_per_second"), ceil["raw"])
    fr = freshness_rates(parts["freshness"]) if parts.get("freshness") else []
    if len(fr) >= 2:
        r["freshness_p99_highest_over_lowest_rate"] = ratio(fr[-1]["p99"][0], fr[0]["p99"][0])
    op = operator_results(parts["operator"]) if parts.get("operator") else []
    if len(op) >= 2:
        r["operator_ready_time_largest_over_smallest"] = ratio(op[-1]["time_to_ready_s"][0], op[0]["time_to_ready_s"][0])
        r["operator_pipelines_largest_over_smallest"] = ratio(op[-1]["pipelines"], op[0]["pipelines"])
    for row in kind_results(parts["kind"]) if parts.get("kind") else []:
        r[f"kind_{int(row['count'])}_operator_over_pods_ceiling"] = row["ratio"]
    if parts.get("rebuild"):
        rb = parts["rebuild"]
        r["rebuild_replay_over_kafka_read_ceiling"] = ratio(num(rb.get("median_records_per_sec")),
                                                            num(rb.get("median_ceiling_records_per_sec")))
        r["rebuild_replay_over_target"] = ratio(num(rb.get("median_records_per_sec")), num(rb.get("target_records_per_sec")))
    return {k: v for k, v in r.items() if v is not None}


def behind(parts):
    """Where paystream is behind a peer measured in the same run: a list of
    (what, figures) strings, found from the data."""
    out = []
    for lvl in api_levels(parts["api"]) if parts.get("api") else []:
        c = int(lvl["connections"])
        t = lvl["targets"]
        cr, rr = t["cached"]["rps"][0], lvl["redis"]["rps"][0]
        if num(cr) and num(rr) and cr < rr:
            out.append(
                f"API cached reads at {c:,} connections: {fmt(cr)} req/s against redis-benchmark's {fmt(rr)} "
                f"GET/s of the same payload ({fmt_ratio(ratio(cr, rr))})."
            )
        ce = t["ceiling"]["rps"][0]
        if num(cr) and num(ce) and cr < 0.8 * ce:
            out.append(
                f"API cached reads at {c:,} connections reach {fmt_ratio(ratio(cr, ce))} of the HTTP ceiling "
                f"({fmt(cr)} against {fmt(ce)} req/s)."
            )
    rb = parts.get("rebuild") or {}
    rate, target = num(rb.get("median_records_per_sec")), num(rb.get("target_records_per_sec"))
    if rate is not None and target is not None and rate < target:
        out.append(f"Read-model rebuild: {fmt(rate, 0)} records/s against the target of {fmt(target, 0)} "
                   f"(the bare Kafka read reached {fmt(num(rb.get('median_ceiling_records_per_sec')), 0)}).")
    if parts.get("cdc"):
        e = cdc_engines(parts["cdc"])
        ps, dz = e.get("paystream", {}), e.get("debezium", {})
        g = lambda row, k: (row.get(k) or (None,))[0]  # noqa: E731
        if num(g(ps, "rows_per_second")) and num(g(dz, "rows_per_second")) and g(ps, "rows_per_second") < g(dz, "rows_per_second"):
            out.append(f"CDC backlog drain: paystream {fmt(g(ps, 'rows_per_second'))} rows/s against Debezium's {fmt(g(dz, 'rows_per_second'))}.")
        for k, label in (("p50_ms", "p50"), ("p99_ms", "p99")):
            if num(g(ps, k)) and num(g(dz, k)) and g(ps, k) > g(dz, k):
                out.append(f"CDC commit-to-Kafka {label}: paystream {fmt(g(ps, k))} ms against Debezium's {fmt(g(dz, k))} ms.")
        if num(g(ps, "peak_rss_kib")) and num(g(dz, "peak_rss_kib")) and g(ps, "peak_rss_kib") > g(dz, "peak_rss_kib"):
            out.append("CDC peak memory: paystream uses more than Debezium.")
    for r in operator_results(parts["operator"]) if parts.get("operator") else []:
        for s in r["stuck"]:
            out.append(
                f"Operator at {int(r['pipelines']):,} pipelines"
                + (f" (run {s['run']})" if s["run"] is not None else "")
                + f": only {fmt(s['ready'], 0)} Ready"
                + (f" when the benchmark stopped waiting at {fmt(s['ramp_s'])} s" if num(s["ramp_s"]) else "")
                + "."
            )
    for row in kind_results(parts["kind"]) if parts.get("kind") else []:
        for st in row["stuck"]:
            what = f"{int(row['count']):,} PaymentPipelines" if st["kind"] == "pipelines" else f"{int(row['count']) * 3:,} pause Deployments (the ceiling)"
            out.append(
                f"kind, {what} (round {st['run']}): only {fmt(st['ready'], 0)} of {fmt(st['objects'], 0)} Ready"
                + (f" when the benchmark stopped waiting at {fmt(st['ramp_s'])} s" if num(st["ramp_s"]) else "")
                + "."
            )
    fr = freshness_rates(parts["freshness"]) if parts.get("freshness") else []
    for r in fr[:1]:
        st = {k: r["stages"].get(k, (None,))[0] for k, _ in FRESHNESS_STAGES}
        known = {k: v for k, v in st.items() if num(v) is not None}
        if known and num(r["p50"][0]):
            k = max(known, key=known.get)
            label = dict(FRESHNESS_STAGES)[k]
            commit = r["producer_commit_ms"][0]
            out.append(
                f"Freshness at {fmt(r['rate'], 0)} rows/s: p50 {fmt(r['p50'][0])} ms, of which the largest stage is "
                f"{label}: {fmt(known[k])} ms"
                + (f" (the producer's Kafka transactions took {fmt(commit)} ms each on average)" if num(commit) else "")
                + "."
            )
    for r in fr:
        a = r["achieved"][0]
        if num(a) and a < 0.95 * r["rate"]:
            out.append(
                f"Freshness at {fmt(r['rate'])} rows/s: the writers reached only {fmt(a)} rows/s "
                "(MariaDB commits with sync_binlog=1 on a shared 2-core machine)."
            )
    return out


# ---- Plots ------------------------------------------------------------------------


def _err(m, lo, hi):
    if num(m) is None or num(lo) is None or num(hi) is None:
        return [[0], [0]]
    return [[max(0.0, m - lo)], [max(0.0, hi - m)]]


def plot_all(parts, outdir):
    """Writes the PNGs it has data for; returns {name: relative path}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(outdir, exist_ok=True)
    made = {}
    base = os.path.basename(outdir)

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(os.path.join(outdir, name), dpi=110)
        plt.close(fig)
        made[name] = f"{base}/{name}"

    colors = {"cached": "C0", "near": "C2", "mysql": "C3", "ceiling": "C7", "redis": "C1",
              "paystream": "C0", "debezium": "C3", "raw": "C7", "decoded": "C8"}

    api = api_levels(parts["api"]) if parts.get("api") else []
    if api:
        fig, ax = plt.subplots(figsize=(8, 6.5))
        xs = [l["connections"] for l in api]
        for name, label in API_TARGETS:
            for q, style in (("p50", "-o"), ("p99", "--^")):
                pts = [(x, l["targets"][name][q]) for x, l in zip(xs, api) if num(l["targets"][name][q][0])]
                if not pts:
                    continue
                ax.errorbar(
                    [p[0] for p in pts], [p[1][0] for p in pts],
                    yerr=[sum((_err(*p[1])[0] for p in pts), []), sum((_err(*p[1])[1] for p in pts), [])],
                    fmt=style, color=colors[name], label=f"{label} {q}", capsize=3, markersize=4,
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(xs)
        ax.set_xticklabels([f"{int(l['connections']):,}\n{fmt(l['rate'], 0)} req/s" for l in api])
        ax.set_xlabel("connections / offered rate (open loop, same rate for every target)")
        ax.set_ylabel("latency, ms (log)")
        ax.set_title("API latency against offered load (p50 ● solid, p99 ▲ dashed)")
        ax.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.2))
        ax.grid(True, which="both", alpha=0.3)
        save(fig, "api-latency.png")

        fig, ax = plt.subplots(figsize=(8, 5))
        bars = [(n, lbl) for n, lbl in API_TARGETS] + [("redis", "redis-benchmark GET")]
        width = 0.8 / len(bars)
        for i, (name, label) in enumerate(bars):
            vals = [l["redis"]["rps"] if name == "redis" else l["targets"][name]["rps"] for l in api]
            ys = [num(v[0]) or 0 for v in vals]
            errs = [_err(*v) for v in vals]
            ax.bar([j + i * width for j in range(len(api))], ys, width, label=label, color=colors[name],
                   yerr=[[e[0][0] for e in errs], [e[1][0] for e in errs]], capsize=2)
        ax.set_xticks([j + width * (len(bars) - 1) / 2 for j in range(len(api))])
        ax.set_xticklabels([f"{int(l['connections']):,} conns" for l in api])
        ax.set_ylabel("requests per second (closed loop)")
        ax.set_title("API throughput against its peers")
        ax.legend(fontsize=7)
        ax.grid(True, axis="y", alpha=0.3)
        save(fig, "api-throughput.png")

    fr = freshness_rates(parts["freshness"]) if parts.get("freshness") else []
    if fr:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        xs = [r["rate"] for r in fr]
        for key, label, style, color in (("p50", "API-visible p50", "-o", "C0"), ("p99", "API-visible p99", "--o", "C0"),
                                         ("redis_p50", "in Redis p50", "-s", "C1"), ("redis_p99", "in Redis p99", "--s", "C1")):
            pts = [(x, r[key]) for x, r in zip(xs, fr) if num(r[key][0])]
            if pts:
                ax.errorbar([p[0] for p in pts], [p[1][0] for p in pts],
                            yerr=[sum((_err(*p[1])[0] for p in pts), []), sum((_err(*p[1])[1] for p in pts), [])],
                            fmt=style, color=color, label=label, capsize=3)
        ax.set_xticks(xs)
        ax.set_xticklabels([f"{fmt(r['rate'], 0)}\n(achieved {fmt(r['achieved'][0], 0)})" for r in fr])
        ax.set_xlabel("offered write rate, rows/s")
        ax.set_ylabel("commit to visible, ms")
        ax.set_ylim(bottom=0)
        ax.set_title("Freshness: MariaDB commit to visible through the API")
        ax.legend(fontsize=8)
        ax.grid(True, alpha=0.3)
        save(fig, "freshness-latency.png")

        if any(r["stages"] for r in fr):
            fig, ax = plt.subplots(figsize=(7, 4.5))
            bottom = [0.0] * len(fr)
            for i, (k, label) in enumerate(FRESHNESS_STAGES):
                ys = [max(0.0, num(r["stages"].get(k, (None,))[0]) or 0.0) for r in fr]
                ax.bar(range(len(fr)), ys, 0.5, bottom=bottom, label=label, color=f"C{i}")
                bottom = [b + y for b, y in zip(bottom, ys)]
            ax.plot(range(len(fr)), [num(r["p50"][0]) or 0 for r in fr], "k_", markersize=40, label="end-to-end p50")
            ax.set_xticks(range(len(fr)))
            ax.set_xticklabels([f"{fmt(r['rate'], 0)} rows/s" for r in fr])
            top = max(bottom + [num(r["p50"][0]) or 0 for r in fr])
            ax.set_ylim(0, top * 1.45 if top > 0 else 1)
            ax.set_ylabel("ms (p50 of each stage)")
            ax.set_title("Freshness: where the time goes")
            ax.legend(fontsize=7, loc="upper left")
            ax.grid(True, axis="y", alpha=0.3)
            save(fig, "freshness-stages.png")

    if parts.get("cdc"):
        eng = {k: v for k, v in cdc_engines(parts["cdc"]).items() if "error" not in v}
        ceil = cdc_ceiling(parts["cdc"])
        if eng:
            fig, ax = plt.subplots(figsize=(7, 4.5))
            names = list(eng)
            for i, (q, label) in enumerate((("p50_ms", "p50"), ("p99_ms", "p99"))):
                vals = [eng[n].get(q, (None, None, None)) for n in names]
                errs = [_err(*v) for v in vals]
                ax.bar([j + i * 0.38 for j in range(len(names))], [num(v[0]) or 0 for v in vals], 0.38, label=label,
                       color="C0" if q == "p50_ms" else "C3",
                       yerr=[[e[0][0] for e in errs], [e[1][0] for e in errs]], capsize=3)
            rate = next((num(eng[n]["rate"][0]) for n in names if num(eng[n].get("rate", (None,))[0])), None)
            ax.set_xticks([j + 0.19 for j in range(len(names))])
            ax.set_xticklabels(names)
            ax.set_ylabel("commit to visible in Kafka, ms")
            ax.set_title("CDC latency" + (f" at {fmt(rate, 0)} rows/s" if rate else ""))
            ax.legend()
            ax.grid(True, axis="y", alpha=0.3)
            save(fig, "cdc-latency.png")

            fig, ax = plt.subplots(figsize=(7, 4.5))
            labels, ys, errs, cs = [], [], [], []
            for n in names:
                v = eng[n].get("rows_per_second", (None, None, None))
                labels.append(f"{n}\n(backlog drain)")
                ys.append(num(v[0]) or 0)
                errs.append(_err(*v))
                cs.append(colors.get(n, "C4"))
            for k, label in (("raw", "mariadb-binlog\nraw ceiling"), ("decoded", "mariadb-binlog\ndecoded")):
                if num(ceil[k]):
                    labels.append(label)
                    ys.append(ceil[k])
                    errs.append([[0], [0]])
                    cs.append(colors[k])
            ax.bar(range(len(ys)), ys, color=cs, yerr=[[e[0][0] for e in errs], [e[1][0] for e in errs]], capsize=3)
            for j, y in enumerate(ys):
                ax.annotate(fmt(y, 0), (j, y), ha="center", va="bottom", fontsize=8)
            ax.set_xticks(range(len(ys)))
            ax.set_xticklabels(labels, fontsize=8)
            positive = [y for y in ys if y > 0]
            if positive and max(positive) / min(positive) > 20:
                ax.set_yscale("log")
                ax.set_ylabel("rows per second (log)")
            else:
                ax.set_ylabel("rows per second")
            ax.set_title("CDC throughput against its peers")
            ax.grid(True, axis="y", alpha=0.3)
            save(fig, "cdc-throughput.png")

    op = operator_results(parts["operator"]) if parts.get("operator") else []
    if op:
        fig, ax = plt.subplots(figsize=(6, 4.5))
        xs = range(len(op))
        # A count whose runs never all got Ready is drawn at its longest wait, hatched.
        done = [num(r["time_to_ready_s"][0]) is not None for r in op]
        ys = [r["time_to_ready_s"][0] if ok else max((num(s["ramp_s"]) or 0 for s in r["stuck"]), default=0)
              for r, ok in zip(op, done)]
        for x, r, ok, y in zip(xs, op, done, ys):
            if ok:
                ax.bar([x], [y], color="C0", yerr=_err(*r["time_to_ready_s"]), capsize=4,
                       label="all Ready (median, spread over runs)" if x == done.index(True) else None)
            else:
                ax.bar([x], [y], color="white", edgecolor="C3", hatch="//",
                       label="not all Ready when the benchmark stopped" if x == done.index(False) else None)
        p99 = [r["p99_ready_s"][0] for r in op]
        if any(num(p) for p in p99):
            ax.plot(xs, [num(p) or 0 for p in p99], "o", color="C3", label="per-pipeline p99 (median)")
        for j, (y, r, ok) in enumerate(zip(ys, op, done)):
            runs = f"{r['runs_all_ready']} of {r['runs']} runs all Ready"
            if ok:
                text = f"{fmt(y)} s\n{runs}"
            elif r["stuck"]:
                text = f"none all Ready by {fmt(y)} s\n{runs}"
            else:
                text = f"no result (the runs failed)\n{runs}"
            ax.annotate(text, (j, y), ha="center", va="bottom", fontsize=8)
        ax.set_xticks(list(xs))
        ax.set_xticklabels([f"{int(r['pipelines']):,} pipelines" for r in op])
        ax.set_ylabel("seconds from first apply")
        ax.set_title("Operator: time to Ready")
        ax.legend(fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
        save(fig, "operator-ready.png")

    kr = kind_results(parts["kind"]) if parts.get("kind") else []
    if kr:
        fig, ax = plt.subplots(figsize=(6, 4.5))
        xs = range(len(kr))
        for i, (key, label, color) in enumerate((("time_to_all_ready_s", "PaymentPipelines, all Ready", "C0"),
                                                  ("ceiling_time_to_all_ready_s", "ceiling: 3N pause pods, all Available", "C7"))):
            ys = [num(r[key][0]) or 0 for r in kr]
            errs = [_err(*r[key]) for r in kr]
            ax.bar([x + i * 0.38 for x in xs], ys, 0.38, label=label, color=color,
                   yerr=[[e[0][0] for e in errs], [e[1][0] for e in errs]], capsize=3)
            for x, y, r in zip(xs, ys, kr):
                top = max(y, num(r[key][2]) or 0)
                ax.annotate(fmt(y), (x + i * 0.38, top), xytext=(0, 3), textcoords="offset points",
                            ha="center", va="bottom", fontsize=8)
        ax.set_xticks([x + 0.19 for x in xs])
        ax.set_xticklabels([f"N = {int(r['count']):,}\n({fmt_ratio(r['ratio'])} the ceiling)" for r in kr])
        ax.set_ylabel("seconds from kubectl apply")
        ax.set_title("kind: time to Ready on real pods")
        ax.legend(fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
        save(fig, "kind-ready.png")
    return made


# ---- The report ------------------------------------------------------------------

READING = """\
## Reading the report

- **Same run, same machine.** In a `make bench` report every figure comes from one run on one
  shared machine ({cores} cores) that runs MariaDB, Kafka, Redis, the paystream processes and
  the load generators at once. Absolute numbers move from run to run and machine to machine;
  the **ratios** between things measured in the same run are what to compare.
- **Repeats.** Each point is measured several times; tables show the **median** and, in
  brackets, the **spread (min–max)** over the repetitions. Error bars in the plots are the
  same spread. A wide spread means the machine was busy: trust the median less.
- **Throughput vs latency.** Throughput (req/s, rows/s) comes from closed-loop runs: as fast as
  the system answers. Latency percentiles come from open-loop runs at a fixed offered rate
  (requests are sent on a schedule, late ones count their wait), so p99 is not hidden by
  coordinated omission. Latency plots use log scales where the peers differ by orders of
  magnitude.
- **Peers.** The API is compared with the same server returning a constant body (the HTTP
  ceiling: what the framework and network cost alone), with reads straight from MySQL (what
  the cache saves), and with `redis-benchmark` GET of the same payload (what Redis alone can
  do). CDC is compared with Debezium (where installed) and with `mariadb-binlog` reading the
  same binlog (the raw ceiling: nothing can stream the binlog faster than the server sends it).
- **Freshness** is end to end: MariaDB commit → binlog → producer → Kafka → consumer → Redis →
  API response. It is an upper bound by about one API round trip (see its section).
- **kind** times PaymentPipelines on real pods of the one-node kind cluster against the ceiling of
  the same number of pods of the pause image started there in the same run: the ratio is what
  the operator, the pipelines' start-up and their readiness add to what Kubernetes alone needs.
- **Missing parts** are named below; a part that fails does not stop the others.
"""


def section_api(d, plots):
    lv = api_levels(d)
    lines = ["## API: cached reads against their peers", ""]
    if not lv:
        return lines + ["The API result has no levels.", ""]
    reps = next((l["repeats"] for l in lv if l["repeats"]), None)
    lines += [
        f"Payload {fmt(dig(d, 'payload_bytes'), 0)} bytes, {fmt(dig(d, 'seconds_per_point'), 0)} s per point"
        + (f", {reps} repetitions per point (median, min–max)." if reps else ", one measurement per point."),
        "",
    ]
    for p in ("api-latency.png", "api-throughput.png"):
        if p in plots:
            lines += [f"![{p}]({plots[p]})", ""]
    lines += [
        "| conns | target | req/s (closed loop) | offered req/s | p50 ms | p99 ms | errors |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for l in lv:
        for name, label in API_TARGETS:
            t = l["targets"][name]
            lines.append(
                f"| {int(l['connections']):,} | {label} | {fmt_spread(*t['rps'], digits=0)} | {fmt(l['rate'], 0)} | "
                f"{fmt_spread(*t['p50'], digits=2)} | {fmt_spread(*t['p99'], digits=2)} | {int(t['errors'])} |"
            )
        r = l["redis"]
        lines.append(
            f"| {int(l['connections']):,} | redis-benchmark GET (closed loop) | {fmt_spread(*r['rps'], digits=0)} | – | "
            f"{fmt_spread(*r['p50'], digits=2)} | {fmt_spread(*r['p99'], digits=2)} | |"
        )
    lines += ["", "| conns | cached / ceiling req/s | cached / MySQL req/s | cached / redis-benchmark req/s | near / cached req/s | MySQL / cached p99 |",
              "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for l in lv:
        t = l["targets"]
        lines.append(
            f"| {int(l['connections']):,} | {fmt_ratio(ratio(t['cached']['rps'][0], t['ceiling']['rps'][0]))} | "
            f"{fmt_ratio(ratio(t['cached']['rps'][0], t['mysql']['rps'][0]))} | "
            f"{fmt_ratio(ratio(t['cached']['rps'][0], l['redis']['rps'][0]))} | "
            f"{fmt_ratio(ratio(t['near']['rps'][0], t['cached']['rps'][0]))} | "
            f"{fmt_ratio(ratio(t['mysql']['p99'][0], t['cached']['p99'][0]))} |"
        )
    return lines + [""]


def section_freshness(d, plots):
    fr = freshness_rates(d)
    cfg = d.get("config") or {}
    lines = ["## Freshness: commit to visible through the API", ""]
    if not fr:
        return lines + ["The freshness result has no rates.", ""]
    lines += [
        f"{fmt(cfg.get('seconds'), 0)} s per rate, {fmt(cfg.get('repeat'), 0)} repetitions (interleaved), "
        f"{fmt(cfg.get('insert_percent'), 0)} % INSERTs, about {fmt(cfg.get('samples_per_sec'), 0)} followed writes per second, "
        f"each read through the API on every Redis invalidation of its key"
        f"{' (client tracking)' if cfg.get('tracking', True) else ''} and every {fmt(cfg.get('poll_ms'), 0)} ms.",
        "",
    ]
    for p in ("freshness-latency.png", "freshness-stages.png"):
        if p in plots:
            lines += [f"![{p}]({plots[p]})", ""]
    lines += [
        "| offered rows/s | achieved rows/s | samples | p50 ms | p99 ms | in Redis p50 ms | missing | answers from MySQL |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in fr:
        lines.append(
            f"| {fmt(r['rate'], 0)} | {fmt_spread(*r['achieved'], digits=0)} | {fmt(r['samples'], 0)} | "
            f"{fmt_spread(*r['p50'])} | {fmt_spread(*r['p99'])} | {fmt_spread(*r['redis_p50'])} | "
            f"{fmt(r['missing'], 0)} | {fmt(r['api_mysql_reads'], 0)} |"
        )
    if any(r["stages"] for r in fr):
        lines += ["", "Where the time goes (p50 of each stage, ms; median over repetitions):", "",
                  "| offered rows/s | " + " | ".join(label for _, label in FRESHNESS_STAGES) + " | producer Kafka commit, mean ms |",
                  "| ---: |" + " ---: |" * (len(FRESHNESS_STAGES) + 1)]
        for r in fr:
            lines.append(
                f"| {fmt(r['rate'], 0)} | "
                + " | ".join(fmt_spread(*r["stages"].get(k, (None, None, None))) for k, _ in FRESHNESS_STAGES)
                + f" | {fmt_spread(*r['producer_commit_ms'])} |"
            )
    return lines + [""]


def section_cdc(d, plots):
    eng = cdc_engines(d)
    ceil = cdc_ceiling(d)
    lines = ["## CDC: binlog to Kafka against its peers", ""]
    for p in ("cdc-throughput.png", "cdc-latency.png"):
        if p in plots:
            lines += [f"![{p}]({plots[p]})", ""]
    lines += [
        "| engine | backlog drain rows/s | streaming rows/s | commit-to-Kafka p50 ms | p99 ms | peak RSS MiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, e in eng.items():
        if "error" in e:
            lines.append(f"| {name} | failed: {e['error'][:120]} | | | | |")
            continue
        rss = e["peak_rss_kib"]
        lines.append(
            f"| {name} | {fmt_spread(*e['rows_per_second'], digits=0)} | {fmt_spread(*e['streaming_rows_per_second'], digits=0)} | "
            f"{fmt_spread(*e['p50_ms'])} | {fmt_spread(*e['p99_ms'])} | {fmt(rss[0] / 1024 if num(rss[0]) else None)} |"
        )
    if "debezium" not in eng:
        lines += ["", "Debezium: **not in this run's CDC result** (not installed, or the run predates the comparison)."]
    if num(ceil["raw"]) or num(ceil["decoded"]):
        lines += ["", f"Ceiling ({ceil['tool'] or 'mariadb-binlog'}): raw {fmt(ceil['raw'], 0)} rows/s, decoded {fmt(ceil['decoded'], 0)} rows/s."]
    else:
        lines += ["", "Raw `mariadb-binlog` ceiling: **not in this run's CDC result**."]
    return lines + [""]


def section_operator(d, plots):
    op = operator_results(d)
    lines = ["## Operator: time to Ready and idle cost", ""]
    if "operator-ready.png" in plots:
        lines += [f"![operator]({plots['operator-ready.png']})", ""]
    if not op:
        return lines + ["The operator result has no pipeline counts.", ""]
    lines += [
        "Median over the runs of each count, and in brackets the spread (min–max); the operator's own "
        "report has every run and the milestones between apply and Ready."
        + (f" At most {d['pipelines_per_namespace']} pipelines per namespace; the operator watches every namespace."
           if d.get("pipelines_per_namespace") else ""),
        "",
        "| pipelines | runs all Ready | time to all Ready s | per-pipeline p99 s | peak RSS MiB | idle CPU % of a core | idle reads/min | idle writes/min |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in op:
        lines.append(
            f"| {int(r['pipelines']):,} | {r['runs_all_ready']} of {r['runs']} | "
            + " | ".join(fmt_spread(*r[k]) for k in OPERATOR_FIGURES)
            + " |"
        )
    for r in op:
        for s in r["stuck"]:
            lines += ["", f"{int(r['pipelines']):,} pipelines" + (f", run {s['run']}" if s["run"] is not None else "")
                      + f": only {fmt(s['ready'], 0)} Ready when the benchmark stopped waiting at {fmt(s['ramp_s'])} s."]
        for e in r["errors"]:
            lines += ["", f"{int(r['pipelines']):,} pipelines: a run failed: {e}"]
    for r in operator_runs(d):
        if r.get("other_pipelines_in_cluster"):
            lines += ["", f"{int(r['pipelines']):,} pipelines" + (f", run {r['run']}" if r.get("run") is not None else "")
                      + f": {r['other_pipelines_in_cluster']} other PaymentPipelines were in the cluster; "
                      "the operator reconciled them too, so its figures include them."]
    if not any(int(r["pipelines"]) == 1000 for r in op):
        lines += ["", "1,000 pipelines: **not in this run's operator result**."]
    return lines + [""]


def section_kind(d, plots):
    rows = kind_results(d)
    cfg = d.get("config") or {}
    lines = ["## kind: PaymentPipelines on real pods against plain pods", ""]
    if "kind-ready.png" in plots:
        lines += [f"![kind]({plots['kind-ready.png']})", ""]
    if not rows:
        return lines + ["The kind result has no runs.", ""]
    lines += [
        "N PaymentPipelines (3 Deployments of real pods each) applied at once in a fresh namespace of the one-node "
        "kind cluster, timed from `kubectl apply` to every pipeline Ready at its generation; the ceiling is 3N "
        "Deployments of the node's pause image applied the same way in the same run, timed to all Available "
        "(what Kubernetes alone takes to start that many pods here). Median over "
        f"{fmt(cfg.get('repeat'), 0)} rounds, spread (min–max) in brackets; polled every {fmt(cfg.get('poll_s'))} s, "
        "so every time is late by up to one poll."
        + (f" {d['other_pipelines_in_cluster']} other PaymentPipelines were in the cluster (the operator reconciled them too)."
           if d.get("other_pipelines_in_cluster") else ""),
        "",
        "| N | runs all Ready | time to all Ready s | first / median pipeline s | ceiling: 3N pause pods Available s | pipelines / ceiling | namespace deletion s (pipelines / ceiling) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {int(r['count']):,} | {r['runs_all_ready']} of {r['runs']} | {fmt_spread(*r['time_to_all_ready_s'])} | "
            f"{fmt(r['first_ready_s'][0])} / {fmt(r['median_ready_s'][0])} | {fmt_spread(*r['ceiling_time_to_all_ready_s'])} | "
            f"{fmt_ratio(r['ratio'])}"
            + (f" ({fmt_ratio(r['round_ratios'][1])}–{fmt_ratio(r['round_ratios'][2])})"
               if num(r["round_ratios"][1]) is not None and r["round_ratios"][1] != r["round_ratios"][2] else "")
            + f" | {fmt_spread(*r['delete_s'])} / {fmt_spread(*r['ceiling_delete_s'])} |"
        )
    lines += ["", "Where the time goes (median seconds from the apply; the ceiling's in brackets):", "",
              "| N | " + " | ".join(label for _, label in KIND_MILESTONES) + " |",
              "| ---: |" + " ---: |" * len(KIND_MILESTONES)]
    for r in rows:
        cells = []
        for k, _ in KIND_MILESTONES:
            c = r["ceiling_milestones"][k][0]
            cells.append(fmt(r["milestones"][k][0]) + (f" ({fmt(c)})" if num(c) is not None else ""))
        lines.append(f"| {int(r['count']):,} | " + " | ".join(cells) + " |")
    basis = dig(d, "cluster.node_memory") or "cgroup"
    lines += ["", f"Memory, MiB: the node container ({basis}) and the operator pod (working set); idle is the median "
              "before the apply, peak is during the ramp, then the value once all are Ready.", "",
              "| N | node idle | node peak | node at all Ready | added per pipeline | node peak, ceiling | operator peak | operator at all Ready |",
              "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(
            f"| {int(r['count']):,} | {fmt_spread(*r['node_idle_mib'], digits=0)} | {fmt_spread(*r['node_peak_mib'], digits=0)} | "
            f"{fmt_spread(*r['node_at_ready_mib'], digits=0)} | {fmt(r['node_added_per_pipeline_mib'], 0)} | "
            f"{fmt_spread(*r['ceiling_node_peak_mib'], digits=0)} | {fmt_spread(*r['operator_peak_mib'])} | "
            f"{fmt_spread(*r['operator_at_ready_mib'])} |"
        )
    imgs = d.get("images") or {}
    listed = [i for i in imgs.get("images") or [] if isinstance(i, dict)]
    if listed or dig(imgs, "node.size_bytes"):
        lines += ["", "Images (uncompressed, as the engine stores them):", "", "| image | size MB | binary MB |", "| --- | ---: | ---: |"]
        for i in listed:
            lines.append(f"| {i.get('target')} `{i.get('ref')}` | {fmt(num(i.get('size_bytes')) and i['size_bytes'] / 1e6)} | "
                         f"{fmt(num(i.get('binary_bytes')) and i['binary_bytes'] / 1e6)} |")
        if dig(imgs, "base.size_bytes"):
            lines.append(f"| runtime base `{dig(imgs, 'base.ref')}` | {fmt(imgs['base']['size_bytes'] / 1e6)} | |")
        if num(dig(imgs, "node.size_bytes")):
            lines.append(f"| kind node `{dig(imgs, 'node.ref')}` | {fmt(imgs['node']['size_bytes'] / 1e6)} | |")
    elif imgs.get("error"):
        lines += ["", f"Image sizes: {imgs['error']}."]
    for r in rows:
        for s in r["stuck"]:
            what = "pipelines" if s["kind"] == "pipelines" else "ceiling Deployments"
            lines += ["", f"N = {int(r['count']):,}, round {s['run']}: only {fmt(s['ready'], 0)} of {fmt(s['objects'], 0)} "
                      f"{what} Ready when the benchmark stopped waiting at {fmt(s['ramp_s'])} s."]
        for e in r["errors"]:
            lines += ["", f"N = {int(r['count']):,}: a run failed: {e[:300]}"]
        for nd in r["not_deleted"]:
            lines += ["", f"N = {int(r['count']):,}, {nd}: the namespace was not gone within the deletion timeout."]
        for e in r["early"]:
            lines += ["", f"N = {int(r['count']):,}, round {e['run']}: {e['pipelines']} pipelines reported Ready before their "
                      f"three pods were Ready (the first at {fmt(e['first_ready_ever_s'])} s), {e['flapped']} went back to "
                      "not Ready; each counts from its last turn to Ready, and the time to all Ready is the first poll "
                      "that saw every pipeline Ready at once."]
        for run_, n, kinds in r["topics_left"]:
            lines += ["", f"N = {int(r['count']):,}, round {run_}: {fmt(n, 0)} topics of the deleted pipelines were still in "
                      "Kafka after their namespace was gone (deleteTopicsOnDelete)"
                      + (f": {', '.join(f'`<prefix>.{k}`' for k in kinds)}" if kinds else "")
                      + "; the benchmark swept them."]
    return lines + [""]


def section_rebuild(d, plots):
    """The rebuild part: the consumer's replay rate next to a bare read of
    the same topics in the same run, and the target."""
    lines = ["## Read-model rebuild after Redis lost its data", ""]
    rounds = [r for r in d.get("rounds") or [] if isinstance(r, dict)]
    if not rounds:
        return lines + ["The rebuild result has no rounds.", ""]
    lines += [
        f"{fmt(num(d.get('rows')), 0)} purchases; FLUSHALL of the consumer's private Redis, then the time until its "
        "marks say the model is complete. Replay rate = records the consumer read over the time from its first replay "
        "to complete; the ceiling is a bare read_committed client reading the same topics from their beginning in the "
        f"same run. Median of {len(rounds)} rounds.",
        "",
        "| | records/s | ratio |",
        "| --- | ---: | ---: |",
        f"| consumer replay | {fmt(num(d.get('median_records_per_sec')), 0)} | |",
        f"| ceiling: bare Kafka read | {fmt(num(d.get('median_ceiling_records_per_sec')), 0)} | "
        f"{fmt_ratio(ratio(num(d.get('median_records_per_sec')), num(d.get('median_ceiling_records_per_sec'))))} |",
        f"| target | {fmt(num(d.get('target_records_per_sec')), 0)} | "
        f"{fmt_ratio(ratio(num(d.get('median_records_per_sec')), num(d.get('target_records_per_sec'))))} |",
        "",
        f"From the flush to a complete model (median, includes noticing the loss): {fmt(num(d.get('median_from_flush_secs')))} s.",
    ]
    return lines + [""]


SECTIONS = {"api": section_api, "freshness": section_freshness, "cdc": section_cdc, "operator": section_operator,
            "kind": section_kind, "rebuild": section_rebuild}
MAKE_TARGET = {"api": "make bench-api", "cdc": "make bench-cdc", "freshness": "make bench-freshness",
               "operator": "make bench-operator", "kind": "make bench-kind", "rebuild": "make bench-rebuild"}


def build(results_dir, since, stamp, plots_enabled=True, plot_note=None):
    """Reads the parts, writes <stamp>.json, <stamp>.md and the plots; returns the paths."""
    parts, files, missing = {}, {}, {}
    for part in PARTS:
        fresh, any_age = newest(results_dir, part, since)
        if not fresh:
            missing[part] = "no result from this run" + (f" (newest earlier result: {os.path.basename(any_age)})" if any_age else "")
            continue
        try:
            with open(fresh) as f:
                parts[part] = json.load(f)
            files[part] = os.path.basename(fresh)
        except (OSError, ValueError) as e:
            missing[part] = f"{os.path.basename(fresh)} could not be read: {e}"

    plots, plot_errors = {}, []
    if plots_enabled:
        try:
            plots = plot_all(parts, os.path.join(results_dir, stamp))
        except Exception as e:  # a plot must never cost the report
            plot_errors.append(f"plots failed: {e!r}")
    elif plot_note:
        plot_errors.append(plot_note)

    cores = next((dig(p, "machine.cores", "machine.cpus") for p in parts.values() if dig(p, "machine.cores", "machine.cpus")), os.cpu_count())
    ratios = key_ratios(parts)
    findings = behind(parts)
    combined = {
        "report": "paystream benchmarks",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "since": since,
        "machine": {"cores": cores, "uname": " ".join(os.uname())},
        "files": files,
        "missing": missing,
        "ratios": ratios,
        "behind": findings,
        "plots": sorted(plots.values()),
        "parts": parts,
    }

    md = [f"# paystream benchmarks, {combined['date']}", ""]
    origin = (
        f"One `make bench` run on {cores} cores (results written since "
        f"{time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime(since))})."
        if since > 0
        else f"The newest result of each part on {cores} cores, whatever its age (`make bench-report`): "
        "the parts may come from different runs, so compare figures across parts with care."
    )
    md += [
        origin + " Parts: "
        + ", ".join(f"{p} ({files[p]})" if p in files else f"{p} (**missing**)" for p in PARTS)
        + ".",
        "",
    ]
    if missing:
        md += ["**Missing from this run:**", ""]
        md += [f"- {p}: {why}; run `{MAKE_TARGET[p]}`." for p, why in missing.items()]
        md += [""]
    if plot_errors:
        md += [f"_{e}_" for e in plot_errors] + [""]
    md += [READING.format(cores=cores)]
    md += ["## Key ratios (same run)", ""]
    if ratios:
        md += ["| ratio | value |", "| --- | ---: |"] + [f"| {k} | {fmt_ratio(v)} |" for k, v in ratios.items()] + [""]
    else:
        md += ["No ratio could be computed (parts missing).", ""]
    for part in ("api", "freshness", "cdc", "operator", "kind"):
        if part in parts:
            try:
                md += SECTIONS[part](parts[part], plots)
            except Exception as e:  # an unexpected layout must not cost the other sections
                md += [f"## {part}", "", f"_The {part} result could not be summarised: {e!r}; see {files[part]}._", ""]
    md += ["## Where paystream is behind, and why", ""]
    if findings:
        md += ["Found in this run's data (paystream worse than the peer measured alongside it):", ""]
        md += [f"- {f}" for f in findings] + [""]
    else:
        md += ["The data of this run shows no comparison where paystream is behind its peer"
               + (" (some parts are missing, see above)." if missing else "."), ""]
    md += explanations(missing)
    out_json = os.path.join(results_dir, f"{stamp}.json")
    out_md = os.path.join(results_dir, f"{stamp}.md")
    with open(out_json, "w") as f:
        json.dump(combined, f, indent=2)
    with open(out_md, "w") as f:
        f.write("\n".join(md) + "\n")
    return out_json, out_md


# ---- matplotlib in a venv ----------------------------------------------------------


def cache_dir():
    return os.environ.get("PAYSTREAM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "paystream")


def have_matplotlib():
    try:
        import matplotlib  # noqa: F401

        return True
    except ImportError:
        return False


def ensure_venv():
    """Returns None when matplotlib is importable here; otherwise makes the venv
    (idempotent), installs matplotlib there and re-executes this script with
    it (does not return). Returns a reason string when that is impossible."""
    if have_matplotlib():
        return None
    if os.environ.get(VENV_FLAG):
        return "matplotlib is not importable even in the venv; the report has no plots"
    venv = os.path.join(cache_dir(), "bench-venv")
    py = os.path.join(venv, "bin", "python")

    def run(*cmd):
        return subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr).returncode == 0

    if not os.path.exists(py):
        print(f"report: creating the venv {venv} (once)", file=sys.stderr)
        ok = run(sys.executable, "-m", "venv", venv)
        if not ok:
            # Debian's python3 needs python3-venv for ensurepip.
            run("bash", "-c", f"source '{REPO}/stack/lib.sh' && apt_install python3-venv")
            subprocess.run(["rm", "-rf", venv])
            base = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
            ok = run(base, "-m", "venv", venv)
        if not ok:
            return "could not create a Python venv (python3-venv missing?); the report has no plots"
    probe = subprocess.run([py, "-c", "import matplotlib"], capture_output=True)
    if probe.returncode != 0:
        print(f"report: installing {MATPLOTLIB} from PyPI into {venv} (once)", file=sys.stderr)
        if not run(py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", MATPLOTLIB):
            return "pip could not install matplotlib; the report has no plots"
    env = dict(os.environ, **{VENV_FLAG: "1"})
    os.execve(py, [py, os.path.abspath(__file__)] + sys.argv[1:], env)
    return None  # not reached


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", default=os.path.join(REPO, "bench", "results"), help="results directory")
    ap.add_argument("--since", type=float, default=0.0, help="only results written at or after this Unix time")
    ap.add_argument("--stamp", default=None, help="output name (default: UTC date and time)")
    ap.add_argument("--no-plots", action="store_true", help="skip matplotlib and the plots")
    args = ap.parse_args(argv)
    note = None
    if not args.no_plots:
        note = ensure_venv()
        if note:
            print(f"report: {note}", file=sys.stderr)
    stamp = args.stamp or time.strftime("%Y-%m-%dT%H%M%SZ", time.gmtime())
    j, m = build(args.results, args.since, stamp, plots_enabled=not args.no_plots and note is None, plot_note=note)
    print(f"report: written {j} and {m}")
    with open(m) as f:
        print(f.read())


if __name__ == "__main__":
    main()
