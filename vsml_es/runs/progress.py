"""Progress display: a tqdm bar on a terminal, plain log lines otherwise (CI, cluster logs)."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, start: int, enabled: bool = True, every: int = 1):
        self._tty = sys.stderr.isatty()
        self._enabled = enabled
        self._every = every
        self._total = total
        self._t0 = time.time()
        self._start = start
        self._bar = None
        if enabled and self._tty:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=start, unit="gen", dynamic_ncols=True)

    def update(self, row: dict) -> None:
        if not self._enabled:
            return
        g = row["generation"]
        text = (f"loss {row['loss_mean']:.4f} acc {row['accuracy_mean']:.3f} "
                f"{row['member_steps_per_second']:.0f} steps/s")
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)
            self._bar.update(1)
            return
        done = g + 1 - self._start
        if done % self._every and g + 1 != self._total:
            return
        eta = (time.time() - self._t0) / max(done, 1) * (self._total - g - 1)
        evals = " ".join(f"{k} {v:.3f}" for k, v in row.items() if k.startswith("eval/") and v is not None)
        print(f"gen {g + 1}/{self._total} {text} {evals} eta {eta:.0f}s".rstrip(), file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
