"""Every key airflow_mlops writes or reads on MLflow runs, model versions and registered models, and on
the Optuna studies and trials beside them, defined once.

Runs, versions and studies written by one module are read by others (lineage, retention, reproduce,
the registry's gate), and by users filtering runs in the MLflow UI: one spelling keeps them in step.
"""

from __future__ import annotations

# ---- the Airflow task instance that made a run or version: ``airflow.dag_id``, ``airflow.run_id``, ...
AIRFLOW_TAG_PREFIX = "airflow."

# ---- a run's inputs, outputs and fate
SNAPSHOT_TAG = "airflow_mlops.snapshot_id"
SNAPSHOT_URI_TAG = "airflow_mlops.snapshot_uri"
MODEL_URI_TAG = "airflow_mlops.model_uri"
#: A digest of what determines a run's result: a retry reuses only a run with the same one.
FINGERPRINT_TAG = "airflow_mlops.fingerprint"
SUPERSEDED_TAG = "airflow_mlops.superseded_by"
ERROR_TAG = "airflow_mlops.error"
TASK_INSTANCE_URL_TAG = "airflow_mlops.task_instance_url"  # the Airflow UI page of the task instance
RUN_NOTE_TAG = "mlflow.note.content"  # MLflow's run description, rendered as markdown
#: On a re-created run: the id of the run (or trial run) it reproduces.
REPRODUCES_TAG = "airflow_mlops.reproduces"

# ---- the code and environment that made a run
GIT_COMMIT_TAG = "mlflow.source.git.commit"  # MLflow's own tag, which it sets only for scripts
SOURCE_NAME_TAG = "mlflow.source.name"
GIT_DIRTY_TAG = "airflow_mlops.git_dirty"
PYTHON_VERSION_TAG = "airflow_mlops.python_version"
PLATFORM_TAG = "airflow_mlops.platform"
CPU_COUNT_TAG = "airflow_mlops.cpu_count"
#: The source files a run records, by role: (tag of the file's path, tag of its digest).
CODE_FILE_TAGS = {
    "dag file": ("airflow_mlops.dag_file", "airflow_mlops.dag_file_digest"),
    "train module": ("airflow_mlops.train_module", "airflow_mlops.train_module_digest"),
}

# ---- tuning: a study's parent run and its nested trial runs
PARENT_RUN_TAG = "mlflow.parentRunId"
STUDY_TAG = "optuna.study_name"
STORAGE_TAG = "optuna.storage"
BEST_TRIAL_TAG = "optuna.best_trial"
BEST_PARAMS_TAG = "optuna.best_params"
TRIAL_NUMBER_TAG = "optuna.trial_number"
TRIAL_STATE_TAG = "optuna.state"
#: The trial's params as JSON, with their types (MLflow params are text): what ``reproduce`` re-scores.
TRIAL_PARAMS_TAG = "airflow_mlops.trial_params"

# ---- model versions: where they come from and the gate's verdict
TRAINING_RUN_TAG = "airflow_mlops.training_run_id"
DECISION_TAG = "airflow_mlops.gate.decision"
REASON_TAG = "airflow_mlops.gate.reason"
CHALLENGER_SCORE_TAG = "airflow_mlops.gate.challenger_score"
CHAMPION_SCORE_TAG = "airflow_mlops.gate.champion_score"
CHAMPION_VERSION_TAG = "airflow_mlops.gate.champion_version"
EVALUATION_TAG = "airflow_mlops.gate.evaluation_data"
RULE_TAG = "airflow_mlops.gate.rule"

# ---- registered models: ``airflow_mlops.promotion.<seq>``, one tag per alias move
PROMOTION_HISTORY_PREFIX = "airflow_mlops.promotion."

# ---- Optuna user attributes, kept in the study's storage
#: On a study: the fingerprint of the inputs it was made from, and what that fingerprint digests.
FINGERPRINT_ATTR = "airflow_mlops.fingerprint"
DEFINITION_ATTR = "airflow_mlops.definition"
#: On a trial: why it failed; which task instance ran it (a retry fails what its dead attempts left
#: RUNNING); that it gave up its slot in a study that already had ``n_trials`` under way (it ran nothing).
ERROR_ATTR = "airflow_mlops.error"
OWNER_ATTR = "airflow_mlops.task_instance"
SURPLUS_ATTR = "airflow_mlops.surplus"
