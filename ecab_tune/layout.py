"""File names inside an experiment folder, shared by the search, the report and the service.

runs/<name>/
  trial_<id>/params.json   the sampled parameters (Ray Tune's own)
  trial_<id>/result.json   one JSON line per reported epoch (Ray Tune's own)
  trial_<id>/error.txt     the last error of a trial that raised (Ray Tune's own)
  optuna.db                the Optuna study (SQLite)
  search.json              the resolved search config, written when it starts (--resume)
  summary.json             written when the search ends or is interrupted: every trial
  best/                    the exported best checkpoint, with a copy of the space file,
                           config.json and a README.md model card
  pareto/<k>/              with several --objectives: each Pareto-optimal trial, exported as best/
  mlflow.db, mlflow/       with --tracker mlflow: MLflow's store (SQLite) and artifact folder
"""

EXPORT_DIR = "best"
OPTUNA_DB = "optuna.db"
TRIAL_PREFIX = "trial_"  # trial folders: trial_<id>
RESULT_FILE = "result.json"
PARAMS_FILE = "params.json"  # the trial's sampled parameters (Ray Tune's own)
ERROR_FILE = "error.txt"  # ray.tune.result.EXPR_ERROR_FILE, without importing Ray
SUMMARY_FILE = "summary.json"
PARETO_DIR = "pareto"
MLFLOW_DB = "mlflow.db"
MLFLOW_ARTIFACTS = "mlflow"
SEARCH_FILE = "search.json"
SPACE_COPY = "search_space.yaml"
