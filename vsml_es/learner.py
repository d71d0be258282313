"""The interface every online learner implements (VSML, and the SGD/Adam baselines).

The episode runner (``vsml_es.tasks.episode``) and the evaluator only see this interface:

    init_params(key)                           -> params     (meta-parameters, e.g. the LA)
    init_state(params, key, n_in, n_out)       -> state      (per-episode, e.g. V_L)
    predict(params, state, x)                  -> (logits [n_out], state)
    learn(params, state, x, error, label)      -> state
    merge_batch(state)                         -> state      (batched state [B, ...])

``predict`` sees one example ``x`` [n_in] before its label; ``learn`` then receives
``error = softmax(logits) - onehot(label)`` [n_out] and ``label`` (one-hot, [n_out]) for
that same example. ``merge_batch`` ties the copies of a state that a batch of examples
produced (VSML averages the first half of its state dims, VSML.md §3).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple


class Learner(NamedTuple):
    init_params: Callable[..., Any]
    init_state: Callable[..., Any]
    predict: Callable[..., Any]
    learn: Callable[..., Any]
    merge_batch: Callable[[Any], Any]
