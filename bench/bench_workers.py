"""make bench-workers: label synthetic units through the distributed deployment, natively, against a
local fake OpenAI-compatible server with a fixed latency, and compare the throughput with the
latency-bound ideal for the concurrency.

Each unit costs two LLM calls in sequence (explain, then simulate: ``bench-http-simulation``), so
with ``C`` calls in flight the ideal is ``C / (2 × latency)`` units per second. Side by side in
the same run, on the same server, a bare client (``C`` threads calling the server directly,
no Celery, no store) measures what this machine can reach at all.

The deployment: a private redis-server (broker, results), a private PostgreSQL database (SQL
store), ``celery -A workers worker`` processes with thread pools on ``llm`` (``C / K`` threads in
all, each task labeling a group of ``K = --units-per-task`` units side by side: ``C`` calls in
flight) and one on ``index`` (Chroma directory). A warm-up batch loads the models first; the timed batch
is a fresh collection. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ADMIN_PG = "postgresql://postgres@127.0.0.1:5432/test"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(cond: Any, what: str, limit_s: float = 120.0) -> None:
    deadline = time.monotonic() + limit_s
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench-workers: gave up waiting for {what}")
        time.sleep(0.05)


def _get(url: str) -> dict[str, Any]:
    import httpx

    return httpx.get(url, timeout=5).json()


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its children (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def bare_ceiling(base_url: str, n_units: int, concurrency: int) -> float:
    """Units per second of ``concurrency`` threads making each unit's two calls directly."""
    import httpx

    todo = iter(range(n_units))
    lock = threading.Lock()
    body = {"model": "fake", "messages": [{"role": "user", "content": "explain"}]}
    sim = {
        "model": "fake",
        "messages": [{"role": "system", "content": "SIMULATE x"}, {"role": "user", "content": json.dumps(["a"] * 48)}],
    }

    def run() -> None:
        with httpx.Client(base_url=base_url, timeout=30) as client:
            while True:
                with lock:
                    if next(todo, None) is None:
                        return
                client.post("/chat/completions", json=body).raise_for_status()
                client.post("/chat/completions", json=sim).raise_for_status()

    start = time.monotonic()
    threads = [threading.Thread(target=run) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return n_units / (time.monotonic() - start)


def stage_cpu_ms(settings: Any, collection_id: str, unit_ids: list[str], opts: Any, units_per_task: int) -> float:
    """CPU milliseconds per unit of :func:`explainer.pipeline.group.label_group` called directly in this
    process on groups of ``units_per_task`` units (no Celery, no Redis; the same server and store),
    beside what the llm workers spent per unit."""
    from concurrent.futures import ThreadPoolExecutor

    from explainer.pipeline.group import label_group

    k = max(1, units_per_task)
    groups = [unit_ids[i : i + k] for i in range(0, len(unit_ids), k)]
    # imports and clients are made on first use: not counted
    label_group(settings, collection_id, groups[0], opts, opts)
    timed = groups[1:]
    with ThreadPoolExecutor(max(1, 64 // k)) as pool:  # groups side by side, as the workers run them
        start = time.process_time()
        list(pool.map(lambda g: label_group(settings, collection_id, g, opts, opts), timed))
    return (time.process_time() - start) / sum(len(g) for g in timed) * 1000


def measure(args: argparse.Namespace, latency: float) -> dict[str, Any]:
    """One deployment, one fixed latency: the timed batch's figures."""
    import psycopg

    tmp = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    db = f"bench_workers_{uuid.uuid4().hex[:8]}"
    procs: list[subprocess.Popen] = []
    try:
        with psycopg.connect(ADMIN_PG, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {db}")
        redis_port, llm_port = _free_port(), _free_port()
        procs.append(
            subprocess.Popen(
                ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                stdout=subprocess.DEVNULL,
            )
        )
        server = subprocess.Popen(
            [sys.executable, "-m", "bench.fake_openai", "--port", str(llm_port), "--latency", str(latency)],
            cwd=ROOT,
        )
        procs.append(server)
        base_url = f"http://127.0.0.1:{llm_port}/v1"
        env = {k: v for k, v in os.environ.items() if not k.startswith("EXPLAINER_")}
        env.update(
            EXPLAINER_DATA_DIR=str(tmp / "data"),
            EXPLAINER_BROKER_URL=f"redis://127.0.0.1:{redis_port}/0",
            EXPLAINER_RESULT_BACKEND=f"redis://127.0.0.1:{redis_port}/1",
            EXPLAINER_DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}",
            BENCH_SIMULATOR_URL=base_url,
            HF_HUB_OFFLINE="1",
            OMP_NUM_THREADS="1",
            TOKENIZERS_PARALLELISM="false",
            EXPLAINER_UNITS_PER_TASK=str(args.units_per_task),
        )
        os.environ.update({k: v for k, v in env.items() if k.startswith(("EXPLAINER_", "BENCH_"))})
        _wait(lambda: _port_open(llm_port) and _port_open(redis_port), "the fake server and redis-server")

        # Each llm task runs ``units_per_task`` units side by side: a worker's threads times that is
        # its share of the calls in flight.
        tasks_at_once = -(-args.concurrency // args.units_per_task)
        threads = [tasks_at_once // args.workers + (i < tasks_at_once % args.workers) for i in range(args.workers)]
        workers = []
        for i, n in enumerate(threads):
            workers.append(_worker(env, f"llm{i}", "llm", n, tmp))
        workers.append(_worker(env, "index", "index", args.index_threads, tmp))
        procs.extend(workers)

        import bench.http_scorer  # noqa: F401  (registers the scorer in this process too)
        from bench.synthetic import store_synthetic_collection
        from explainer.llm.chat import LLMConfig
        from explainer.pipeline.options import LabelOptions
        from explainer.runtime import get_store
        from explainer.settings import load_settings
        from workers.batch import label_units

        settings = load_settings()
        store = get_store(settings)
        warm = store_synthetic_collection(store, args.warmup, "warmup", model="warm")
        timed = store_synthetic_collection(store, args.units, "timed", model="synth")
        direct = store_synthetic_collection(store, 72, "direct", model="direct")
        opts = LabelOptions(
            explainer=LLMConfig(model="fake", base_url=base_url, max_retries=0, timeout_s=30),
            baseline_candidate=False,
            scorers=("bench-http-simulation",),
        )
        label_units(settings, "warmup", warm, opts, progress=False)

        bare = bare_ceiling(base_url, min(args.units, 1000), args.concurrency)
        before = _get(f"http://127.0.0.1:{llm_port}/stats")
        cpu0 = {p.pid: _cpu_s(p.pid) for p in procs}
        client_cpu0 = time.process_time()
        result = label_units(settings, "timed", timed, opts, progress=True)
        after = _get(f"http://127.0.0.1:{llm_port}/stats")
        cpu = {p.pid: _cpu_s(p.pid) - cpu0[p.pid] for p in procs}
        client_cpu = time.process_time() - client_cpu0
        stage_cpu = stage_cpu_ms(settings, "direct", direct, opts, args.units_per_task)
        from workers.tasks import index_stats_task

        stats = index_stats_task.apply_async().get(timeout=30)
        batches = {"batches": stats["batches"], "mean_size": round(stats["explanations"] / max(1, stats["batches"]), 1)}
    finally:
        for p in reversed(procs):  # workers first, while their broker is still there
            p.terminate()
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        try:
            with psycopg.connect(ADMIN_PG, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        except Exception as exc:  # noqa: BLE001
            print(f"could not drop {db}: {exc}", file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)

    ideal = args.concurrency / (2 * latency)
    achieved = args.units / result.seconds
    calls = after["calls"] - before["calls"]
    worker_cpu = sum(cpu[w.pid] for w in workers)
    cpu_ms = {
        "llm_workers": round(sum(cpu[w.pid] for w in workers[:-1]) / args.units * 1000, 2),
        "index_worker": round(cpu[workers[-1].pid] / args.units * 1000, 2),
        "client": round(client_cpu / args.units * 1000, 2),
    }
    out = {
        "units": args.units,
        "latency_s": latency,
        "concurrency": args.concurrency,
        "worker_processes": args.workers,
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "seconds": round(result.seconds, 2),
        "features_per_s": round(achieved, 1),
        "ideal_features_per_s": round(ideal, 1),
        "ratio_to_ideal": round(achieved / ideal, 3),
        "bare_client_features_per_s": round(bare, 1),
        "bare_ratio_to_ideal": round(bare / ideal, 3),
        "ratio_to_bare": round(achieved / bare, 3),
        "llm_calls": calls,
        "mean_calls_in_flight": round(calls * latency / result.seconds, 1),
        "max_calls_in_flight": after["max_in_flight"],
        "cpu_ms_per_unit": {**cpu_ms, "fake_server": round(cpu[server.pid] / args.units * 1000, 2)},
        "cpu_ms_per_unit_ours": round(sum(cpu_ms.values()), 2),
        "index_batches": batches,
        "units_per_task": args.units_per_task,
        "label_group_cpu_ms_per_unit_in_process": round(stage_cpu, 2),
        "cpu_bound_features_per_s": round(
            args.units / max(1e-9, (worker_cpu + client_cpu + cpu[server.pid])) * (os.cpu_count() or 1), 1
        ),
        "done": result.counts.get("done"),
        "failed": result.counts.get("failed"),
        "chain_errors": len(result.task_errors),
        "first_chain_error": next(iter(result.task_errors.values()), None),
    }
    print(
        f"\nlatency {latency * 1000:.0f} ms: {args.units} units, 2 calls of {latency * 1000:.0f} ms each, {args.concurrency} in flight: "
        f"{achieved:.1f} features/s against an ideal of {ideal:.1f} -> ratio {achieved / ideal:.3f} "
        f"(bare client on the same server: {bare:.1f}/s, ratio {bare / ideal:.3f}); "
        f"mean calls in flight {out['mean_calls_in_flight']}; worker CPU {worker_cpu / args.units * 1000:.1f} ms/unit "
        f"(explain + score of the groups alone, in-process: {stage_cpu:.1f} ms/unit); "
        f"our CPU in all {out['cpu_ms_per_unit_ours']} ms/unit {cpu_ms}",
        flush=True,
    )
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=1500)
    ap.add_argument("--latencies", default="1.0,0.1", help="seconds per fake LLM call, one run each")
    ap.add_argument("--concurrency", type=int, default=64, help="LLM calls in flight (worker threads in all)")
    ap.add_argument("--workers", type=int, default=2, help="llm worker processes sharing the concurrency")
    ap.add_argument("--index-threads", type=int, default=64, help="threads of the index worker (one batcher)")
    ap.add_argument("--warmup", type=int, default=64)
    ap.add_argument("--units-per-task", type=int, default=8, help="units an llm task labels side by side")
    ap.add_argument("--one", type=float, help=argparse.SUPPRESS)  # one latency, in a process of its own
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up when stopped
    if args.one is not None:
        one = measure(args, args.one)
        print(json.dumps(one))
        return one
    runs = {}
    for latency in [float(x) for x in args.latencies.split(",")]:
        # a process per deployment: Celery keeps its first broker and result backend for the process's life
        cmd = [sys.executable, "-m", "bench.bench_workers", "--one", str(latency)]
        for flag in ("units", "concurrency", "workers", "index_threads", "warmup", "units_per_task"):
            cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
        done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, check=True)
        lines = done.stdout.strip().splitlines()
        print("\n".join(lines[:-1]), flush=True)
        runs[f"latency_{latency:g}s" if latency >= 1 else f"latency_{latency * 1000:g}ms"] = json.loads(lines[-1])
    out: dict[str, Any] = {"bench": "workers", "cpus": os.cpu_count(), **runs}
    out["cpu_ms_per_unit_total"] = max(r["cpu_ms_per_unit_ours"] for r in runs.values())
    out["goals"] = {"ratio_to_ideal_at_1s": 0.8, "cpu_ms_per_unit_total": 10.0}
    one_s = runs.get("latency_1s")
    out["goals_met"] = {
        "ratio_to_ideal_at_1s": None if one_s is None else one_s["ratio_to_ideal"] >= 0.8,
        "cpu_ms_per_unit_total": out["cpu_ms_per_unit_total"] <= 10.0,
    }
    print(json.dumps(out))
    return out


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _worker(env: dict[str, str], name: str, queue: str, threads: int, tmp: Path) -> subprocess.Popen:
    log = open(tmp / f"{name}.log", "ab")
    return subprocess.Popen(
        [
            str(BIN / "celery"),
            "-A",
            "workers",
            "worker",
            "-I",
            "bench.http_scorer",
            "-Q",
            queue,
            "-n",
            f"{name}@%h",
            "-P",
            "threads",
            "-c",
            str(threads),
            "--loglevel",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


if __name__ == "__main__":
    main()
