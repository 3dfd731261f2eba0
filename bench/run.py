"""iolinker benchmark: trigger acceptance, end-to-end runs, memory.

    .venv/bin/python bench/run.py                       # all three backends, full size
    .venv/bin/python bench/run.py --backends sqlite --duration 2 --n 200 --quick

For each backend (sqlite = SQLite + ORM broker, pg = PostgreSQL + ORM broker,
pg-redis = PostgreSQL + Redis broker) it makes a fresh database, loads the
reference workflow (transform -> code -> output) behind a token-auth POST API,
starts the platform with `manage.py serve` in its production configuration and
measures with wrk (Debian package `wrk`):

1. acceptance: wrk for --duration seconds at each concurrency, web server only
   (workers stopped, so they do not share the two cores); req/s, p50/p99
   latency, non-2xx count; then checks that every accepted uid is a queued
   execution with a queue message.
2. end to end: web + workers; --n triggers sent by 16 keep-alive client threads
   (each uid answered is checked to be stored), then waits until every
   execution is final; runs/s from the first trigger to the
   last finish, trigger-to-start p50/p99. Then a paced phase at --paced-rate
   triggers/s (below saturation) for trigger-to-start latency.
3. RSS of each web and worker process, idle and under load (max sampled).

Results: JSON (--out) and, with --report, docs/benchmarks.md plus a plot.
"""

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
PY = sys.executable
PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
# The database each PostgreSQL backend drops and makes again (one per person when
# several benchmark on one server).
PG_DB = os.environ.get("BENCH_PG_DB", "iolinker_bench")
BACKENDS = ["sqlite", "pg", "pg-redis"]


# --- processes -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"port {port} not listening")


def manage(env: dict, *args: str, capture: bool = True) -> str:
    result = subprocess.run(
        [PY, "manage.py", *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=capture,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout if capture else ""


def django_shell(env: dict, code: str) -> str:
    return manage(env, "shell", "--no-imports", "-c", code)


class Server:
    def __init__(self, env: dict, port: int, *, workers: bool):
        args = [PY, "manage.py", "serve", "--port", str(port)]
        if not workers:
            args.append("--no-qcluster")
        self.proc = subprocess.Popen(
            args, cwd=BASE_DIR, env=env, start_new_session=True, stdout=subprocess.DEVNULL
        )
        self.port = port
        wait_port(port)
        time.sleep(1.5)  # let workers of both kinds finish importing

    def pids(self) -> dict[str, list[int]]:
        """Web and worker process ids (children of `serve`'s children)."""
        kinds: dict[str, list[int]] = {"web": [], "worker": []}
        for pid in descendants(self.proc.pid):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue  # gone meanwhile (e.g. a code step's sandbox)
            if "granian" in cmd:
                kinds["web"].append(pid)
            elif "qcluster" in cmd:
                kinds["worker"].append(pid)
        return kinds

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class RssSampler:
    """Max RSS per process kind while load runs."""

    def __init__(self, server: Server):
        self.server = server
        self.max: dict[str, float] = {"web": 0.0, "worker": 0.0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.25):
            for kind, pids in self.server.pids().items():
                for pid in pids:
                    self.max[kind] = max(self.max[kind], rss_mb(pid))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def rss_snapshot(server: Server) -> dict[str, float]:
    return {
        kind: max((rss_mb(p) for p in pids), default=0.0) for kind, pids in server.pids().items()
    }


# --- database and fixtures -------------------------------------------------------


def backend_env(backend: str, workdir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(
        IOLINKER_VAR_DIR=str(workdir),
        DEBUG="0",
        LOG_LEVEL="WARNING",
        IOLINKER_QUEUE_NAME=f"bench-{os.getpid()}",
    )
    if backend == "sqlite":
        env["DATABASE_URL"] = f"sqlite:///{workdir / 'bench.sqlite3'}"
    else:
        env["DATABASE_URL"] = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + PG_DB
        if backend == "pg-redis":
            env["REDIS_URL"] = REDIS_URL
    return env


def reset_database(backend: str, env: dict) -> None:
    if backend != "sqlite":
        import psycopg

        with psycopg.connect(
            PG_ADMIN_URL.replace("postgres://", "postgresql://"), autocommit=True
        ) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{PG_DB}" WITH (FORCE)')
            c.execute(f'CREATE DATABASE "{PG_DB}"')
    if backend == "pg-redis":
        import redis

        redis.Redis.from_url(REDIS_URL).flushdb()
    manage(env, "migrate", "--noinput")
    manage(env, "collectstatic", "--noinput")


SETUP = """
from bench.fixture import bench_setup
print(bench_setup())
"""

CLEAR = """
from bench.fixture import bench_clear
bench_clear()
"""

MISSING = """
import json
from bench.fixture import bench_missing
print(json.dumps(bench_missing({path!r})))
"""

STATS = """
import json
from bench.fixture import bench_stats
print(json.dumps(bench_stats()))
"""


# --- load ------------------------------------------------------------------------


def wrk(port: int, token: str, *, duration: float, connections: int) -> dict:
    threads = min(2, connections)
    env = dict(os.environ, BENCH_TOKEN=token)
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--latency",
        "-s",
        str(BASE_DIR / "bench" / "post.lua"),
        f"http://127.0.0.1:{port}/v1/api/bench/reference/async",
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {done.stdout}\n{done.stderr}")
    out = done.stdout
    # Requests in flight when wrk stopped are still answered (and committed) by the
    # server: let them land before anything counts or clears the table.
    time.sleep(1.5)
    return parse_wrk(out) | {"command": " ".join(cmd)}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[unit]


def parse_wrk(out: str) -> dict:
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.M))
    total = int(re.search(r"(\d+) requests in", out)[1])
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "requests": total,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]),
        "p50_ms": _ms(latency["50"]),
        "p99_ms": _ms(latency["99"]),
        "non_2xx": int(non2xx[1]) if non2xx else 0,
        "socket_errors": sum(map(int, errors.groups())) if errors else 0,
    }


def send_trigger(conn, body: bytes, headers: dict, uids: list, failures: list):
    """POST one trigger on a keep-alive connection, noting its uid or failure;
    returns the connection to use next (a new one after a broken one)."""
    import http.client

    try:
        conn.request("POST", "/v1/api/bench/reference/async", body, headers)
        response = conn.getresponse()
        payload = response.read()
        if response.status == 202:
            uids.append(json.loads(payload)["response"]["uid"])
        else:
            failures.append(f"{response.status} {payload[:200]!r}")
    except OSError as exc:
        failures.append(repr(exc))
        conn.close()
        conn = http.client.HTTPConnection(conn.host, conn.port, timeout=30)
    return conn


def fire(port: int, token: str, *, n: int, connections: int = 16) -> dict:
    """Send exactly n triggers over keep-alive connections; collect the uids."""
    import http.client

    body = json.dumps({"name": "e2e", "items": [1, 2, 3]}).encode()
    headers = {"token": token, "Content-Type": "application/json"}
    uids: list[str] = []
    failures: list[str] = []
    counter = iter(range(n))
    lock = threading.Lock()

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            with lock:
                if next(counter, None) is None:
                    break
            conn = send_trigger(conn, body, headers, uids, failures)
        conn.close()

    started = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    return {"uids": uids, "failures": failures, "rps": n / elapsed}


def paced(port: int, token: str, *, rate: float, seconds: float) -> int:
    """Send `rate` triggers/s for `seconds` from one thread (below saturation)."""
    url = f"http://127.0.0.1:{port}/v1/api/bench/reference/async"
    body = json.dumps({"name": "paced", "items": [1]}).encode()
    sent, start = 0, time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        if sent < elapsed * rate:
            req = urllib.request.Request(url, data=body, headers={"token": token}, method="POST")
            with urllib.request.urlopen(req, timeout=10) as response:  # noqa: S310 - loopback
                assert response.status == 202
            sent += 1
        else:
            time.sleep(0.0005)
    return sent


def soak(server: "Server", token: str, *, rate: float, seconds: float) -> dict:
    """Triggers at `rate`/s for `seconds` (web + workers), RSS of each kind of
    process every 10 s; the answered uids, for checking afterwards."""
    import http.client

    body = json.dumps({"name": "soak", "items": [1, 2, 3]}).encode()
    headers = {"token": token, "Content-Type": "application/json"}
    uids: list[str] = []
    failures: list[str] = []
    samples: list[dict] = []
    stop = threading.Event()
    start = time.monotonic()

    def sample():
        while not stop.wait(10):
            row = {"t": round(time.monotonic() - start)}
            for kind, pids in server.pids().items():
                row[kind] = max((rss_mb(p) for p in pids), default=0.0)
            samples.append(row)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    sent = 0
    while (elapsed := time.monotonic() - start) < seconds:
        if sent >= elapsed * rate:
            time.sleep(0.0005)
            continue
        sent += 1
        conn = send_trigger(conn, body, headers, uids, failures)
    conn.close()
    stop.set()
    sampler.join()
    return {
        "rate": rate,
        "seconds": seconds,
        "sent": sent,
        "uids": uids,
        "failures": failures,
        "rss_samples": samples,
    }


def wait_all_final(env: dict, timeout: float) -> dict:
    """Until every stored execution is final (the queue drained) or timeout."""
    deadline = time.monotonic() + timeout
    while True:
        stats = json.loads(django_shell(env, STATS))
        done = stats["total"] and stats["final"] == stats["total"] and not stats["queue"]
        if done or time.monotonic() > deadline:
            return stats
        time.sleep(1)


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


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in ["django", "django-q2", "granian", "psycopg", "redis"]:
        try:
            from importlib.metadata import version

            out[name] = version(name)
        except Exception:  # noqa: BLE001
            out[name] = "?"
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout
    out["wrk"] = wrk_version.split()[1]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--n", type=int, default=5000, help="triggers in the end-to-end phase")
    parser.add_argument("--e2e-timeout", type=float, default=300)
    parser.add_argument("--paced-rate", type=float, default=100)
    parser.add_argument("--paced-seconds", type=float, default=10)
    parser.add_argument("--quick", action="store_true", help="skip the paced phase")
    parser.add_argument(
        "--soak", type=float, default=0, help="seconds of steady load with workers (0: none)"
    )
    parser.add_argument("--soak-rate", type=float, default=300)
    parser.add_argument("--soak-backends", default="pg")
    parser.add_argument("--out", default=str(BASE_DIR / "var" / "bench-results.json"))
    parser.add_argument("--report", action="store_true", help="write docs/benchmarks.md + plot")
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    if not shutil.which("wrk"):
        sys.exit("bench needs wrk: apt-get install wrk")
    results = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": versions(),
        "args": {k: v for k, v in vars(args).items() if k not in {"out", "report"}},
        "backends": [bench_backend(b, args) for b in args.backends.split(",")],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"results: {args.out}")
    if args.report:
        from bench.report import write_report

        write_report(results)


if __name__ == "__main__":
    sys.path.insert(0, str(BASE_DIR))
    main()
