"""Evaluating a function over the members of a population: one vmap, or groups of them.

On CPU the per-member state of a 784x10 VSML layer is 1 MB (plus ~2 MB of gate
temporaries); a vmap over a whole chunk streams all of it through DRAM every micro tick,
while ``lax.map`` over groups of a few members keeps a group in cache (benchmarks/README.md).
"""

from __future__ import annotations

import jax


def auto_members_per_vmap(state_bytes_per_member: int) -> int:
    """0 (one vmap) on accelerators or for small states; groups of 4 for big states on CPU."""
    if jax.default_backend() != "cpu" or state_bytes_per_member < 256 * 1024:
        return 0
    return 4


def map_members(fn, n: int, members_per_vmap: int):
    """``fn`` over a leading member axis of size ``n``: one vmap, or lax.map over groups.

    The group is the largest divisor of ``n`` not above ``members_per_vmap`` (``0``: all
    ``n`` in one vmap). Results do not depend on the grouping beyond float rounding.
    """
    vfn = jax.vmap(fn)
    if members_per_vmap <= 0 or members_per_vmap >= n:
        return vfn
    group = max(d for d in range(1, members_per_vmap + 1) if n % d == 0)

    def grouped(*args):
        split = lambda x: x.reshape((n // group, group) + x.shape[1:])
        out = jax.lax.map(lambda a: vfn(*a), jax.tree_util.tree_map(split, args))
        return jax.tree_util.tree_map(lambda x: x.reshape((n,) + x.shape[2:]), out)

    return grouped
