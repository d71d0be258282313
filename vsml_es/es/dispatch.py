"""Where the population is evaluated: in this process, or on Ray workers (``workers/``).

A dispatcher has ``evaluate(population, generation) -> (loss [P], accuracy [P])`` in member
order, ``workers`` (the number of live workers), ``stats`` (a dict of the last generation's
dispatch figures, merged into that generation's metrics line) and ``close()``; the learner
loop does not know which it has.
"""

from __future__ import annotations

import numpy as np

from vsml_es.config import Config
from vsml_es.es.evaluator import PopulationEvaluator


class DispatchError(RuntimeError):
    """Evaluation cannot continue (e.g. every worker is gone). The ES state of the last
    finished generation is intact: the learner checkpoints it and stops."""


class InProcessDispatcher:
    """``--address none``: the whole population as one jitted chunk in this process."""

    workers = 1

    def __init__(self, cfg: Config):
        self.evaluator = PopulationEvaluator(cfg)
        # Same keys as the Ray dispatcher's, so metrics lines have one schema.
        self.stats: dict = {"wait_slowest_seconds": 0.0, "bytes_sent": 0, "bytes_received": 0,
                            "retries": 0, "chunks": 1}

    def evaluate(self, population, generation: int) -> tuple[np.ndarray, np.ndarray]:
        n = self.evaluator.cfg.es.population
        return self.evaluator(population, generation, np.arange(n))

    def close(self) -> None:
        pass


def make_dispatcher(cfg: Config, address: str | None = None, workers: int | None = None):
    """``address`` 'none' runs in-process; anything else goes to Ray (``workers.pool``):
    'local' (a private loopback Ray instance, or the cluster in ``RAY_ADDRESS``), 'auto',
    'ray://host:port' or 'host:port'. ``workers`` None: one per GPU, else one per CPU."""
    address = address or cfg.distributed.address
    if address == "none":
        return InProcessDispatcher(cfg)
    from workers.pool import RayDispatcher  # the only import of workers/ in the library

    return RayDispatcher(cfg, address=address, workers=workers or cfg.distributed.workers)
