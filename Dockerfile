# The image of docker-compose.yaml's Airflow services and Spark cluster: apache/airflow at the locked
# Airflow version, a JRE for Spark (pyspark's driver in tasks, the master and workers), and
# airflow-mlops installed against requirements.lock, as Airflow's docs recommend for extending the image.
#   docker build -t airflow-mlops:local .      (docker compose up builds it too)
# The slim variant ships few providers, so what runs is essentially what requirements.lock pins.
FROM apache/airflow:slim-3.3.2-python3.11

USER root
RUN apt-get update \
  && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
  && apt-get autoremove -yqq --purge \
  && apt-get clean \
  && rm -rf /var/lib/apt/lists/*
USER airflow

# Mount point of the shared volume ($AIRFLOW_HOME/airflow_mlops): a new volume takes this ownership.
RUN mkdir -p /opt/airflow/airflow_mlops

COPY --chown=airflow:root pyproject.toml README.md requirements.lock /opt/airflow-mlops/
COPY --chown=airflow:root airflow_mlops /opt/airflow-mlops/airflow_mlops
# As a provider goes into an existing Airflow: apache-airflow pinned to the image's own version (pip fails
# rather than move it), the extras this stack uses (Spark ETL and prediction; PostgreSQL and Celery for
# Airflow itself), and requirements.lock as constraints so the image runs what CI tests.
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" \
      -c /opt/airflow-mlops/requirements.lock "/opt/airflow-mlops[spark,postgres,celery]"
# The Spark that pyspark ships (spark-class, spark-submit, jars): Spark master, workers and the drivers in tasks.
RUN ln -s "$(python -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')" /opt/airflow-mlops/spark
ENV SPARK_HOME=/opt/airflow-mlops/spark
