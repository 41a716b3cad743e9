"""A multi-node Ray cluster on this machine, on loopback only, with ae-denoise deployed on it.

    python deploy/ray/local_cluster.py up      # head (0 CPUs) + 2 worker nodes, then serve.yaml
    python deploy/ray/local_cluster.py down    # stops every process the cluster started

(``make ray-up`` / ``make ray-down``; docs/scale-out.md.) The tests in tests/ray drive the same
class, :class:`LocalCluster`.

Loopback only. Ray turns ``--node-ip-address=127.0.0.1`` (and ``localhost``) into the machine's
network address unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, which worker nodes refuse. Any other
address of 127.0.0.0/8 is taken as given: every node gets one of its own (head 127.0.0.2, workers
127.0.0.3, ...), and every node, and so every process, reaches the GCS at the head's. No driver
joins the cluster: ``serve deploy`` and the status queries use the dashboard's HTTP API on
127.0.0.1. Each node also gets its own ports, so that several nodes (and clusters) share the host.

Each node is one ``ray start --block`` in a session of its own (``setsid``): stopping or killing a
node is a signal to its session, and nothing else on the machine is touched (never ``ray stop``,
which stops every Ray process of the machine).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
APP_DIR = Path(__file__).resolve().parent
SERVE_YAML = APP_DIR / "serve.yaml"
DEFAULT_TEMP_DIR = Path("/tmp/ae-denoise-ray")
# A raylet must register with the GCS within 30 s (fixed in ray/_private/node.py), and its
# dashboard agent must report its ports within 15 s (fixed in the raylet); on a loaded 2-core
# machine either can fail, and the node is then started again.
NODE_START_TRIES = 5
PORTS_PER_NODE = 100


def head_ip() -> str:
    return "127.0.0.2"


def node_ip(index: int) -> str:
    """Node 0 is the head; worker ``i`` (1, 2, ...) is ``127.0.0.{2 + i}``."""
    return f"127.0.0.{2 + index}"


@dataclass
class Node:
    index: int  # 0: the head
    ip: str
    pid: int  # the `ray start --block` process, leader of the node's session
    log: str


@dataclass
class LocalCluster:
    """Head with 0 CPUs and ``workers`` nodes of ``worker_cpus`` CPUs, all on 127.0.0.0/8."""

    temp_dir: Path = DEFAULT_TEMP_DIR
    workers: int = 2
    worker_cpus: int = 1
    base_port: int = 26000  # node i uses base_port + 100 * i ... + 99
    dashboard_port: int = 8265
    ray_bin: Path = Path(sys.executable).parent / "ray"
    nodes: dict[int, Node] = field(default_factory=dict)
    # The `ray start` processes this object started, to reap them once they end.
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)
    # Every session this object started (nodes killed and restarted included), for the clean-up.
    _sessions: set[int] = field(default_factory=set, repr=False)

    # --- addresses -------------------------------------------------------------------------------

    @property
    def gcs_address(self) -> str:
        return f"{head_ip()}:{self.base_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def env(self) -> dict[str, str]:
        """The nodes' environment: the app module importable, no usage reports, no AE_* of ours."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AE_", "RAY_"))}
        path = [str(APP_DIR), str(ROOT)]
        if env.get("PYTHONPATH"):
            path.append(env["PYTHONPATH"])
        env.update(
            PYTHONPATH=os.pathsep.join(path),
            RAY_USAGE_STATS_ENABLED="0",
            # A raylet waits this long for its agents to register (on a busy 2-core host, Python
            # agents can take more than the default).
            RAY_agent_register_timeout_ms="120000",
            ORT_DISABLE_TELEMETRY="1",
        )
        return env

    def _ports(self, index: int) -> list[str]:
        base = self.base_port + PORTS_PER_NODE * index
        return [
            f"--node-manager-port={base + 1}",
            f"--object-manager-port={base + 2}",
            f"--dashboard-agent-listen-port={base + 3}",
            f"--dashboard-agent-grpc-port={base + 4}",
            f"--runtime-env-agent-port={base + 5}",
            f"--metrics-export-port={base + 6}",
            f"--min-worker-port={base + 20}",
            f"--max-worker-port={base + PORTS_PER_NODE - 1}",
        ]

    def _argv(self, index: int) -> list[str]:
        common = [
            str(self.ray_bin),
            "start",
            "--block",
            f"--node-ip-address={node_ip(index)}",
            "--object-store-memory=100000000",
            "--disable-usage-stats",
            *self._ports(index),
        ]
        if index == 0:
            return [
                *common,
                "--head",
                f"--port={self.base_port}",
                "--num-cpus=0",
                f"--temp-dir={self.temp_dir}",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
                f"--ray-client-server-port={self.base_port + 7}",
            ]
        return [*common, f"--address={self.gcs_address}", f"--num-cpus={self.worker_cpus}"]

    # --- the dashboard's HTTP API ----------------------------------------------------------------

    def api(self, path: str, timeout: float = 10.0) -> Any:
        with urllib.request.urlopen(f"{self.dashboard_url}{path}", timeout=timeout) as response:
            return json.load(response)

    def alive_nodes(self) -> dict[str, str]:
        """node id -> node IP of the nodes the GCS has ALIVE."""
        try:
            answer = self.api("/api/v0/nodes?detail=true&limit=100")
        except (OSError, ValueError):
            return {}
        nodes = answer.get("data", {}).get("result", {}).get("result", [])
        return {n["node_id"]: n["node_ip"] for n in nodes if n.get("state") == "ALIVE"}

    def applications(self) -> dict[str, Any]:
        return dict(self.api("/api/serve/applications/")["applications"])

    # --- nodes -----------------------------------------------------------------------------------

    def _spawn(self, index: int) -> Node:
        log = self.temp_dir / f"node-{index}.log"
        with log.open("ab") as sink:
            proc = subprocess.Popen(
                self._argv(index),
                cwd=ROOT,
                env=self.env(),
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._procs.append(proc)
        self._sessions.add(proc.pid)
        node = Node(index, node_ip(index), proc.pid, str(log))
        self.nodes[index] = node
        self._save()
        return node

    def _wait_node(self, node: Node, stale: set[str], timeout: float) -> bool:
        """Until the GCS has a node ALIVE at ``node.ip`` other than the ``stale`` ids (a node killed
        a moment ago stays ALIVE there until its health checks fail)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(ip == node.ip and nid not in stale for nid, ip in self.alive_nodes().items()):
                return True
            if not _alive(node.pid):
                return False
            time.sleep(0.5)
        return False

    def start_node(self, index: int, timeout: float = 90.0) -> float:
        """Start node ``index`` (0: the head) and wait until the GCS has it ALIVE; its seconds."""
        started = time.monotonic()
        for _ in range(NODE_START_TRIES):
            stale = {nid for nid, ip in self.alive_nodes().items() if ip == node_ip(index)}
            node = self._spawn(index)
            if self._wait_node(node, stale, timeout):
                return time.monotonic() - started
            self.kill_node(index)
        raise RuntimeError(
            f"node {index} ({node_ip(index)}) did not start; see {self.temp_dir}/node-{index}.log"
        )

    def kill_node(self, index: int, sig: int = signal.SIGKILL) -> None:
        """Signal every process of node ``index`` (its session), at once; SIGKILL: a node lost."""
        node = self.nodes.pop(index, None)
        if node is None:
            return
        for pid in session_pids(node.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        self._reap({node.pid})
        self._save()

    def _reap(self, ended: set[int]) -> None:
        """Collect the exit status of the ``ray start`` processes in ``ended`` (no zombies left)."""
        for proc in self._procs:
            if proc.pid in ended:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
        self._procs = [proc for proc in self._procs if proc.poll() is None]

    def start(self) -> float:
        """The head, then each worker in turn (a raylet starting beside another may time out)."""
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        if (self.temp_dir / "cluster.json").exists():
            raise RuntimeError(f"a cluster is recorded in {self.temp_dir}/cluster.json: stop it first")
        started = time.monotonic()
        try:
            self.start_node(0)
            for index in range(1, self.workers + 1):
                self.start_node(index)
        except BaseException:
            self.stop()
            raise
        return time.monotonic() - started

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM every node's processes, SIGKILL what is left after ``grace_s``; workers first."""
        sessions = {node.pid for node in self.nodes.values()} | self._sessions
        for index in sorted(self.nodes, reverse=True):
            for pid in session_pids(self.nodes[index].pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(session_pids(s) for s in sessions):
            time.sleep(0.2)
        for session in sessions:
            for pid in session_pids(session):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        # A killed process lingers until the kernel has torn it down: wait for that.
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and any(session_pids(s) for s in sessions):
            time.sleep(0.1)
        self._reap(sessions)
        self.nodes.clear()
        (self.temp_dir / "cluster.json").unlink(missing_ok=True)

    def leftovers(self) -> set[int]:
        """Live processes of any session this object started: none once :meth:`stop` returned."""
        return {pid for session in self._sessions for pid in session_pids(session)}

    def pids(self) -> set[int]:
        """Every live process of the cluster."""
        return {pid for node in list(self.nodes.values()) for pid in session_pids(node.pid)}

    # --- Serve -----------------------------------------------------------------------------------

    def deploy(self, config: Path, timeout: float = 300.0) -> float:
        """``serve deploy`` ``config`` through the dashboard; seconds until every app is RUNNING."""
        started, wall = time.monotonic(), time.time()
        subprocess.run(
            [str(self.ray_bin.parent / "serve"), "deploy", "--address", self.dashboard_url, str(config)],
            cwd=ROOT,
            env=self.env(),
            check=True,
            capture_output=True,
            timeout=120,
        )
        self.wait_running(timeout, deployed_after=wall - 1.0)
        return time.monotonic() - started

    def wait_running(self, timeout: float = 300.0, deployed_after: float = 0.0) -> None:
        """Until every application deployed after ``deployed_after`` (epoch seconds) is RUNNING."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            try:
                apps = self.applications()
            except (OSError, ValueError, KeyError) as exc:
                last = exc
            else:
                last = {name: (a["status"], a.get("message", "")) for name, a in apps.items()}
                fresh = all(a.get("last_deployed_time_s", 0) >= deployed_after for a in apps.values())
                if apps and fresh and all(a["status"] == "RUNNING" for a in apps.values()):
                    return
                if fresh and any(a["status"] == "DEPLOY_FAILED" for a in apps.values()):
                    raise RuntimeError(f"deploy failed: {last}")
            time.sleep(0.5)
        raise RuntimeError(f"the applications were not RUNNING within {timeout} s: {last}")

    def replicas(self, app: str = "ae-denoise") -> list[dict[str, Any]]:
        """Every replica of every deployment of ``app``: state, node id and IP, pid, replica id."""
        deployments = self.applications()[app]["deployments"]
        return [r for d in deployments.values() for r in d["replicas"]]

    # --- state on disk, for `down` ---------------------------------------------------------------

    def _save(self) -> None:
        state = {
            "temp_dir": str(self.temp_dir),
            "workers": self.workers,
            "worker_cpus": self.worker_cpus,
            "base_port": self.base_port,
            "dashboard_port": self.dashboard_port,
            "nodes": {str(i): asdict(n) for i, n in self.nodes.items()},
        }
        (self.temp_dir / "cluster.json").write_text(json.dumps(state, indent=2) + "\n")

    @classmethod
    def load(cls, temp_dir: Path) -> LocalCluster:
        state = json.loads((temp_dir / "cluster.json").read_text())
        cluster = cls(
            temp_dir=Path(state["temp_dir"]),
            workers=state["workers"],
            worker_cpus=state["worker_cpus"],
            base_port=state["base_port"],
            dashboard_port=state["dashboard_port"],
        )
        cluster.nodes = {int(i): Node(**n) for i, n in state["nodes"].items()}
        return cluster


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def session_pids(session: int) -> list[int]:
    """Live processes of the session ``session`` leads (zombies excluded), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        # fields[0] is the state, fields[3] the session id (stat's 3rd and 6th fields).
        if fields[0] != "Z" and int(fields[3]) == session:
            found.append(int(entry.name))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--temp-dir", type=Path, default=DEFAULT_TEMP_DIR)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-cpus", type=int, default=1)
    parser.add_argument("--base-port", type=int, default=26000)
    parser.add_argument("--dashboard-port", type=int, default=8265)
    parser.add_argument("--config", type=Path, default=SERVE_YAML, help="Serve config to deploy")
    args = parser.parse_args()

    if args.command == "down":
        if not (args.temp_dir / "cluster.json").exists():
            print(f"no cluster recorded in {args.temp_dir}")
            return
        LocalCluster.load(args.temp_dir).stop()
        print("cluster stopped")
        return
    if args.command == "status":
        cluster = LocalCluster.load(args.temp_dir)
        print(json.dumps({"nodes": cluster.alive_nodes(), "replicas": cluster.replicas()}, indent=2))
        return
    cluster = LocalCluster(
        temp_dir=args.temp_dir,
        workers=args.workers,
        worker_cpus=args.worker_cpus,
        base_port=args.base_port,
        dashboard_port=args.dashboard_port,
    )
    up_s = cluster.start()
    print(
        f"cluster up in {up_s:.1f} s: head {head_ip()}, "
        f"workers {', '.join(node_ip(i) for i in range(1, args.workers + 1))}"
    )
    try:
        deploy_s = cluster.deploy(args.config)
    except BaseException:
        cluster.stop()
        raise
    print(f"{args.config} deployed in {deploy_s:.1f} s; dashboard {cluster.dashboard_url}")
    print(f"stop with: python deploy/ray/local_cluster.py down --temp-dir {args.temp_dir}")


if __name__ == "__main__":
    main()
