"""Orbax checkpoints of the ES state: RUN_DIR/checkpoints/<generation>/.

Each checkpoint holds the strategy state (search distribution, optimiser state), the root
rng key, the number of completed generations and the config hash. Orbax writes to a
temporary directory and renames it when complete, so a killed learner never leaves a
half-written checkpoint under a final name; a checkpoint that is nevertheless unreadable
(disk error, manual damage) is skipped in favour of the previous one, with a warning
naming it. No pickle is involved anywhere (arrays in tensorstore, metadata as JSON).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
import warnings
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

logging.getLogger("absl").setLevel(logging.ERROR)


@contextlib.contextmanager
def signals_deferred():
    """Hold SIGINT/SIGTERM until the block ends, then deliver them: a Ctrl-C or preemption
    never interrupts a checkpoint write halfway (the handler would then write it again)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    old = {s: signal.signal(s, lambda signum, frame: received.append(signum))
           for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        for s in dict.fromkeys(received):
            signal.raise_signal(s)


class CheckpointError(RuntimeError):
    """No usable checkpoint, or one that belongs to a different config."""


class Checkpointer:
    def __init__(self, run_dir: str | Path, keep: int):
        self.directory = Path(run_dir).absolute() / "checkpoints"
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=False)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def save(self, generation: int, es_state, key: jax.Array, config_hash: str) -> None:
        tree = {"es_state": es_state, "key": jax.random.key_data(key)
                if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else key}
        meta = {"generation": int(generation), "config_hash": config_hash}
        with signals_deferred():
            self._manager.save(generation, args=ocp.args.Composite(
                state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)), force=True)
            self._manager.wait_until_finished()

    def steps(self) -> list[int]:
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def restore_latest(self, es_state_template, key_template):
        """Restore the newest readable checkpoint. Returns (es_state, key, generation, config_hash)."""
        steps = self.steps()
        if not steps:
            raise CheckpointError(f"no checkpoint in {self.directory}; start a new run instead of --resume")
        abstract = jax.tree_util.tree_map(
            ocp.utils.to_shape_dtype_struct, {"es_state": es_state_template, "key": key_template})
        for step in reversed(steps):
            try:
                restored = self._manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
                meta = restored["meta"]
                tree = restored["state"]
                _check_finite_tree(tree["es_state"], step)
                return tree["es_state"], tree["key"], int(meta["generation"]), meta["config_hash"]
            except Exception as err:  # any unreadable checkpoint: fall back to the previous one
                aside = self._quarantine(step)
                warnings.warn(f"checkpoint {self.directory / str(step)} is unreadable "
                              f"({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}); "
                              f"moved it to {aside.name} and fell back to the previous checkpoint",
                              stacklevel=2)
        raise CheckpointError(f"no readable checkpoint in {self.directory} (tried {steps}); "
                              f"the run cannot be resumed, start a new one")

    def _quarantine(self, step: int) -> Path:
        """Move an unreadable checkpoint aside (kept for inspection) so its step can be rewritten."""
        aside = self.directory / f"unreadable-{step}-{int(time.time())}"
        (self.directory / str(step)).rename(aside)
        self._manager.reload()
        return aside

    def close(self) -> None:
        self._manager.close()


def _check_finite_tree(es_state, step) -> None:
    # best_solution/best_fitness start as nan/inf in evosax; only the mean must be finite.
    mean = getattr(es_state, "mean", None)
    if mean is not None and not np.isfinite(np.asarray(mean)).all():
        raise ValueError(f"non-finite search mean in checkpoint {step}")
