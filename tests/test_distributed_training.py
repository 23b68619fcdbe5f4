"""`torchrun` runs `sentops train` as several processes (DDP through the HF Trainer; gloo on
CPU here, NCCL on GPUs): the batches are shared, and only rank 0 talks to MLflow, so one
launch gives one run and one model version, and `--json` prints one document."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_env_vars

from sentiment_ops.config import load_settings
from sentiment_ops.tracking.registry import Registry

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.integration
def test_torchrun_two_processes_one_run_one_version(tiny_model_dir: Path, isolated_home: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SENTOPS_", "MLFLOW_"))}
    env.update(tiny_env_vars(tiny_model_dir))
    env.update({"SENTOPS_HOME": str(isolated_home), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    result = subprocess.run(
        [*cmd, "-m", "sentiment_ops.cli.main", "train", "--json", "--device", "cpu"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)  # exactly one JSON document: rank 1 prints nothing
    assert out["version"] == 1

    registry = Registry(load_settings())
    runs = registry.client.search_runs([registry.experiment_id()])
    assert [r.info.run_id for r in runs] == [out["run_id"]]
    assert runs[0].data.params["world_size"] == "2"
    assert [v.version for v in registry.list_versions()] == [1]
