"""Turns bench/run's rows into the table, the ratios to nginx, the targets, and results.json."""
import json, sys, platform, os

secs = int(sys.argv[1])
rows = [json.loads(l) for l in sys.stdin if l.strip()]
for r in rows:
    w = r["wrk"]
    r["rps"] = w["requests"] / (w["duration_us"] / 1e6)
    r["p50_ms"], r["p99_ms"], r["p999_ms"] = w["p50_us"] / 1e3, w["p99_us"] / 1e3, w["p999_us"] / 1e3
    r["failed"] = w["errors"] + w["non2xx"]
    # CPU the proxy itself spent per request: steadier than req/s on a shared machine.
    r["cpu_us_per_req"] = (r["cpu_ticks"] / r["clk_tck"] * 1e6 / w["requests"]) if r["cpu_ticks"] else None
by = {r["label"]: r for r in rows}
ngx = by["nginx proxy_pass"]
# A list row is compared with nginx on the same list URL, an entity row with nginx on the entity.
ref = lambda r: by.get("nginx 100-row list", ngx) if "list" in r["label"] else ngx
print(f"{'':38} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} {'RSS MB':>7} {'CPU us/req':>11} {'vs nginx':>9} {'failed':>7}")
for r in rows:
    rss = f"{r['rss_kb'] / 1024:.1f}" if r["rss_kb"] else "-"
    cpu = f"{r['cpu_us_per_req']:.1f}" if r["cpu_us_per_req"] else "-"
    print(f"{r['label']:38} {r['rps']:9.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['p999_ms']:9.2f} {rss:>7} {cpu:>11} {r['rps'] / ref(r)['rps']:8.2f}x {r['failed']:7d}")
cg = by["credgate entity (SQLite audit)"]
noop = by["credgate entity (no-op audit)"]
big = by["credgate entity at 256 connections"]
lst = by["credgate 100-row list (SQLite audit)"]
ngx_list = by["nginx 100-row list"]
pg = by.get("credgate entity (PostgreSQL audit)")
# Issue 18's targets. The audit's cost is judged on the gateway's own CPU per request (the
# machine is shared with the load generator, so req/s alone mixes in wrk's share).
audit_cost = (cg["cpu_us_per_req"] / noop["cpu_us_per_req"] - 1) if cg["cpu_us_per_req"] and noop["cpu_us_per_req"] else None
targets = [
    ("entity, durable SQLite audit >= 0.5x nginx (goal 0.8x)", cg["rps"] / ngx["rps"] >= 0.5, f"{cg['rps'] / ngx['rps']:.2f}x"),
    ("entity, PostgreSQL audit >= 0.4x nginx", bool(pg) and pg["rps"] / ngx["rps"] >= 0.4, f"{pg['rps'] / ngx['rps']:.2f}x" if pg else "not run"),
    ("100-row list, durable audit >= 0.6x nginx on the list", lst["rps"] / ngx_list["rps"] >= 0.6, f"{lst['rps'] / ngx_list['rps']:.2f}x"),
    ("durable audit costs <= 10% of the no-op pipeline (CPU/req)", audit_cost is not None and audit_cost <= 0.10, f"{audit_cost * 100:+.1f}%" if audit_cost is not None else "-"),
    ("entity p99 within 3 ms of nginx", cg["p99_ms"] - ngx["p99_ms"] <= 3.0, f"{cg['p99_ms'] - ngx['p99_ms']:+.2f} ms"),
    ("peak RSS < 100 MB at 256 connections", big["rss_kb"] < 100 * 1024, f"{big['rss_kb'] / 1024:.1f} MB"),
    ("no failed requests", all(r["failed"] == 0 for r in rows), str(sum(r["failed"] for r in rows))),
]
lag = os.environ.get("INDEXER_LAG")
targets.append(("indexer lag at full load < 2 s", lag is not None and lag != "none" and float(lag) < 2.0,
                f"{lag} s (largest now - indexed_through polled during the list loads)" if lag not in (None, "none")
                else "not measured: no answer of GET /admin/audit carried indexed_through"))
print()
if cg["cpu_us_per_req"] and noop["cpu_us_per_req"]:
    print(f"  durable audit, CPU per request: {cg['cpu_us_per_req']:.1f} us against {noop['cpu_us_per_req']:.1f} us with the no-op writer; nginx {ngx['cpu_us_per_req'] or 0:.1f} us")
for name, ok, value in targets:
    print(f"  [{'PASS' if ok else 'MISS'}] {name}: {value}")
out = {"duration_s": secs, "machine": {"cpus": os.cpu_count(), "kernel": platform.release()},
       "rows": rows, "targets": [{"target": n, "holds": ok, "value": v} for n, ok, v in targets]}
path = os.path.join(os.path.dirname(__file__), "results.json")
with open(path, "w") as f:
    json.dump(out, f, indent=2)
print(f"\nwritten: {path}")
