#!/usr/bin/env python3
"""Per-call cost of shared MCP sessions (ADAPTER_SESSION_SHARING=broker) against sessions kept
in the adapter's process (=process), measured in pairs on one machine.

Two adapters built from the same binary talk to the same broker (and its Redis store): A keeps its
sessions in process, B shares them through the broker's store. Each round sends N requests on one
session of A, then N on one session of B (the order alternates every round), each on its own
keep-alive connection, and records per block the wall time per call and the CPU (utime+stime from
/proc/<pid>/stat) per call of that adapter, of the broker and of redis-server. The figures are
the medians over rounds of B − A: drift of a shared, loaded machine hits both sides of a pair alike.

    A_URL=http://127.0.0.1:PORT/mcp A_PID=… B_URL=… B_PID=… BROKER_PID=… REDIS_PID=… TOKEN=… \\
        ROUNDS=15 N=200 python3 bench/python/shared_cost.py

BENCHMARKS.md ("Shared adapter sessions") says how the stack was started.
"""
import http.client
import json
import os
import statistics
import sys
import time
from urllib.parse import urlparse


def cpu(pid: str) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Session:
    """One MCP session on one keep-alive connection."""

    def __init__(self, url: str, token: str) -> None:
        self.url = urlparse(url)
        self.conn = http.client.HTTPConnection(self.url.hostname, self.url.port)
        self.headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": "2025-06-18",
        }
        status, _, response = self.post({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "shared_cost", "version": "1"}},
        })
        assert status == 200, status
        self.headers["Mcp-Session-Id"] = response.getheader("mcp-session-id")
        self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def post(self, body: dict):
        self.conn.request("POST", self.url.path, json.dumps(body), self.headers)
        response = self.conn.getresponse()
        return response.status, response.read(), response


REQUESTS = {
    "tools/list": {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
    "tools/call refused before S3": {
        "jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "bucket_objects_list", "arguments": {"bucket": "x!"}}},
}


def block(session: Session, body: dict, n: int, pids: dict) -> dict:
    before = {k: cpu(p) for k, p in pids.items()}
    t0 = time.perf_counter()
    for _ in range(n):
        status, answer, _ = session.post(body)
        assert status == 200, (status, answer[:200])
    wall = (time.perf_counter() - t0) / n
    after = {k: cpu(p) for k, p in pids.items()}
    out = {"wall_us": wall * 1e6}
    for k in pids:
        out[f"{k}_us"] = (after[k] - before[k]) / n * 1e6
    return out


def main() -> int:
    env = os.environ
    rounds, n = int(env.get("ROUNDS", "15")), int(env.get("N", "200"))
    a = Session(env["A_URL"], env["TOKEN"])
    b = Session(env["B_URL"], env["TOKEN"])
    common = {"broker": env["BROKER_PID"], "redis": env["REDIS_PID"]}
    print(f"{rounds} rounds × {n} calls per side, A = sessions in process, B = shared through the broker")
    print(f"load1 at start: {os.getloadavg()[0]:.2f}")
    for name, body in REQUESTS.items():
        for s in (a, b):
            for _ in range(50):
                s.post(body)
        diffs: dict[str, list[float]] = {}
        sides: dict[str, dict[str, list[float]]] = {"A": {}, "B": {}}
        for r in range(rounds):
            order = [("A", a, env["A_PID"]), ("B", b, env["B_PID"])]
            if r % 2:
                order.reverse()
            got = {}
            for label, session, pid in order:
                got[label] = block(session, body, n, {"adapter": pid, **common})
                for k, v in got[label].items():
                    sides[label].setdefault(k, []).append(v)
            for k in got["A"]:
                diffs.setdefault(k, []).append(got["B"][k] - got["A"][k])
        print(f"\n{name}")
        print(f"  {'per call':12s} {'A median':>10s} {'B median':>10s} {'B−A median (paired)':>22s} {'B−A p25..p75':>18s}")
        for k in ("wall_us", "adapter_us", "broker_us", "redis_us"):
            d = sorted(diffs[k])
            q = statistics.quantiles(d, n=4)
            print(f"  {k:12s} {statistics.median(sides['A'][k]):10.0f} {statistics.median(sides['B'][k]):10.0f}"
                  f" {statistics.median(d):22.0f} {q[0]:8.0f}..{q[2]:<8.0f}")
    print(f"\nload1 at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
