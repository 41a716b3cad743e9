"""What Ray Serve costs: ``/denoise`` through Ray Serve's proxy against ``ae-serve`` direct, one run.

Both run at once on this machine: ``ae-serve`` (one process, its defaults) and a local Ray cluster
(deploy/ray/local_cluster.py: a head with 0 CPUs and two worker nodes of one CPU, all on loopback)
with deploy/ray/serve.yaml deployed (two replicas, one per node). Rounds alternate the two, the same
PNG upload, wrk at each concurrency. Also: the cluster's start and deploy time, each replica's
resident memory, and all of the cluster's processes' memory together.

    .venv/bin/python -m bench.ray_overhead                          # c = 32, 3 rounds of 10 s
    .venv/bin/python -m bench.ray_overhead --concurrency 8 32 --rounds 5
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

import yaml  # type: ignore[import-untyped]

from bench._common import (
    ROOT,
    SERVICE_ARGV,
    WrkResult,
    command_line,
    digit_png,
    free_port,
    machine_state,
    median_result,
    process_cpu_seconds,
    serve,
    write_json,
    wrk,
)

sys.path.insert(0, str(ROOT / "deploy" / "ray"))
from local_cluster import SERVE_YAML, LocalCluster


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pids: set[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += process_cpu_seconds(pid)
        except OSError:
            continue
    return total


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", nargs="+", type=int, default=[32])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print(f"command: {command_line('bench.ray_overhead')}")
    print(f"machine before: {machine_state()}", flush=True)

    with tempfile.TemporaryDirectory(prefix="aeray-bench-", dir="/tmp") as tmp:
        temp = Path(tmp)
        image = digit_png(temp)
        http_port = free_port()
        config = yaml.safe_load(SERVE_YAML.read_text())
        config["http_options"]["port"] = http_port
        config_path = temp / "serve.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        cluster = LocalCluster(
            temp_dir=temp / "ray", base_port=random.randrange(20000, 31000, 100), dashboard_port=free_port()
        )
        try:
            start_s = cluster.start()
            deploy_s = cluster.deploy(config_path)
            print(f"ray cluster: 3 nodes up in {start_s:.1f} s, serve.yaml RUNNING {deploy_s:.1f} s later")
            replicas = cluster.replicas()
            replica_mib = [rss_mib(int(r["pid"])) for r in replicas]
            cluster_mib = sum(rss_mib(pid) for pid in cluster.pids())
            print(
                f"replica memory (RSS): {', '.join(f'{m:.0f}' for m in replica_mib)} MiB; "
                f"all {len(cluster.pids())} cluster processes: {cluster_mib:.0f} MiB",
                flush=True,
            )
            ray_url = f"http://127.0.0.1:{http_port}/denoise"
            replica_pids = {int(r["pid"]) for r in replicas}
            runs: dict[tuple[str, int], list[WrkResult]] = {}
            replica_cpu_ms: list[float] = []
            with serve("direct", SERVICE_ARGV) as direct:
                direct_mib = direct.rss_mib()
                print(f"ae-serve memory (RSS): {direct_mib:.0f} MiB; ready in {direct.ready_seconds:.2f} s")
                urls = {"ae-serve direct": f"{direct.url}/denoise", "Ray Serve proxy": ray_url}
                # CPU time per request: the server process, or every process of the cluster (and of
                # that, the replicas'), measured over each run.
                measured = {"ae-serve direct": {direct.proc.pid}, "Ray Serve proxy": cluster.pids()}
                # Warm both (first batches of each size pay onnxruntime's arena growth).
                for url in urls.values():
                    wrk(url, image, 32, 3)
                for round_ in range(args.rounds):
                    for c in args.concurrency:
                        for label, url in urls.items():
                            pids = measured[label]
                            before, before_replicas = cpu_seconds(pids), cpu_seconds(replica_pids)
                            r = wrk(url, image, c, args.seconds)
                            r.server_cpu_ms = (cpu_seconds(pids) - before) * 1000 / max(1, r.requests)
                            if label == "Ray Serve proxy":
                                replica_ms = (cpu_seconds(replica_pids) - before_replicas) * 1000
                                replica_cpu_ms.append(replica_ms / max(1, r.requests))
                            runs.setdefault((label, c), []).append(r)
                            print(
                                f"round {round_ + 1} c={c} {label}: {r.rps:,.0f} req/s, "
                                f"p50 {r.p50_ms:.1f} ms, "
                                f"p99 {r.p99_ms:.1f} ms, CPU {r.server_cpu_ms:.2f} ms/request "
                                f"(non-2xx {r.non_2xx}, errors {r.errors})",
                                flush=True,
                            )
        finally:
            cluster.stop()

    print(f"machine after: {machine_state()}")
    print("\nmedian round:")
    print("| concurrency | path | req/s | p50 ms | p99 ms | CPU ms/request | non-2xx | errors |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for (label, c), results in runs.items():
        m = median_result(results)
        rows.append({"path": label, **m.row()})
        print(
            f"| {c} | {label} | {m.rps:,.0f} | {m.p50_ms:.1f} | {m.p99_ms:.1f} | "
            f"{m.server_cpu_ms or 0:.2f} | {m.non_2xx} | {m.errors} |"
        )
    print(f"Ray: the replicas' CPU ms per request, each round: {[round(x, 2) for x in replica_cpu_ms]}")
    for c in args.concurrency:
        ray_rps = median_result(runs[("Ray Serve proxy", c)]).rps
        direct_rps = median_result(runs[("ae-serve direct", c)]).rps
        print(f"c={c}: Ray Serve / direct throughput = {ray_rps / direct_rps:.2f}")
    write_json(
        args.json,
        {
            "command": command_line("bench.ray_overhead"),
            "cluster_start_s": start_s,
            "deploy_s": deploy_s,
            "replica_rss_mib": replica_mib,
            "cluster_rss_mib": cluster_mib,
            "direct_rss_mib": direct_mib,
            "replica_cpu_ms_per_request": replica_cpu_ms,
            "runs": rows,
        },
    )


if __name__ == "__main__":
    main()
