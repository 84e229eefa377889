"""Every command answers a bad argument with one line naming it, exit 2.

Each command's `main` gets one bad argument, chosen so that the error comes
before any training, and must exit (or return) 2 having written exactly
one line to stderr. `lstm-keras-train` also runs as `python -m training`
in a fresh process, as a user runs it: there "one line" is all of stderr, with
TensorFlow's start-up notices switched off through the environment
(`TF_CPP_MIN_LOG_LEVEL=3`, `TF_ENABLE_ONEDNN_OPTS=0`), not filtered out.
"""

import importlib
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

# (module, arguments, what the error line names)
BAD_ARGUMENTS = [
    ("training", ["speech", "--data", "sample", "--epochs", "-1",
                  "--out", "{tmp}"], "epochs"),
    ("training.export", ["{tmp}/m.keras", "--model-base-path", "{tmp}",
                         "--version", "0"], "--version"),
    ("tuning", ["sentiment", "--data", "sample", "--dir", "{tmp}",
                "--tuner", "grid"], "--tuner"),
    ("training.gradcheck", ["--sizes", "2", "5", "0", "4"], "--sizes"),
    ("training.gradflow", ["--length", "-5", "--out", "{tmp}"], "--length"),
    ("training.build_ops", ["--rebuild"], "--rebuild"),
    ("training.evaluate", ["--runs", "mnist"], "--runs"),
    ("training.sweep", ["fsdd", "--variants", "units_9000"], "units_9000"),
    ("training.long_range_table", ["--lengths", "0"], "--lengths"),
    ("training.deployment_table", ["--run", "{tmp}/nowhere", "--out",
                                   "{tmp}"], "nowhere"),
    ("training.adding_demo", ["--epochs", "-1"], "--epochs"),
    ("training.demo", ["--max-train-examples", "-3"], "--max-train-examples"),
]  # fmt: skip


# The module whose `main` each `python -m` module runs.
MAIN_MODULES = {"training": "training.train", "tuning": "tuning.tune"}


def _argv(argv, tmp_path):
    return [a.replace("{tmp}", str(tmp_path)) for a in argv]


def _assert_one_error_line(stderr, named):
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "error:" in lines[0] and named in lines[0], lines[0]
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    "module, argv, named",
    BAD_ARGUMENTS,
    ids=[
        f"{m} {' '.join(a)}".replace("{tmp}", "") for m, a, _ in BAD_ARGUMENTS
    ],
)
def test_bad_argument_is_one_line_naming_it_and_exit_2(
    module, argv, named, tmp_path, capsys
):
    main = importlib.import_module(MAIN_MODULES.get(module, module)).main
    try:
        status = main(_argv(argv, tmp_path))
    except SystemExit as exit_:
        status = exit_.code
    assert status == 2
    _assert_one_error_line(capsys.readouterr().err, named)


@pytest.mark.parametrize("module, argv, named", BAD_ARGUMENTS[:1])
def test_bad_argument_in_a_fresh_process(module, argv, named, tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_ENABLE_ONEDNN_OPTS="0")
    ran = subprocess.run(
        [sys.executable, "-m", module, *_argv(argv, tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 2, ran.stderr
    _assert_one_error_line(ran.stderr, named)
