#!/usr/bin/env bash
# GPU readiness in one short run (<= 5 min on one CUDA GPU): install the cuda extra,
# check GPU vs CPU numerics on a small case, bench at population 1024, print one JSON line.
#   bash benchmarks/gpu_check.sh            (from the repository root, in the project venv)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # do not grab most of a shared GPU

$PY -m pip install -q -e ".[cuda]" >&2

$PY - <<'PYEOF'
import json, time
import jax, jax.numpy as jnp, numpy as np
from vsml_es.bench import episode_trace, population, run_bench
from vsml_es.config import ModelConfig
from vsml_es.model.network import make_vsml
import functools

gpu = [d for d in jax.devices() if d.platform == "gpu"]
assert gpu, f"no CUDA device visible to jax {jax.__version__}: {jax.devices()}"
cpu = jax.devices("cpu")[0]

# Small case: 2 layers (64x16x10), 40 steps, 4 members; same inputs on both devices.
cfg = ModelConfig(hidden_layers=[16])
learner = make_vsml(cfg)
params = population(learner, jax.random.PRNGKey(0), 4)
keys = jax.random.split(jax.random.PRNGKey(1), 4)
trace = jax.vmap(functools.partial(episode_trace, learner, 40, 64, 10))
out = {}
for name, dev in (("cpu", cpu), ("gpu", gpu[0])):
    p, k = jax.device_put((params, keys), dev)
    with jax.default_device(dev):
        out[name] = jax.device_get(jax.jit(trace)(p, k))
diff = max(float(np.max(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32))))
           for a, b in zip(jax.tree_util.tree_leaves(out["cpu"]), jax.tree_util.tree_leaves(out["gpu"])))

t0 = time.perf_counter()
bench = run_bench(population_size=1024, steps=50, repeats=3, members_per_vmap=0, check_members=2)
bf16 = run_bench(population_size=1024, steps=50, repeats=2, members_per_vmap=0, textbook=False,
                 dtype="bfloat16")
print(json.dumps({
    "device": str(gpu[0].device_kind), "jax_version": jax.__version__,
    "gpu_vs_cpu_max_abs_diff": diff, "gpu_vs_cpu_ok": diff <= 1e-4,
    "bench_ok": bench["ok"], "max_abs_diff": bench["max_abs_diff"],
    "member_steps_per_s": bench["fast"]["member_steps_per_s"],
    "textbook_member_steps_per_s": bench["textbook"]["member_steps_per_s"],
    "ratio": bench["ratio"], "ratio_min": bench["ratio_min"], "ratio_max": bench["ratio_max"],
    "compile_s": bench["fast"]["compile_s"], "textbook_compile_s": bench["textbook"]["compile_s"],
    "bf16_member_steps_per_s": bf16["fast"]["member_steps_per_s"],
    "bf16_vs_float32": bf16["vs_float32"],
    "population": 1024, "steps": 50, "seconds": round(time.perf_counter() - t0, 1),
}))
PYEOF
