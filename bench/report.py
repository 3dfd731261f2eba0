"""Turn bench/run.py results into docs/benchmarks.md and docs/benchmarks.png."""

import json
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
DOCS = BASE_DIR / "docs"
LABELS = {
    "sqlite": "SQLite + ORM broker",
    "pg": "PostgreSQL + ORM broker",
    "pg-redis": "PostgreSQL + Redis broker",
}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rps_ax, lat_ax, e2e_ax) = plt.subplots(1, 3, figsize=(15, 4.5))
    for backend in results["backends"]:
        rows = backend["acceptance"]
        conns = [r["connections"] for r in rows]
        label = LABELS[backend["backend"]]
        rps_ax.plot(conns, [r["rps"] for r in rows], marker="o", label=label)
        lat_ax.plot(conns, [r["p99_ms"] for r in rows], marker="o", label=label)
    names = [LABELS[b["backend"]] for b in results["backends"]]
    e2e_ax.bar(
        range(len(names)), [b["end_to_end"].get("runs_per_s", 0) for b in results["backends"]]
    )
    e2e_ax.set_xticks(range(len(names)), [n.replace(" + ", "\n+ ") for n in names])
    rps_ax.set(title="Trigger acceptance", xlabel="concurrent connections", ylabel="triggers/s")
    lat_ax.set(title="Trigger latency p99", xlabel="concurrent connections", ylabel="ms")
    e2e_ax.set(title="End to end (reference workflow)", ylabel="runs/s")
    for ax in (rps_ax, lat_ax):
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_report(results: dict, docs: Path = DOCS) -> Path:
    docs.mkdir(exist_ok=True)
    plot(results, docs / "benchmarks.png")
    a = results["args"]
    lines = [
        "# Benchmarks",
        "",
        "Made by `make bench` (`bench/run.py --report`); raw numbers in "
        "`docs/benchmarks.json`. See bench/run.py for exactly what each phase does.",
        "",
        f"- Machine: {results['machine']['cpus']} cores, {results['machine']['platform']}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()),
        f"- Acceptance: wrk, {a['duration']:g} s per concurrency level, web server only "
        "(`manage.py serve --no-qcluster`: granian WSGI, one process per core), token-auth "
        "POST to the reference API (transform -> code -> output).",
        f"- End to end: web + workers (`manage.py serve`), {a['n']} triggers sent by 16 "
        "keep-alive client threads (every answered uid is checked to be stored), timed "
        "from the first trigger to the last run's finish.",
        "",
        "![throughput and latency](benchmarks.png)",
        "",
        "## Trigger acceptance",
        "",
        "| backend | connections | triggers/s | p50 ms | p99 ms | non-2xx | executions stored |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for b in results["backends"]:
        for r in b["acceptance"]:
            lines.append(
                f"| {LABELS[b['backend']]} | {r['connections']} | {r['rps']:,.0f} | "
                f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['non_2xx']} | {r['executions']:,} |"
            )
    lines += [
        "",
        "## End to end",
        "",
        "| backend | runs | succeeded | answered uids missing | runs/s |"
        " trigger→start p50 ms | p99 ms | paced p50 ms | paced p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for b in results["backends"]:
        e, p = b["end_to_end"], b.get("paced", {})
        paced = (
            f"{p['start_p50_ms']:.0f} | {p['start_p99_ms']:.0f}"
            if p.get("start_p50_ms") is not None
            else "– | –"
        )
        lines.append(
            f"| {LABELS[b['backend']]} | {e['total']:,} | {e['succeeded']:,} | "
            f"{e['answered_uids_missing']} | {e.get('runs_per_s', 0):,.0f} | "
            f"{e.get('start_p50_ms', 0):,.0f} | "
            f"{e.get('start_p99_ms', 0):,.0f} | {paced} |"
        )
    lines += [
        "",
        "Paced: triggers sent at a fixed rate below saturation "
        f"({a['paced_rate']:g}/s for {a['paced_seconds']:g} s).",
        "",
        "## Memory (RSS, MB, largest process of each kind)",
        "",
        "| backend | web idle | web under load | worker idle | worker under load |",
        "|---|---:|---:|---:|---:|",
    ]
    for b in results["backends"]:
        m = b["rss_mb"]
        lines.append(
            f"| {LABELS[b['backend']]} | {m['idle']['web']:.0f} | {m['web_load']:.0f} | "
            f"{m['worker_idle']:.0f} | {m['worker_load']:.0f} |"
        )
    soaks = [b for b in results["backends"] if b.get("soak")]
    if soaks:
        lines += [
            "",
            "## Soak",
            "",
            "Steady triggers from one keep-alive client thread (paced, so its rate is at "
            "most the asked one) with workers running; RSS sampled every 10 s (first value: "
            "after one minute).",
            "",
            "| backend | seconds | triggers/s | accepted | refused | succeeded |"
            " answered uids missing | duplicate uids | run twice | web RSS MB | worker RSS MB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
        ]
        for b in soaks:
            s = b["soak"]
            lines.append(
                f"| {LABELS[b['backend']]} | {s['duration_s']:g} | "
                f"{s['triggers'] / s['duration_s']:,.0f} (asked {s['rate']:g}) | "
                f"{s['triggers']:,} | {s['refused']} | {s['succeeded']:,} | "
                f"{s['answered_uids_missing']} | {s['duplicate_uids']} | {s['rerun']} | "
                f"{s['web_rss_first_mb']:.0f} → {s['web_rss_last_mb']:.0f} | "
                f"{s['worker_rss_first_mb']:.0f} → {s['worker_rss_last_mb']:.0f} |"
            )
    lines += ["", "## Command", "", "```sh", "make bench", "# = " + results["command"], "```", ""]
    (docs / "benchmarks.md").write_text("\n".join(lines))
    (docs / "benchmarks.json").write_text(json.dumps(results, indent=2))
    return docs / "benchmarks.md"


if __name__ == "__main__":
    write_report(json.loads(Path(sys.argv[1]).read_text()))
