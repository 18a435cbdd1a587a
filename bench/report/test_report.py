"""Tests of report.py's pure functions: `python3 -m unittest discover -s bench/report`
(no matplotlib needed)."""

import json
import os
import sys
import tempfile
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import report  # noqa: E402

API = {
    "benchmark": "api",
    "payload_bytes": 355,
    "seconds_per_point": 4,
    "levels": [
        {
            "connections": 1000,
            "open_loop_rate": 5000.0,
            "repeats": 2,
            "cached": {"throughput": {"rps": 20000.0, "rps_min": 18000.0, "rps_max": 22000.0},
                       "open_loop": {"p50_ms": 1.0, "p99_ms": 10.0, "errors": 1}},
            "near": {"throughput": {"rps": 30000.0}, "open_loop": {"p50_ms": 0.5, "p99_ms": 5.0}},
            "ceiling": {"throughput": {"rps": 40000.0}, "open_loop": {"p50_ms": 0.4, "p99_ms": 4.0}},
            "mysql": {"throughput": {"rps": 5000.0}, "open_loop": {"p50_ms": 100.0, "p99_ms": 500.0}},
            "redis_benchmark": {"rps": 60000.0, "p50_ms": 0.6, "p99_ms": 3.0},
        },
        {"connections": 100, "open_loop_rate": 8000.0, "cached": {}, "near": None},
        "not a level",
    ],
}
CDC_OLD = {"benchmark": "cdc", "backlog": {"rows_per_second": 34000.0},
           "latency": {"p50_ms": 170.0, "p99_ms": 260.0, "target_rate": 1000}, "peak_rss_kib": 80000}
CDC_NEW = {
    "benchmark": "cdc",
    "engines": {
        "paystream": {"median": {"rows_per_second": 40000.0, "p50_ms": 170.0, "p99_ms": 230.0, "peak_rss_kib": 98000.0},
                      "runs": [{"backlog": {"rows_per_second": 39000.0}, "latency": {"p50_ms": 160.0}},
                               {"backlog": {"rows_per_second": 41000.0}, "latency": {"p50_ms": 180.0}}]},
        "debezium": {"median": {"rows_per_second": 27000.0, "p50_ms": 12.0, "p99_ms": 50.0, "peak_rss_kib": 2000000.0}},
        "broken": {"error": "not installed"},
    },
    "ceiling": {"median": {"raw_rows_per_second": 3000000.0, "decoded_rows_per_second": 700000.0}},
}
FRESH = {
    "benchmark": "freshness",
    "config": {"seconds": 30, "repeat": 2, "poll_ms": 20, "samples_per_sec": 200, "insert_percent": 10},
    "rates": [
        {"rate": 5000, "achieved_rate": {"median": 4000.0, "min": 3900.0, "max": 4100.0},
         "p50_ms": {"median": 600.0, "min": 500.0, "max": 700.0}, "p99_ms": {"median": 2000.0},
         "samples": 2400, "missing": 0},
        {"rate": 1000, "achieved_rate": {"median": 1000.0}, "p50_ms": {"median": 200.0}, "p99_ms": {"median": 260.0},
         "stages_p50_ms": {"commit_to_event_built": {"median": 12.0}, "event_built_to_kafka": {"median": 125.0},
                           "kafka_to_redis": {"median": 25.0}, "redis_to_api": {"median": 4.0}},
         "producer_mean_commit_ms": {"median": 103.0}},
    ],
}
def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def read(path):
    with open(path) as f:
        return f.read()


OPERATOR = {"benchmark": "operator", "results": [
    {"pipelines": 100, "run": 1, "all_ready": True, "time_to_all_ready_s": 60.0,
     "per_pipeline_time_to_ready_s": {"p99": 55.0},
     "idle": {"operator_requests": {"per_minute": {"reads": 7000.0, "writes": 12.0}}}},
    {"pipelines": 1000, "run": 1, "all_ready": True, "time_to_all_ready_s": 600.0, "operator": {"peak_rss_mib_vmhwm": 200.0}},
    {"pipelines": 100, "run": 2, "all_ready": True, "time_to_all_ready_s": 80.0,
     "idle": {"operator_requests": {"per_minute": {"reads": 6000.0, "writes": 12.0}}}},
    {"pipelines": 1000, "run": 2, "all_ready": False, "ready": 990, "time_to_all_ready_s": None, "ramp_s": 480.0,
     "operator": {"peak_rss_mib_vmhwm": 220.0}},
]}


def kind_run(kind, count, run, t, delete=5.0, **extra):
    r = {"kind": kind, "count": count, "run": run, "objects": count if kind == "pipelines" else 3 * count,
         "all_ready": t is not None, "ready": count if kind == "pipelines" else 3 * count,
         "time_to_all_ready_s": t, "first_ready_s": t and t * 0.8, "median_ready_s": t and t * 0.9,
         "milestones_s": {"deployments_created": 1.0, "pods_running": 3.0, "all_ready": t},
         "node_memory_mib": {"idle": 1000.0, "peak": 1300.0 + count, "at_ready": 1000.0 + 30 * count},
         "operator_memory_mib": {"idle": 20.0, "peak": 25.0, "at_ready": 24.0},
         "delete_s": delete, "deleted": True}
    r.update(extra)
    return r


KIND = {
    "benchmark": "kind",
    "config": {"repeat": 2, "poll_s": 0.5},
    "cluster": {"node_memory": "cgroup working set, usage less inactive file cache"},
    "other_pipelines_in_cluster": 1,
    "images": {"base": {"ref": "paystream.local/runtime-base:bookworm-x", "size_bytes": 80000000},
               "images": [{"target": "operator", "ref": "ghcr.io/paystream/paystream-operator:0.1.0",
                           "size_bytes": 110000000, "binary_bytes": 30000000}],
               "node": {"ref": "paystream.local/kind-node:v1.33.13-abc", "size_bytes": 900000000}},
    "runs": [
        kind_run("pipelines", 1, 1, 20.0), kind_run("ceiling", 1, 1, 4.0, delete=2.0),
        kind_run("ceiling", 1, 2, 6.0, delete=2.0), kind_run("pipelines", 1, 2, 24.0),
        kind_run("pipelines", 10, 1, 60.0, ready_before_its_pods={"pipe-1": 0, "pipe-2": 1}, flapped=["pipe-1"],
                 first_ready_ever_s=2.0, topics_left_after_deletion=20,
                 topics_left_names=["bk1-10-1-1.dlq", "bk1-10-1-1.consumer.dlq", "bk1-10-1-2.dlq"]), kind_run("ceiling", 10, 1, 12.0),
        kind_run("ceiling", 10, 2, 10.0),
        kind_run("pipelines", 10, 2, None, ready=7, ramp_s=420.0, deleted=False, delete_s=None),
        "not a run",
    ],
}


class PureHelpers(unittest.TestCase):
    def test_dig(self):
        d = {"a": {"b": [{"c": 1}, {"c": None}]}, "x": 0}
        self.assertEqual(report.dig(d, "a.b.0.c"), 1)
        self.assertEqual(report.dig(d, "a.b.1.c", "a.b.0.c"), 1)
        self.assertEqual(report.dig(d, "a.b.-1.c", default="d"), "d")
        self.assertEqual(report.dig(d, "a.z", "nope.deeper", default=7), 7)
        self.assertEqual(report.dig(d, "x"), 0)
        self.assertIsNone(report.dig(d, "a.b.9"))

    def test_numbers(self):
        self.assertEqual(report.num("2.5"), 2.5)
        self.assertIsNone(report.num(float("nan")))
        self.assertIsNone(report.num(True))
        self.assertIsNone(report.num("x"))
        self.assertEqual(report.median_spread([3, None, 1, 2]), (2, 1, 3))
        self.assertEqual(report.median_spread([4.0, 1.0]), (2.5, 1.0, 4.0))
        self.assertEqual(report.median_spread([None]), (None, None, None))
        self.assertEqual(report.ratio(10, 4), 2.5)
        self.assertIsNone(report.ratio(1, 0))
        self.assertIsNone(report.ratio(None, 1))

    def test_formatting(self):
        self.assertEqual(report.fmt(12345.6), "12,346")
        self.assertEqual(report.fmt(1.234, 2), "1.23")
        self.assertEqual(report.fmt(None), "n/a")
        self.assertEqual(report.fmt_spread(2.0, 1.0, 3.0), "2.0 (1.0–3.0)")
        self.assertEqual(report.fmt_spread(2.0, 2.0, 2.0), "2.0")
        self.assertEqual(report.fmt_spread(2.0, None, None), "2.0")
        self.assertEqual(report.fmt_ratio(0.5), "0.50×")

    def test_newest_honours_since(self):
        with tempfile.TemporaryDirectory() as d:
            old, new = os.path.join(d, "cdc-a.json"), os.path.join(d, "cdc-b.json")
            for f in (old, new):
                write(f, "{}")
            os.utime(old, (1000, 1000))
            os.utime(new, (2000, 2000))
            self.assertEqual(report.newest(d, "cdc", 1500), (new, new))
            self.assertEqual(report.newest(d, "cdc", 3000), (None, new))
            self.assertEqual(report.newest(d, "api", 0), (None, None))


class Parts(unittest.TestCase):
    def test_api_levels(self):
        lv = report.api_levels(API)
        self.assertEqual([l["connections"] for l in lv], [100, 1000])
        c = lv[1]["targets"]["cached"]
        self.assertEqual(c["rps"], (20000.0, 18000.0, 22000.0))
        self.assertEqual(c["p99"], (10.0, None, None))
        self.assertEqual(c["errors"], 1)
        self.assertEqual(lv[0]["targets"]["near"]["rps"], (None, None, None))
        self.assertEqual(report.api_levels({}), [])

    def test_cdc_both_layouts(self):
        old = report.cdc_engines(CDC_OLD)
        self.assertEqual(old["paystream"]["rows_per_second"][0], 34000.0)
        self.assertEqual(old["paystream"]["p50_ms"][0], 170.0)
        new = report.cdc_engines(CDC_NEW)
        self.assertEqual(new["paystream"]["rows_per_second"], (40000.0, 39000.0, 41000.0))
        self.assertEqual(new["debezium"]["p99_ms"][0], 50.0)
        self.assertIn("error", new["broken"])
        self.assertEqual(report.cdc_ceiling(CDC_NEW)["raw"], 3000000.0)
        self.assertIsNone(report.cdc_ceiling(CDC_OLD)["raw"])

    def test_freshness_and_operator(self):
        fr = report.freshness_rates(FRESH)
        self.assertEqual([r["rate"] for r in fr], [1000, 5000])
        self.assertEqual(fr[1]["p50"], (600.0, 500.0, 700.0))
        self.assertEqual(fr[0]["stages"]["event_built_to_kafka"][0], 125.0)
        op = report.operator_results(OPERATOR)
        self.assertEqual([r["pipelines"] for r in op], [100, 1000])
        self.assertEqual([(r["runs"], r["runs_all_ready"]) for r in op], [(2, 2), (2, 1)])
        self.assertEqual(op[0]["time_to_ready_s"], (70.0, 60.0, 80.0))
        self.assertEqual(op[0]["idle_reads_per_min"], (6500.0, 6000.0, 7000.0))
        self.assertEqual(op[0]["p99_ready_s"], (55.0, 55.0, 55.0))
        # The p99 of a run that did not get all Ready is left out of the median.
        partial = {"results": [
            {"pipelines": 10, "all_ready": True, "per_pipeline_time_to_ready_s": {"p99": 4.0}},
            {"pipelines": 10, "all_ready": False, "ready": 3, "per_pipeline_time_to_ready_s": {"p99": 1.0}},
            {"pipelines": 10, "error": "connection closed"},
        ]}
        pr = report.operator_results(partial)[0]
        self.assertEqual((pr["runs"], pr["p99_ready_s"]), (3, (4.0, 4.0, 4.0)))
        self.assertEqual(pr["errors"], ["connection closed"])
        self.assertIn("10 pipelines: a run failed: connection closed", "\n".join(report.section_operator(partial, {})))
        self.assertEqual(op[1]["peak_rss_mib"], (210.0, 200.0, 220.0))
        # The run that timed out adds nothing to the time to Ready, and is listed.
        self.assertEqual(op[1]["time_to_ready_s"], (600.0, 600.0, 600.0))
        self.assertEqual(op[1]["stuck"], [{"ready": 990.0, "ramp_s": 480.0, "run": 2}])
        # A result written before repetitions (one run per count, no `run`) still reads.
        old = report.operator_results({"results": [{"pipelines": 100, "time_to_all_ready_s": 18.0}]})
        self.assertEqual((old[0]["runs"], old[0]["time_to_ready_s"]), (1, (18.0, 18.0, 18.0)))
        md = "\n".join(report.section_operator(OPERATOR, {}))
        self.assertIn("| 100 | 2 of 2 | 70.0 (60.0–80.0) |", md)
        self.assertIn("1,000 pipelines, run 2: only 990 Ready when the benchmark stopped waiting at 480.0 s.", md)
        self.assertNotIn("per namespace", md)
        self.assertNotIn("other PaymentPipelines", md)
        spread = {"pipelines_per_namespace": 100, "results": [
            {"pipelines": 1000, "run": 1, "all_ready": True, "time_to_all_ready_s": 250.0,
             "other_pipelines_in_cluster": 3}]}
        md = "\n".join(report.section_operator(spread, {}))
        self.assertIn("At most 100 pipelines per namespace; the operator watches every namespace.", md)
        self.assertIn("1,000 pipelines, run 1: 3 other PaymentPipelines were in the cluster", md)

    def test_ratios_and_behind(self):
        parts = {"api": API, "cdc": CDC_NEW, "freshness": FRESH, "operator": OPERATOR}
        r = report.key_ratios(parts)
        self.assertAlmostEqual(r["api_1000_cached_over_ceiling_rps"], 0.5)
        self.assertAlmostEqual(r["cdc_paystream_over_debezium_rows_per_second"], 40000 / 27000)
        self.assertAlmostEqual(r["freshness_p99_highest_over_lowest_rate"], 2000 / 260)
        self.assertAlmostEqual(r["operator_ready_time_largest_over_smallest"], 600 / 70)
        b = " ".join(report.behind(parts))
        self.assertIn("redis-benchmark", b)
        self.assertIn("Debezium's 12.0 ms", b)
        self.assertIn("producer's transaction", b)
        self.assertIn("reached only 4,000", b)
        stuck = {"results": [{"pipelines": 1000, "all_ready": False, "ready": 6, "time_to_all_ready_s": None, "ramp_s": 336.9}]}
        self.assertIn("only 6 Ready when the benchmark stopped waiting at 336.9 s", " ".join(report.behind({"operator": stuck})))
        self.assertIn("Operator at 1,000 pipelines (run 2): only 990 Ready", b)
        self.assertEqual(report.key_ratios({}), {})
        self.assertEqual(report.behind({}), [])

    def test_kind(self):
        rows = report.kind_results(KIND)
        self.assertEqual([r["count"] for r in rows], [1, 10])
        one, ten = rows
        self.assertEqual((one["runs"], one["runs_all_ready"], one["ceiling_runs"]), (2, 2, 2))
        self.assertEqual(one["time_to_all_ready_s"], (22.0, 20.0, 24.0))
        self.assertEqual(one["ceiling_time_to_all_ready_s"], (5.0, 4.0, 6.0))
        self.assertAlmostEqual(one["ratio"], 22.0 / 5.0)
        # Per round, paired: 20 / 4 and 24 / 6.
        self.assertEqual(one["round_ratios"], (4.5, 4.0, 5.0))
        self.assertAlmostEqual(one["node_added_per_pipeline_mib"], 30.0)
        self.assertEqual(one["milestones"]["pods_running"][0], 3.0)
        # The round that did not get all Ready adds nothing to the time, and is listed.
        self.assertEqual(ten["time_to_all_ready_s"], (60.0, 60.0, 60.0))
        self.assertEqual(ten["stuck"], [{"kind": "pipelines", "run": 2, "ready": 7.0, "objects": 10.0, "ramp_s": 420.0}])
        self.assertEqual(ten["not_deleted"], ["pipelines round 2"])
        r = report.key_ratios({"kind": KIND})
        self.assertAlmostEqual(r["kind_1_operator_over_pods_ceiling"], 4.4)
        self.assertAlmostEqual(r["kind_10_operator_over_pods_ceiling"], 60.0 / 11.0)
        self.assertIn("kind, 10 PaymentPipelines (round 2): only 7 of 10 Ready", " ".join(report.behind({"kind": KIND})))
        md = "\n".join(report.section_kind(KIND, {}))
        self.assertIn("| 1 | 2 of 2 | 22.0 (20.0–24.0) | 17.6 / 19.8 | 5.0 (4.0–6.0) | 4.40× (4.00×–5.00×) | 5.0 / 2.0 |", md)
        self.assertIn("| 10 | 1 of 2 | 60.0 |", md)
        self.assertIn("| 1 | 1,000 | 1,301 | 1,030 | 30 |", md)
        self.assertIn("| kind node `paystream.local/kind-node:v1.33.13-abc` | 900.0 | |", md)
        self.assertIn("1 other PaymentPipelines were in the cluster", md)
        self.assertIn("N = 10, round 2: only 7 of 10 pipelines Ready when the benchmark stopped waiting at 420.0 s.", md)
        self.assertIn("N = 10, pipelines round 2: the namespace was not gone", md)
        self.assertIn("N = 10, round 1: 2 pipelines reported Ready before their three pods were Ready (the first at 2.0 s), 1 went", md)
        self.assertIn("N = 10, round 1: 20 topics of the deleted pipelines were still in Kafka after their namespace was gone "
                      "(deleteTopicsOnDelete): `<prefix>.consumer.dlq`, `<prefix>.dlq`; the benchmark swept them.", md)
        self.assertNotIn("N = 1, round", md)
        self.assertEqual(report.kind_results({}), [])
        self.assertIn("no runs", "\n".join(report.section_kind({}, {})))

    def test_kind_result_of_the_bench_script_reads(self):
        """bench/kind/bench.py's own summary is report.py's, on its runs."""
        import importlib.util

        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "kind", "bench.py")
        if not os.path.exists(path):
            self.skipTest("no bench/kind/bench.py")
        spec = importlib.util.spec_from_file_location("kind_bench", path)
        kb = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(kb)
        t = kb.Tracker("pipelines", 2)
        ready = {"kind": "PaymentPipeline", "metadata": {"name": "a", "generation": 1},
                 "status": {"conditions": [{"type": "Ready", "status": "True", "observedGeneration": 1}]}}
        self.assertFalse(t.observe(1.0, [ready]))
        self.assertTrue(t.observe(2.0, [ready, dict(ready, metadata={"name": "b", "generation": 1})]))
        run = dict(t.figures(), kind="pipelines", count=2, run=1, objects=2)
        self.assertEqual(report.kind_results({"runs": [run]})[0]["time_to_all_ready_s"], (2.0, 2.0, 2.0))


class Build(unittest.TestCase):
    def test_rebuild(self):
        d = {"rows": 1000, "median_records_per_sec": 20000.0, "median_ceiling_records_per_sec": 80000.0,
             "target_records_per_sec": 50000.0, "median_from_flush_secs": 1.5,
             "rounds": [{"round": 1, "records_per_sec": 20000.0}]}
        r = report.key_ratios({"rebuild": d})
        self.assertAlmostEqual(r["rebuild_replay_over_kafka_read_ceiling"], 0.25)
        self.assertAlmostEqual(r["rebuild_replay_over_target"], 0.4)
        self.assertTrue(any("Read-model rebuild" in b for b in report.behind({"rebuild": d})))
        self.assertFalse(report.behind({"rebuild": dict(d, median_records_per_sec=60000.0)}))
        md = "\n".join(report.section_rebuild(d, {}))
        self.assertIn("| consumer replay | 20,000 |", md)
        self.assertIn("The rebuild result has no rounds.", "\n".join(report.section_rebuild({}, {})))

    def test_missing_parts_are_reported_not_fatal(self):
        with tempfile.TemporaryDirectory() as d:
            write(os.path.join(d, "freshness-x.json"), json.dumps(FRESH))
            write(os.path.join(d, "cdc-broken.json"), "{not json")
            write(os.path.join(d, "api-old.json"), json.dumps(API))
            os.utime(os.path.join(d, "api-old.json"), (1000, 1000))
            j, m = report.build(d, time.time() - 60, "T", plots_enabled=False)
            out = json.loads(read(j))
            md = read(m)
            self.assertIn("freshness", out["parts"])
            self.assertIn("could not be read", out["missing"]["cdc"])
            self.assertIn("api-old.json", out["missing"]["api"])
            self.assertIn("operator", out["missing"])
            self.assertIn("## Freshness", md)
            self.assertIn("### Why", md)
            self.assertIn("make bench-operator", md)
            self.assertIn("make bench-kind", md)


if __name__ == "__main__":
    unittest.main()
