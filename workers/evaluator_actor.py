"""The Ray worker: one :class:`EvaluatorActor` per device (GPU) or per CPU slot.

An actor builds one :class:`~vsml_es.es.evaluator.PopulationEvaluator` for the run's
config (datasets loaded and put on its device once) and compiles it for the pool's fixed
chunk size before it reports ready, so nothing compiles after the first generation: every
chunk it is sent has exactly ``chunk_size`` members (``workers.pool`` pads the last one).

Parameters travel as one float32 array ``[chunk_size, D]`` (the LA's leaves, each
flattened per member and concatenated in tree order); the actor rebuilds the pytree with
its own tree structure, so only numbers cross the wire, never pickled classes.

This module does not import ``ray`` or ``jax`` at import time: the pool wraps the class
with ``ray.remote`` and the environment (``XLA_PYTHON_CLIENT_PREALLOCATE`` and friends)
must be in place before JAX is first imported in the worker process.
"""

from __future__ import annotations

import os
import socket
import time

import numpy as np

# Environment every worker process gets (via the actor's runtime_env, and set again here in
# case the process was started without it). GPU workers share their device with nothing
# else in the run, but JAX's default preallocation (75 %) would starve anything that does.
WORKER_ENV = {
    "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
    "TF_CPP_MIN_LOG_LEVEL": "3",
}

CACHE_ENV = "VSML_ES_COMPILE_CACHE"


def default_cache_dir() -> str | None:
    """Persistent XLA compilation cache for workers: restarted or added workers load the
    compiled chunk function instead of compiling it again (seconds per worker on CPU).
    ``VSML_ES_COMPILE_CACHE=off`` disables it; ``JAX_COMPILATION_CACHE_DIR`` wins if set."""
    value = os.environ.get(CACHE_ENV, "")
    if value.lower() in ("off", "0", "none", "false"):
        return None
    return value or os.path.join(os.path.expanduser("~"), ".cache", "vsml-es", "xla")


def flatten_population(population) -> np.ndarray:
    """LA pytree with leading axis P -> float32 ``[P, D]`` (``ravel_pytree`` per member)."""
    import jax
    from jax.flatten_util import ravel_pytree

    flat = jax.vmap(lambda member: ravel_pytree(member)[0])(population)
    return np.ascontiguousarray(np.asarray(flat), dtype=np.float32)


class EvaluatorActor:
    """Evaluates fixed-size chunks of the population; wrapped by ``ray.remote`` in the pool.

    Args:
      cfg_dict: the run's resolved config as a plain dict (``vsml_es.config.to_dict``).
      chunk_size: members per call; the evaluation is compiled for exactly this size.
    """

    def __init__(self, cfg_dict: dict, chunk_size: int):
        t0 = time.time()
        for key, value in WORKER_ENV.items():
            os.environ.setdefault(key, value)
        import jax

        cache_dir = default_cache_dir()
        if cache_dir and not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
            os.makedirs(cache_dir, exist_ok=True)
            jax.config.update("jax_compilation_cache_dir", cache_dir)
        from vsml_es.config import from_dict
        from vsml_es.es.evaluator import PopulationEvaluator

        self.cfg = from_dict(cfg_dict)
        self.chunk_size = int(chunk_size)
        self.evaluator = PopulationEvaluator(self.cfg)
        from jax.flatten_util import ravel_pytree

        flat_template, unravel = ravel_pytree(self.evaluator.learner.init_params(jax.random.PRNGKey(0)))
        self._unravel_chunk = jax.jit(jax.vmap(unravel))  # [chunk, D] -> LA pytree [chunk, ...]
        self.n_params = int(flat_template.size)
        t1 = time.time()
        # Compile now (generation 0's task variants), so the first generation is not slower
        # than the rest and a restarted worker is ready when its probe returns.
        self.evaluate(np.zeros((self.chunk_size, self.n_params), np.float32), 0,
                      np.arange(self.chunk_size))
        self.setup_seconds = t1 - t0
        self.compile_seconds = time.time() - t1

    def info(self) -> dict:
        """Where this worker runs and what it computes (also the pool's liveness probe)."""
        import jax
        import ray

        ctx = ray.get_runtime_context()
        return {"pid": os.getpid(), "host": socket.gethostname(), "node_id": ctx.get_node_id(),
                "actor_id": ctx.get_actor_id(), "devices": [str(d) for d in jax.devices()],
                "chunk_size": self.chunk_size, "n_params": self.n_params,
                "setup_seconds": self.setup_seconds, "compile_seconds": self.compile_seconds}

    def evaluate(self, flat_params: np.ndarray, generation: int, member_ids: np.ndarray):
        """flat_params [chunk_size, D] float32, member_ids [chunk_size] -> (loss, acc) float32."""
        flat_params = np.asarray(flat_params, np.float32)
        member_ids = np.asarray(member_ids, np.int64)
        if flat_params.shape[0] != self.chunk_size or member_ids.shape != (self.chunk_size,):
            raise ValueError(f"chunk of {flat_params.shape[0]} members / {member_ids.shape} ids; "
                             f"this worker is compiled for exactly {self.chunk_size}")
        if flat_params.shape[1] != self.n_params:
            raise ValueError(f"parameter row has {flat_params.shape[1]} floats, this worker's LA has "
                             f"{self.n_params}")
        params = self._unravel_chunk(flat_params)
        loss, acc = self.evaluator(params, int(generation), member_ids)
        return np.asarray(loss, np.float32), np.asarray(acc, np.float32)
