"""XLA compiler options for jitting VSML episodes on this host, and ``jit`` that applies them.

Used where episodes run forward only: the ES population evaluator, ``vsml-es evaluate``
and ``vsml-es bench``. Gradient meta-training and cloning (backward passes, other
shapes; not measured with these options) keep plain ``jax.jit``, so their results stay
bit-for-bit what they were.

On CPU two options make the VSML step ~1.2x faster at the paper's shape and change
nothing else (results equal to float rounding, ~5e-7; benchmarks/README.md):

- ``xla_cpu_prefer_vector_width=512`` on hosts with AVX-512: XLA emits 256-bit vectors by
  default; the LSTM update (five tanh per state unit) then runs at half width.
- ``xla_cpu_experimental_ynn_fusion_type=""``: the ``[A*B, 16] x [16, 16]`` gate products
  run as XLA's own dot instead of a YNNPACK call, which is slower at this tiny inner size.

Other backends get no options. An option the installed jaxlib does not know is dropped
(checked once per process by compiling a one-op function), so older jax versions work.
``VSML_ES_XLA_OPTIONS=off`` in the environment turns them all off (functions jitted
after it is set): an escape hatch, and how benchmarks/bench_generation.py measures them.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import jax
import jax.numpy as jnp


def host_has_avx512() -> bool:
    """True when /proc/cpuinfo lists ``avx512f`` (Linux x86); False where it cannot be read."""
    try:
        return " avx512f" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def wanted_options(backend: str, avx512: bool) -> dict:
    """The options this module would like for ``backend`` (before checking jaxlib knows them)."""
    if backend != "cpu":
        return {}
    options = {"xla_cpu_experimental_ynn_fusion_type": ""}
    if avx512:
        options["xla_cpu_prefer_vector_width"] = 512
    return options


def accepted(options: dict) -> dict:
    """The entries of ``options`` that the installed jaxlib accepts (one tiny compile each)."""
    kept = {}
    for name, value in options.items():
        try:
            jax.jit(lambda x: x + 1, compiler_options={name: value}).lower(jnp.zeros(2)).compile()
        except Exception:  # unknown option in this jaxlib, or no compiler_options argument
            continue
        kept[name] = value
    return kept


@functools.cache
def compiler_options(backend: str) -> dict:
    """The wanted options for ``backend`` on this host that the installed jaxlib accepts."""
    return accepted(wanted_options(backend, host_has_avx512()))


OFF_VARIABLE = "VSML_ES_XLA_OPTIONS"


def current_options() -> dict:
    """What :func:`jit` applies now: the default backend's options, or none if turned off."""
    if os.environ.get(OFF_VARIABLE, "").strip().lower() == "off":
        return {}
    return compiler_options(jax.default_backend())


def jit(fn, **kwargs):
    """``jax.jit(fn, **kwargs)`` with :func:`current_options`."""
    options = current_options()
    return jax.jit(fn, compiler_options=options, **kwargs) if options else jax.jit(fn, **kwargs)
