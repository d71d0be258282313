"""Throughput of the VSML evaluation vs the textbook one; all of ``run_bench``'s options.

    python benchmarks/bench_step.py                       # = vsml-es bench (paper shape)
    python benchmarks/bench_step.py --population 256 --no-textbook
    python benchmarks/bench_step.py --inputs 3072 --hidden 32 --members-per-vmap 0

Prints one JSON line (keys: see vsml_es.bench.run_bench).
"""

import argparse
import sys

from vsml_es.bench import cli_main


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--population", type=int, default=32)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--inputs", type=int, default=784)
    p.add_argument("--outputs", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--hidden", type=int, nargs="*", default=[], dest="hidden_layers",
                   help="hidden layer sizes, e.g. --hidden 32")
    p.add_argument("--members-per-vmap", type=int, default=None,
                   help="members per vmap group (0: whole population; default: 4 on CPU, 0 on GPU)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--no-textbook", action="store_true", help="time the fast step only")
    return cli_main(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
