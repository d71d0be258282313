"""``vsml-es``: the command-line entry point (train, evaluate, bench, plot, export).

Errors a user can fix (bad config, missing run dir, corrupt checkpoint) are printed as
one line ``vsml-es: error: ...`` with exit code 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys


class UserError(Exception):
    """An error caused by input the user can fix; printed as one line."""


def _add_train(sub):
    p = sub.add_parser("train", help="meta-train an LA with ES (new run or --resume RUN_DIR)",
                       description="Meta-train a VSML learning algorithm with evolution strategies.")
    p.add_argument("config", nargs="?", help="YAML config, e.g. configs/demo.yaml")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. -o es.population=64 (repeatable)")
    p.add_argument("--run-dir", help="run directory (default: runs/<config>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last good checkpoint")
    p.add_argument("--workers", type=int, help="number of Ray workers (default: one per core / GPU)")
    p.add_argument("--address", help="local (default), none (in-process), auto, or ray://host:port")
    p.add_argument("--summary", action="store_true",
                   help="after training, meta-test the final vs the initial LA and print a table")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args) -> int:
    from vsml_es.es.trainer import train_command

    return train_command(args)


def _add_plot(sub):
    p = sub.add_parser("plot", help="PNG of a run's fitness and accuracy curves")
    p.add_argument("run_dir")
    p.add_argument("--out", help="output PNG (default: RUN_DIR/curves.png)")
    p.set_defaults(func=_cmd_plot)


def _cmd_plot(args) -> int:
    from vsml_es.runs.plot import plot_run

    out = plot_run(args.run_dir, args.out)
    print(f"wrote {out}")
    return 0


def _add_export(sub):
    p = sub.add_parser("export", help="the learned LA (ES mean) as a plain .npz file")
    p.add_argument("run_dir")
    p.add_argument("out", help="output .npz path")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args) -> int:
    from vsml_es.runs.run_dir import export_la

    out = export_la(args.run_dir, args.out)
    print(f"wrote {out}")
    return 0


def _add_evaluate(sub):
    p = sub.add_parser("evaluate", help="meta-test a run's LA on held-out datasets vs SGD/Adam")
    p.add_argument("run_dir")
    p.add_argument("--datasets", help="comma-separated dataset names (default: all available)")
    p.add_argument("--steps", type=int, help="episode length (default: 2000 as in the paper)")
    p.add_argument("--tasks", type=int, help="number of tasks (episodes) per dataset")
    p.add_argument("--baselines", default="sgd,adam", help="comma-separated baselines ('' for none)")
    p.add_argument("--name", default="meta_test", help="output name: RUN_DIR/eval/<name>.csv/.png")
    p.add_argument("--label-permutation", choices=("on", "off"),
                   help="a fresh permutation of the labels per task (default: as the run's "
                        "task.label_permutation)")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args) -> int:
    from vsml_es.evaluate import cli_main

    return cli_main(args)


def _add_bench(sub):
    p = sub.add_parser("bench", help="member-steps/s of the VSML step vs the textbook one")
    p.add_argument("--population", type=int, default=32)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--inputs", type=int, default=784)
    p.add_argument("--outputs", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--hidden", default="", help="hidden layer sizes, e.g. 32 or 32,16")
    p.add_argument("--members-per-vmap", type=int, default=None,
                   help="members per vmap (lax.map over groups); default: automatic")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--no-textbook", action="store_true", help="time only the fast step")
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(args) -> int:
    from vsml_es.bench import cli_main

    return cli_main(args)


def _add_clone(sub):
    p = sub.add_parser("clone", help="fit an LA that runs online SGD by forward running (LA cloning)",
                       description="Meta-learn backpropagation: fit the shared sub-RNN so each synapse "
                                   "reproduces online SGD on an ordinary layer (vsml_es/cloning.py).")
    p.add_argument("config", help="YAML config (its model section is used), e.g. configs/demo_pipeline.yaml")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable)")
    p.add_argument("--run-dir", help="run directory (default: runs/clone-<config>-<time>)")
    p.add_argument("--steps", type=int, default=2000, help="Adam steps (default 2000)")
    p.add_argument("--alpha", type=float, default=2.0,
                   help="SGD step per unit error*input on a synapse's weight (default 2.0)")
    p.add_argument("--logit-scale", type=float, default=1.0,
                   help="multiply the fitted forward messenger by this: a logit temperature that lifts "
                        "the clone's weight bound (default 1.0; the demo uses 2.5)")
    p.set_defaults(func=_cmd_clone)


def _cmd_clone(args) -> int:
    from vsml_es.cloning import clone_command

    return clone_command(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vsml-es", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_train, _add_evaluate, _add_bench, _add_plot, _add_export, _add_clone):
        add(sub)
    return parser


def main(argv=None) -> int:
    from vsml_es.config import ConfigError
    from vsml_es.runs.checkpoints import CheckpointError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UserError, ConfigError, CheckpointError, FileNotFoundError) as err:
        print(f"vsml-es: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    # Run the package module's main, not this __main__ copy: exception classes such as
    # UserError must be the ones the rest of the package raises.
    from vsml_es.cli import main as package_main

    sys.exit(package_main())
