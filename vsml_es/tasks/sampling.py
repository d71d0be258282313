"""Sampling a task (an example stream) from a dataset, inside jit.

A task is ``T`` steps of ``B`` examples drawn without replacement from a shuffled,
repeated stream of the split (VSML.md §3), with the classes relabelled by a random
permutation when ``label_permutation`` is on (so an LA must learn each task online and
cannot memorise the dataset's labelling).

Task distributions (VSML.md §4, "task variation") are built from :class:`TaskVariant`:
class subsets (k-way), resized images and random input projections; ``task_variants``
enumerates a distribution's variants with their probabilities. A variant fixes the
shapes (inputs, outputs), so each one is one jitted function; the rest (which classes,
which projection, which examples) is drawn inside jit from the task key.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np


def sample_task(key: jax.Array, x: jax.Array, y: jax.Array, n_classes: int, steps: int,
                batch_size: int, label_permutation: bool) -> tuple[jax.Array, jax.Array]:
    """x [N, D], y [N] -> (xs [T, B, D], ys [T, B] int32)."""
    k_order, k_labels = jax.random.split(key)
    n = x.shape[0]
    need = steps * batch_size
    repeats = -(-need // n)  # ceil: the stream repeats when the episode is longer than N
    orders = jax.vmap(lambda k: jax.random.permutation(k, n))(jax.random.split(k_order, repeats))
    idx = orders.reshape(-1)[:need]
    ys = y[idx]
    if label_permutation:
        ys = jax.random.permutation(k_labels, n_classes)[ys]
    return x[idx].reshape(steps, batch_size, -1), ys.reshape(steps, batch_size).astype(jnp.int32)


# ---------------------------------------------------------------------------------------
# Task distributions: class subsets (k-way), resizing, random projections.

@dataclass(frozen=True)
class TaskVariant:
    """The shape-determining choices of a task; everything else is drawn inside jit.

    ``n_way``: number of classes (outputs) of the task; fewer than the dataset has means a
    random class subset relabelled 0..n_way-1. ``resize``: side length the images are
    resized to (0 keeps them). ``proj_size``: inputs are multiplied by a random matrix
    ``P [D, proj_size]`` drawn per task, ``P_ij ~ U(±sqrt(6 / (D + proj_size)))`` (the
    paper's ``rand_proj``, VSML.md §4; 0 leaves them).
    """

    dataset: str
    n_way: int
    resize: int = 0
    proj_size: int = 0

    def n_in(self, image_shape: tuple) -> int:
        if self.proj_size:
            return self.proj_size
        h, w, c = image_shape
        return self.resize * self.resize * c if self.resize else h * w * c

    def is_plain(self, n_classes: int) -> bool:
        return self.n_way == n_classes and not self.resize and not self.proj_size

    def label(self) -> str:
        parts = [self.dataset, f"{self.n_way}-way"]
        if self.resize:
            parts.append(f"{self.resize}px")
        if self.proj_size:
            parts.append(f"proj{self.proj_size}")
        return "/".join(parts)


def _subset_stream(key, y, n_classes: int, n_way: int, need: int, label_permutation: bool):
    """Indices of ``need`` examples from a random subset of ``n_way`` classes (shuffled,
    repeated when the subset holds fewer than ``need``) and the label map [n_classes]."""
    k_classes, k_order = jax.random.split(key)
    classes = jax.random.permutation(k_classes, n_classes)[:n_way]
    if not label_permutation:
        classes = jnp.sort(classes)  # keep the dataset's class order
    in_subset = jnp.isin(y, classes)
    order = jnp.argsort(jnp.where(in_subset, jax.random.uniform(k_order, y.shape), 2.0))
    m = jnp.maximum(in_subset.sum(), 1)
    idx = order[jnp.arange(need) % m]
    label_map = jnp.zeros(n_classes, jnp.int32).at[classes].set(jnp.arange(n_way, dtype=jnp.int32))
    return idx, label_map


def resize_images(x: jax.Array, image_shape: tuple, size: int) -> jax.Array:
    """x [N, H*W*C] -> [N, size*size*C], bilinear (antialiased when shrinking)."""
    h, w, c = image_shape
    img = x.reshape(x.shape[0], h, w, c)
    out = jax.image.resize(img, (x.shape[0], size, size, c), method="linear")
    return out.reshape(x.shape[0], -1)


def random_projection(key: jax.Array, d_in: int, d_out: int) -> jax.Array:
    lim = jnp.sqrt(6.0 / (d_in + d_out))
    return jax.random.uniform(key, (d_in, d_out), jnp.float32, -lim, lim)


def sample_variant_task(key: jax.Array, x: jax.Array, y: jax.Array, n_classes: int, image_shape: tuple,
                        variant: TaskVariant, steps: int, batch_size: int,
                        label_permutation: bool) -> tuple[jax.Array, jax.Array]:
    """x [N, D], y [N] -> (xs [T, B, variant.n_in], ys [T, B] int32 in 0..n_way-1).

    A plain variant (all classes, no resize, no projection) is exactly :func:`sample_task`.
    """
    if variant.is_plain(n_classes):
        return sample_task(key, x, y, n_classes, steps, batch_size, label_permutation)
    k_stream, k_labels, k_proj = jax.random.split(key, 3)
    need = steps * batch_size
    if variant.n_way < n_classes:
        idx, label_map = _subset_stream(k_stream, y, n_classes, variant.n_way, need, label_permutation)
        ys = label_map[y[idx]]
        xs = x[idx]
    else:
        xs, ys = sample_task(k_stream, x, y, n_classes, steps, batch_size, label_permutation)
        xs, ys = xs.reshape(need, -1), ys.reshape(need)
    if variant.resize:
        xs = resize_images(xs, image_shape, variant.resize)
    if variant.proj_size:
        xs = xs @ random_projection(k_proj, xs.shape[1], variant.proj_size)
    return xs.reshape(steps, batch_size, -1), ys.reshape(steps, batch_size).astype(jnp.int32)


def task_variants(datasets: list, n_classes: dict, weights: list, class_subsets: list, resize: list,
                  rand_proj: float, rand_proj_size: int, image_shapes: dict) -> tuple[list, np.ndarray]:
    """Enumerate the task variants of a distribution and their probabilities.

    Dataset ``d`` is drawn with probability ``weights[d] / sum(weights)`` (equal when
    ``weights`` is empty); ``n_way`` uniformly from ``class_subsets`` (capped at the
    dataset's classes; all classes when empty); the side length uniformly from ``resize``
    (native when empty); the task is projected with probability ``rand_proj``, to
    ``rand_proj_size`` inputs (0: as many as it has).
    """
    w = np.asarray(weights if weights else [1.0] * len(datasets), np.float64)
    w = w / w.sum()
    variants, probs = [], []
    for d, wd in zip(datasets, w):
        if wd == 0:
            continue
        ways = sorted({min(int(k), n_classes[d]) for k in class_subsets}) if class_subsets else [n_classes[d]]
        ways_p = [sum(min(int(k), n_classes[d]) == v for k in class_subsets) / len(class_subsets)
                  for v in ways] if class_subsets else [1.0]
        sizes = list(resize) if resize else [0]
        projs = [(0, 1.0 - rand_proj), (1, rand_proj)] if 0 < rand_proj < 1 else [(int(rand_proj >= 1), 1.0)]
        for v, pv in zip(ways, ways_p):
            for s in sizes:
                for on, pp in projs:
                    proto = TaskVariant(d, v, s, 0)
                    size = (rand_proj_size or proto.n_in(image_shapes[d])) if on else 0
                    variants.append(TaskVariant(d, v, s, size))
                    probs.append(wd * pv * pp / len(sizes))
    probs = np.asarray(probs)
    return variants, probs / probs.sum()
