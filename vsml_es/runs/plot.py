"""``vsml-es plot``: a PNG of a run's meta-training curves, for people without TensorBoard."""

from __future__ import annotations

from pathlib import Path

from vsml_es.runs.metrics import read_metrics


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    rows = read_metrics(run_dir)
    if not rows:
        raise FileNotFoundError(f"{run_dir / 'metrics.jsonl'} has no generations yet; nothing to plot")
    gen = [r["generation"] for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot(gen, [r["loss_mean"] for r in rows], label="population mean")
    ax_loss.plot(gen, [r["loss_best"] for r in rows], label="best member", alpha=0.6)
    ax_loss.set(xlabel="generation", ylabel="mean online cross-entropy (fitness)", title="meta-training loss")
    ax_loss.legend()
    ax_acc.plot(gen, [r["accuracy_mean"] for r in rows], label="meta-train online accuracy")
    for key in sorted({k for r in rows for k in r if k.startswith("eval/") and k.endswith("/accuracy")}):
        pts = [(r["generation"], r[key]) for r in rows if r.get(key) is not None]
        ax_acc.plot(*zip(*pts), "o-", label=f"{key} (held-out)")
    ax_acc.set(xlabel="generation", ylabel="online accuracy", title="online accuracy")
    ax_acc.legend()
    fig.suptitle(str(run_dir))
    fig.tight_layout()
    out = Path(out) if out else run_dir / "curves.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
