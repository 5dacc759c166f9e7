# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
FLOOR_VENV ?= .venv-floor
INSTALLED := $(VENV)/.installed
DEMO_HOME ?= $(CURDIR)/.demo
DEMO_DATE ?=
AIRFLOW_PORT ?= 8080
MLFLOW_PORT ?= 5000

export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
# The MLflow links of tasks over the embedded store point at the MLflow UI `make up` starts.
export AIRFLOW__AIRFLOW_MLOPS__MLFLOW_UI_URL := http://127.0.0.1:$(MLFLOW_PORT)

.PHONY: install demo demo-config up down test test-floor bench clean

$(INSTALLED): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements.lock -e '.[test,bench]'
	touch $@

install: $(INSTALLED)

## Run the flagship DAG end to end on the embedded default (SQLite, local files, Spark local[*]).
## Without DEMO_DATE the run is for today, as a UI trigger makes it; DEMO_DATE=2026-01-01 runs a past
## date (its run then shows that date as its start, so the UI reports a duration of months).
demo: $(INSTALLED) demo-config
	AIRFLOW_HOME=$(DEMO_HOME) $(VENV)/bin/airflow db migrate > $(DEMO_HOME)/db-migrate.log 2>&1
	AIRFLOW_HOME=$(DEMO_HOME) $(VENV)/bin/airflow dags test fraud_detection $(DEMO_DATE) > $(DEMO_HOME)/dags-test.log 2>&1 \
		|| (tail -n 60 $(DEMO_HOME)/dags-test.log; exit 1)
	@grep -E "Marking run|state=" $(DEMO_HOME)/dags-test.log | tail -n 3 || true
	@echo
	@echo "Demo finished. Results under $(DEMO_HOME) (Airflow log: $(DEMO_HOME)/dags-test.log)."
	@grep -oE "MLflow (training|study parent) run [0-9a-f]+ of task [^:]+: http[^ \"]*" $(DEMO_HOME)/dags-test.log | sed 's/^/  /' || true
	@grep -o "Gate: version .*)" $(DEMO_HOME)/dags-test.log | sed 's/^/  fraud_detection /' || true
	@echo
	@echo "Lineage of the champion (AIRFLOW_HOME=$(DEMO_HOME) $(VENV)/bin/airflow-mlops lineage models:/fraud_detection@champion):"
	@AIRFLOW_HOME=$(DEMO_HOME) $(VENV)/bin/airflow-mlops lineage models:/fraud_detection@champion
	@echo
	@echo "More: AIRFLOW_HOME=$(DEMO_HOME) $(VENV)/bin/airflow-mlops history fraud_detection | log | reproduce RUN_ID"
	@echo "Click through both UIs: make up (stop with make down)"

## The demo home's airflow.cfg, written on each `make demo` / `make up` (ports as given; its secrets kept),
## so that `AIRFLOW_HOME=.demo airflow ...` by hand finds the DAGs and links as make does, and the task
## supervisor reaches the execution API at [api] base_url on AIRFLOW_PORT, not 8080.
demo-config: $(INSTALLED)
	@$(PY) scripts/demo_config.py '$(DEMO_HOME)' '$(CURDIR)/dags' '$(AIRFLOW_PORT)' '$(MLFLOW_PORT)'

## Start Airflow (airflow standalone, which runs `airflow` from PATH) and the MLflow UI on the demo's stores, in the background.
up: $(INSTALLED) demo-config
	@test ! -f $(DEMO_HOME)/standalone.pid || (echo "already up (make down first)"; exit 1)
	PATH=$(abspath $(VENV))/bin:$$PATH AIRFLOW_HOME=$(DEMO_HOME) AIRFLOW__API__PORT=$(AIRFLOW_PORT) \
		setsid $(VENV)/bin/airflow standalone \
		> $(DEMO_HOME)/standalone.log 2>&1 < /dev/null & echo $$! > $(DEMO_HOME)/standalone.pid
	setsid $(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(DEMO_HOME)/airflow_mlops/mlflow.db \
		--default-artifact-root $(DEMO_HOME)/airflow_mlops/mlartifacts --host 127.0.0.1 --port $(MLFLOW_PORT) \
		> $(DEMO_HOME)/mlflow-ui.log 2>&1 < /dev/null & echo $$! > $(DEMO_HOME)/mlflow-ui.pid
	@for url in http://127.0.0.1:$(AIRFLOW_PORT)/api/v2/monitor/health http://127.0.0.1:$(MLFLOW_PORT)/health; do \
		timeout 300 sh -c "until curl -sf $$url > /dev/null; do sleep 2; done" || { echo "$$url did not answer: see $(DEMO_HOME)/*.log"; exit 1; }; \
	done
	@echo "Airflow UI: http://127.0.0.1:$(AIRFLOW_PORT)  (user admin, password in $(DEMO_HOME)/simple_auth_manager_passwords.json.generated)"
	@echo "MLflow UI:  http://127.0.0.1:$(MLFLOW_PORT)"
	@echo "Logs: $(DEMO_HOME)/standalone.log, $(DEMO_HOME)/mlflow-ui.log. Stop with: make down"

## Stop what `make up` started, each with every process it spawned: Ctrl-C (both shut down cleanly
## on SIGINT), then SIGKILL for what is left after 10 s (standalone stops its components, then may hang).
down:
	@for name in standalone mlflow-ui; do \
		pidfile=$(DEMO_HOME)/$$name.pid; \
		[ -f $$pidfile ] || continue; group=$$(cat $$pidfile); \
		kill -INT -$$group 2>/dev/null; \
		for i in $$(seq 10); do kill -0 -$$group 2>/dev/null || break; sleep 1; done; \
		kill -KILL -$$group 2>/dev/null; rm -f $$pidfile; echo "stopped $$name"; \
	done

## Run the test suite (services it needs: PostgreSQL on 127.0.0.1:5432, Redis on 127.0.0.1:6379; moto's S3
## server, MLflow servers, Spark and Airflow clusters are started by the tests).
test: $(INSTALLED)
	$(PY) -m pytest -q -ra --durations=25

## The floor environment: a fresh venv with the lowest versions pyproject.toml's ranges allow for every
## direct dependency (uv --resolution lowest-direct; the rest resolves as for a user today), running the
## tests marked `floor` (fast, no service). A declared floor the code does not work with fails here.
test-floor: $(INSTALLED)
	rm -rf $(FLOOR_VENV)
	$(VENV)/bin/uv venv --quiet --python $(PYTHON) $(FLOOR_VENV)
	$(VENV)/bin/uv pip install --quiet --python $(FLOOR_VENV)/bin/python --resolution lowest-direct '.[spark,postgres]' \
		$$(grep -E '^(pytest|pytest-timeout|jsonschema)==' requirements.lock)
	@$(VENV)/bin/uv pip list --python $(FLOOR_VENV)/bin/python 2>/dev/null \
		| grep -E '^(apache-airflow|apache-airflow-providers-(amazon|apache-spark|openlineage|common-compat|postgres)|mlflow|optuna|pandas|scikit-learn|blake3|pyspark|pyspark-client|psycopg2-binary) '
	$(FLOOR_VENV)/bin/python -m pytest -q -ra -m floor -p no:cacheprovider --durations=30

bench: $(INSTALLED)
	$(PY) benchmarks/snapshot_bench.py
	$(PY) benchmarks/tracking_bench.py
	$(PY) benchmarks/tuning_bench.py
	$(PY) benchmarks/etl_bench.py

clean:
	rm -rf $(VENV) $(FLOOR_VENV) $(DEMO_HOME) .pytest_cache
