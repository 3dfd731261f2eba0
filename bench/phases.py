"""One backend's benchmark, phase after phase: acceptance at each concurrency
(web only), end to end with workers, the paced phase, RSS and the optional soak
(bench/run.py's docstring says what each measures)."""

import json
import shutil
import tempfile
from pathlib import Path

from bench.harness import (
    CLEAR,
    MISSING,
    SETUP,
    STATS,
    RssSampler,
    Server,
    backend_env,
    django_shell,
    free_port,
    reset_database,
    rss_snapshot,
)
from bench.load import fire, paced, soak, wait_all_final, wrk

# --- one backend -----------------------------------------------------------------


def bench_backend(backend: str, args) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix=f"iolinker-bench-{backend}-"))
    env = backend_env(backend, workdir)
    reset_database(backend, env)
    token = django_shell(env, SETUP).strip()
    result: dict = {"backend": backend, "acceptance": [], "end_to_end": {}, "rss_mb": {}}
    port = free_port()

    # 1. Acceptance: web only.
    server = Server(env, port, workers=False)
    try:
        result["rss_mb"]["idle"] = rss_snapshot(server)
        wrk(port, token, duration=1, connections=16)  # warm-up
        with RssSampler(server) as sampler:
            for connections in args.concurrency:
                django_shell(env, CLEAR)
                row = wrk(port, token, duration=args.duration, connections=connections)
                stats = json.loads(django_shell(env, STATS))
                row |= {
                    "connections": connections,
                    "executions": stats["total"],
                    "queued_messages": stats["queue"],
                }
                result["acceptance"].append(row)
                print(
                    f"[{backend}] c={connections}: {row['rps']:.0f} req/s "
                    f"p50 {row['p50_ms']:.1f} ms p99 {row['p99_ms']:.1f} ms "
                    f"non-2xx {row['non_2xx']} executions {stats['total']}",
                    flush=True,
                )
        result["rss_mb"]["web_load"] = sampler.max["web"]
    finally:
        server.stop()

    # 2. End to end: web + workers.
    django_shell(env, CLEAR)
    server = Server(env, port, workers=True)
    try:
        result["rss_mb"]["worker_idle"] = rss_snapshot(server)["worker"]
        with RssSampler(server) as sampler:
            load = fire(port, token, n=args.n)
            stats = wait_all_final(env, args.e2e_timeout)
        result["rss_mb"]["worker_load"] = sampler.max["worker"]
        uid_file = workdir / "answered-uids.json"
        uid_file.write_text(json.dumps(load["uids"]))
        missing = json.loads(django_shell(env, MISSING.format(path=str(uid_file))))
        result["end_to_end"] = {
            "triggers": len(load["uids"]),
            "refused": len(load["failures"]),
            "refusals": load["failures"][:5],
            "answered_uids_missing": missing,
            "trigger_rps": load["rps"],
        } | stats
        print(
            f"[{backend}] e2e: {stats['total']} runs, {stats['succeeded']} succeeded, "
            f"{stats['runs_per_s']:.0f} runs/s, start p50 {stats['start_p50_ms']:.0f} ms "
            f"p99 {stats['start_p99_ms']:.0f} ms",
            flush=True,
        )
        if not args.quick:
            django_shell(env, CLEAR)
            sent = paced(port, token, rate=args.paced_rate, seconds=args.paced_seconds)
            paced_stats = wait_all_final(env, 60)
            result["paced"] = {"rate": args.paced_rate, "sent": sent} | paced_stats
            print(
                f"[{backend}] paced {args.paced_rate}/s: start p50 "
                f"{paced_stats['start_p50_ms']:.0f} ms p99 {paced_stats['start_p99_ms']:.0f} ms",
                flush=True,
            )
        if args.soak and backend in args.soak_backends.split(","):
            django_shell(env, CLEAR)
            load = soak(server, token, rate=args.soak_rate, seconds=args.soak)
            stats = wait_all_final(env, args.e2e_timeout)
            uid_file.write_text(json.dumps(load["uids"]))
            samples = load["rss_samples"]
            warm = [r for r in samples if r["t"] >= 60] or samples
            result["soak"] = {
                "rate": load["rate"],
                "duration_s": load["seconds"],
                "triggers": len(load["uids"]),
                "refused": len(load["failures"]),
                "duplicate_uids": len(load["uids"]) - len(set(load["uids"])),
                "answered_uids_missing": json.loads(
                    django_shell(env, MISSING.format(path=str(uid_file)))
                ),
                "rss_samples": samples,
                "web_rss_first_mb": warm[0]["web"] if warm else 0.0,
                "web_rss_last_mb": warm[-1]["web"] if warm else 0.0,
                "worker_rss_first_mb": warm[0]["worker"] if warm else 0.0,
                "worker_rss_last_mb": warm[-1]["worker"] if warm else 0.0,
            } | stats
            s = result["soak"]
            print(
                f"[{backend}] soak {args.soak:g} s at {args.soak_rate:g}/s: "
                f"{s['triggers']} accepted, {s['refused']} refused, {s['succeeded']} succeeded, "
                f"{s['answered_uids_missing']} missing, {s['rerun']} run more than once; web RSS "
                f"{s['web_rss_first_mb']:.0f} -> {s['web_rss_last_mb']:.0f} MB, worker "
                f"{s['worker_rss_first_mb']:.0f} -> {s['worker_rss_last_mb']:.0f} MB",
                flush=True,
            )
    finally:
        server.stop()
    shutil.rmtree(workdir, ignore_errors=True)
    return result
