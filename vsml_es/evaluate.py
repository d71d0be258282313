"""Meta-test: run a learner online on held-out tasks and record per-step accuracy and loss.

``meta_test`` is the reusable core (the trainer calls it for periodic evaluation); the
``vsml-es evaluate`` command builds on it to compare a learned LA with SGD and Adam on the
very same example streams.
"""

from __future__ import annotations

import csv
import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from vsml_es import xla_options
from vsml_es.learner import Learner
from vsml_es.config import ConfigError
from vsml_es.tasks.datasets import (DATASETS, ChecksumError, Dataset, DatasetUnavailable,
                                    available_datasets, load_dataset)
from vsml_es.tasks.episode import run_task_episode
from vsml_es.tasks.sampling import TaskVariant


def task_keys(seed: int, n_tasks: int) -> jax.Array:
    """One key per meta-test task; identical for every learner given the same seed."""
    root = jax.random.PRNGKey(seed)
    return jax.vmap(lambda i: jax.random.fold_in(root, i))(jnp.arange(n_tasks))


@functools.lru_cache(maxsize=64)
def _tasks_fn(learner: Learner, n_classes: int, image_shape: tuple, variant: TaskVariant, steps: int,
              batch_size: int, label_permutation: bool):
    """One jitted function per (learner, task shape): params and data are arguments, so a
    learner's new params (the trainer's periodic evaluation) reuse the compiled code."""

    def one(params, key, x, y):
        res = run_task_episode(learner, params, key, x, y, n_classes, image_shape, variant, steps,
                               batch_size, label_permutation)
        return res.correct, res.loss

    return xla_options.jit(jax.vmap(one, in_axes=(None, 0, None, None)))


def meta_test(learner: Learner, params, dataset: Dataset | str, n_tasks: int, steps: int,
              seed: int = 22, *, batch_size: int = 1, label_permutation: bool = False,
              split: str = "test", n_way: int | None = None, resize: int = 0, proj_size: int = 0,
              tasks_per_call: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Run ``n_tasks`` online episodes of ``steps`` steps on a dataset's held-out split.

    Task ``i``'s example stream, its class subset / projection and the learner's state
    init are drawn from ``fold_in(PRNGKey(seed), i)``, so learners meta-tested with the
    same seed and options see the same examples in the same order. ``n_way`` (k-way class
    subsets), ``resize`` (image side) and ``proj_size`` (random projection of the inputs)
    build the task as :class:`~vsml_es.tasks.sampling.TaskVariant` does.

    Returns ``(correct [n_tasks, steps], loss [n_tasks, steps])`` as numpy float arrays:
    per-step online accuracy (fraction of the batch right) and cross-entropy.
    """
    ds = load_dataset(dataset) if isinstance(dataset, str) else dataset
    if split not in ("test", "train"):
        raise ValueError(f"split must be 'test' or 'train', got {split!r}")
    x = jnp.asarray(ds.test_x if split == "test" else ds.train_x)
    y = jnp.asarray(ds.test_y if split == "test" else ds.train_y)
    variant = TaskVariant(ds.name, min(n_way or ds.n_classes, ds.n_classes), resize, proj_size)
    run = _tasks_fn(learner, ds.n_classes, tuple(ds.image_shape), variant, steps, batch_size,
                    label_permutation)
    keys = task_keys(seed, n_tasks)
    correct, loss = [], []
    for start in range(0, n_tasks, tasks_per_call):
        k = keys[start:start + tasks_per_call]
        if k.shape[0] < tasks_per_call and n_tasks > tasks_per_call:  # keep one compiled shape
            k = jnp.concatenate([k, keys[:tasks_per_call - k.shape[0]]])
        c, l = run(params, k, x, y)
        take = min(tasks_per_call, n_tasks - start)
        correct.append(np.asarray(c)[:take])
        loss.append(np.asarray(l)[:take])
    return np.concatenate(correct).astype(np.float32), np.concatenate(loss).astype(np.float32)


# ---------------------------------------------------------------------------------------
# `vsml-es evaluate RUN_DIR`: the run's LA vs online SGD / Adam on the same streams.

LA_METHOD = "vsml"
DEFAULT_STEPS = 2000  # the paper's meta-test horizon (VSML.md §5)
DEFAULT_TASKS = 16


@dataclass(frozen=True)
class MetaTestSet:
    """A meta-test dataset, optionally transformed: ``name[/K-way][/Rpx][/projP]``, e.g.
    ``mnist_subset/14px`` (resized to 14x14) or ``digits/proj32`` (32 random projections)."""

    dataset: str
    n_way: int = 0
    resize: int = 0
    proj_size: int = 0

    @classmethod
    def parse(cls, text: str) -> "MetaTestSet":
        name, *mods = text.strip().split("/")
        kw = {}
        for m in mods:
            if m.endswith("-way") and m[:-4].isdigit():
                kw["n_way"] = int(m[:-4])
            elif m.endswith("px") and m[:-2].isdigit():
                kw["resize"] = int(m[:-2])
            elif m.startswith("proj") and m[4:].isdigit():
                kw["proj_size"] = int(m[4:])
            else:
                raise ValueError(f"dataset {text!r}: unknown modifier {m!r}; use K-way, Rpx or projP, "
                                 "e.g. mnist_subset/14px or digits/proj32")
        if name not in DATASETS:
            raise ValueError(f"unknown dataset {name!r} in {text!r}; available: {', '.join(sorted(DATASETS))}")
        return cls(name, **kw)

    @property
    def label(self) -> str:
        parts = [self.dataset]
        parts += [f"{self.n_way}-way"] if self.n_way else []
        parts += [f"{self.resize}px"] if self.resize else []
        parts += [f"proj{self.proj_size}"] if self.proj_size else []
        return "/".join(parts)

    def options(self) -> dict:
        return dict(n_way=self.n_way or None, resize=self.resize, proj_size=self.proj_size)


def episode_summary(correct: np.ndarray) -> dict:
    """correct [tasks, T] -> mean/std over tasks of accuracy in the last 10% of the episode,
    and means over the first 50 steps, the second half (issue 6's "last 250" of 500 steps)
    and the whole episode."""
    steps = correct.shape[1]
    last = correct[:, steps - max(1, steps // 10):].mean(1)
    return {"last10_mean": float(last.mean()), "last10_std": float(last.std()),
            "first50": float(correct[:, :50].mean()), "second_half": float(correct[:, steps // 2:].mean()),
            "whole": float(correct.mean())}


def tune_learning_rate(learner: Learner, grid, dataset: Dataset, n_tasks: int, steps: int,
                       options: dict, seed: int = 23) -> tuple[float, dict]:
    """Pick the learning rate with the best mean online accuracy on the *meta-train* split
    (never the test images), with the same task shapes as the meta-test."""
    from vsml_es.baselines.mlp import OnlineParams

    # Same array shapes as the test split, so the meta-test reuses the compiled function.
    pick = np.random.RandomState(seed).permutation(len(dataset.train_y))[:len(dataset.test_y)]
    tune_ds = dataset._replace(test_x=dataset.train_x[pick], test_y=dataset.train_y[pick])
    scores = {}
    for lr in grid:
        correct, _ = meta_test(learner, OnlineParams(jnp.float32(lr)), tune_ds, n_tasks, steps, seed,
                               **options)
        scores[float(lr)] = float(correct.mean())
    best = max(scores, key=lambda k: (scores[k], -k))
    return best, scores


def evaluate_run(run_dir: str | Path, *, datasets=None, steps: int = DEFAULT_STEPS, n_tasks: int = DEFAULT_TASKS,
                 baselines=("sgd", "adam"), name: str = "meta_test", tune: bool = True, seed: int = 22,
                 label_permutation: bool | None = None, log=print) -> list[dict]:
    """Meta-test the run's learned LA and the baselines; write CSV, PNG, JSON, TensorBoard.

    Every task draws a fresh permutation of the labels when ``label_permutation`` is on
    (``None``: as the run was meta-trained, ``task.label_permutation``). Returns one
    summary dict per (dataset, method).
    """
    from vsml_es.baselines import BASELINES
    from vsml_es.baselines.mlp import OnlineParams
    from vsml_es.model.network import make_vsml
    from vsml_es.runs.run_dir import load_la, read_config

    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    if label_permutation is None:
        label_permutation = cfg.task.label_permutation
    la_path = run_dir / "learned_la.npz"
    if not la_path.is_file():
        raise FileNotFoundError(f"{la_path} not found: the run has not saved an LA yet (it is written "
                                "with each checkpoint)")
    la = load_la(la_path)
    for b in baselines:
        if b not in BASELINES:
            raise ValueError(f"unknown baseline {b!r}; available: {', '.join(BASELINES)}")
    sets = [MetaTestSet.parse(d) for d in datasets] if datasets else [MetaTestSet(d) for d in available_datasets()]
    vsml = make_vsml(cfg.model)
    out_dir = run_dir / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    curves: dict = {}
    summary: list[dict] = []
    for ts in sets:
        ds = load_dataset(ts.dataset)
        seen = ts.dataset in cfg.task.datasets
        opts = {**ts.options(), "label_permutation": label_permutation}
        log(f"meta-test {ts.label} ({'seen' if seen else 'unseen'} in meta-training): "
            f"{n_tasks} tasks x {steps} steps on {len(ds.test_y)} held-out examples"
            + (", fresh label permutation per task" if label_permutation else ""))
        methods = [(LA_METHOD, vsml, la, None, {})]
        for b in baselines:
            spec = BASELINES[b]
            learner = spec.make()
            lr, scores = (tune_learning_rate(learner, spec.grid, ds, n_tasks, steps, opts)
                          if tune else (spec.learning_rate, {}))
            methods.append((b, learner, OnlineParams(jnp.float32(lr)), lr, scores))
        for method, learner, params, lr, scores in methods:
            correct, loss = meta_test(learner, params, ds, n_tasks, steps, seed, **opts)
            curves[(ts.label, method)] = (correct, loss)
            row = {"dataset": ts.label, "method": method, "seen": seen, "tasks": n_tasks, "steps": steps,
                   "label_permutation": label_permutation,
                   **episode_summary(correct), "loss": float(loss.mean())}
            if lr is not None:
                row.update(learning_rate=lr, paper_learning_rate=BASELINES[method].learning_rate,
                           lr_scores=scores)
            summary.append(row)
    _write_csv(out_dir / f"{name}.csv", curves)
    (out_dir / f"{name}.json").write_text(json.dumps(summary, indent=1))
    _plot(out_dir / f"{name}.png", curves, steps)
    _tensorboard(run_dir, name, curves, summary)
    for line in format_table(summary):
        log(line)
    log(f"wrote {out_dir / (name + '.csv')}, {name}.png, {name}.json and TensorBoard scalars in {run_dir}")
    return summary


def format_table(summary: list[dict]) -> list[str]:
    head = (f"{'dataset':<22}{'seen':<6}{'method':<12}{'last 10%':>16}{'first 50':>10}{'2nd half':>10}"
            f"{'episode':>9}{'lr (paper)':>18}")
    lines = [head, "-" * len(head)]
    for r in summary:
        lr = f"{r['learning_rate']:g} ({r['paper_learning_rate']:g})" if "learning_rate" in r else ""
        lines.append(f"{r['dataset']:<22}{'yes' if r['seen'] else 'no':<6}{r['method']:<12}"
                     f"{r['last10_mean']:>9.3f} ± {r['last10_std']:.3f}{r['first50']:>10.3f}"
                     f"{r['second_half']:>10.3f}{r['whole']:>9.3f}"
                     f"{lr:>18}")
    return lines


def _write_csv(path: Path, curves: dict) -> None:
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dataset", "method", "task", "step", "accuracy", "loss"])
        for (dataset, method), (correct, loss) in curves.items():
            for task in range(correct.shape[0]):
                for step in range(correct.shape[1]):
                    w.writerow([dataset, method, task, step + 1, f"{correct[task, step]:.6g}",
                                f"{loss[task, step]:.6g}"])
    os.replace(tmp, path)


def smooth(curve: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average along the last axis (window shrinks at the start)."""
    c = np.cumsum(curve, axis=-1)
    out = c.copy()
    out[..., window:] = c[..., window:] - c[..., :-window]
    n = np.minimum(np.arange(1, curve.shape[-1] + 1), window)
    return out / n


def _plot(path: Path, curves: dict, steps: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(d for d, _ in curves))
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    window = max(1, steps // 40)
    for ax, dname in zip(axes.flat, names):
        for (d, method), (correct, _) in curves.items():
            if d != dname:
                continue
            sm = smooth(correct, window)
            mean, sem = sm.mean(0), sm.std(0) / np.sqrt(max(1, sm.shape[0]))
            t = np.arange(1, steps + 1)
            ax.plot(t, mean, label=method)
            ax.fill_between(t, mean - sem, mean + sem, alpha=0.25)
        ax.set_title(dname)
        ax.set_xlabel("step")
        ax.set_ylabel(f"online accuracy (avg over {window} steps)")
        ax.set_ylim(0, 1)
        ax.legend(title="mean ± s.e. over tasks", fontsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".part.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def _tensorboard(run_dir: Path, name: str, curves: dict, summary: list[dict]) -> None:
    from tensorboardX import SummaryWriter

    writer = SummaryWriter(str(run_dir), filename_suffix=f".{name}")
    try:
        for (dataset, method), (correct, _) in curves.items():
            mean = correct.mean(0)
            stride = max(1, len(mean) // 500)  # at most ~500 points per curve
            for step in range(0, len(mean), stride):
                writer.add_scalar(f"{name}/{dataset}/{method}/online_accuracy", float(mean[step]), step + 1)
        for r in summary:
            writer.add_scalar(f"{name}/{r['dataset']}/{r['method']}/last10_accuracy", r["last10_mean"], 0)
    finally:
        writer.close()


def cli_main(args) -> int:
    """``vsml-es evaluate RUN_DIR [--datasets a,b] [--steps N] [--tasks N] [--baselines sgd,adam]``."""
    from vsml_es.cli import UserError

    datasets = [d for d in (args.datasets or "").split(",") if d.strip()] or None
    baselines = tuple(b.strip() for b in (args.baselines or "").split(",") if b.strip())
    steps = args.steps or DEFAULT_STEPS
    n_tasks = args.tasks or DEFAULT_TASKS
    if steps < 1 or n_tasks < 1:
        raise UserError(f"--steps and --tasks must be >= 1 (got {steps}, {n_tasks})")
    try:
        evaluate_run(args.run_dir, datasets=datasets, steps=steps, n_tasks=n_tasks, baselines=baselines,
                     name=args.name or "meta_test", tune=getattr(args, "tune", True),
                     label_permutation={"on": True, "off": False}.get(getattr(args, "label_permutation", None)))
    except (ValueError, DatasetUnavailable, ChecksumError) as err:
        if isinstance(err, ConfigError):
            raise
        raise UserError(str(err)) from None
    return 0
