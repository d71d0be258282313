"""Online learners that are not meta-learned, behind the same :class:`~vsml_es.learner.Learner`
interface as VSML, so the episode runner and the meta-test run them unchanged.

``BASELINES`` maps a name to ``(make(), default learning rate, learning-rate grid)``: the
paper's one-hidden-layer tanh MLP (160 units, VSML.md §7) trained online by SGD (lr 0.01)
or Adam (lr 0.001), one step per example after predicting; ``*_linear`` drop the hidden
layer.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from vsml_es.baselines.adam import make_adam
from vsml_es.baselines.sgd import make_sgd
from vsml_es.learner import Learner


class Baseline(NamedTuple):
    make: Callable[[], Learner]
    learning_rate: float  # the paper's (VSML.md §7)
    grid: tuple  # learning rates tried when tuning


SGD_GRID = (0.003, 0.01, 0.03, 0.1, 0.3)
ADAM_GRID = (0.0001, 0.0003, 0.001, 0.003, 0.01)

BASELINES: dict[str, Baseline] = {
    "sgd": Baseline(lambda: make_sgd(hidden=(160,)), 0.01, SGD_GRID),
    "adam": Baseline(lambda: make_adam(hidden=(160,)), 0.001, ADAM_GRID),
    "sgd_linear": Baseline(lambda: make_sgd(hidden=()), 0.01, SGD_GRID),
    "adam_linear": Baseline(lambda: make_adam(hidden=()), 0.001, ADAM_GRID),
}
