"""Memory cost of an anonymous `initialize` flood against a real mcp-adapter (issue 12's bar).

Starts the adapter in `tools` mode (its broker address is dead on purpose: token-less
`initialize` needs no broker), opens 20 sessions to warm it up, reads its RSS, sends N token-less
`initialize` requests from 16 threads, reads its RSS again and prints the answers by status and
the growth. With the default cap (ADAPTER_MAX_ANONYMOUS_SESSIONS=256) the release build grows by
about 14 MiB (RELIABILITY.md).

    cargo build --release -p mcp-adapter
    python3 bench/python/anonymous_flood.py target/release/mcp-adapter 38411 256 3000
"""

import http.client
import json
import os
import subprocess
import sys
import threading
import time


def main() -> None:
    binary, port, cap, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    env = {
        "ADAPTER_LISTEN": f"127.0.0.1:{port}",
        "ADAPTER_BROKER_URL": "http://127.0.0.1:1",
        "ADAPTER_REQUIRE_AUTH": "tools",
        "ADAPTER_MAX_ANONYMOUS_SESSIONS": cap,
        "RUST_LOG": "warn",
        "PATH": "/usr/bin:/bin",
    }
    adapter = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        body = json.dumps({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "flood", "version": "1"}},
        })

        def rss_kib() -> int:
            with open(f"/proc/{adapter.pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
            raise RuntimeError("no VmRSS")

        def initialize() -> int:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("POST", "/mcp", body, {
                "Content-Type": "application/json",
                "Accept": "application/json, text/event-stream",
            })
            response = conn.getresponse()
            response.read()
            conn.close()
            return response.status

        for _ in range(100):  # until the adapter listens
            try:
                initialize()
                break
            except OSError:
                time.sleep(0.1)
        for _ in range(19):
            initialize()
        before = rss_kib()
        counts: dict[int, int] = {}
        lock = threading.Lock()

        def worker(k: int) -> None:
            for _ in range(k):
                status = initialize()
                with lock:
                    counts[status] = counts.get(status, 0) + 1

        threads = [threading.Thread(target=worker, args=(n // 16,)) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        after = rss_kib()
        print(f"{os.path.basename(binary)} cap={cap} n={n}: answers {counts}; "
              f"RSS {before} -> {after} KiB (+{(after - before) / 1024:.1f} MiB)")
    finally:
        adapter.terminate()
        adapter.wait()


if __name__ == "__main__":
    main()
