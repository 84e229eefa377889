"""A search that survives SIGKILL: atomic state files and a repaired reload.

KerasTuner 1.4.8 keeps a search's state in `oracle.json`, one
`trial_<id>/trial.json` per trial and `<tuner_id>.json`, and reloads them
when a tuner is made again in the same folder. Left alone it can lose or
repeat work when the process is killed at the wrong moment:

1. It writes its JSON in place: a kill mid-write leaves a truncated file
   that cannot be reloaded. Here every state file is written to a temp
   file and renamed.
2. It reloads only when `<tuner_id>.json` exists, which is first written
   when the first trial ends: a kill after `oracle.json` recorded that end
   but before the tuner file, and the restarted search forgets finished
   trials and runs them again. Here the tuner file is created on reload
   whenever `oracle.json` exists.
3. On reload, every trial `oracle.json` lists as running is queued to run
   again, also one that `end_trial` had already saved as finished (its
   `trial.json` is written before `oracle.json`): a finished trial would be
   re-run and its numbers changed. Here a trial whose `trial.json` says
   COMPLETED or FAILED is never re-queued, and counts as ended.
4. A trial created (its `trial.json` written) just before a kill that came
   before `oracle.json` was saved is counted but never run. Here every
   trial still RUNNING on reload is queued, its partial metrics dropped.

5. Distributed, a restarted chief sends every trial its workers were
   running for retry, while those workers, still alive, finish them: each
   such trial would run twice. Here a chief that serves workers keeps the
   trials its workers hold, and a worker restarted under the same
   `KERASTUNER_TUNER_ID` is handed its trial again (KerasTuner's own
   rule), with the killed run's partial metrics dropped. A worker that
   never comes back holds its trial until one is started under its id.

A re-run trial builds and trains from the same seed (see
`ApplicationHyperModel`), so it ends as the uninterrupted one would have.
`check_state_files` turns a corrupt or truncated state file into a
`ValueError` that names it and says how to recover.
"""

import json
import os
import time

import keras_tuner

from lstm_keras.applications.reports import write_json
from lstm_keras.compat import tuner_metrics_tracking as metrics_tracking
from lstm_keras.compat import tuner_trial as trial_module

RUNNING = trial_module.TrialStatus.RUNNING
ENDED = (trial_module.TrialStatus.COMPLETED, trial_module.TrialStatus.FAILED)
# Appended to by every tuner process: one line per trial start and end.
RUN_LOG = "trial_runs.jsonl"


class StateFileError(ValueError):
    """The search in a tuning folder cannot be resumed: a state file is
    corrupt or truncated, or the folder holds a search with other settings."""


def check_state_files(project_dir, tune_dir):
    """Raises `StateFileError` for the first state file that is not JSON.

    Args:
        project_dir: The KerasTuner project folder (`TUNE_DIR/search`).
        tune_dir: The tuning folder, for the advice in the message.
    """
    if not os.path.isdir(project_dir):
        return
    paths = [
        os.path.join(project_dir, name)
        for name in sorted(os.listdir(project_dir))
        if name.endswith(".json")
    ]
    for name in sorted(os.listdir(project_dir)):
        trial_file = os.path.join(project_dir, name, "trial.json")
        if name.startswith("trial_") and os.path.exists(trial_file):
            paths.append(trial_file)
    for path in paths:
        try:
            with open(path) as f:
                state = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise StateFileError(
                _advice(path, project_dir, tune_dir, error)
            ) from error
        if not isinstance(state, dict):
            raise StateFileError(
                _advice(path, project_dir, tune_dir, "not a JSON object")
            )


def _advice(path, project_dir, tune_dir, error):
    trial_dir = os.path.dirname(path)
    if os.path.basename(path) == "trial.json":
        fix = (
            f"delete that trial's folder {trial_dir!r} together with "
            f"{os.path.join(project_dir, 'oracle.json')!r} only if you "
            "accept losing the search's order; the safe fix is to delete "
            f"{project_dir!r} (all trials are lost) or to run the same "
            "command with --overwrite"
        )
    else:
        fix = (
            f"delete {project_dir!r} (all trials are lost) or run the same "
            "command with --overwrite to start the search over"
        )
    return (
        f"The tuning state file {path!r} is corrupt or truncated ({error}), "
        f"so the search in {tune_dir!r} cannot be resumed. To recover, {fix}."
    )


class AtomicOracleMixin:
    """Oracle methods: atomic saves and the repaired `reload` (module doc)."""

    def save(self):
        write_json(self.get_state(), self._get_oracle_fname())

    def _save_trial(self, trial):
        path = os.path.join(self._get_trial_dir(trial.trial_id), "trial.json")
        write_json(trial.get_state(), path)

    def reload(self):
        super().reload()
        held = {}
        if serves_workers():
            # `Oracle.reload` sent the workers' trials for retry: read back
            # which worker held which (point 5).
            with open(self._get_oracle_fname()) as f:
                held = json.load(f).get("ongoing_trials", {})
        repair_reloaded(self, held)

    def create_trial(self, tuner_id):
        if serves_workers() and tuner_id in self.ongoing_trials:
            # The worker was restarted mid-trial and runs it again.
            _drop_metrics(self.ongoing_trials[tuner_id])
        return super().create_trial(tuner_id)


def serves_workers():
    """Whether this process is the chief of a distributed search."""
    return "KERASTUNER_ORACLE_IP" in os.environ and "chief" in os.environ.get(
        "KERASTUNER_TUNER_ID", ""
    )


def _drop_metrics(trial):
    # The killed run's numbers, if it reported any, must not be averaged
    # with the re-run's.
    trial.metrics = metrics_tracking.MetricsTracker()
    trial.score = None
    trial.best_step = 0


def repair_reloaded(oracle, held=None):
    """Fixes points 3-5 of the module docstring on a reloaded oracle.

    Args:
        oracle: The reloaded oracle.
        held: `{tuner_id: trial_id}` of trials live workers hold, which
            stay theirs instead of being queued. Defaults to none.
    """
    held = {
        tuner_id: trial_id
        for tuner_id, trial_id in (held or {}).items()
        if oracle.trials[trial_id].status not in ENDED
    }
    queue = []
    for trial_id in oracle._retry_queue:
        trial = oracle.trials[trial_id]
        if trial.status in ENDED:
            _mark_ended(oracle, trial)
        elif trial_id not in queue and trial_id not in held.values():
            queue.append(trial_id)
    for trial_id, trial in sorted(oracle.trials.items()):
        if trial.status in ENDED:
            _mark_ended(oracle, trial)
        elif (
            trial.status == RUNNING
            and trial_id not in queue
            and trial_id not in held.values()
        ):
            queue.append(trial_id)
            if trial_id not in oracle.start_order:
                oracle.start_order.append(trial_id)
            oracle._record_values(trial)
    for trial_id in queue:
        _drop_metrics(oracle.trials[trial_id])
    # `create_trial` pops from the end: keep the oldest first to re-run.
    oracle._retry_queue = list(reversed(queue))
    oracle.ongoing_trials = {
        tuner_id: oracle.trials[trial_id] for tuner_id, trial_id in held.items()
    }


def _mark_ended(oracle, trial):
    if trial.trial_id not in oracle.end_order:
        oracle.end_order.append(trial.trial_id)
        oracle._run_times[trial.trial_id] = max(
            1, oracle._run_times[trial.trial_id]
        )


class ResumableTunerMixin:
    """Tuner methods: atomic saves, the tuner file (point 2), a run log.

    Every trial start and end is appended to `RUN_LOG` in the project
    folder with the tuner's id, which shows which process ran what (and
    that no finished trial ran twice).
    """

    def __init__(self, oracle, directory, project_name, overwrite, **kwargs):
        project_dir = os.path.join(directory, project_name)
        tuner_id = os.environ.get("KERASTUNER_TUNER_ID", "tuner0")
        tuner_file = os.path.join(project_dir, f"{tuner_id}.json")
        has_oracle = os.path.exists(os.path.join(project_dir, "oracle.json"))
        if not overwrite and has_oracle and not os.path.exists(tuner_file):
            write_json({}, tuner_file)
        keras_tuner.Tuner.__init__(
            self,
            oracle=oracle,
            directory=directory,
            project_name=project_name,
            overwrite=overwrite,
            **kwargs,
        )

    def save(self):
        if not self._is_worker():
            self.oracle.save()
        write_json(self.get_state(), self._get_tuner_fname())

    def run_trial(self, trial, *args, **kwargs):
        kwargs["trial_dir"] = self.get_trial_dir(trial.trial_id)
        return super().run_trial(trial, *args, **kwargs)

    def on_trial_begin(self, trial):
        super().on_trial_begin(trial)
        self._log_run(trial, "start")

    def on_trial_end(self, trial):
        status = trial.status
        super().on_trial_end(trial)
        self._log_run(trial, "end", status=status)

    def _log_run(self, trial, event, **extra):
        record = {
            "trial_id": trial.trial_id,
            "event": event,
            "tuner_id": self.tuner_id,
            "pid": os.getpid(),
            "time": time.time(),
            **extra,
        }
        line = json.dumps(record) + "\n"
        # One small O_APPEND write: lines of several processes never mix.
        fd = os.open(
            os.path.join(self.project_dir, RUN_LOG),
            os.O_WRONLY | os.O_APPEND | os.O_CREAT,
            0o644,
        )
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


def read_run_log(project_dir):
    """The records of `RUN_LOG` (complete lines only)."""
    path = os.path.join(project_dir, RUN_LOG)
    if not os.path.exists(path):
        return []
    records = []
    with open(path) as f:
        for line in f:
            if line.endswith("\n"):
                records.append(json.loads(line))
    return records


def _with_mixin(mixin, base):
    return type(f"Resumable{base.__name__}", (mixin, base), {})


class FromScratchHyperband(keras_tuner.Hyperband):
    """Hyperband whose later rounds train again from the seed.

    KerasTuner's Hyperband starts a promoted trial from the weights of its
    previous round and trains the remaining epochs. The recipe's learning
    rate schedule and weight average span a trial's whole run, which a
    continuation would restart, so here every trial builds afresh and
    trains its whole budget (`ApplicationHyperModel.fit`): a trial of the
    whole budget is then the run a user would make.
    """

    def _build_hypermodel(self, hp):
        return keras_tuner.Tuner._build_hypermodel(self, hp)


ORACLES = {
    "random": _with_mixin(
        AtomicOracleMixin, keras_tuner.oracles.RandomSearchOracle
    ),
    "bayesian": _with_mixin(
        AtomicOracleMixin, keras_tuner.oracles.BayesianOptimizationOracle
    ),
    "hyperband": _with_mixin(
        AtomicOracleMixin, keras_tuner.oracles.HyperbandOracle
    ),
}
# Hyperband's tuner passes each trial its budget (and trains it from the
# seed); the others run on the plain `Tuner`. Each takes our oracle (see
# `__init__`).
TUNERS = {
    "random": _with_mixin(ResumableTunerMixin, keras_tuner.Tuner),
    "bayesian": _with_mixin(ResumableTunerMixin, keras_tuner.Tuner),
    "hyperband": _with_mixin(ResumableTunerMixin, FromScratchHyperband),
}
