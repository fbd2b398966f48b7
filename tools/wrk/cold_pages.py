#!/usr/bin/env python3
"""The first pages after a bulk load (the production setting: SQLite file store).

    python3 tools/wrk/cold_pages.py target/release/scim-bridge [--users 100000] [--rounds 4]

Starts `serve` with one `sandbox` app on a fresh file store, creates --users users (untimed), then sends
32 concurrent `GET /Users?startIndex=1&count=100` at once, --rounds times, and prints each round's fastest,
median and slowest answer. Round 0 is what the first Entra cycle or an admin sees after a start or an
import; the later rounds are the steady state (BENCHMARKS.md 2c, fifth pass).
"""
import argparse, concurrent.futures, os, shutil, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as R  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=4)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="scim-cold-")
    serve, base = R.start_sandbox(a.binary, work)
    try:
        def create(i):
            name = f"cold.{i}@bench.example.com"
            R.call("POST", f"{base}/Users", {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": name,
                                             "active": True, "emails": [{"type": "work", "primary": True, "value": name}]})

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            list(pool.map(create, range(a.users)))

        def first_page(_):
            start = time.perf_counter()
            R.call("GET", f"{base}/Users?startIndex=1&count=100")
            return (time.perf_counter() - start) * 1000

        print(f"== first pages after loading {a.users} users ({a.binary}), 32 at once per round")
        for n in range(a.rounds):
            with concurrent.futures.ThreadPoolExecutor(32) as pool:
                times = sorted(pool.map(first_page, range(32)))
            print(f"round {n}: min {times[0]:.1f} ms, median {times[16]:.1f} ms, max {times[-1]:.1f} ms")
    finally:
        serve.terminate()
        serve.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
