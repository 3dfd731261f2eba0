"""The load the benchmark applies and reads back: wrk runs and their parsing,
keep-alive trigger bursts, a paced rate, a soak with workers, and the wait for
every run to be final."""

import json
import os
import re
import subprocess
import threading
import time
import urllib.request

from bench.harness import BASE_DIR, STATS, Server, django_shell, rss_mb

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
