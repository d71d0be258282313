"""Generation time on Ray workers vs in-process, and what a generation costs on the wire.

    python benchmarks/bench_workers.py                      # demo config, 1 and 2 workers
    python benchmarks/bench_workers.py --workers 1,2,4 -o es.population=64

Part 1 evaluates the same population for a few generations (after one warm-up generation,
so compilation is excluded) in this process (``--address none``) and on a local Ray
instance with each worker count, and prints seconds per generation, member-steps/s and the
scaling efficiency ``(t_1 worker / t_n workers) / n``. Fitness is checked equal across all
set-ups. On a machine with fewer free cores than workers the efficiency says so, honestly.

Part 2 needs no Ray: the bytes a generation sends to the workers (one float32 row of the
LA per member, plus member ids) and receives (loss and accuracy per member), pickled as
Ray pickles them, for populations 256 .. 8192 (the paper: 2048 members = 1024 pairs).
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def time_dispatcher(dispatcher, population, generations: int) -> tuple[float, np.ndarray, dict]:
    dispatcher.evaluate(population, 0)  # warm-up (compiles in-process; workers compiled at start)
    times = []
    for g in range(1, generations + 1):
        t0 = time.perf_counter()
        loss, _ = dispatcher.evaluate(population, g)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), loss, dict(dispatcher.stats)


def wire_table(n_params: int, populations=(256, 1024, 2048, 4096, 8192), chunk: int = 128) -> list[tuple]:
    """(population, raw params bytes, pickled bytes sent, pickled bytes received)."""
    rows = []
    rng = np.random.default_rng(0)
    for p in populations:
        flat = rng.standard_normal((p, n_params)).astype(np.float32)
        sent = 0
        for start in range(0, p, chunk):  # what RayDispatcher sends: (params rows, generation, ids)
            ids = np.arange(start, min(start + chunk, p))
            sent += len(pickle.dumps((flat[ids], 7, ids), protocol=5))
        back = len(pickle.dumps((np.zeros(p, np.float32), np.zeros(p, np.float32)), protocol=5))
        rows.append((p, flat.nbytes, sent, back))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=os.path.join(ROOT, "configs", "demo.yaml"))
    ap.add_argument("-o", "--override", action="append", default=[])
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    ap.add_argument("--generations", type=int, default=3, help="timed generations per set-up")
    ap.add_argument("--wire-only", action="store_true", help="only part 2 (no evaluation)")
    args = ap.parse_args(argv)

    from vsml_es.config import load_config
    from vsml_es.es.dispatch import InProcessDispatcher

    cfg = load_config(args.config, args.override)
    in_process = InProcessDispatcher(cfg)
    learner = in_process.evaluator.learner
    import jax

    n_params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(learner.init_params(jax.random.PRNGKey(0))))
    p, steps = cfg.es.population, in_process.evaluator.member_steps
    if not args.wire_only:
        import ray

        from workers.pool import RayDispatcher, bind_loopback

        from vsml_es.bench import population as make_population  # an LA and p members around it

        population = make_population(learner, jax.random.PRNGKey(1), p)
        counts = [int(w) for w in args.workers.split(",")]
        print(f"config {os.path.relpath(args.config, ROOT)} {' '.join(args.override)}: population {p}, "
              f"{steps} steps per member, {os.cpu_count()} CPU cores, load average "
              f"{os.getloadavg()[0]:.1f}", flush=True)
        rows = [("in-process", *time_dispatcher(in_process, population, args.generations))]
        bind_loopback()
        import warnings

        with warnings.catch_warnings():  # Ray fork+execs its processes; JAX's fork warning does not apply
            warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called")
            ray.init(address="local", num_cpus=max(counts), include_dashboard=False, logging_level="WARNING")
        try:
            for w in counts:
                with RayDispatcher(cfg, workers=w) as d:
                    rows.append((f"ray, {w} worker{'s' if w > 1 else ''}", *time_dispatcher(d, population, args.generations)))
        finally:
            ray.shutdown()
        ref = rows[0][2]
        t1 = next((r[1] for r in rows if r[0] == "ray, 1 worker"), None)
        print(f"\n| set-up | s / generation | member-steps/s | scaling efficiency | wait on slowest (s) | max |fitness - in-process| |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, sec, loss, stats in rows:
            eff = ""
            if t1 is not None and name.startswith("ray"):
                w = int(name.split()[1])
                eff = f"{t1 / sec / w:.2f}"
            print(f"| {name} | {sec:.3f} | {p * steps / sec:,.0f} | {eff} | "
                  f"{stats.get('wait_slowest_seconds', 0.0):.3f} | {np.abs(loss - ref).max():.1e} |")

    print(f"\nOn the wire per generation (LA = {n_params} float32 = {n_params * 4:,} B per member; "
          f"chunks of 128 members):")
    print("| population | params (raw) | sent (pickled) | received (pickled) | sent / member |")
    print("|---:|---:|---:|---:|---:|")
    for pop, raw, sent, back in wire_table(n_params):
        print(f"| {pop} | {raw / 1e6:.2f} MB | {sent / 1e6:.2f} MB | {back / 1e3:.1f} kB | {sent / pop:,.0f} B |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
