#!/usr/bin/python3
"""Turns bench/run.sh's per-run TSV into the Markdown table, the JSON record and the gnuplot chart inputs.

Usage: report.py RESULTS.tsv OUT_STEM   (writes OUT_STEM.md, .json, .dat, .gp; prints the Markdown to stdout)
Run metadata comes from the BENCH_META_* environment variables set by run.sh.
"""
import csv
import datetime
import json
import os
import platform
import statistics
import sys


def num(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=1):
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def machine():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_kb = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_kb = int(line.split()[1])
    except OSError:
        pass
    return {"host": platform.node(), "nproc": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "memory_gib": round(mem_kb / 1048576, 1)}


def main():
    tsv, stem = sys.argv[1], sys.argv[2]
    env = os.environ.get
    with open(tsv, newline="") as f:
        runs = list(csv.DictReader(f, delimiter="\t"))
    targets = env("BENCH_META_TARGETS", "direct pgward pgbouncer").split()
    scenarios = env("BENCH_META_SCENARIOS", "").split()
    down = {}
    for line in env("BENCH_META_DOWN", "").splitlines():
        if "\t" in line:
            name, why = line.split("\t", 1)
            down[name] = why
    pgward_targets = [t for t in targets if t.startswith("pgward")]

    rows = []
    by_key = {}
    for sc in scenarios:
        for t in targets:
            mine = [r for r in runs if r["scenario"] == sc and r["target"] == t]
            statuses = [r["status"] for r in mine]
            row = {
                "scenario": sc, "target": t, "runs": len(mine),
                "statuses": statuses,
                "tps": median([num(r["tps"]) for r in mine]),
                "latency_avg_ms": median([num(r["lat_ms"]) for r in mine]),
                "latency_p99_ms": median([num(r["p99_ms"]) for r in mine]),
                "failed_tx": sum(int(r["failed_tx"] or 0) for r in mine),
                "aborted_clients": sum(int(r["aborted_clients"] or 0) for r in mine),
                "cpu_us_per_tx": median([num(r["cpu_us_per_tx"]) for r in mine]),
                "rss_mb": median([num(r["rss_kb"]) / 1024 if num(r["rss_kb"]) else None for r in mine]),
                "peak_rss_mb": max([num(r["hwm_kb"]) / 1024 for r in mine if num(r["hwm_kb"])], default=None),
                "idle_connections": median([num(r["idle_ok"]) for r in mine]),
                "notes": sorted({r["note"].strip() for r in mine if r["note"].strip()}),
            }
            if not mine:
                row["statuses"] = ["not run"]
                if t in down:
                    row["notes"] = ["target unavailable: " + down[t]]
            rows.append(row)
            by_key[(sc, t)] = row
    for row in rows:
        if row["target"] in pgward_targets and row["tps"]:
            d = by_key.get((row["scenario"], "direct"), {}).get("tps")
            b = by_key.get((row["scenario"], "pgbouncer"), {}).get("tps")
            row["ratio_vs_direct"] = row["tps"] / d if d else None
            row["ratio_vs_pgbouncer"] = row["tps"] / b if b else None

    meta = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": {"postgresql": env("BENCH_META_PG", ""), "pgbouncer": env("BENCH_META_PGB", ""),
                     "pgward": env("BENCH_META_PGWARD", "")},
        "settings": {"duration_s": int(env("BENCH_META_DURATION", "0")), "reps": int(env("BENCH_META_REPS", "0")),
                     "scale": int(env("BENCH_META_SCALE", "0")), "pool_size": int(env("BENCH_META_POOL", "0")),
                     "idle_connections": int(env("BENCH_META_IDLE", "0")), "quick": env("BENCH_META_QUICK") == "1",
                     "pgward_workers": env("BENCH_META_WORKERS", "1").split(), "pgbench_threads": 2,
                     "pgward_event_loops": env("BENCH_META_BACKENDS", "epoll").split(),
                     "elapsed_s": int(env("BENCH_META_ELAPSED", "0")), "tls": env("BENCH_META_TLS") == "1",
                     "tls_negotiated": env("BENCH_META_TLS_NOTE", ""),
                     "copy_rows": int(env("BENCH_META_COPY_ROWS", "0") or 0),
                     "copy_bytes": int(env("BENCH_META_COPY_BYTES", "0") or 0)},
        "targets": targets,
        "unavailable_targets": down,
        "build_note": env("BENCH_META_BUILD_NOTE", ""),
        "scenarios": scenarios,
    }

    def failures(row):
        if row["statuses"] == ["n/a"] * len(row["statuses"]) and row["statuses"]:
            return "n/a"
        if row["statuses"] == ["not run"] or all(s in ("skipped", "proxy-down") for s in row["statuses"]):
            return ", ".join(sorted(set(row["statuses"])))
        text = f'{row["failed_tx"]}/{row["aborted_clients"]}'
        bad = sorted({s for s in row["statuses"] if s not in ("ok",)})
        return text + (" (" + ", ".join(bad) + ")" if bad else "")

    m = meta["machine"]
    s = meta["settings"]
    lines = [
        f'# pgward benchmark {meta["date"]}',
        "",
        f'Machine: {m["host"]}, {m["nproc"]} CPUs ({m["cpu_model"]}), {m["memory_gib"]} GiB, Linux {m["kernel"]}.  ',
        f'Versions: {meta["versions"]["postgresql"]}; {meta["versions"]["pgbouncer"]}; {meta["versions"]["pgward"]}.  ',
        f'pgbench -j 2 -T {s["duration_s"]}, {s["reps"]} repetition(s), scale {s["scale"]}, pool size '
        f'{s["pool_size"]} (transaction mode), pgward workers {" ".join(s["pgward_workers"])}, event loops '
        f'{" ".join(s["pgward_event_loops"])}'
        f'{", QUICK mode" if s["quick"] else ""}; run took {s["elapsed_s"]} s.',
        "",
    ]
    if s["tls"]:
        lines += [f'**TLS on both sides**: pgbench/psql to the target and each proxy to PostgreSQL, sslmode=require; '
                  f'negotiated (direct): {s["tls_negotiated"] or "unknown"}.', ""]
    if env("BENCH_META_BUILD_NOTE"):
        lines += [f'**pgward build**: {env("BENCH_META_BUILD_NOTE")}', ""]
    for t, why in down.items():
        lines.append(f"**{t} unavailable**: {why}  ")
    if down:
        lines.append("")
    lines += [
        "| scenario | target | TPS | lat avg ms | p99 ms | failed tx/aborted clients | proxy CPU µs/tx | proxy RSS MB "
        "| TPS vs direct | TPS vs PgBouncer |",
        "|---|---|--:|--:|--:|---|--:|--:|--:|--:|",
    ]
    for row in rows:
        if row["statuses"] and all(st == "n/a" for st in row["statuses"]):
            lines.append(f'| {row["scenario"]} | {row["target"]} | n/a | n/a | n/a | n/a | n/a | n/a | | |')
            continue
        copy = row["scenario"].startswith("copy-")
        rate = fmt(row["tps"], 1) + " MB/s" if copy and row["tps"] is not None else fmt(row["tps"], 0)
        cpu = fmt(row["cpu_us_per_tx"], 1) + ("/MB" if copy and row["cpu_us_per_tx"] is not None else "")
        ratio_d = fmt(row.get("ratio_vs_direct"), 2) if "ratio_vs_direct" in row else ""
        ratio_b = fmt(row.get("ratio_vs_pgbouncer"), 2) if "ratio_vs_pgbouncer" in row else ""
        lines.append(
            f'| {row["scenario"]} | {row["target"]} | {rate} | {fmt(row["latency_avg_ms"], 3)} '
            f'| {fmt(row["latency_p99_ms"], 3)} | {failures(row)} '
            f'| {cpu if row["target"] != "direct" else "n/a"} '
            f'| {fmt(row["rss_mb"], 1) if row["target"] != "direct" else "n/a"} | {ratio_d} | {ratio_b} |')
    if any(sc.startswith("copy-") for sc in scenarios):
        lines += ["", f'copy-out/copy-in rows: each client runs one psql per COPY of {s["copy_rows"]:,} rows of '
                      f'pgbench_accounts ({s["copy_bytes"] / 1e6:.1f} MB of COPY text) out of the table / into an '
                      f'unlogged table, one after another for -T seconds; TPS is MB/s of COPY data, latency the mean '
                      f'time per COPY (connection included), CPU µs per MB, failed = COPYs that lost bytes or rows.']
    notes = [(row["scenario"], row["target"], n) for row in rows for n in row["notes"]
             if not n.startswith("not run against")]
    if notes:
        lines += ["", "Notes:", ""]
        for sc, t, n in notes:
            lines.append(f"- {sc} / {t}: {n}")
    idle = [row for row in rows if row["scenario"].startswith("idle") and row["idle_connections"] is not None]
    if idle:
        lines += ["", "Idle connections held during the idle scenario (median per run): " +
                  ", ".join(f'{r["target"]} {int(r["idle_connections"])}' for r in idle) + "."]
    peaks = [(t, max([r["peak_rss_mb"] for r in rows if r["target"] == t and r["peak_rss_mb"]], default=None))
             for t in targets if t != "direct"]
    peaks = [(t, p) for t, p in peaks if p]
    if peaks:
        lines += ["", "Peak RSS over the whole run (VmHWM): " + ", ".join(f"{t} {p:.1f} MB" for t, p in peaks) + "."]
    markdown = "\n".join(lines) + "\n"

    with open(stem + ".md", "w") as f:
        f.write(markdown)
    with open(stem + ".json", "w") as f:
        json.dump({**meta, "rows": rows, "runs": runs}, f, indent=2)
        f.write("\n")

    # gnuplot: one line per scenario, one column per target (median TPS; 0 when missing).
    with open(stem + ".dat", "w") as f:
        f.write("scenario " + " ".join(targets) + "\n")
        for sc in [sc for sc in scenarios if not sc.startswith("copy-")]:  # MB/s is not TPS: table only
            vals = []
            for t in targets:
                v = by_key[(sc, t)]["tps"]
                vals.append(f"{v:.1f}" if v is not None else "0")
            f.write(sc + " " + " ".join(vals) + "\n")
    cols = ", ".join(
        (f"'{stem}.dat' using {i + 2}:xtic(1) title columnheader({i + 2})" if i == 0
         else f"'' using {i + 2} title columnheader({i + 2})") for i, _t in enumerate(targets))
    with open(stem + ".gp", "w") as f:
        f.write(f"""set terminal pngcairo size 1400,700 font 'sans,10'
set output '{stem}.png'
set title 'pgbench median TPS per scenario ({m["host"]}, {m["nproc"]} CPUs, -T {s["duration_s"]}, {s["reps"]} rep)'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set key top right
set grid ytics
set ylabel 'transactions per second'
set yrange [0:*]
set xtics rotate by -35 nomirror
set bmargin 8
plot {cols}
""")
    sys.stdout.write(markdown)


if __name__ == "__main__":
    main()
