"""`make bench`: many live streams through this project, the direct SDK and Chainlit, in one run.

    .venv/bin/python bench/run.py [--streams 50,100,200] [--backends sqlite,postgres] [--quick]

An independent upstream (bench/upstream.py) streams `--tokens` stamped tokens per answer at
`--rate` per second. Against it, in turn:

- the direct SDK (bench/direct.py): the limit, with no relay;
- this project (bench/serve.py, one Daphne process) on SQLite with the in-memory channel layer
  and on PostgreSQL with channels-redis, C pages on the browser's socket protocol
  (bench/client.py), the server restarted and warmed up for each C;
- Chainlit 2.12 (bench/chainlit_peer/), the peer, in its own virtual environment;
- two Daphne processes on PostgreSQL + Redis, each answer written on one and watched on the
  other: channels-redis's core layer against its pub/sub layer;
- idle sockets: the server's memory per open, idle chat socket.

Latency is when a client first sees a token minus when the upstream wrote it. Server CPU is the
server process's user + system time during the load. Results go to bench/results/latest.json
and latest.png, and a table is printed with the issue's targets as ratios within this run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PYTHON = sys.executable
PEER = BENCH / "chainlit_peer"
PEER_PYTHON = BENCH / ".venv-chainlit" / "bin" / "python"
POSTGRES = "postgres://postgres@127.0.0.1:5432"
BENCH_DATABASE = "djchat_bench"
REDIS = "redis://127.0.0.1:6379/9"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# The session cookies the seed makes are signed with the servers' key.
SECRET_KEY = "bench-not-secret"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args!r} exited with {process.returncode}") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing answered on port {port}") from None
            time.sleep(0.1)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


@contextlib.contextmanager
def process(
    args: list[str], *, env: dict[str, str], port: int, log: Path, cwd: Path = ROOT
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as output:
        child = subprocess.Popen(
            args, cwd=cwd, env={**os.environ, **env}, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        wait_for_port(port, child)
        yield child
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def run_json(args: list[str], *, env: dict[str, str] | None = None, out: Path) -> dict[str, Any]:
    subprocess.run(
        args, cwd=ROOT, env={**os.environ, **(env or {})}, check=True, stdout=subprocess.DEVNULL
    )
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def run_load(args: list[str], *, out: Path, servers: list[int]) -> dict[str, Any]:
    """Run a load client (with --wait); the servers' CPU seconds while the answers stream."""
    client = subprocess.Popen(
        [*args, "--wait"], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert client.stdin is not None and client.stdout is not None
    for line in client.stdout:
        if line.strip() == "connected":
            break
    cpu = sum(cpu_seconds(pid) for pid in servers)
    client.stdin.write("go\n")
    client.stdin.flush()
    if client.wait() != 0:
        raise RuntimeError(f"{args[1]} failed with {client.returncode}")
    result: dict[str, Any] = json.loads(out.read_text())
    result["server_cpu_s"] = sum(cpu_seconds(pid) for pid in servers) - cpu
    return result


@dataclass
class Backend:
    name: str
    env: dict[str, str]


class Bench:
    def __init__(self, options: argparse.Namespace, work: Path) -> None:
        self.options = options
        self.work = work
        self.upstream = ""
        self.runs: list[dict[str, Any]] = []

    def log(self, text: str) -> None:
        print(text, flush=True)

    def path(self, name: str) -> Path:
        return self.work / name

    def record(self, run: dict[str, Any]) -> None:
        latencies = run.pop("latencies_ms", [])
        run["max_ms"] = max(latencies, default=None)
        run["mean_ms"] = sum(latencies) / len(latencies) if latencies else None
        cpu = run.get("server_cpu_s", run.get("cpu_s"))
        if cpu is not None and run.get("tokens_seen"):
            run["cpu_s_per_1000_tokens"] = cpu / run["tokens_seen"] * 1000
        self.runs.append(run)
        ms = lambda value: "-" if value is None else f"{value:.1f}"  # noqa: E731
        self.log(
            f"  {run['system']:<14} {run.get('backend', ''):<18} C={run['streams']:<4}"
            f" p50 {ms(run['p50_ms'])} / p99 {ms(run['p99_ms'])} ms,"
            f" completed {run['answers_completed']}/{run['streams']},"
            f" lost {run['tokens_lost']}, dup {run['tokens_duplicated']}"
            + (
                f", {run['cpu_s_per_1000_tokens']:.2f} CPU s / 1000 tokens"
                if "cpu_s_per_1000_tokens" in run
                else ""
            )
        )

    # The systems.

    def direct(self, streams: int) -> None:
        out = self.path(f"direct-{streams}.json")
        result = run_json(
            [
                PYTHON,
                str(BENCH / "direct.py"),
                f"--upstream={self.upstream}",
                f"--streams={streams}",
                f"--tokens={self.options.tokens}",
                f"--out={out}",
            ],
            out=out,
        )
        self.record(result)

    def server_env(self, backend: Backend) -> dict[str, str]:
        return {
            "SECRET_KEY": SECRET_KEY,
            "OPENAI_BASE_URL": self.upstream,
            "OPENAI_API_KEY": "bench",
            "LLM_MODEL": "bench-model",
            "LLM_MAX_RETRIES": "0",
            "LLM_BACKEND": "remote",
            **backend.env,
        }

    def prepare(self, backend: Backend) -> None:
        if backend.name.startswith("postgres"):
            import psycopg
            import redis

            with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as connection:
                connection.execute(f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)")
                connection.execute(f"CREATE DATABASE {BENCH_DATABASE}")
            redis.Redis.from_url(REDIS).flushdb()
        subprocess.run(
            [PYTHON, "manage.py", "migrate", "--noinput"],
            cwd=ROOT,
            env={**os.environ, **self.server_env(backend)},
            check=True,
            capture_output=True,
        )

    @contextlib.contextmanager
    def server(self, backend: Backend, name: str) -> Iterator[tuple[int, str, Path]]:
        port = free_port()
        writes = self.path(f"writes-{name}-{port}.json")
        with process(
            [PYTHON, str(BENCH / "serve.py"), f"--port={port}", f"--writes={writes}"],
            env=self.server_env(backend),
            port=port,
            log=self.path(f"server-{name}.log"),
        ) as child:
            yield child.pid, f"ws://127.0.0.1:{port}", writes

    def seed(self, backend: Backend, count: int, url: str, watch: str | None = None) -> Path:
        pages = self.path(f"pages-{time.monotonic_ns()}.json")
        args = [PYTHON, str(BENCH / "seed.py"), "pages", f"--count={count}", f"--url={url}"]
        if watch:
            args.append(f"--watch={watch}")
        with pages.open("w") as output:
            subprocess.run(
                args,
                cwd=ROOT,
                env={**os.environ, **self.server_env(backend)},
                stdout=output,
                check=True,
            )
        return pages

    def load(
        self, pages: Path, *, tokens: int, message: str = "go", servers: tuple[int, ...] = ()
    ) -> dict[str, Any]:
        out = self.path(f"client-{time.monotonic_ns()}.json")
        args = [
            PYTHON,
            str(BENCH / "client.py"),
            f"--pages={pages}",
            f"--tokens={tokens}",
            f"--timeout={self.options.timeout}",
            f"--message={message}",
            f"--out={out}",
        ]
        if servers:
            return run_load(args, out=out, servers=list(servers))
        return run_json(args, out=out)

    def rows(self, backend: Backend, pages: Path) -> dict[str, Any]:
        ids = ",".join(str(stream["conversation"]) for stream in json.loads(pages.read_text()))
        check = subprocess.run(
            [
                PYTHON,
                str(BENCH / "seed.py"),
                "check",
                f"--conversations={ids}",
                f"--tokens={self.options.tokens}",
            ],
            cwd=ROOT,
            env={**os.environ, **self.server_env(backend)},
            capture_output=True,
            check=True,
        )
        result: dict[str, Any] = json.loads(check.stdout)
        return result

    def project(self, backend: Backend, streams: int) -> None:
        with self.server(backend, backend.name) as (pid, url, writes):
            self.load(self.seed(backend, 1, url), tokens=2, message="tokens=2")  # warm up
            pages = self.seed(backend, streams, url)
            os.kill(pid, signal.SIGUSR1)
            time.sleep(0.2)
            writes_before = json.loads(writes.read_text())["writes"]
            result = self.load(pages, tokens=self.options.tokens, servers=(pid,))
            result["peak_rss_mb"] = memory_kib(pid, "VmHWM") / 1024
            # The last answers' final saves land just after their final frames.
            time.sleep(1.5)
            os.kill(pid, signal.SIGUSR1)
            time.sleep(0.2)
            written = json.loads(writes.read_text())["writes"] - writes_before
            result["db_writes_per_answer"] = written / streams
        result.update(self.rows(backend, pages))
        result["backend"] = backend.name
        self.record(result)

    def layers(self, layer: str, streams: int) -> None:
        backend = Backend(
            f"postgres+redis {layer}",
            {
                "DATABASE_URL": f"{POSTGRES}/{BENCH_DATABASE}",
                "REDIS_URL": REDIS,
                "CHANNEL_LAYER": layer,
            },
        )
        with (
            self.server(backend, f"{layer}-writer") as (writer_pid, writer_url, _),
            self.server(backend, f"{layer}-watcher") as (watcher_pid, watcher_url, _),
        ):
            warm = self.seed(backend, 1, writer_url, watch=watcher_url)
            self.load(warm, tokens=2, message="tokens=2")
            pages = self.seed(backend, streams, writer_url, watch=watcher_url)
            result = self.load(pages, tokens=self.options.tokens, servers=(writer_pid, watcher_pid))
        result["system"] = "2 processes"
        result["backend"] = f"redis {layer}"
        self.record(result)

    def peer(self, streams: int) -> None:
        port = free_port()
        with process(
            [
                str(BENCH / ".venv-chainlit" / "bin" / "chainlit"),
                "run",
                "app.py",
                "--headless",
                f"--port={port}",
                "--host=127.0.0.1",
            ],
            env={"UPSTREAM_BASE_URL": self.upstream},
            port=port,
            log=self.path("chainlit.log"),
            cwd=PEER,
        ) as child:
            url = f"http://127.0.0.1:{port}"
            client = [str(PEER_PYTHON), str(PEER / "client.py"), f"--url={url}"]
            warm = self.path("chainlit-warm.json")
            warm_up = [*client, "--streams=1", "--tokens=2", "--question=tokens=2"]
            run_json([*warm_up, f"--out={warm}"], out=warm)
            out = self.path(f"chainlit-{streams}.json")
            result = run_load(
                [
                    *client,
                    f"--streams={streams}",
                    f"--tokens={self.options.tokens}",
                    f"--timeout={self.options.timeout}",
                    f"--out={out}",
                ],
                out=out,
                servers=[child.pid],
            )
            result["peak_rss_mb"] = memory_kib(child.pid, "VmHWM") / 1024
        result["system"] = "Chainlit 2.12"
        self.record(result)

    def idle(self, count: int) -> None:
        backend = Backend("sqlite + memory", self.sqlite_env())
        with self.server(backend, "idle") as (pid, url, _):
            warm = self.seed(backend, 1, url)
            self.load(warm, tokens=2, message="tokens=2")
            pages = json.loads(self.seed(backend, count, url).read_text())
            before = memory_kib(pid, "VmRSS")
            writers = [stream["writer"] for stream in pages]
            after = asyncio.run(hold_open(writers, lambda: memory_kib(pid, "VmRSS")))
        per_socket = (after - before) / count
        self.log(f"  idle sockets: {count} open, {per_socket:.1f} KiB each")
        self.runs.append({"system": "idle sockets", "streams": count, "kib_per_socket": per_socket})

    def sqlite_env(self) -> dict[str, str]:
        return {"DATABASE_URL": f"sqlite:///{self.path('bench.sqlite3')}"}


async def hold_open(pages: list[dict[str, str]], measure: Any) -> int:
    from client import page_origin
    from websockets.asyncio.client import connect

    sockets = []
    for page in pages:
        sockets.append(
            await connect(
                page["url"],
                additional_headers={"Cookie": page["cookie"], "Origin": page_origin(page["url"])},
            )
        )
        await sockets[-1].recv()
    await asyncio.sleep(2)
    rss = int(measure())
    for opened in sockets:
        await opened.close()
    return rss


# Reporting.


def find(runs: list[dict[str, Any]], system: str, streams: int, backend: str = "") -> Any:
    for run in runs:
        if (
            run["system"] == system
            and run["streams"] == streams
            and run.get("backend", "") == backend
        ):
            return run
    return None


def ratio(numerator: float | None, denominator: float | None) -> str:
    if numerator is None or not denominator:
        return "n/a"
    return f"{numerator / denominator:.2f}×"


def targets(runs: list[dict[str, Any]], backends: list[str], streams: list[int]) -> list[str]:
    """The issue's targets, each as a ratio within this run."""
    lines = []
    for backend in backends:
        if 100 in streams:
            ours, peer = find(runs, "this project", 100, backend), find(runs, "Chainlit 2.12", 100)
            if ours and peer:
                lines.append(
                    f"100 streams, {backend}: p99 {ours['p99_ms']:.0f} ms = "
                    f"{ratio(ours['p99_ms'], peer['p99_ms'])} Chainlit's ({peer['p99_ms']:.0f} ms);"
                    " target ≤ 2×"
                )
        if 200 in streams:
            ours, peer = find(runs, "this project", 200, backend), find(runs, "Chainlit 2.12", 200)
            if ours and peer:
                lines.append(
                    f"200 streams, {backend}: p50 {ratio(ours['p50_ms'], peer['p50_ms'])}, p99 "
                    f"{ratio(ours['p99_ms'], peer['p99_ms'])} Chainlit's; target < 1× both; "
                    f"failed {ours['answers_failed']}, stuck {ours.get('answers_stuck')}, "
                    f"lost {ours['tokens_lost']}"
                )
        for count in streams:
            ours, direct = (
                find(runs, "this project", count, backend),
                find(runs, "direct SDK", count),
            )
            if ours and direct:
                per_token = ratio(
                    ours.get("cpu_s_per_1000_tokens"), direct.get("cpu_s_per_1000_tokens")
                )
                lines.append(
                    f"{count} streams, {backend}: CPU per token {per_token} the direct SDK's;"
                    " target ≤ 3×"
                )
        single, direct = find(runs, "this project", 1, backend), find(runs, "direct SDK", 1)
        if single and direct:
            bound = 3 * direct["p50_ms"] + 10
            lines.append(
                f"1 stream, {backend}: p50 {single['p50_ms']:.1f} ms; target ≤ 3 × "
                f"{direct['p50_ms']:.1f} + 10 = {bound:.1f} ms"
            )
    ours = [run for run in runs if run["system"] in ("this project", "2 processes")]
    lost = sum(run["tokens_lost"] + run.get("rows_tokens_lost", 0) for run in ours)
    duplicated = sum(
        run["tokens_duplicated"] + run.get("rows_tokens_duplicated", 0) for run in ours
    )
    lines.append(f"tokens lost {lost}, duplicated {duplicated} (sockets and rows); target 0")
    for run in runs:
        if run["system"] == "idle sockets":
            lines.append(f"idle socket: {run['kib_per_socket']:.1f} KiB; target ≤ 64 KiB")
    return lines


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        if "p50_ms" in run and run["streams"] > 1:
            label = run["system"] + (f" ({run['backend']})" if run.get("backend") else "")
            series.setdefault(label, []).append(run)
    figure, (latency, cpu) = plt.subplots(1, 2, figsize=(13, 5))
    for label, points in series.items():
        points.sort(key=lambda run: run["streams"])
        streams = [run["streams"] for run in points]
        line = latency.plot(
            streams, [run["p99_ms"] for run in points], marker="o", label=f"{label} p99"
        )
        latency.plot(
            streams,
            [run["p50_ms"] for run in points],
            marker=".",
            linestyle="--",
            color=line[0].get_color(),
            label=f"{label} p50",
        )
        if all("cpu_s_per_1000_tokens" in run for run in points):
            cpu.plot(
                streams, [run["cpu_s_per_1000_tokens"] for run in points], marker="o", label=label
            )
    latency.set(xlabel="concurrent streams", ylabel="token latency (ms)", yscale="log")
    latency.set_title("Latency from upstream write to client, per token")
    latency.legend(fontsize=7)
    cpu.set(xlabel="concurrent streams", ylabel="CPU seconds per 1,000 tokens")
    cpu.set_title("Server CPU per relayed token")
    cpu.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", default="50,100,200")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--layers", default="100", help="streams for the two-process comparison")
    parser.add_argument("--idle", type=int, default=500, help="idle sockets to hold open")
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--no-peer", action="store_true", help="leave Chainlit out")
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    options = parser.parse_args()
    streams = [int(value) for value in options.streams.split(",") if value]
    backends = {
        "sqlite": Backend("sqlite + memory", {}),
        "postgres": Backend(
            "postgres + redis",
            {"DATABASE_URL": f"{POSTGRES}/{BENCH_DATABASE}", "REDIS_URL": REDIS},
        ),
    }
    chosen = [backends[name] for name in options.backends.split(",") if name]
    options.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="djchat-bench-") as work_dir:
        bench = Bench(options, Path(work_dir))
        backends["sqlite"].env = bench.sqlite_env()
        peer = not options.no_peer and (
            subprocess.run(["bash", str(PEER / "install.sh")], cwd=ROOT).returncode == 0
        )
        port = free_port()
        with process(
            [
                PYTHON,
                str(BENCH / "upstream.py"),
                f"--port={port}",
                f"--tokens={options.tokens}",
                f"--rate={options.rate}",
            ],
            env={},
            port=port,
            log=bench.path("upstream.log"),
        ):
            bench.upstream = f"http://127.0.0.1:{port}/v1"
            counts = [1, *streams]
            bench.log(f"Upstream: {options.tokens} tokens per answer at {options.rate:g}/s")
            for count in counts:
                bench.direct(count)
            for backend in chosen:
                bench.prepare(backend)
                for count in counts:
                    bench.project(backend, count)
            if peer:
                for count in counts:
                    bench.peer(count)
            if "postgres" in options.backends:
                for layer in ("core", "pubsub"):
                    for count in [int(value) for value in options.layers.split(",") if value]:
                        bench.layers(layer, count)
            if options.idle:
                bench.prepare(backends["sqlite"])
                bench.idle(options.idle)
    report = {
        "machine": machine(),
        "config": {"tokens": options.tokens, "rate": options.rate, "streams": streams},
        "runs": bench.runs,
        "targets": targets(bench.runs, [backend.name for backend in chosen], streams),
    }
    (options.out / "latest.json").write_text(json.dumps(report, indent=2))
    plot(bench.runs, options.out / "latest.png")
    print("\nTargets (ratios within this run):")
    for line in report["targets"]:
        print("  " + line)
    print(f"\nWrote {options.out / 'latest.json'} and {options.out / 'latest.png'}")


if __name__ == "__main__":
    main()
