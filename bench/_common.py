"""Shared by the benchmark scripts: servers on 127.0.0.1, wrk runs, the test image, the machine's state.

Every script prints the exact command that produced its figures and what else the machine was doing,
because the figures of a 2-core machine shared with other jobs mean little without that.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import io
import json
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LUA = ROOT / "bench" / "multipart.lua"
BODY_LUA = ROOT / "bench" / "body.lua"
HOST = "127.0.0.1"
BOUNDARY = "aebench5f0c1e7d2a"  # of multipart_body


def command_line(module: str, argv: Sequence[str] | None = None) -> str:
    """The command that reproduces this run, as a user would type it from the repository root."""
    args = list(sys.argv[1:] if argv is None else argv)
    return shlex.join([".venv/bin/python", "-m", module, *args])


def machine_state() -> str:
    """Load averages and the busiest processes right now (top's second sample: current, not lifetime)."""
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    try:
        out = subprocess.run(
            ["top", "-b", "-c", "-n", "2", "-d", "1", "-w", "200", "-o", "%CPU"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return f"cores {os.cpu_count()}, load {load}"
    last = out[out.rfind("top - ") :].splitlines()
    header = next(i for i, line in enumerate(last) if line.lstrip().startswith("PID"))
    busy = []
    for line in last[header + 1 : header + 6]:
        cols = line.split(None, 11)
        if len(cols) == 12 and float(cols[8]) >= 5.0:
            busy.append(f"{cols[8]}% {cols[11][:70]}")
    procs = "; ".join(busy) if busy else "none above 5%"
    return f"cores {os.cpu_count()}, load {load}; busy: {procs}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def digit_png(directory: Path, noise: float = 0.3) -> Path:
    """A real MNIST test digit with the evaluation protocol's noise, as an 8-bit PNG (what users send)."""
    from PIL import Image

    from training import protocol
    from training.data import load_mnist5k

    clean = load_mnist5k().test_x[:1]
    noisy = protocol.noisy(clean, noise, 0)[0]
    out = io.BytesIO()
    Image.fromarray(np.clip(np.rint(noisy * 255), 0, 255).astype(np.uint8), "L").save(out, "PNG")
    path = directory / "digit.png"
    path.write_bytes(out.getvalue())
    return path


def get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_ready(proc: subprocess.Popen[bytes], port: int, path: str, timeout: float) -> None:
    """Poll ``path`` every 5 ms until it answers 200; fail if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before {path} answered 200")
        try:
            if get(port, path, timeout=1.0)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.005)
    raise RuntimeError(f"{path} did not answer 200 within {timeout} s")


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    ready_seconds: float  # process start to the first 200 from the readiness path
    log: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def rss_mib(self) -> float:
        """Resident memory of the server process, from /proc (VmRSS)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS line")

    def cpu_seconds(self) -> float:
        """CPU time (user + system, all threads) the server and its child processes (granian's and
        LitServe's workers) have used so far, from /proc/<pid>/stat.

        On a machine shared with other jobs, CPU time per request moves far less than wall time.
        """
        return sum(process_cpu_seconds(pid) for pid in _process_tree(self.proc.pid))


def _process_tree(root: int) -> list[int]:
    """``root`` and every live descendant, from the parent ids in /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def process_cpu_seconds(pid: int) -> float:
    # Fields after the parenthesised command name; utime and stime are the 12th and 13th of those.
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0  # ended meanwhile
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# Both read AE_HOST / AE_PORT, which serve() sets.
SERVICE_ARGV = [str(BIN / "ae-serve")]
ECHO_ARGV = [sys.executable, "-m", "bench.echo_app"]


@contextmanager
def serve(
    name: str, argv: Sequence[str], env: dict[str, str] | None = None, ready_path: str = "/readyz"
) -> Iterator[Server]:
    """Start a server on a free port, wait until ``ready_path`` answers 200, stop it afterwards."""
    port = free_port()
    full_env = {
        **os.environ,
        "AE_HOST": HOST,
        "AE_PORT": str(port),
        "PYTHONPATH": str(ROOT),
        **(env or {}),
    }
    log = Path(tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".log")[1])
    with log.open("wb") as sink:
        started = time.perf_counter()
        # A session of its own: stopping it stops its worker processes too (LitServe's, granian's).
        proc = subprocess.Popen(
            argv, env=full_env, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            wait_ready(proc, port, ready_path, timeout=120)
            server = Server(name, port, proc, time.perf_counter() - started, log)
            yield server
        finally:
            _stop_group(proc)
    log.unlink(missing_ok=True)


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # workers that outlived their parent


@dataclass
class WrkResult:
    connections: int
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int  # socket errors and timeouts
    non_2xx: int
    server_cpu_ms: float | None = None  # the server's CPU time per request, when measured

    def row(self) -> dict[str, float | int]:
        return asdict(self)


def wrk(
    url: str,
    image: Path,
    connections: int,
    seconds: float,
    timeout_s: int = 10,
    script: Path = LUA,
    script_args: Sequence[str] = (),
) -> WrkResult:
    """One ``wrk`` run (one thread: wrk must not take the cores the server needs): multipart uploads
    of ``image``, or with ``script=BODY_LUA`` the file as the raw body (``script_args``: its
    Content-Type and one optional header)."""
    argv = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        f"--timeout={timeout_s}s",
        "-s",
        str(script),
        url,
        "--",
        str(image),
        *script_args,
    ]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=seconds + 120)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out.stdout}\n{out.stderr}")
    s = json.loads(line[len("BENCH ") :])
    secs = s["duration_us"] / 1e6
    return WrkResult(
        connections=connections,
        requests=s["requests"],
        seconds=round(secs, 3),
        rps=s["requests"] / secs,
        p50_ms=s["p50_us"] / 1000,
        p90_ms=s["p90_us"] / 1000,
        p99_ms=s["p99_us"] / 1000,
        max_ms=s["max_us"] / 1000,
        errors=s["connect_errors"] + s["read_errors"] + s["write_errors"] + s["timeouts"],
        non_2xx=s["non_2xx"],
    )


def load_test(
    server: Server,
    path: str,
    image: Path,
    connections: int,
    seconds: float,
    script: Path = LUA,
    script_args: Sequence[str] = (),
) -> WrkResult:
    """:func:`wrk` against ``server``, with the server's CPU time per request."""
    before = server.cpu_seconds()
    result = wrk(f"{server.url}{path}", image, connections, seconds, script=script, script_args=script_args)
    result.server_cpu_ms = (server.cpu_seconds() - before) * 1000 / max(1, result.requests)
    return result


def interleaved_runs(
    variants: dict[str, dict[str, str]], path: str, concurrency: Sequence[int], seconds: float, rounds: int
) -> dict[tuple[str, int], list[WrkResult]]:
    """One ``ae-serve`` per variant (label → env), all up at once; each round loads each in turn.

    Interleaving the variants round by round makes background load hit them all alike. Prints a
    line per run; returns every run by (label, concurrency).
    """
    runs: dict[tuple[str, int], list[WrkResult]] = {}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        image = digit_png(Path(tmp))
        servers = {
            label: stack.enter_context(serve(label, SERVICE_ARGV, env)) for label, env in variants.items()
        }
        for round_ in range(rounds):
            for c in concurrency:
                for label, server in servers.items():
                    r = load_test(server, path, image, c, seconds)
                    runs.setdefault((label, c), []).append(r)
                    print(
                        f"round {round_ + 1} c={c} {label}: {r.rps:,.0f} req/s, p50 {r.p50_ms:.1f} ms, "
                        f"p99 {r.p99_ms:.1f} ms (non-2xx {r.non_2xx}, errors {r.errors})",
                        flush=True,
                    )
    return runs


def median_result(results: list[WrkResult]) -> WrkResult:
    """The round with the median throughput (its own latencies: never mix figures across rounds)."""
    ordered = sorted(results, key=lambda r: r.rps)
    return ordered[(len(ordered) - 1) // 2]


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def write_json(path: Path | None, payload: dict[str, object]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {path}")


def multipart_body(png: bytes) -> bytes:
    """One upload of ``png`` in the field ``file``, as the benchmarks send it (boundary BOUNDARY)."""
    return (
        (
            f"--{BOUNDARY}\r\n"
            'Content-Disposition: form-data; name="file"; filename="digit.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + png
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def asgi_post(app: Any, path: str, body: bytes) -> Callable[[], Awaitable[int]]:
    """One POST through the ASGI app with an in-memory body; returns the status."""
    headers = [
        (b"host", b"127.0.0.1"),
        (b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    path_only, _, query = path.partition("?")

    async def call() -> int:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path_only,
            "raw_path": path_only.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        sent = False
        status = 0

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(3600)  # a client that stays connected
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await app(scope, receive, send)
        if status != 200:
            raise RuntimeError(f"{path} answered {status}")
        return status

    return call
