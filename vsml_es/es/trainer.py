"""The generation loop: ask -> evaluate (in-process or on Ray workers) -> tell -> log.

Determinism: every random draw is keyed by (seed, generation[, pair]) folded from one root
key, and the strategy state is checkpointed exactly, so a run resumed from its checkpoint
after ``g`` generations computes the same generations g, g+1, ... as an uninterrupted run
(bit-identical on CPU for the same worker layout).
"""

from __future__ import annotations

import dataclasses
import signal
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vsml_es.config import Config, ConfigError, config_hash, load_config
from vsml_es.es.evaluator import member_steps
from vsml_es.es.strategy import make_strategy, member_order
from vsml_es.model.network import make_vsml
from vsml_es.runs.checkpoints import Checkpointer, CheckpointError, signals_deferred
from vsml_es.runs.metrics import MetricsLog, read_metrics
from vsml_es.runs.progress import Progress
from vsml_es.runs.run_dir import LA_FILE, default_run_dir, read_config, save_la, write_config

# Sub-keys of the run's root key: one purpose each, never reused. _TASKS (1) is the one
# ``vsml_es.es.evaluator.task_root`` folds in; it is listed here so no other use takes it.
_LA_INIT, _TASKS, _ASK, _TELL, _ES_INIT = range(5)


class NonFiniteFitnessError(RuntimeError):
    """Every member of a generation had a NaN/inf fitness."""


class MetaSetup(NamedTuple):
    cfg: Config
    learner: Any
    initial_la: Any  # the LA the search starts from (also the shape template)
    strategy: Any
    es_params: Any
    order: np.ndarray  # vsml-es member i = strategy population index order[i]
    root_key: jax.Array


def init_la_available(cfg: Config) -> bool:
    """False when ``es.init_from`` names a file that is not (or no longer) there."""
    from vsml_es.es.strategy import init_la_file

    return not cfg.es.init_from or init_la_file(cfg.es.init_from).is_file()


def setup(cfg: Config, *, new_run: bool = True) -> MetaSetup:
    """The learner, strategy and initial LA of ``cfg``. A new run must find ``es.init_from``;
    a run that restores its checkpoint (resume, export, summary) only needs the LA's shape,
    so there the model's own init stands in when that file has moved."""
    learner = make_vsml(cfg.model)
    root = jax.random.PRNGKey(cfg.seed)
    initial_la = learner.init_params(jax.random.fold_in(root, _LA_INIT))
    if cfg.es.init_from and (new_run or init_la_available(cfg)):
        from vsml_es.es.strategy import load_init_la  # start at a cloned / trained LA

        initial_la = load_init_la(cfg.es.init_from, initial_la)
    strategy, es_params = make_strategy(cfg.es, initial_la)
    return MetaSetup(cfg, learner, initial_la, strategy, es_params, member_order(cfg.es), root)


def initial_es_state(s: MetaSetup):
    return s.strategy.init(jax.random.fold_in(s.root_key, _ES_INIT), s.initial_la, s.es_params)


class Restored(NamedTuple):
    es_state: Any
    generation: int
    mean_la: Any


def restore_run(cfg: Config, run_dir: Path, s: MetaSetup | None = None) -> Restored:
    """Latest readable checkpoint of ``run_dir``; refuses one made by a different config."""
    s = s or setup(cfg, new_run=False)
    ckpt = Checkpointer(run_dir, cfg.checkpoint.keep)
    try:
        es_state, _, generation, saved_hash = ckpt.restore_latest(initial_es_state(s), s.root_key)
    finally:
        ckpt.close()
    if saved_hash != config_hash(cfg):
        raise ConfigError(
            f"{run_dir} was trained with a different config (hash {saved_hash}, now {config_hash(cfg)}); "
            f"only es.generations, distributed.*, checkpoint.* and logging.* may change on resume")
    return Restored(es_state, generation, s.strategy.get_mean(es_state))


def _replace_nonfinite(loss: np.ndarray) -> tuple[np.ndarray, int]:
    bad = ~np.isfinite(loss)
    if bad.all():
        return loss, int(bad.sum())
    fitness = loss.copy()
    fitness[bad] = loss[~bad].max()  # the worst finite value
    return fitness, int(bad.sum())


class _Evaluation:
    """Periodic meta-test of the search mean on the first dataset's held-out split."""

    def __init__(self, cfg: Config, learner):
        from vsml_es.evaluate import meta_test
        from vsml_es.tasks.datasets import load_dataset

        self._meta_test = meta_test
        self._learner = learner
        self._dataset = load_dataset(cfg.task.datasets[0])
        self._tasks = cfg.logging.eval_tasks
        self._steps = cfg.logging.eval_episode_length or cfg.task.episode_length
        self._permute = cfg.task.label_permutation

    def __call__(self, la) -> dict:
        correct, _ = self._meta_test(self._learner, la, self._dataset, self._tasks, self._steps,
                                     label_permutation=self._permute)
        return {f"eval/{self._dataset.name}/accuracy": float(np.mean(correct))}


class _Stop(Exception):
    """Raised by the SIGTERM handler (preemption) to stop like Ctrl-C."""


class ESMetaStep:
    """One ES generation: ask, evaluate the members (via the dispatcher), tell.

    ``(state, g) -> (state, loss [P], accuracy [P], extra metrics)``. Non-finite losses are
    replaced by the worst finite one before ``tell``; if none is finite the state is
    returned unchanged and the loop stops the run.
    """

    def __init__(self, s: MetaSetup, dispatcher):
        self._s, self._dispatcher = s, dispatcher
        self._inv_order = np.argsort(s.order)
        self._ask_root = jax.random.fold_in(s.root_key, _ASK)
        self._tell_root = jax.random.fold_in(s.root_key, _TELL)

    @property
    def workers(self) -> int:
        return int(self._dispatcher.workers)

    def __call__(self, es_state, g: int):
        s = self._s
        population, asked = s.strategy.ask(jax.random.fold_in(self._ask_root, g), es_state, s.es_params)
        members = jax.tree_util.tree_map(lambda a: a[s.order], population)
        loss, acc = self._dispatcher.evaluate(members, g)
        loss = np.asarray(loss, np.float32)
        fitness, nonfinite = _replace_nonfinite(loss)
        if nonfinite == len(fitness):
            return es_state, loss, acc, {}
        es_state, _ = s.strategy.tell(jax.random.fold_in(self._tell_root, g), population,
                                      jnp.asarray(fitness[self._inv_order]), asked, s.es_params)
        sigma = float(jnp.mean(getattr(es_state, "std", jnp.nan)))
        return es_state, loss, acc, {"sigma": sigma, **getattr(self._dispatcher, "stats", {})}


def train(cfg: Config, run_dir: Path, dispatcher, *, resume: bool = False,
          progress: bool = True, log=print) -> dict:
    """Run (or continue) meta-training in ``run_dir``. Returns a short summary dict.

    ``es.strategy: gradient`` takes gradient steps in this process (``dispatcher`` unused, may be None);
    every other strategy is ES, evaluated by ``dispatcher``.
    """
    s = setup(cfg, new_run=not resume)
    if cfg.es.strategy == "gradient":
        from vsml_es.es.gradient import GradientMetaStep

        step = GradientMetaStep(cfg, s.learner, s.strategy)
    else:
        step = ESMetaStep(s, dispatcher)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume:
        restored = restore_run(cfg, run_dir, s)
        state, start = restored.es_state, restored.generation
        log(f"resuming {run_dir} after generation {start} of {cfg.es.generations}")
    else:
        state, start = initial_es_state(s), 0
    write_config(run_dir, cfg)
    digest = config_hash(cfg)
    ckpt = Checkpointer(run_dir, cfg.checkpoint.keep)
    metrics = MetricsLog(run_dir, cfg.logging.tensorboard, start)
    evaluation = _Evaluation(cfg, s.learner) if cfg.logging.eval_every else None
    steps_per_member = member_steps(cfg)
    bar = Progress(cfg.es.generations, start, enabled=progress)

    def checkpoint(generation: int, st) -> None:
        with signals_deferred():  # Ctrl-C lands after the checkpoint, never inside it
            metrics.flush()  # everything up to a checkpoint is on disk before it exists
            ckpt.save(generation, st, s.root_key, digest)
            save_la(run_dir / LA_FILE, s.strategy.get_mean(st), cfg, generation)

    if not resume:
        checkpoint(0, state)
    done = start  # generations completed and reflected in ``state``
    previous = signal.signal(signal.SIGTERM, _raise_stop) if _in_main_thread() else None
    status = "finished"
    try:
        for g in range(start, cfg.es.generations):
            row = {"generation": g}
            if evaluation is not None and (g % cfg.logging.eval_every == 0 or g == cfg.es.generations - 1):
                t_eval = time.time()
                row.update(evaluation(s.strategy.get_mean(state)))
                row["eval_seconds"] = time.time() - t_eval
            t0 = time.time()
            new_state, loss, acc, extra = step(state, g)
            finite = loss[np.isfinite(loss)]
            if finite.size == 0:
                last = ckpt.steps()[-1] if ckpt.steps() else None
                raise NonFiniteFitnessError(
                    f"every member of generation {g} had a non-finite fitness; the run stopped. "
                    f"Last good checkpoint: {run_dir / 'checkpoints' / str(last)} "
                    f"(try a smaller es.sigma or es.learning_rate, then resume or restart)")
            state, done = new_state, g + 1
            seconds = time.time() - t0
            row.update({
                "loss_mean": float(finite.mean()), "loss_best": float(finite.min()),
                "loss_std": float(finite.std()), "accuracy_mean": float(np.nanmean(acc)),
                "seconds": seconds,
                "member_steps_per_second": cfg.es.population * steps_per_member / seconds,
                "workers": step.workers, "nonfinite": int(loss.size - finite.size), **extra,
            })
            metrics.write(row)
            bar.update(row)
            if done % cfg.checkpoint.every == 0 or done == cfg.es.generations:
                checkpoint(done, state)
    except (KeyboardInterrupt, _Stop):
        status = "interrupted"
        bar.close()
        log(f"\ninterrupted after generation {done}; checkpoint saved. "
            f"Continue with: vsml-es train --resume {run_dir}")
        if done not in ckpt.steps():
            checkpoint(done, state)
    except Exception:
        status = "failed"
        if done not in ckpt.steps():
            checkpoint(done, state)
        raise
    finally:
        bar.close()
        metrics.close()
        ckpt.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return {"status": status, "generations": done, "run_dir": str(run_dir)}


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _raise_stop(signum, frame):
    raise _Stop()


def summarize(cfg: Config, run_dir: Path, log=print) -> None:
    """The end-of-run table: throughput, first/last generation, meta-test final vs initial LA."""
    from vsml_es.evaluate import episode_summary, meta_test
    from vsml_es.runs.plot import plot_run
    from vsml_es.tasks.datasets import load_dataset

    rows = read_metrics(run_dir)
    if not rows:
        return
    s = setup(cfg, new_run=False)
    final = restore_run(cfg, run_dir, s).mean_la
    ds = load_dataset(cfg.task.datasets[0])
    steps = cfg.logging.eval_episode_length or cfg.task.episode_length
    n_tasks = max(cfg.logging.eval_tasks, 16)
    table = []
    compared = [("initial LA", s.initial_la)] if init_la_available(cfg) else []
    for name, la in compared + [("final LA", final)]:
        correct, loss = meta_test(s.learner, la, ds, n_tasks, steps,
                                  label_permutation=cfg.task.label_permutation)
        w = episode_summary(np.asarray(correct))
        table.append((name, float(np.mean(loss)), w["whole"], w["first50"], w["second_half"]))
    speed = float(np.median([r["member_steps_per_second"] for r in rows]))
    first, last = rows[0], rows[-1]
    chance = 1.0 / ds.n_classes
    log("")
    log(f"run {run_dir}: {len(rows)} generations, population {cfg.es.population}, "
        f"episode {cfg.task.episode_length} steps, median {speed:,.0f} member-steps/s")
    log(f"  meta-train   generation {first['generation']:>5}: loss {first['loss_mean']:.4f}  "
        f"online acc {first['accuracy_mean']:.3f}")
    log(f"  meta-train   generation {last['generation']:>5}: loss {last['loss_mean']:.4f}  "
        f"online acc {last['accuracy_mean']:.3f}")
    labels = "fresh label permutations, " if cfg.task.label_permutation else ""
    log(f"  meta-test on held-out {ds.name} images, {labels}{n_tasks} tasks x {steps} steps "
        f"(chance {chance:.2f}):")
    log(f"    {'':<11} {'loss':>7} {'acc(all)':>9} {'acc(first 50)':>14} {'acc(2nd half)':>14}")
    for name, loss, acc, early, late in table:
        log(f"    {name:<11} {loss:7.4f} {acc:9.3f} {early:14.3f} {late:14.3f}")
    out = plot_run(run_dir)
    log(f"  curves: {out}")


def train_command(args) -> int:
    """``vsml-es train``: a new run from CONFIG, or ``--resume RUN_DIR``."""
    from vsml_es.cli import UserError
    from vsml_es.es.dispatch import DispatchError, make_dispatcher

    if args.resume:
        if args.config:
            raise UserError("give either CONFIG (new run) or --resume RUN_DIR, not both")
        run_dir = Path(args.resume)
        cfg = read_config(run_dir, args.override)
        if not any(p.name.isdigit() for p in (run_dir / "checkpoints").glob("*")):  # before starting workers
            raise CheckpointError(f"no checkpoint in {run_dir / 'checkpoints'}; start a new run instead of --resume")
    else:
        if not args.config:
            raise UserError("missing CONFIG: vsml-es train configs/demo.yaml (or --resume RUN_DIR)")
        cfg = load_config(args.config, args.override)
        run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(args.config)
        if (run_dir / "checkpoints").exists() and any((run_dir / "checkpoints").iterdir()):
            raise UserError(f"{run_dir} already holds a run; continue it with --resume {run_dir} "
                            f"or choose another --run-dir")
    dist = cfg.distributed
    if args.address is not None or args.workers is not None:
        dist = dataclasses.replace(dist, address=args.address or dist.address,
                                   workers=args.workers if args.workers is not None else dist.workers)
        from vsml_es.config import from_dict, to_dict

        cfg = from_dict({**to_dict(cfg), "distributed": dataclasses.asdict(dist)})
    print(f"run directory: {run_dir}  (tensorboard --logdir {run_dir})", file=sys.stderr)
    # Gradient meta-training takes its steps in this process: no dispatcher, no workers.
    dispatcher = None if cfg.es.strategy == "gradient" else make_dispatcher(cfg)
    try:
        result = train(cfg, run_dir, dispatcher, resume=bool(args.resume),
                       log=lambda m: print(m, file=sys.stderr))
    except (NonFiniteFitnessError, DispatchError) as err:
        raise UserError(f"{err} (checkpoint saved; continue with: vsml-es train --resume {run_dir})") from None
    finally:
        if dispatcher is not None:
            dispatcher.close()
    if result["status"] == "interrupted":
        return 130
    if getattr(args, "summary", False):
        summarize(cfg, run_dir)
    return 0
