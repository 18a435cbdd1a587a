#!/usr/bin/env python3
"""Helpers for bench/api/run.sh: mint an HS256 token, pick the open-loop
rate, and turn the raw oha / redis-benchmark outputs into the report
(JSON + Markdown, and the table on stdout)."""

import base64
import hashlib
import hmac
import json
import os
import re
import sys
import time


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(secret: str, sub: str) -> str:
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"sub": sub, "exp": int(time.time()) + 4 * 3600}).encode())
    sig = b64(hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest())
    return f"{head}.{body}.{sig}"


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def oha_point(path):
    """req/s, p50/p99/p99.9 in ms, successes and errors of one oha run."""
    d = load(path)
    if not d:
        return None
    s = d.get("summary", {})
    lp = d.get("latencyPercentiles", {})
    ok = sum(v for k, v in d.get("statusCodeDistribution", {}).items() if k.startswith("2"))
    bad = sum(v for k, v in d.get("statusCodeDistribution", {}).items() if not k.startswith("2"))
    dist = d.get("errorDistribution", {})
    # Requests still in flight when the run's time is up are not failures.
    errors = sum(v for k, v in dist.items() if k != "aborted due to deadline")

    def ms(k):
        v = lp.get(k)
        return None if v is None else v * 1000.0

    return {
        "rps": s.get("requestsPerSec"),
        "ok_rps": ok / s["total"] if s.get("total") else None,
        "p50_ms": ms("p50"),
        "p99_ms": ms("p99"),
        "p999_ms": ms("p99.9"),
        "ok": ok,
        "non_2xx": bad,
        "errors": errors,
    }


def redis_point(path):
    try:
        text = open(path).read()
    except OSError:
        return None
    rps = re.search(r"throughput summary: ([0-9.]+) requests per second", text)
    summary = re.search(
        r"avg\s+min\s+p50\s+p95\s+p99\s+max\s*\n\s*([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)",
        text,
    )
    p999 = None
    for m in re.finditer(r"([0-9.]+)% <= ([0-9.]+) milliseconds", text):
        if float(m.group(1)) >= 99.9:
            p999 = float(m.group(2))
            break
    if not rps:
        return {"error": text.strip().splitlines()[-1] if text.strip() else "no output"}
    return {
        "rps": float(rps.group(1)),
        "p50_ms": float(summary.group(3)) if summary else None,
        "p99_ms": float(summary.group(5)) if summary else None,
        "p999_ms": p999,
        "note": "closed loop (redis-benchmark has no open-loop mode)",
    }


SUMMED = ("ok", "non_2xx", "errors")


def median(values):
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def aggregate(points):
    """One point from the repetitions of a measurement: the median of every
    figure, with `<figure>_min` / `<figure>_max` for the spread; counts
    (ok, non_2xx, errors) are summed; `repeats` says how many runs answered."""
    pts = [p for p in points if p and "error" not in p]
    if not pts:
        failed = [p for p in points if p]
        return failed[0] if failed else None
    out = {"repeats": len(pts)}
    keys = []
    for p in pts:
        keys += [k for k in p if k not in keys]
    for k in keys:
        vals = [p[k] for p in pts if isinstance(p.get(k), (int, float)) and not isinstance(p.get(k), bool)]
        if k in SUMMED:
            out[k] = sum(vals)
        elif vals:
            out[k] = median(vals)
            out[f"{k}_min"] = min(vals)
            out[f"{k}_max"] = max(vals)
        elif k not in out:
            out[k] = pts[0].get(k)
    return out


def spread(point, key, digits=2):
    """`median (min–max)` of an aggregated point, or just the value."""
    point = point or {}
    m, lo, hi = point.get(key), point.get(f"{key}_min"), point.get(f"{key}_max")
    if lo is None or hi is None or lo == hi:
        return fmt(m, digits)
    return f"{fmt(m, digits)} ({fmt(lo, digits)}–{fmt(hi, digits)})"


def fmt(v, digits=2):
    if v is None:
        return "n/a"
    if v >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def ratio(a, b):
    if a is None or b in (None, 0):
        return None
    return a / b


def report(raw, out, secs, size, conns, repeat="1"):
    levels = [int(c) for c in conns.split()]
    reps = range(1, int(repeat) + 1)
    result = {
        "benchmark": "api",
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "uname": " ".join(os.uname())},
        "seconds_per_point": float(secs),
        "payload_bytes": int(size),
        "method": "req/s: closed-loop oha runs; percentiles: open-loop oha runs at the same offered "
        "rate for every HTTP target (-q, --latency-correction), the rate being a fraction of the "
        "cached closed-loop throughput; redis-benchmark GET of the same payload is closed-loop; "
        "every point is measured `repeats` times: figures are medians, `<figure>_min`/`_max` the spread",
        "repeats": int(repeat),
        "levels": [],
    }
    for c in levels:
        rate = open(f"{raw}/rate-{c}").read().strip() if os.path.exists(f"{raw}/rate-{c}") else None
        lvl = {"connections": c, "open_loop_rate": float(rate) if rate else None, "repeats": int(repeat)}
        for name in ("cached", "near", "ceiling", "mysql"):
            closed = [oha_point(f"{raw}/{name}-{c}-r{r}.json") for r in reps]
            opened = [oha_point(f"{raw}/{name}-{c}-r{r}-open.json") for r in reps]
            lvl[name] = {
                "throughput": aggregate(closed),
                "open_loop": aggregate(opened),
                "runs": {"throughput": closed, "open_loop": opened},
            }
        redis_runs = [redis_point(f"{raw}/redis-{c}-r{r}.txt") for r in reps]
        lvl["redis_benchmark"] = aggregate(redis_runs)
        lvl["redis_benchmark_runs"] = redis_runs
        rps = lambda n: (lvl[n]["throughput"] or {}).get("rps")  # noqa: E731
        p99 = lambda n: (lvl[n]["open_loop"] or {}).get("p99_ms")  # noqa: E731
        lvl["ratios"] = {
            "cached_vs_ceiling_rps": ratio(rps("cached"), rps("ceiling")),
            "cached_vs_mysql_rps": ratio(rps("cached"), rps("mysql")),
            "cached_vs_redis_benchmark_rps": ratio(rps("cached"), (lvl["redis_benchmark"] or {}).get("rps")),
            "mysql_vs_cached_p99": ratio(p99("mysql"), p99("cached")),
            "cached_vs_ceiling_p99": ratio(p99("cached"), p99("ceiling")),
            "near_vs_cached_rps": ratio(rps("near"), rps("cached")),
        }
        result["levels"].append(lvl)

    lines = [
        f"# API benchmark, {result['time_utc']}",
        "",
        f"Cached reads of one purchase ({size}-byte JSON), with and without the near cache, vs. the HTTP ceiling (constant body of the "
        f"same size, same server), MySQL without cache (same server, same auth) and redis-benchmark "
        f"GET of the same payload. {secs} s per point, {repeat} repetitions per point, {os.cpu_count()} CPUs, "
        "everything on one machine.",
        "req/s from closed-loop runs; p50/p99/p99.9 (ms) from open-loop runs at the offered rate shown "
        "(oha -q, --latency-correction); redis-benchmark is closed-loop. Each figure is the median over the "
        "repetitions, with the spread (min–max) in brackets; errors are summed.",
        "",
        "| conns | target | req/s | errors | open-loop rate | p50 ms | p99 ms | p99.9 ms |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for lvl in result["levels"]:
        c = lvl["connections"]
        for name, label in (
            ("cached", "API cached read"),
            ("near", "API cached read, near cache on"),
            ("ceiling", "HTTP ceiling"),
            ("mysql", "MySQL, no cache"),
        ):
            t = lvl[name]["throughput"] or {}
            o = lvl[name]["open_loop"] or {}
            errs = (t.get("errors") or 0) + (t.get("non_2xx") or 0) + (o.get("errors") or 0) + (o.get("non_2xx") or 0)
            lines.append(
                f"| {c:,} | {label} | {spread(t, 'rps')} | {errs} | {fmt(lvl['open_loop_rate'])} | "
                f"{spread(o, 'p50_ms')} | {spread(o, 'p99_ms')} | {spread(o, 'p999_ms')} |"
            )
        r = lvl["redis_benchmark"] or {}
        lines.append(
            f"| {c:,} | redis-benchmark GET | {spread(r, 'rps')} | {'' if 'error' not in r else r['error']} | closed | "
            f"{spread(r, 'p50_ms')} | {spread(r, 'p99_ms')} | {spread(r, 'p999_ms')} |"
        )
    lines += ["", "| conns | cached/ceiling req/s | cached/MySQL req/s | cached/redis-benchmark req/s | MySQL/cached p99 | cached/ceiling p99 | near/cached req/s |",
              "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for lvl in result["levels"]:
        r = lvl["ratios"]
        lines.append(
            f"| {lvl['connections']:,} | {fmt(r['cached_vs_ceiling_rps'])} | {fmt(r['cached_vs_mysql_rps'])} | "
            f"{fmt(r['cached_vs_redis_benchmark_rps'])} | {fmt(r['mysql_vs_cached_p99'])} | {fmt(r['cached_vs_ceiling_p99'])} | "
            f"{fmt(r['near_vs_cached_rps'])} |"
        )
    md = "\n".join(lines) + "\n"
    with open(out + ".json", "w") as f:
        json.dump(result, f, indent=2)
    with open(out + ".md", "w") as f:
        f.write(md)
    print(md)
    print(f"written: {out}.json, {out}.md")


def main():
    cmd = sys.argv[1]
    if cmd == "token":
        print(token(sys.argv[2], sys.argv[3]))
    elif cmd == "rate":
        p = oha_point(sys.argv[2]) or {}
        print(max(100, int((p.get("rps") or 1000) * float(sys.argv[3]))))
    elif cmd == "requests":
        d = load(sys.argv[2]) or {}
        rps = (d.get("summary") or {}).get("requestsPerSec") or 10000
        print(max(10000, int(rps * 3)))
    elif cmd == "report":
        report(*sys.argv[2:8])
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
