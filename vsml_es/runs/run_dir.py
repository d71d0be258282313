"""The run directory layout (DESIGN.md) and the exported LA file.

    RUN_DIR/config.yaml            the fully resolved config
    RUN_DIR/metrics.jsonl          one JSON object per generation
    RUN_DIR/events.out.tfevents.*  TensorBoard
    RUN_DIR/checkpoints/<gen>/     orbax
    RUN_DIR/learned_la.npz         the ES mean LA: one array per SubRNNParams field,
                                   plus ``__config__`` (JSON) and ``__generation__``
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from vsml_es.config import Config, ConfigError, dump_yaml, load_config
from vsml_es.model.sub_rnn import SubRNNParams

LA_FILE = "learned_la.npz"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def default_run_dir(config_path: str | Path, prefix: str = "") -> Path:
    """``runs/<prefix><config stem>-<YYYYmmdd-HHMMSS>``: where a command writes without --run-dir."""
    from datetime import datetime

    return Path("runs") / f"{prefix}{Path(config_path).stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def write_config(run_dir: Path, cfg: Config) -> None:
    atomic_write_bytes(Path(run_dir) / "config.yaml", dump_yaml(cfg).encode())


def read_config(run_dir: str | Path, overrides=()) -> Config:
    path = Path(run_dir) / "config.yaml"
    if not Path(run_dir).is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    if not path.is_file():
        raise ConfigError(f"{path} is missing: {run_dir} is not a vsml-es run directory")
    return load_config(path, overrides)


def save_la(path: str | Path, params: SubRNNParams, cfg: Config, generation: int) -> Path:
    """Write the LA as plain arrays (no pickle), atomically."""
    import io

    arrays = {name: np.asarray(value) for name, value in params._asdict().items()}
    arrays["__config__"] = np.array(json.dumps({"model": _model_dict(cfg)}))
    arrays["__generation__"] = np.array(generation, dtype=np.int64)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _model_dict(cfg: Config) -> dict:
    import dataclasses

    return dataclasses.asdict(cfg.model)


def load_la(path: str | Path) -> SubRNNParams:
    """Read an LA written by :func:`save_la` / ``vsml-es export``; refuses pickled content."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LA file {path} not found")
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [n for n in SubRNNParams._fields if n not in f.files]
            if missing:
                raise ConfigError(f"{path} is not a vsml-es LA file (missing arrays: {', '.join(missing)})")
            return SubRNNParams(**{n: np.asarray(f[n], np.float32) for n in SubRNNParams._fields})
    except (ValueError, OSError) as err:
        if isinstance(err, ConfigError):
            raise
        reason = "not an .npz archive" if "pickle" in str(err) else str(err)
        raise ConfigError(f"{path} is not a readable .npz LA file ({reason}); "
                          f"write one with vsml-es export RUN_DIR OUT.npz") from None


def export_la(run_dir: str | Path, out: str | Path) -> Path:
    """``vsml-es export``: the mean LA of the run's last good checkpoint as an .npz file."""
    from vsml_es.es.trainer import restore_run

    cfg = read_config(run_dir)
    restored = restore_run(cfg, Path(run_dir))
    return save_la(out, restored.mean_la, cfg, restored.generation)
