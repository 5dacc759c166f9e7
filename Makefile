# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
DEMO_HOME ?= $(CURDIR)/.demo
DEMO_DATE ?= 2026-01-01

export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags

.PHONY: install demo test bench clean

$(INSTALLED): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements.lock -e '.[test,bench]'
	touch $@

install: $(INSTALLED)

## Run the flagship DAG end to end on the embedded default (SQLite, local files, Spark local[*]).
demo: $(INSTALLED)
	mkdir -p $(DEMO_HOME)
	AIRFLOW_HOME=$(DEMO_HOME) $(VENV)/bin/airflow db migrate > $(DEMO_HOME)/db-migrate.log 2>&1
	AIRFLOW_HOME=$(DEMO_HOME) $(VENV)/bin/airflow dags test mlops_retrain $(DEMO_DATE) > $(DEMO_HOME)/dags-test.log 2>&1 \
		|| (tail -n 60 $(DEMO_HOME)/dags-test.log; exit 1)
	@grep -E "Marking run|state=" $(DEMO_HOME)/dags-test.log | tail -n 3 || true
	@echo
	@echo "Demo finished. Results under $(DEMO_HOME):"
	@echo "  Airflow log:     $(DEMO_HOME)/dags-test.log"
	@echo "  Snapshot store:  $(DEMO_HOME)/airflow_mlops/snapshots"
	@echo "  Snapshots:       AIRFLOW_HOME=$(DEMO_HOME) $(VENV)/bin/airflow-mlops log"
	@echo "  MLflow store:    sqlite:///$(DEMO_HOME)/airflow_mlops/mlflow.db (artifacts in $(DEMO_HOME)/airflow_mlops/mlartifacts)"
	@echo "  MLflow UI:       $(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(DEMO_HOME)/airflow_mlops/mlflow.db --port 5000"
	@grep -o "MLflow run [0-9a-f]*: http[^ ]*" $(DEMO_HOME)/dags-test.log | sed 's/^/  /' || true
	@grep -o "Gate: version .*)" $(DEMO_HOME)/dags-test.log | sed 's/^/  fraud_detection /' || true
	@echo "  History:         AIRFLOW_HOME=$(DEMO_HOME) $(VENV)/bin/airflow-mlops history fraud_detection"
	@AIRFLOW_HOME=$(DEMO_HOME) $(VENV)/bin/airflow-mlops log | head -n 5

## Run the test suite (services it needs: PostgreSQL on 127.0.0.1:5432; moto's S3 server is started by the tests).
test: $(INSTALLED)
	$(PY) -m pytest -q -ra --durations=25

bench: $(INSTALLED)
	$(PY) benchmarks/snapshot_bench.py
	$(PY) benchmarks/tracking_bench.py
	$(PY) benchmarks/tuning_bench.py
	$(PY) benchmarks/etl_bench.py

clean:
	rm -rf $(VENV) $(DEMO_HOME) .pytest_cache
