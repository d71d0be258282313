import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402


def tiny_overrides(**extra):
    """Overrides for a config that trains in seconds: digits, population 8, 20-step episodes."""
    o = {"es.population": 8, "task.episode_length": 20, "es.generations": 6,
         "checkpoint.every": 2, "logging.eval_every": 3, "logging.eval_tasks": 2,
         "logging.tensorboard": True, "distributed.address": "none"}
    o.update(extra)
    return [f"{k}={v}" for k, v in o.items()]


@pytest.fixture
def tiny():
    return tiny_overrides
