"""Synthetic transactions in the PaySim schema (the mobile-money fraud data set on Kaggle).

Same columns and roughly the same shape (type mix, heavy-tailed amounts, fraud only in TRANSFER and
CASH_OUT, rare), deterministic for a seed, so examples and benchmarks run anywhere.
"""

from __future__ import annotations

from pathlib import Path

COLUMNS = [
    "step", "type", "amount", "nameOrig", "oldbalanceOrg", "newbalanceOrig",
    "nameDest", "oldbalanceDest", "newbalanceDest", "isFraud", "isFlaggedFraud",
]
TYPES = ["CASH_IN", "CASH_OUT", "DEBIT", "PAYMENT", "TRANSFER"]
TYPE_WEIGHTS = [0.22, 0.35, 0.01, 0.34, 0.08]


def generate_paysim(rows: int, seed: int = 0, customers: int | None = None):
    """A pandas DataFrame of ``rows`` transactions by ``customers`` senders (default rows/20)."""
    import numpy as np
    import pandas as pd

    if rows <= 0:
        raise ValueError(f"rows must be positive, got {rows}")
    rng = np.random.default_rng(seed)
    customers = customers or max(1, rows // 20)
    kind = rng.choice(len(TYPES), size=rows, p=TYPE_WEIGHTS)
    amount = np.round(rng.lognormal(mean=10.5, sigma=1.3, size=rows), 2)
    old_orig = np.round(rng.lognormal(mean=10.0, sigma=2.0, size=rows) * (rng.random(rows) > 0.3), 2)
    sends = np.isin(kind, [1, 2, 3, 4])
    new_orig = np.where(sends, np.maximum(old_orig - amount, 0.0), old_orig + amount).round(2)
    old_dest = np.round(rng.lognormal(mean=11.0, sigma=2.0, size=rows) * (rng.random(rows) > 0.4), 2)
    new_dest = np.where(kind == 3, old_dest, old_dest + amount).round(2)
    risky = np.isin(kind, [1, 4])
    fraud_score = rng.random(rows) * np.where(risky, 1.0, 0.0) * (1 + (amount > 200_000) * 4)
    is_fraud = (fraud_score > 0.985).astype("int8")
    flagged = ((is_fraud == 1) & (kind == 4) & (amount > 200_000)).astype("int8")
    frame = pd.DataFrame(
        {
            "step": np.sort(rng.integers(1, 744, size=rows)),
            "type": np.array(TYPES)[kind],
            "amount": amount,
            "nameOrig": np.char.add("C", rng.integers(1_000_000, 1_000_000 + customers, size=rows).astype(str)),
            "oldbalanceOrg": old_orig,
            "newbalanceOrig": new_orig,
            "nameDest": np.char.add(np.where(kind == 3, "M", "C"), rng.integers(2_000_000, 9_999_999, size=rows).astype(str)),
            "oldbalanceDest": np.where(kind == 3, 0.0, old_dest),
            "newbalanceDest": np.where(kind == 3, 0.0, new_dest),
            "isFraud": is_fraud,
            "isFlaggedFraud": flagged,
        },
        columns=COLUMNS,
    )
    return frame


def write_paysim_csv(directory: str | Path, rows: int, seed: int = 0) -> Path:
    """Write ``transactions.csv`` into ``directory`` atomically and return its path."""
    import os

    target_dir = Path(directory)
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / "transactions.csv"
    temp = target_dir / f".transactions.csv.{os.getpid()}.part"
    generate_paysim(rows, seed).to_csv(temp, index=False)
    os.replace(temp, target)
    return target
