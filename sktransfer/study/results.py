"""The results table of a comparison: its columns, metrics, and the labels of its rows."""

#: The ``freeze`` of the fine-tuning row whose depth an inner cross-validation chooses.
CHOSEN_BY_CV = "inner CV"
#: The primary metrics the comparison ranks by, one per task (higher is better).
PRIMARY_METRICS = ("accuracy", "f1_macro", "r2")


def result_columns(metrics=("accuracy",)):
    """The results' columns: each metric is a mean and a ``_std`` over the outer folds."""
    scores = [column for metric in metrics for column in (metric, f"{metric}_std")]
    return ["kind", "method", "backbone", "freeze", "chosen", "labels_per_class", *scores,
            "fit_seconds", "predict_seconds", "early_stopping", "n_train", "n_test",
            "frozen_blocks"]


def probe_table(results):
    """The layer probe a comparison ran, as a DataFrame (None without the features kind).

    One row per backbone and block, with the columns of :func:`sktransfer.probe_layers`
    and ``backbone``. Every block is scored on the outer test folds, so the curve is a
    diagnostic: the best block's score is selected on those folds. The row "frozen
    features, layer chosen by inner CV" is the unbiased score of choosing a layer.
    """
    import pandas as pd

    if "layer_probe" not in results.attrs:
        return None
    return pd.DataFrame(results.attrs["layer_probe"])


def primary_metric(results):
    """The metric that ranks the rows: ``attrs["metric"]``, or read off a CSV's columns."""
    return results.attrs.get("metric") or next(m for m in PRIMARY_METRICS if m in results)


def metric_columns(results):
    """Every metric of the results (columns with a ``_std`` partner), the primary first."""
    metrics = [c for c in results.columns if f"{c}_std" in results.columns]
    primary = primary_metric(results)
    return [primary, *(m for m in metrics if m != primary)]


def difference(gap, metric):
    """A difference of two scores in words: points for proportions, plain for R²."""
    if metric == "r2":
        return f"{abs(gap):.3f}"
    return f"{abs(gap) * 100:.1f} points"


def row_label(row, *, with_backbone=False):
    """The method's name in plots and sentences (``with_backbone``: prefixed by it)."""
    if row["kind"] == "finetune" and row["freeze"] != CHOSEN_BY_CV:
        label = f"fine-tune, freeze={cell_text(row['freeze'])}"
    else:
        label = row["method"]
    backbone = row.get("backbone")
    if with_backbone and isinstance(backbone, str):
        return f"{backbone}: {label}"
    return label


def labeller(results):
    """``row_label`` for rows of ``results``: prefixed by the backbone when there are several."""
    several = "backbone" in results and results["backbone"].dropna().nunique() > 1
    return lambda row: row_label(row, with_backbone=several)


def integers(column):
    """A column of whole numbers with gaps as nullable Int64 (prints 9 and blank, not 9.0/nan)."""
    import pandas as pd

    return pd.to_numeric(column, errors="coerce").round().astype("Int64")


def integer_text(column):
    """Whole numbers as text, blank where missing."""
    whole = integers(column)
    return ["" if missing else str(n) for n, missing in zip(whole, whole.isna())]


def largest_labels(results):
    """Rows of the largest ``labels_per_class`` ("all" counts as largest)."""
    values = results["labels_per_class"].unique()
    largest = "all" if "all" in list(values) else max(values, key=int)
    return results[results["labels_per_class"] == largest]


def cell_text(value):
    """A cell as text, blank where missing; whole floats (a CSV's depths) as integers."""
    if value is None or value != value:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)

