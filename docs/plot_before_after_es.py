"""Regenerate docs/meta_test_before_after_es.png from a `make demo` run directory.

    python docs/plot_before_after_es.py runs/demo-YYYYMMDD-HHMMSS

Meta-tests the clone, the gradient LA (before ES) and the ES LA (after) on issue 6's
protocol (held-out digits, a fresh label permutation per task, 16 tasks x 500 steps,
seed 22) and takes the tuned SGD and Adam rows from the ES run's `evaluate` output
(eval/meta_test.json), so run `make demo` (or `vsml-es evaluate`) first.
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from vsml_es.evaluate import meta_test  # noqa: E402
from vsml_es.model.network import make_vsml  # noqa: E402
from vsml_es.runs.run_dir import load_la, read_config  # noqa: E402

demo = Path(sys.argv[1])
bars = {}
for stage, label in (("clone", "clone\n(logit scale 2.5)"), ("grad", "+ gradient, T 60\n(before ES)"),
                     ("es", "+ ES, T 500, pop 128\n(after ES)")):
    cfg = read_config(demo / stage)
    c, _ = meta_test(make_vsml(cfg.model), load_la(demo / stage / "learned_la.npz"), "digits", 16, 500, 22,
                     label_permutation=True)
    bars[label] = (c[:, :50].mean(), c.mean(), c[:, 250:].mean())
for row in json.loads((demo / "es" / "eval" / "meta_test.json").read_text()):
    if row["dataset"] == "digits" and row["method"] != "vsml":
        bars[f"online {row['method'].upper() if row['method'] == 'sgd' else 'Adam'}\n(tuned lr {row['learning_rate']:g})"] = (
            row["first50"], row["whole"], row["second_half"])
fig, ax = plt.subplots(figsize=(9, 3.8))
x = np.arange(len(bars))
for i, name in enumerate(("first 50 steps", "all 500 steps", "last 250 steps")):
    ax.bar(x + (i - 1) * 0.27, [v[i] for v in bars.values()], 0.27, label=name)
ax.axhline(0.1, color="gray", lw=0.8, ls=":")
ax.set_xticks(x, list(bars), fontsize=8)
ax.set_ylim(0, 1)
ax.set_ylabel("online accuracy")
ax.set_title("Meta-test on held-out digits, fresh label permutations: the demo's stages")
ax.legend(fontsize=8, loc="upper left")
fig.tight_layout()
out = Path(__file__).with_name("meta_test_before_after_es.png")
fig.savefig(out, dpi=90)
print(json.dumps({k.replace("\n", " "): [round(float(v), 3) for v in vals] for k, vals in bars.items()}))
print(f"wrote {out}")
