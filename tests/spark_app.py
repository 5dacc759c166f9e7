"""A PySpark application file as teams submit them, for SparkETLOperator(application=...).

    spark-submit tests/spark_app.py [--conf-report FILE] --output DIR --input transactions=PATH
"""

import argparse
from pathlib import Path

from pyspark.sql import SparkSession
from spark_transforms import report_conf  # beside this file, which spark-submit runs as a script

from airflow_mlops.etl.fraud import customer_features
from airflow_mlops.etl.spark import EtlInput, read_input, write_table

parser = argparse.ArgumentParser()
parser.add_argument("--output", required=True)
parser.add_argument("--input", action="append", default=[])
parser.add_argument("--conf-report", help="where to write which EXPECTED_SPARK_CONF properties the job got")
args = parser.parse_args()

spark = SparkSession.builder.getOrCreate()
try:
    if args.conf_report:
        report_conf(spark, args.conf_report)
    inputs = {}
    for item in args.input:
        name, _, path = item.partition("=")
        inputs[name] = read_input(spark, EtlInput(name, Path(path)))
    write_table(customer_features(spark, inputs), Path(args.output), partitions=1, sort_by=None)
finally:
    spark.stop()
