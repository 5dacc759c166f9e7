# Airflow with airflow-mlops installed, for docker-compose.yaml (a stub, not exercised yet).
FROM apache/airflow:3.3.2-python3.11
COPY --chown=airflow:root . /opt/airflow-mlops
RUN pip install --no-cache-dir -c /opt/airflow-mlops/requirements.lock /opt/airflow-mlops
