#!/usr/bin/env python3
"""Times the status page on a large audit log (the production setting: SQLite file store).

    python3 tools/wrk/status.py target/release/scim-bridge [--entries 100000] [--requests 15]

Lets the binary create a fresh store, writes --entries audit entries straight into it (two apps, 10,000
users, 88 % `ok`, 6 % `drift_found`, 2 % `needs_manual_action`, 3 % `unavailable`, 1 % `intent`: a log
with many entries needing a person, spread over 48 hours), then starts `serve` on it with the status
page and prints the median and worst time of each page over --requests requests (one untimed first).
The overview counts "needs a person" and the day's failures for every app: the indexes serve them.
"""
import argparse, hashlib, os, random, shutil, sqlite3, statistics, subprocess, sys, tempfile, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import free_port, wait_ready  # noqa: E402

ADMIN = "status-bench-admin-token"


def serve(binary, work, db):
    port, admin_port = free_port(), free_port()
    config = os.path.join(work, "status.yaml")
    with open(config, "w") as f:
        f.write(f"listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:{admin_port}\n"
                f"admin:\n  token_sha256: {hashlib.sha256(ADMIN.encode()).hexdigest()}\nstore:\n  path: {db}\napps:\n")
        for app in ("a1", "a2"):
            f.write(f"  {app}:\n    type: sandbox\n    token_sha256: {hashlib.sha256(app.encode()).hexdigest()}\n")
    proc = subprocess.Popen([binary, "serve", "--config", config], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(proc, admin_port)
    return proc, admin_port


def timed_get(admin_port, path):
    req = urllib.request.Request(f"http://127.0.0.1:{admin_port}{path}")
    req.add_header("Authorization", f"Bearer {ADMIN}")
    start = time.perf_counter()
    with urllib.request.urlopen(req, timeout=60) as r:
        r.read()
    return (time.perf_counter() - start) * 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=15)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="scim-status-")
    try:
        db = os.path.join(work, "store.sqlite")
        proc, _ = serve(a.binary, work, db)
        proc.terminate()
        proc.wait(timeout=30)
        conn = sqlite3.connect(db)
        rng = random.Random(7)
        now = time.time()
        rows = []
        for i in range(a.entries):
            user = rng.randrange(10_000)
            r = rng.random()
            outcome = ("ok" if r < 0.88 else "drift_found" if r < 0.94 else "needs_manual_action" if r < 0.96
                       else "unavailable" if r < 0.99 else "intent")
            at = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(now - 172_800 * (1 - i / a.entries)))
            name = f"user{user}@bench.example.com"
            doc = f'{{"userName":"{name}","name":{{"givenName":"A","familyName":"B"}},"active":true}}'
            rows.append((at, "a1" if i % 2 else "a2", "User", f"id{user}", name, name, "update", "entra", doc, doc,
                         outcome, 200, 1, 1))
        conn.executemany("INSERT INTO audit (at, app, resource_type, resource_id, name_key, name, operation, actor,"
                         " before, after, outcome, status, vendor_calls, attempts)"
                         " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        conn.commit()
        conn.close()
        proc, admin_port = serve(a.binary, work, db)
        try:
            print(f"== status page, {a.entries} audit entries, file store, {a.requests} requests each")
            print(f"{'page':<34} {'median ms':>10} {'max ms':>8}")
            for path in ["/", "/audit?outcome=needs_person", "/audit?outcome=failed", "/audit?app=a1"]:
                timed_get(admin_port, path)
                times = [timed_get(admin_port, path) for _ in range(a.requests)]
                print(f"{path:<34} {statistics.median(times):>10.1f} {max(times):>8.1f}")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
