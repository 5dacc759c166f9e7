"""Synthetic red wines in the schema of the UCI Wine Quality data set (Cortez et al., 2009).

The eleven physicochemical measurements of the UCI red wine table, in its units and roughly its
ranges, means and correlations (fixed acidity with citric acid and density, against pH; free with
total sulfur dioxide; alcohol against density), and a quality score from 3 to 8, mostly 5 and 6,
that rises with alcohol and sulphates and falls with volatile acidity, chlorides and total sulfur
dioxide, plus noise: what the classic MLflow ElasticNet tutorial fits, without a download.
Deterministic for a seed. Column names are snake_case (``pH`` becomes ``ph``), safe as MLflow
signature and pandas column names; ``wine_id`` (0 .. rows-1) identifies rows for batch scoring.
"""

from __future__ import annotations

from pathlib import Path

KEY = "wine_id"
TARGET = "quality"
FEATURE_COLUMNS = [
    "fixed_acidity", "volatile_acidity", "citric_acid", "residual_sugar", "chlorides",
    "free_sulfur_dioxide", "total_sulfur_dioxide", "density", "ph", "sulphates", "alcohol",
]
COLUMNS = [KEY, *FEATURE_COLUMNS, TARGET]
FILE_NAME = "wine_quality.csv"

# (low, high) of each measurement in the UCI red wine table; generated values stay inside.
RANGES = {
    "fixed_acidity": (4.6, 15.9), "volatile_acidity": (0.12, 1.58), "citric_acid": (0.0, 1.0),
    "residual_sugar": (0.9, 15.5), "chlorides": (0.012, 0.611), "free_sulfur_dioxide": (1.0, 72.0),
    "total_sulfur_dioxide": (6.0, 289.0), "density": (0.99007, 1.00369), "ph": (2.74, 4.01),
    "sulphates": (0.33, 2.0), "alcohol": (8.4, 14.9),
}
QUALITY_RANGE = (3, 8)


def generate_wine_quality(rows: int, seed: int = 0):
    """A pandas DataFrame of ``rows`` wines: ``wine_id``, the eleven measurements, and ``quality``."""
    import numpy as np
    import pandas as pd

    if rows <= 0:
        raise ValueError(f"rows must be positive, got {rows}")
    rng = np.random.default_rng(seed)

    def normal() -> np.ndarray:
        return rng.standard_normal(rows)

    def bounded(name: str, values: np.ndarray, decimals: int) -> np.ndarray:
        low, high = RANGES[name]
        return np.clip(values, low, high).round(decimals)

    acidity, sulfur, body = normal(), normal(), normal()  # shared factors behind the correlations
    volatile_z = normal()
    fixed_acidity = bounded("fixed_acidity", 8.3 * np.exp(0.2 * acidity - 0.02), 1)
    volatile_acidity = bounded("volatile_acidity", 0.53 * np.exp(0.32 * volatile_z - 0.05), 3)
    citric_acid = bounded("citric_acid", 0.27 + 0.12 * acidity - 0.09 * volatile_z + 0.1 * normal(), 2)
    residual_sugar = bounded("residual_sugar", 0.9 + rng.lognormal(mean=0.4, sigma=0.55, size=rows), 1)
    chlorides = bounded("chlorides", 0.08 * np.exp(0.3 * normal() + 0.1 * body), 3)
    free_sulfur = np.round(np.exp(2.6 + 0.55 * sulfur))
    free_sulfur_dioxide = bounded("free_sulfur_dioxide", free_sulfur, 0)
    total_sulfur_dioxide = bounded(
        "total_sulfur_dioxide", np.round(free_sulfur + np.exp(3.2 + 0.35 * sulfur + 0.45 * normal())), 0)
    alcohol = bounded("alcohol", 10.4 + 1.0 * (0.8 * normal() - 0.5 * body) + 0.25 * rng.exponential(1.0, rows) - 0.25, 1)
    density = bounded(
        "density",
        0.9967 + 0.0011 * acidity - 0.0009 * (alcohol - 10.4) + 0.00035 * (residual_sugar - 2.5) + 0.0007 * normal(), 5)
    ph = bounded("ph", 3.31 - 0.11 * acidity + 0.1 * normal(), 2)
    sulphates = bounded("sulphates", 0.62 * np.exp(0.22 * normal() + 0.03), 2)

    # The tutorial's story: alcohol and sulphates (up to a point) help, volatile acidity, salt and
    # too much sulfur hurt; what the measurements do not explain is a taster's noise.
    latent = (
        5.63
        + 0.33 * (alcohol - 10.4)
        - 1.4 * (volatile_acidity - 0.53)
        + 0.9 * (np.minimum(sulphates, 0.9) - 0.64)
        - 1.8 * (chlorides - 0.085)
        - 0.0035 * (total_sulfur_dioxide - 46.0)
        + 0.004 * (free_sulfur_dioxide - 15.0)
        - 0.4 * (ph - 3.31)
        + 0.55 * normal()
    )
    quality = np.clip(np.rint(latent), *QUALITY_RANGE).astype("int64")
    return pd.DataFrame(
        {
            KEY: np.arange(rows, dtype="int64"),
            "fixed_acidity": fixed_acidity,
            "volatile_acidity": volatile_acidity,
            "citric_acid": citric_acid,
            "residual_sugar": residual_sugar,
            "chlorides": chlorides,
            "free_sulfur_dioxide": free_sulfur_dioxide,
            "total_sulfur_dioxide": total_sulfur_dioxide,
            "density": density,
            "ph": ph,
            "sulphates": sulphates,
            "alcohol": alcohol,
            TARGET: quality,
        },
        columns=COLUMNS,
    )


def write_wine_quality_csv(directory: str | Path, rows: int, seed: int = 0) -> Path:
    """Write ``wine_quality.csv`` into ``directory`` atomically (temp file + rename) and return its path."""
    import os

    target_dir = Path(directory)
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / FILE_NAME
    temp = target_dir / f".{FILE_NAME}.{os.getpid()}.part"
    try:
        generate_wine_quality(rows, seed).to_csv(temp, index=False)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    return target
