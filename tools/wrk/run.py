#!/usr/bin/env python3
"""wrk against a real `scim-bridge serve` on the production setting (SQLite file store: every 2xx on disk).

    python3 tools/wrk/run.py target/release/scim-bridge [--seconds 5] [--connections 10] [--users 10000]

Starts the binary with one `sandbox` app (no vendor: the store is the work) on a fresh file store, loads
--users users (untimed), then runs wrk (Debian's `wrk` package) on each endpoint alone, in the order of
`scim-bridge-dev bench endpoints`: GET by id, filter by userName, POST, PATCH. wrk is a separate process
written in C, so the load generator costs the gateway far less CPU than the in-process bench client.
Prints one row per endpoint: requests/s, p50 and p99 latency, non-2xx answers.
"""
import argparse, concurrent.futures, hashlib, json, os, re, shutil, socket, subprocess, sys, tempfile, time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
TOKEN = "wrk-bench-token"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def call(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Bearer {TOKEN}")
    if data is not None:
        req.add_header("Content-Type", "application/scim+json")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"null")


def wrk(base, script, seconds, connections, env):
    out = subprocess.run(
        ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--latency", "-s", os.path.join(HERE, script),
         "-H", f"Authorization: Bearer {TOKEN}", "-H", "Content-Type: application/scim+json", base],
        capture_output=True, text=True, env=env, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    def pct(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return rate, pct(50), pct(99), int(bad.group(1)) if bad else 0, errors.group(0) if errors else ""


def start_sandbox(binary, work):
    """Starts `serve` with one `sandbox` app on a fresh file store in `work` and waits until it is ready;
    returns the process and the app's SCIM base URL."""
    port = free_port()
    config = os.path.join(work, "serve.yaml")
    with open(config, "w") as f:
        f.write(f"listen: 127.0.0.1:{port}\nstore:\n  path: {work}/store.sqlite\n"
                f"connections:\n  max_per_source: 1024\n"
                f"apps:\n  sandbox:\n    type: sandbox\n    token_sha256: {hashlib.sha256(TOKEN.encode()).hexdigest()}\n")
    log = open(os.path.join(work, "serve.log"), "w")
    serve = subprocess.Popen([binary, "serve", "--config", config], stdout=log, stderr=log)
    wait_ready(serve, port, f"see {work}/serve.log")
    return serve, f"http://127.0.0.1:{port}/scim/sandbox/v2"


def wait_ready(serve, port, hint=""):
    """Waits until `serve` answers /readyz on `port`; ends the run if it exits or is not ready in 20 s."""
    for _ in range(400):
        if serve.poll() is not None:
            sys.exit(f"serve exited at start {hint}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1)
            return
        except Exception:
            time.sleep(0.05)
    serve.terminate()
    sys.exit(f"serve did not become ready {hint}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=10)
    ap.add_argument("--users", type=int, default=10000)
    a = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install wrk")
    work = tempfile.mkdtemp(prefix="scim-wrk-")
    serve, base = start_sandbox(a.binary, work)
    try:
        run = str(os.getpid())
        def create(i):
            name = f"wrk.{run}.load.{i}@bench.example.com"
            doc = call("POST", f"{base}/Users", {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                                                 "userName": name, "active": True,
                                                 "name": {"givenName": "Tp", "familyName": "Load"},
                                                 "emails": [{"type": "work", "primary": True, "value": name}]})
            return doc["id"], name
        with concurrent.futures.ThreadPoolExecutor(a.connections) as pool:
            users = list(pool.map(create, range(a.users)))
        ids = os.path.join(work, "ids.txt")
        with open(ids, "w") as f:
            f.writelines(f"{i} {n}\n" for i, n in users)
        env = dict(os.environ, WRK_IDS=ids, WRK_DIR=HERE, WRK_RUN=run)
        print(f"== wrk: {a.connections} connections, {a.seconds}s per endpoint, `serve` with a SQLite file store "
              f"({a.binary}), {len(users)} users loaded first")
        print(f"{'endpoint':<8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
        for name, script in [("GET", "get.lua"), ("filter", "filter.lua"), ("POST", "post.lua"), ("PATCH", "patch.lua")]:
            rate, p50, p99, bad, errors = wrk(base, script, a.seconds, a.connections, env)
            print(f"{name:<8} {rate:>9.0f} {p50:>8.3f} {p99:>8.3f} {bad:>8} {errors}")
    finally:
        serve.terminate()
        serve.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
