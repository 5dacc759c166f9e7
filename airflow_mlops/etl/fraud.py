"""Per-customer features of PaySim-style transactions, for the fraud example (a Spark transformation).

One row per sender (``nameOrig``): counts, sums and means of amounts overall and by transaction type,
balance deltas, and the label ``isFraud`` (1 when any of the customer's transactions was fraud).
Money is summed as DECIMAL(20,2), exactly, and only then turned into doubles, so the output bytes do
not depend on how Spark split the input: the same transactions give the same snapshot id anywhere.
"""

from __future__ import annotations

from typing import Any

from airflow_mlops.datasets.paysim import TYPES
from airflow_mlops.etl.spark import EtlError

REQUIRED_COLUMNS = ("type", "amount", "nameOrig", "oldbalanceOrg", "newbalanceOrig", "oldbalanceDest", "newbalanceDest", "isFraud")
KEY = "nameOrig"
LABEL = "isFraud"
FEATURE_COLUMNS = [
    "n_transactions", "total_amount", "mean_amount", "max_amount",
    *(f"{stat}_{kind.lower()}" for kind in TYPES for stat in ("n", "amount", "mean_amount")),
    "orig_balance_delta", "dest_balance_delta",
]
COUNT_COLUMNS = {"n_transactions", *(f"n_{kind.lower()}" for kind in TYPES)}
_MONEY = "decimal(20,2)"


def customer_features(spark: Any, inputs: dict[str, Any], input_name: str = "transactions") -> Any:
    """``inputs[input_name]`` (PaySim columns) aggregated to one row per customer: FEATURE_COLUMNS, KEY, LABEL."""
    from pyspark.sql import functions as F

    if input_name not in inputs:
        raise EtlError(f"customer_features needs an input named {input_name!r}; got {sorted(inputs)}")
    frame = inputs[input_name]
    missing = [column for column in REQUIRED_COLUMNS if column not in frame.columns]
    if missing:
        raise EtlError(f"input {input_name!r} lacks PaySim columns {missing}; it has {frame.columns}")

    amount = F.col("amount").cast(_MONEY)
    money = {
        "orig_delta": F.col("newbalanceOrig").cast(_MONEY) - F.col("oldbalanceOrg").cast(_MONEY),
        "dest_delta": F.col("newbalanceDest").cast(_MONEY) - F.col("oldbalanceDest").cast(_MONEY),
    }
    aggregates = [
        F.count(F.lit(1)).alias("n_transactions"),
        F.sum(amount).alias("total_amount"),
        F.max(amount).alias("max_amount"),
        F.sum(money["orig_delta"]).alias("orig_balance_delta"),
        F.sum(money["dest_delta"]).alias("dest_balance_delta"),
        F.max(F.col(LABEL).cast("int")).alias(LABEL),
    ]
    for kind in TYPES:
        of_kind = F.col("type") == kind
        aggregates += [
            F.sum(of_kind.cast("int")).alias(f"n_{kind.lower()}"),
            F.coalesce(F.sum(F.when(of_kind, amount)), F.lit(0).cast(_MONEY)).alias(f"amount_{kind.lower()}"),
        ]
    per_customer = frame.groupBy(KEY).agg(*aggregates)
    exact_means = {"mean_amount": F.col("total_amount") / F.col("n_transactions")}
    for kind in TYPES:
        count, total = F.col(f"n_{kind.lower()}"), F.col(f"amount_{kind.lower()}")
        exact_means[f"mean_amount_{kind.lower()}"] = F.when(count > 0, total / count).otherwise(F.lit(0))
    per_customer = per_customer.select("*", *(value.alias(name) for name, value in exact_means.items()))
    typed = [F.col(name).cast("long" if name in COUNT_COLUMNS else "double").alias(name) for name in FEATURE_COLUMNS]
    return per_customer.select(KEY, *typed, F.col(LABEL))
