"""The training command under MultiWorkerMirroredStrategy: two workers on
127.0.0.1 train in step, the chief writes the run, the other cleans up."""

import json
import os
import re
import socket
import subprocess
import sys

import pytest
from test_training_command import REPO
from test_training_command import TINY_TEXT
from test_training_command import tiny_sst2

pytestmark = pytest.mark.tensorflow_only


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_train_in_step(tmp_path):
    data = tiny_sst2(tmp_path / "sst2", train_rows=160, dev_rows=32)
    run_dir = str(tmp_path / "run")
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    args = [
        sys.executable, "-m", "training", "sentiment", "--data", data,
        "--out", run_dir, "--epochs", "2", "--batch-size", "16",
        "--strategy", "multi_worker", "--verbose", "2",
        "--tfds-data-dir", str(tmp_path / "tfds"), *TINY_TEXT,
    ]  # fmt: skip
    processes = []
    for index in range(2):
        tf_config = {
            "cluster": {"worker": workers},
            "task": {"type": "worker", "index": index},
        }
        env = {
            **os.environ,
            "TF_CONFIG": json.dumps(tf_config),
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "KERAS_BACKEND": "tensorflow",
        }
        processes.append(
            subprocess.Popen(
                args,
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = []
    try:
        for process in processes:
            out, _ = process.communicate(timeout=240)
            outputs.append(out)
            assert process.returncode == 0, out
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()

    # Both workers report the same test loss and accuracy, to print precision.
    pattern = r"test accuracy ([\d.]+), test loss ([\d.]+)"
    results = [re.search(pattern, out).groups() for out in outputs]
    assert results[0] == results[1], outputs
    # The chief (worker 0) wrote the run; worker 1's private folder is gone.
    with open(os.path.join(run_dir, "metrics.json")) as f:
        metrics = json.load(f)
    assert f"{metrics['test_loss']:.6f}" == results[0][1]
    assert metrics["config"]["strategy"] == "multi_worker"
    assert not os.path.exists(os.path.join(run_dir, ".worker-1"))
    assert os.path.exists(
        os.path.join(run_dir, "serving", "1", "saved_model.pb")
    )
