"""The learner's side of Ray: connect, start one worker per device, farm out chunks.

:class:`RayDispatcher` is what ``vsml_es.es.dispatch.make_dispatcher`` returns for any
address other than ``none``. Per generation it splits the population into chunks of a
fixed size (the last one padded with copies of its last member, whose results are
dropped), keeps up to ``max_in_flight`` chunks queued on every worker so none idles
between chunks, and gathers ``(loss, accuracy)`` in member order. A member's fitness
depends only on (seed, generation, member index), so the result does not depend on the
number of workers, on which worker ran which chunk, or on how often a chunk was retried.

Fault tolerance: actors have ``max_restarts``; a chunk whose worker dies is put back at
the front of the queue and runs on the next free live worker. The dead worker is probed
(a call that waits for Ray to restart it) and rejoins when the probe returns, or is dropped
when Ray gives up on it. After ``max_consecutive_failures`` worker failures without one
successful chunk in between, or when no worker is left, :class:`WorkersLostError` is raised.

Connecting (``address``): ``local`` starts a private Ray instance whose processes all bind
to 127.0.0.1 (dashboard off), unless ``RAY_ADDRESS`` is set (as under ``ray job submit``),
in which case that cluster is joined; ``auto``, ``ray://host:port`` or ``host:port`` join
an existing cluster. :meth:`RayDispatcher.close` stops the Ray instance only if it started
it; a joined cluster is only disconnected from, and a Ray session the caller had already
initialised is left alone.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import sys
import time
import warnings

import numpy as np

from vsml_es.es.dispatch import DispatchError
from workers.evaluator_actor import CACHE_ENV, WORKER_ENV, EvaluatorActor, flatten_population

# Ray's own switch for single-machine use (the default on macOS/Windows): the node's IP is
# 127.0.0.1, so GCS, raylet, object manager and agents listen on loopback only.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
START_TIMEOUT_ENV = "VSML_ES_WORKER_START_TIMEOUT"


class WorkersLostError(DispatchError):
    """The learner has no workers left to evaluate the population (all dead, or too many
    consecutive worker failures). The ES state of the last finished generation is intact:
    checkpoint it and stop; resume with ``vsml-es train --resume RUN_DIR`` once workers
    are back (any worker count gives the same results)."""


def _transient_actor_errors() -> tuple:
    """Ray's "actor temporarily unavailable" (e.g. while it restarts): not a death."""
    import ray.exceptions

    err = getattr(ray.exceptions, "ActorUnavailableError", None)
    return (err,) if err is not None else ()


def bind_loopback() -> None:
    """Make a Ray instance started by this process bind to 127.0.0.1 only."""
    os.environ[LOOPBACK_ENV] = "0"
    from ray._private import ray_constants  # read at import time; also set it if already imported

    ray_constants.ENABLE_RAY_CLUSTER = False


def _log(msg: str) -> None:
    print(f"vsml-es: {msg}", file=sys.stderr, flush=True)


class _Worker:
    __slots__ = ("handle", "info", "state", "in_flight")

    def __init__(self, handle, info):
        self.handle, self.info, self.state, self.in_flight = handle, info, "live", 0


def default_chunk_size(population: int, workers: int, chunks_per_worker: int = 2, min_chunk: int = 4) -> int:
    """Members per chunk: ``chunks_per_worker`` chunks per worker (balance, and a lost chunk
    costs less to redo), but never below ``min_chunk`` unless the population is that small."""
    per_worker = math.ceil(population / workers)
    return max(math.ceil(population / (workers * chunks_per_worker)), min(min_chunk, per_worker))


class RayDispatcher:
    """Evaluates populations on Ray actors (see the module docstring).

    Args:
      cfg: the run's Config (what every worker evaluates).
      address: ``local`` (default), ``auto``, ``ray://host:port`` or ``host:port``.
      workers: number of workers; None: one per GPU in the cluster, else one per CPU.
      chunk_size: members per chunk (static; default :func:`default_chunk_size`).
      max_in_flight: chunks queued on one worker at a time.
      max_restarts: Ray restarts of one worker process before it is dropped.
      max_consecutive_failures: worker failures without a successful chunk in between
        before :class:`WorkersLostError` (default ``2 * workers + 1``).
      start_timeout_s: how long to wait for workers to start (resources may need to be
        added by an autoscaler); the run continues with those that started.
      log: a ``str -> None`` for one-line notices (default: stderr).

    Attributes:
      workers: live workers (int). stats: the last generation's dispatch figures:
        ``wait_slowest_seconds`` (from the first worker running out of work to the last
        result), ``bytes_sent`` / ``bytes_received`` (payload arrays, retries included),
        ``retries`` (chunks re-run after a worker failure), ``chunks``.
      worker_info: one dict per started worker (pid, host, node_id, devices, ...).
    """

    def __init__(self, cfg, address: str | None = "local", workers: int | None = None, *,
                 chunk_size: int | None = None, max_in_flight: int = 2, max_restarts: int = 3,
                 max_consecutive_failures: int | None = None, start_timeout_s: float | None = None,
                 log=_log):
        import ray

        from vsml_es.config import to_dict

        self.cfg = cfg
        self._log = log
        self._ray = ray
        self._connected = False  # we called ray.init, so we call ray.shutdown
        self._pool: list[_Worker] = []
        self._probes: dict = {}  # ref of an info() call -> worker Ray is restarting
        self.stats: dict = {}
        self._connect(address or "local", workers)
        try:
            resources = ray.cluster_resources()
            gpus = int(resources.get("GPU", 0))
            if workers is None:
                workers = gpus or max(1, int(resources.get("CPU", 1)))
            if workers < 1:
                raise ValueError(f"workers must be >= 1, got {workers}")
            self.use_gpu = gpus > 0
            self.chunk_size = int(chunk_size or default_chunk_size(cfg.es.population, workers))
            self.max_in_flight = max(1, int(max_in_flight))
            self.max_consecutive_failures = max_consecutive_failures or 2 * workers + 1
            self._consecutive_failures = 0
            env = dict(WORKER_ENV)
            if os.environ.get(CACHE_ENV):
                env[CACHE_ENV] = os.environ[CACHE_ENV]
            actor_cls = ray.remote(EvaluatorActor).options(
                num_cpus=1, num_gpus=1 if self.use_gpu else 0, max_restarts=max_restarts,
                max_task_retries=0,  # the pool resubmits, to a live worker rather than the dead one
                scheduling_strategy="SPREAD", runtime_env={"env_vars": env})
            cfg_dict = to_dict(cfg)
            handles = [actor_cls.remote(cfg_dict, self.chunk_size) for _ in range(workers)]
            self._start(handles, start_timeout_s)
        except BaseException:
            self.close()
            raise

    # -- connecting -------------------------------------------------------------------

    def _connect(self, address: str, workers: int | None) -> None:
        ray = self._ray
        if ray.is_initialized():
            self.where = "the caller's Ray session"
            return
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        join = os.environ.get("RAY_ADDRESS") if address == "local" else address
        if join:
            ray.init(address=join, logging_level=logging.WARNING, log_to_driver=True)
            self.where = f"Ray cluster at {join}"
        else:
            bind_loopback()
            # Token auth is on by default for a new local instance; the notice says so on every run.
            logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(
                lambda record: "Token authentication is enabled" not in record.getMessage())
            with warnings.catch_warnings():
                # Ray's processes are fork+exec'ed at once; JAX's fork warning does not apply.
                warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called")
                ray.init(address="local", num_cpus=workers or os.cpu_count() or 1, include_dashboard=False,
                         logging_level=logging.WARNING, log_to_driver=True)
            self.where = "a local Ray instance on 127.0.0.1"
        self._connected = True

    def _start(self, handles, timeout_s: float | None) -> None:
        ray = self._ray
        timeout_s = float(timeout_s or os.environ.get(START_TIMEOUT_ENV, 900))
        probes = {h.info.remote(): h for h in handles}
        t0 = time.time()
        ready, waiting = [], list(probes)
        while waiting and time.time() - t0 < timeout_s:
            done, waiting = ray.wait(waiting, num_returns=len(waiting),
                                     timeout=min(60.0, timeout_s - (time.time() - t0)))
            ready += done
            if waiting and time.time() - t0 < timeout_s:
                self._log(f"{len(ready)} of {len(probes)} workers started after {time.time() - t0:.0f}s; "
                          f"waiting up to {timeout_s:.0f}s for resources (available: "
                          f"{ray.available_resources()})")
        errors = []
        for ref in ready:
            try:
                self._pool.append(_Worker(probes[ref], ray.get(ref)))
            except ray.exceptions.RayError as err:
                errors.append(err)
        for ref in waiting:
            ray.kill(probes[ref])
        if not self._pool:
            detail = f"; first error: {errors[0]}" if errors else ""
            raise WorkersLostError(
                f"none of {len(handles)} Ray workers started within {timeout_s:.0f}s on {self.where} "
                f"(cluster resources: {ray.cluster_resources()}){detail}")
        if waiting or errors:
            self._log(f"{len(waiting)} worker(s) did not start within {timeout_s:.0f}s and "
                      f"{len(errors)} failed; continuing with {len(self._pool)}")
        nodes = len({w.info["node_id"] for w in self._pool})
        kind = "GPU" if self.use_gpu else "CPU"
        self._log(f"{len(self._pool)} {kind} worker(s) on {nodes} node(s) of {self.where}; "
                  f"chunks of {self.chunk_size} members, compiled in "
                  f"{max(w.info['compile_seconds'] for w in self._pool):.1f}s")

    # -- the dispatcher interface -----------------------------------------------------

    @property
    def workers(self) -> int:
        return sum(w.state != "dead" for w in self._pool)

    @property
    def worker_info(self) -> list[dict]:
        return [w.info for w in self._pool if w.state != "dead"]

    def refresh_info(self) -> list[dict]:
        """Ask every live worker where it runs now (pids change when Ray restarts one)."""
        for w in self._pool:
            if w.state == "live":
                w.info = self._ray.get(w.handle.info.remote())
        return self.worker_info

    def evaluate(self, population, generation: int) -> tuple[np.ndarray, np.ndarray]:
        """population: LA pytree with leading axis P (member order) -> (loss [P], acc [P])."""
        ray = self._ray
        t0 = time.perf_counter()
        flat = flatten_population(population)
        n_params = self._pool[0].info["n_params"] if self._pool else flat.shape[1]
        if flat.shape[1] != n_params:
            raise ValueError(f"population members have {flat.shape[1]} parameters; workers expect {n_params}")
        p, cs = flat.shape[0], self.chunk_size
        chunks = []
        for start in range(0, p, cs):
            ids = np.arange(start, min(start + cs, p))
            pad = np.concatenate([ids, np.repeat(ids[-1:], cs - len(ids))])
            chunks.append((ids, flat[pad], pad))
        pending = collections.deque(range(len(chunks)))
        results: list = [None] * len(chunks)
        in_flight: dict = {}  # ref -> (chunk index, worker)
        probes = self._probes  # restarts outlive a generation
        sent = received = retries = 0
        first_idle = None
        while pending or in_flight:
            while pending:
                free = [w for w in self._pool if w.state == "live" and w.in_flight < self.max_in_flight]
                if not free:
                    break
                w = min(free, key=lambda x: x.in_flight)
                c = pending.popleft()
                _, params, ids = chunks[c]
                in_flight[w.handle.evaluate.remote(params, generation, ids)] = (c, w)
                w.in_flight += 1
                sent += params.nbytes + ids.nbytes
            if not in_flight and not probes:
                raise WorkersLostError(f"generation {generation}: every Ray worker is gone "
                                       f"({len(pending)} of {len(chunks)} chunks not evaluated)")
            done, _ = ray.wait(list(in_flight) + list(probes), num_returns=1, timeout=1.0)
            for ref in done:
                if ref in probes:
                    w = probes.pop(ref)
                    try:
                        w.info = ray.get(ref)
                        w.state = "live"
                        self._log(f"worker restarted (pid {w.info['pid']} on {w.info['host']})")
                    except _transient_actor_errors():  # still restarting: ask again
                        time.sleep(0.1)
                        probes[w.handle.info.remote()] = w
                    except ray.exceptions.RayError as err:
                        w.state = "dead"
                        self._log(f"worker dropped: {type(err).__name__}; {self.workers} left")
                        self._failed(generation, err)
                    continue
                c, w = in_flight.pop(ref)
                w.in_flight -= 1
                try:
                    loss, acc = ray.get(ref)
                except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                        ray.exceptions.ObjectLostError, ray.exceptions.NodeDiedError) as err:
                    retries += 1
                    pending.appendleft(c)
                    if w.state == "live":  # one failure per worker death, not per queued chunk
                        w.state = "restarting"
                        probes[w.handle.info.remote()] = w
                        self._log(f"generation {generation}: worker pid {w.info['pid']} on "
                                  f"{w.info['host']} failed ({type(err).__name__}); re-running its chunks")
                        self._failed(generation, err)
                    continue
                self._consecutive_failures = 0
                results[c] = (loss, acc)
                received += loss.nbytes + acc.nbytes
                if first_idle is None and not pending and w.in_flight == 0:
                    first_idle = time.perf_counter()
        end = time.perf_counter()
        loss = np.concatenate([r[0][: len(ch[0])] for r, ch in zip(results, chunks)])
        acc = np.concatenate([r[1][: len(ch[0])] for r, ch in zip(results, chunks)])
        self.stats = {"wait_slowest_seconds": end - (first_idle or end), "bytes_sent": int(sent),
                      "bytes_received": int(received), "retries": retries, "chunks": len(chunks)}
        return loss, acc

    def _failed(self, generation: int, err: Exception) -> None:
        self._consecutive_failures += 1
        if self._consecutive_failures >= self.max_consecutive_failures:
            raise WorkersLostError(
                f"generation {generation}: {self._consecutive_failures} consecutive Ray worker "
                f"failures without a finished chunk ({self.workers} worker(s) not yet given up "
                f"on); last error: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")

    def close(self) -> None:
        """Stop the workers; shut down Ray if this dispatcher connected to it. Idempotent."""
        ray = self._ray
        for w in self._pool:
            try:
                ray.kill(w.handle, no_restart=True)
            except Exception:  # already gone, or Ray already down
                pass
            w.state = "dead"
        if self._connected:
            self._connected = False
            ray.shutdown()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
