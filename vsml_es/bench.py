"""``vsml-es bench``: member-steps/s of the project's VSML evaluation vs the textbook one.

Both implementations evaluate the same population (LA + noise, one episode per member,
random inputs [T, 1, D] and labels drawn from the member's key) through
``vsml_es.tasks.episode.run_episode``, jitted, in one process, timed alternately so
that load from other processes hits both alike, both compiled with the project's XLA
options for this host (``vsml_es.xla_options``; reported as ``compiler_options``). The
textbook implementation lives in ``benchmarks/textbook.py`` (every synapse runs the LSTM
on the concatenation of its messages and applies both messengers; nested vmap). It is
loaded from the repository checkout next to this package, so ``vsml-es bench`` works
from a clone installed with ``pip install -e .``; from a wheel install without
``benchmarks/`` it says so and stops.

Output: one JSON object (see :func:`run_bench`), printed by ``cli_main``.

``members_per_vmap``: members evaluated side by side in one ``vmap``; a population larger
than that runs as ``lax.map`` over groups. On CPU a small group keeps a member's
per-synapse state (1 MB at 784x10) and its gate temporaries in cache; on a GPU one vmap
over the whole population is best (``0``). benchmarks/README.md has the measurements.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from vsml_es import xla_options
from vsml_es.config import ModelConfig
from vsml_es.es.member_map import map_members  # noqa: F401  (re-exported)
from vsml_es.model.network import layer_sizes, make_vsml
from vsml_es.tasks.episode import run_episode

TEXTBOOK_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "textbook.py"
MAX_ABS_DIFF = {"float32": 1e-4, "bfloat16": 5e-2}  # fast vs textbook, both in the bench's dtype


def load_textbook():
    """The ``benchmarks/textbook.py`` module of this checkout."""
    if not TEXTBOOK_PATH.is_file():
        raise FileNotFoundError(
            f"{TEXTBOOK_PATH} not found: `vsml-es bench` needs a source checkout "
            "(git clone ... && pip install -e .)")
    name = "vsml_es_benchmarks_textbook"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, TEXTBOOK_PATH)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def default_members_per_vmap() -> int:
    """4 on CPU (fastest measured at the paper's shape, benchmarks/README.md); 0 = all elsewhere."""
    return 4 if jax.default_backend() == "cpu" else 0


def with_dtype(learner, dtype):
    """The learner with its per-episode state (h, c, messages) initialised in ``dtype``."""
    if dtype == jnp.float32:
        return learner

    def init_state(params, key, n_in, n_out):
        return jax.tree_util.tree_map(lambda s: s.astype(dtype), learner.init_state(params, key, n_in, n_out))

    return learner._replace(init_state=init_state)


def population(learner, key: jax.Array, n: int, sigma: float = 0.05):
    """An LA and ``n`` members around it (like one ES generation): leaves [n, ...]."""
    k_la, k_eps = jax.random.split(key)
    la = learner.init_params(k_la)
    leaves, tree = jax.tree_util.tree_flatten(la)
    keys = jax.random.split(k_eps, len(leaves))
    leaves = [l + sigma * jax.random.normal(k, (n, *l.shape), l.dtype) for l, k in zip(leaves, keys)]
    return jax.tree_util.tree_unflatten(tree, leaves)


def _member_data(key, steps, n_in, n_out):
    k_x, k_y, k_init = jax.random.split(key, 3)
    xs = jax.random.normal(k_x, (steps, 1, n_in))
    ys = jax.random.randint(k_y, (steps, 1), 0, n_out)
    return xs, ys, k_init


def episode_losses(learner, steps, n_in, n_out, params, key):
    """One member's episode through the project's runner: loss per step [T]."""
    xs, ys, k_init = _member_data(key, steps, n_in, n_out)
    return run_episode(learner, params, k_init, xs, ys, n_out).loss


def episode_trace(learner, steps, n_in, n_out, params, key):
    """The same episode, keeping logits [T, n_out] and the final state (for the check)."""
    xs, ys, k_init = _member_data(key, steps, n_in, n_out)
    state = learner.init_state(params, k_init, n_in, n_out)

    def step(state, xy):
        x, y = xy
        logits, state = learner.predict(params, state, x[0])
        onehot = jax.nn.one_hot(y[0], n_out, dtype=logits.dtype)
        state = learner.learn(params, state, x[0], jax.nn.softmax(logits) - onehot, onehot)
        return state, logits

    state, logits = jax.lax.scan(step, state, (xs, ys))
    return logits, state


def _max_abs_diff(a, b) -> float:
    diffs = jax.tree_util.tree_map(
        lambda x, y: float(jnp.max(jnp.abs(x.astype(jnp.float32) - y.astype(jnp.float32)))), a, b)
    return max(jax.tree_util.tree_leaves(diffs) or [0.0])


def _compile(fn, *args):
    t0 = time.perf_counter()
    compiled = xla_options.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - t0


def _memory(compiled) -> dict:
    try:
        m = compiled.memory_analysis()
        return {"temp_bytes": int(m.temp_size_in_bytes), "argument_bytes": int(m.argument_size_in_bytes),
                "output_bytes": int(m.output_size_in_bytes)}
    except Exception:  # not every backend reports it
        return {}


def _time(compiled, args) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    jax.block_until_ready(compiled(*args))
    return time.perf_counter() - w0, time.process_time() - c0


def run_bench(population_size: int = 32, steps: int = 50, inputs: int = 784, outputs: int = 10,
              repeats: int = 3, hidden_layers=(), members_per_vmap: int | None = None,
              textbook: bool = True, check_members: int = 2, dtype: str = "float32",
              model: ModelConfig | None = None, seed: int = 0) -> dict:
    """Time the evaluation of ``population_size`` members for ``steps`` steps.

    Returns a dict (the JSON ``vsml-es bench`` prints) with, per implementation
    (``fast``, ``textbook``): ``member_steps_per_s`` (median over repeats, wall clock),
    ``seconds`` and ``cpu_seconds`` per repeat, ``compile_s``, ``memory``; and
    ``ratio`` (median of per-repeat wall ratios textbook/fast), ``ratio_min``,
    ``ratio_max``, ``cpu_ratio`` (same from process CPU time: less sensitive to other
    load), ``max_abs_diff`` of losses, logits and final states, ``ok`` (all diffs
    <= ``tolerance``: 1e-4 in float32; 5e-2 in bfloat16, where both implementations
    round at 2^-8), shapes, population, device, jax version. For a dtype other than
    float32 also ``vs_float32``: how far the fast step's per-step losses in that dtype
    are from its float32 losses (max and mean abs difference, mean loss of each).
    """
    cfg = dataclasses.replace(model or ModelConfig(), hidden_layers=list(hidden_layers))
    if members_per_vmap is None:
        members_per_vmap = default_members_per_vmap()
    dt = jnp.dtype(dtype)
    key = jax.random.PRNGKey(seed)
    k_pop, k_members = jax.random.split(key)
    fast = with_dtype(make_vsml(cfg), dt)
    params = population(fast, k_pop, population_size)
    keys = jax.random.split(k_members, population_size)
    args = (params, keys)

    impls = {"fast": fast}
    if textbook:
        impls["textbook"] = with_dtype(load_textbook().make_textbook_vsml(cfg), dt)

    result = {"population": population_size, "steps": steps, "repeats": repeats,
              "members_per_vmap": members_per_vmap, "dtype": dtype,
              "shapes": {"inputs": inputs, "outputs": outputs, "layers": [list(ab) for ab in layer_sizes(cfg, inputs, outputs)],
                         "message_size": cfg.message_size, "state_size": cfg.state_size,
                         "micro_ticks": cfg.micro_ticks},
              "synapses": sum(a * b for a, b in layer_sizes(cfg, inputs, outputs)),
              "device": str(jax.devices()[0].device_kind), "backend": jax.default_backend(),
              "jax_version": jax.__version__,
              "compiler_options": xla_options.current_options()}
    compiled, losses = {}, {}
    for name, learner in impls.items():
        member = functools.partial(episode_losses, learner, steps, inputs, outputs)
        # The textbook runs as a textbook user would write it: one vmap over the population.
        group = members_per_vmap if name == "fast" else 0
        compiled[name], compile_s = _compile(map_members(member, population_size, group), *args)
        # Warm-up, waited for: an unfinished one would run inside the first timed repeat.
        losses[name] = jax.block_until_ready(compiled[name](*args))
        result[name] = {"compile_s": round(compile_s, 2), "memory": _memory(compiled[name]),
                        "seconds": [], "cpu_seconds": []}
    for _ in range(repeats):
        for name in impls:
            wall, cpu = _time(compiled[name], args)
            result[name]["seconds"].append(round(wall, 6))
            result[name]["cpu_seconds"].append(round(cpu, 6))
    for name in impls:
        r = result[name]
        r["member_steps_per_s"] = round(population_size * steps / float(np.median(r["seconds"])), 1)
        r["cpu_seconds_per_member_step"] = float(np.median(r["cpu_seconds"])) / (population_size * steps)
    if textbook:
        wall = np.array(result["textbook"]["seconds"]) / np.array(result["fast"]["seconds"])
        cpu = np.array(result["textbook"]["cpu_seconds"]) / np.array(result["fast"]["cpu_seconds"])
        result.update(ratio=round(float(np.median(wall)), 3), ratio_min=round(float(wall.min()), 3),
                      ratio_max=round(float(wall.max()), 3), cpu_ratio=round(float(np.median(cpu)), 3))
        n = min(check_members, population_size)
        sub = jax.tree_util.tree_map(lambda x: x[:n], args)
        traces = {name: xla_options.jit(jax.vmap(functools.partial(episode_trace, learner, steps, inputs, outputs)))(*sub)
                  for name, learner in impls.items()}
        diff = {"loss": _max_abs_diff(losses["fast"], losses["textbook"]),
                "logits": _max_abs_diff(traces["fast"][0], traces["textbook"][0]),
                "state": _max_abs_diff(traces["fast"][1], traces["textbook"][1])}
        result["max_abs_diff"] = diff
        result["checked_members"] = n
        result["tolerance"] = MAX_ABS_DIFF[dtype]
        result["ok"] = bool(max(diff.values()) <= MAX_ABS_DIFF[dtype])
    if dt != jnp.float32:
        member = functools.partial(episode_losses, make_vsml(cfg), steps, inputs, outputs)
        f32 = np.asarray(xla_options.jit(map_members(member, population_size, members_per_vmap))(*args))
        low = np.asarray(losses["fast"], np.float32)
        result["vs_float32"] = {"max_abs_loss_diff": float(np.abs(low - f32).max()),
                                "mean_abs_loss_diff": float(np.abs(low - f32).mean()),
                                "mean_loss": float(low.mean()), "mean_loss_float32": float(f32.mean())}
    return result


def cli_main(args) -> int:
    """``vsml-es bench``: print the JSON of :func:`run_bench`; exit 1 if numerics differ."""
    from vsml_es.cli import UserError

    for name in ("population", "steps", "inputs", "outputs", "repeats"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.members_per_vmap is not None and args.members_per_vmap < 0:
        raise UserError(f"--members-per-vmap must be >= 0, got {args.members_per_vmap}")
    result = run_bench(population_size=args.population, steps=args.steps, inputs=args.inputs,
                       outputs=args.outputs, repeats=args.repeats,
                       hidden_layers=tuple(int(h) for h in str(getattr(args, "hidden", "") or "").split(",") if h),
                       members_per_vmap=getattr(args, "members_per_vmap", None),
                       textbook=not getattr(args, "no_textbook", False),
                       dtype=getattr(args, "dtype", "float32"))
    print(json.dumps(result))
    return 0 if result.get("ok", True) else 1
