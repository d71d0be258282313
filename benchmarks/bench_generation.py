"""One ES generation's evaluation with and without the project's XLA options (in-process).

    python benchmarks/bench_generation.py                       # configs/demo.yaml
    python benchmarks/bench_generation.py --config configs/mnist.yaml --generations 3

Builds the config's population evaluator twice in one process, once with
``VSML_ES_XLA_OPTIONS=off`` (plain ``jax.jit``) and once with ``vsml_es.xla_options``,
evaluates the same population for a warm-up generation (compilation), then alternates
the two for ``--generations`` timed generations. Prints wall and CPU seconds per
generation (median), their ratio (median of per-generation ratios) and the max
difference of the fitness values.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=os.path.join(ROOT, "configs", "demo.yaml"))
    ap.add_argument("-o", "--override", action="append", default=[])
    ap.add_argument("--generations", type=int, default=5, help="timed generations per variant")
    args = ap.parse_args(argv)

    import jax

    from vsml_es import xla_options
    from vsml_es.bench import population as make_population
    from vsml_es.config import load_config
    from vsml_es.es.dispatch import InProcessDispatcher

    cfg = load_config(args.config, args.override)
    dispatchers = {}
    for name, off in (("plain jax.jit", "off"), ("xla_options", "")):
        os.environ[xla_options.OFF_VARIABLE] = off  # read when the evaluator jits its chunks
        dispatchers[name] = InProcessDispatcher(cfg)
    os.environ.pop(xla_options.OFF_VARIABLE)
    evaluator = dispatchers["plain jax.jit"].evaluator
    population = make_population(evaluator.learner, jax.random.PRNGKey(1), cfg.es.population)
    steps = evaluator.member_steps

    fitness, first, times = {}, {}, {name: [] for name in dispatchers}
    for name, d in dispatchers.items():
        t0 = time.perf_counter()
        fitness[name] = d.evaluate(population, 0)[0]
        first[name] = time.perf_counter() - t0
    for g in range(1, args.generations + 1):
        for name, d in dispatchers.items():
            w0, c0 = time.perf_counter(), time.process_time()
            d.evaluate(population, g)
            times[name].append((time.perf_counter() - w0, time.process_time() - c0))

    print(f"config {os.path.relpath(args.config, ROOT)} {' '.join(args.override)}: population "
          f"{cfg.es.population}, {steps} steps per member, {os.cpu_count()} CPU cores, load average "
          f"{os.getloadavg()[0]:.1f}; options {xla_options.compiler_options(jax.default_backend())}")
    print("| evaluation | s / generation (wall) | CPU s / generation | first generation (compile + run) |")
    print("|---|---:|---:|---:|")
    for name, t in times.items():
        t = np.array(t)
        print(f"| {name} | {np.median(t[:, 0]):.3f} | {np.median(t[:, 1]):.3f} | {first[name]:.1f} |")
    plain, tuned = (np.array(t) for t in times.values())
    print(f"speed-up (median of per-generation ratios): wall {np.median(plain[:, 0] / tuned[:, 0]):.2f}x, "
          f"CPU {np.median(plain[:, 1] / tuned[:, 1]):.2f}x; max |fitness difference| "
          f"{np.abs(fitness['plain jax.jit'] - fitness['xla_options']).max():.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
