"""The comparison's outputs: results.csv, plots, and report.md with a plain reading."""

from pathlib import Path

import numpy as np

KIND_COLORS = {"pixels": "#8c8c8c", "features": "#1f77b4", "finetune": "#2ca02c",
               "scratch": "#d62728"}
#: Several methods of one kind get shades of the kind's colour map, dark to light.
KIND_COLORMAPS = {"pixels": "Greys", "features": "Blues", "finetune": "Greens",
                  "scratch": "Reds"}
MARKERS = ("o", "s", "^", "D", "v", "P")


def write_report(results, out_dir, *, title="sktransfer comparison", description=""):
    """Write ``results.csv``, ``accuracy.png`` (and ``learning_curve.png``) and ``report.md``.

    Parameters
    ----------
    results : pandas.DataFrame
        The table :func:`sktransfer.compare` returns.
    out_dir : str or PathLike
        Created when missing.
    title, description : str
        Heading and a line on the data and settings, for the report.

    Returns
    -------
    dict of str to Path
        The files written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = results.assign(frozen_blocks=_integers(results["frozen_blocks"]))
    files = {"csv": out / "results.csv", "plot": out / "accuracy.png", "report": out / "report.md"}
    results.to_csv(files["csv"], index=False)
    plot_accuracy(results, files["plot"])
    if results["labels_per_class"].nunique() > 1:
        files["learning_curve"] = out / "learning_curve.png"
        plot_learning_curve(results, files["learning_curve"])
    files["report"].write_text(_markdown(results, files, title, description))
    return files


def row_label(row):
    if row["kind"] == "finetune":
        return f"fine-tune, freeze={row['freeze']}"
    return row["method"]


def method_styles(results):
    """(colour, marker) of each method (``row_label``): a colour family per kind."""
    from matplotlib import colormaps

    styles = {}
    labels = results.apply(row_label, axis=1)
    for kind in results["kind"].unique():
        methods = list(dict.fromkeys(labels[results["kind"] == kind]))
        if len(methods) == 1:
            shades = [KIND_COLORS.get(kind, "#9467bd")]
        else:
            colormap = colormaps[KIND_COLORMAPS.get(kind, "Purples")]
            shades = [colormap(x) for x in np.linspace(0.85, 0.45, len(methods))]
        for index, (method, shade) in enumerate(zip(methods, shades)):
            styles[method] = (shade, MARKERS[index % len(MARKERS)])
    return styles


def _integers(column):
    """A column of whole numbers with gaps as nullable Int64 (prints 9 and blank, not 9.0/nan)."""
    import pandas as pd

    return pd.to_numeric(column, errors="coerce").round().astype("Int64")


def _integer_text(column):
    """Whole numbers as text, blank where missing."""
    integers = _integers(column)
    return ["" if missing else str(n) for n, missing in zip(integers, integers.isna())]


def _largest_labels(results):
    """Rows of the largest ``labels_per_class`` ("all" counts as largest)."""
    values = results["labels_per_class"].unique()
    largest = "all" if "all" in list(values) else max(values, key=int)
    return results[results["labels_per_class"] == largest]


def plot_accuracy(results, path=None):
    """Bars of accuracy by method, and fine-tuning accuracy by freeze depth.

    Returns the matplotlib Figure (also saved to ``path`` when given).
    """
    from matplotlib.figure import Figure

    rows = _largest_labels(results)
    styles = method_styles(rows)
    finetune = rows[rows["kind"] == "finetune"]
    figure = Figure(figsize=(11, 0.45 * len(rows) + 2), layout="constrained")
    bars, depths = figure.subplots(1, 2, width_ratios=(3, 2))
    ordered = rows.sort_values("accuracy")
    labels = [row_label(r) for _, r in ordered.iterrows()]
    bars.barh(labels, ordered["accuracy"], xerr=ordered["accuracy_std"],
              color=[styles[label][0] for label in labels])
    bars.set_xlabel("accuracy (mean ± std over folds)")
    # Room right of 1 for the value labels, which sit past the end of the error bar.
    bars.set_xlim(0, 1.12)
    bars.set_xticks(np.linspace(0, 1, 6))
    bars.set_title("accuracy by method")
    for y, (value, spread) in enumerate(zip(ordered["accuracy"], ordered["accuracy_std"])):
        bars.text(value + spread + 0.01, y, f"{value:.3f}", va="center", ha="left", fontsize=8)
    if len(finetune):
        order = finetune.sort_values("frozen_blocks")
        frozen = order["frozen_blocks"].astype(int)
        depths.errorbar(frozen, order["accuracy"], yerr=order["accuracy_std"],
                        marker="o", color=KIND_COLORS["finetune"], label="fine-tune")
        depths.set_xticks(frozen, [str(f) for f in order["freeze"]])
        for kind in ("features", "pixels", "scratch"):
            best = rows[rows["kind"] == kind]
            if len(best):
                top = best.loc[best["accuracy"].idxmax()]
                depths.axhline(top["accuracy"], color=styles[row_label(top)][0], linestyle="--",
                               label=f"best {kind}")
        depths.set_xlabel("freeze (frozen bottom blocks)")
        depths.set_ylabel("accuracy")
        depths.set_title("fine-tuning by freeze depth")
        depths.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncols=2)
    else:
        depths.set_visible(False)
    if path is not None:
        figure.savefig(path, dpi=110)
    return figure


def plot_learning_curve(results, path=None):
    """Accuracy against labels per class, one line per method.

    Returns the matplotlib Figure (also saved to ``path`` when given).
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullLocator

    figure = Figure(figsize=(11, 5), layout="constrained")
    axes = figure.subplots()
    styles = method_styles(results)
    counts = sorted({int(k) for k in results["labels_per_class"] if k != "all"})
    position = {**{k: k for k in counts}, "all": (max(counts) * 2 if counts else 1)}
    for label, group in results.groupby(results.apply(row_label, axis=1), sort=False):
        x = [position[k if k == "all" else int(k)] for k in group["labels_per_class"]]
        color, marker = styles[label]
        axes.errorbar(x, group["accuracy"], yerr=group["accuracy_std"], marker=marker,
                      label=label, color=color, capsize=3)
    axes.set_xscale("log")
    axes.set_xticks(list(position.values()), [str(k) for k in position])
    # The log scale's own minor ticks would label values nobody chose (4, 6, 3x10^1...).
    axes.xaxis.set_minor_locator(NullLocator())
    axes.set_xlabel("labels per class")
    axes.set_ylabel("accuracy")
    axes.set_title("learning curve")
    # Beside the plot: inside, the legend hides the points of the smallest counts.
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
    if path is not None:
        figure.savefig(path, dpi=110)
    return figure


def reading(results):
    """A few plain sentences on what the table shows."""
    rows = _largest_labels(results)
    best = rows.loc[rows["accuracy"].idxmax()]
    lines = [f"Best: **{row_label(best)}** ({best['kind']}) with accuracy "
             f"{best['accuracy']:.3f} ± {best['accuracy_std']:.3f}."]
    pixels = rows[rows["kind"] == "pixels"]
    transfer = rows[rows["kind"].isin(["features", "finetune"])]
    if len(pixels) and len(transfer):
        top_pixels = pixels.loc[pixels["accuracy"].idxmax()]
        top_transfer = transfer.loc[transfer["accuracy"].idxmax()]
        gap = top_transfer["accuracy"] - top_pixels["accuracy"]
        verdict = "beats" if gap > 0 else "does not beat"
        lines.append(
            f"Transfer learning {verdict} the classical baseline here: the best transfer "
            f"method ({row_label(top_transfer)}, {top_transfer['accuracy']:.3f}) is "
            f"{abs(gap) * 100:.1f} points {'above' if gap > 0 else 'below'} the best "
            f"raw-pixel model ({row_label(top_pixels)}, {top_pixels['accuracy']:.3f})."
        )
    lines += _depth_sentences(rows[rows["kind"] == "finetune"])
    scratch = rows[rows["kind"] == "scratch"]
    if len(scratch) and len(transfer):
        top_transfer = transfer["accuracy"].max()
        gap = top_transfer - scratch["accuracy"].max()
        lines.append(
            f"The same network trained from random weights for the same number of epochs "
            f"reaches {scratch['accuracy'].max():.3f}: pretraining is worth "
            f"{gap * 100:+.1f} points at this training budget."
        )
    counts = [k for k in results["labels_per_class"].unique() if k != "all"]
    if counts:
        fewest = results[results["labels_per_class"] == min(counts, key=int)]
        top = fewest.loc[fewest["accuracy"].idxmax()]
        lines.append(f"With only {min(counts, key=int)} labels per class, the best method was "
                     f"{row_label(top)} ({top['accuracy']:.3f}).")
    lines.append("Differences smaller than the ± spread over folds are within noise.")
    return " ".join(lines)


def _depth_sentences(finetune):
    """What the fine-tuning depths show; nothing to compare with fewer than two."""
    if finetune["freeze"].astype(str).nunique() < 2:
        return []
    top = finetune.loc[finetune["accuracy"].idxmax()]
    worst = finetune.loc[finetune["accuracy"].idxmin()]
    if top["accuracy"] == worst["accuracy"]:
        sentence = (f"All {len(finetune)} fine-tuning depths scored the same "
                    f"({top['accuracy']:.3f}).")
    else:
        sentence = (f"Among fine-tuning depths, freeze={top['freeze']} was best "
                    f"({top['accuracy']:.3f}); freeze={worst['freeze']} was worst "
                    f"({worst['accuracy']:.3f}).")
    if "all" in set(finetune["freeze"].astype(str)):
        sentence += " With freeze=all only the new classification layer is trained."
    return [sentence]


def _markdown(results, files, title, description):
    table = results.assign(
        accuracy=[f"{a:.3f} ± {s:.3f}" for a, s in zip(results["accuracy"], results["accuracy_std"])],
        fit_seconds=results["fit_seconds"].map("{:.1f}".format),
        predict_seconds=results["predict_seconds"].map("{:.2f}".format),
        freeze=results["freeze"].map(lambda f: "" if f is None or f != f else str(f)),
        frozen_blocks=_integer_text(results["frozen_blocks"]),
    ).drop(columns="accuracy_std")
    header = "| " + " | ".join(table.columns) + " |"
    rule = "| " + " | ".join("---" for _ in table.columns) + " |"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    parts = [f"# {title}", "", description, "", "## Reading", "", reading(results), "",
             f"![accuracy by method and freeze depth]({files['plot'].name})", ""]
    if "learning_curve" in files:
        parts += [f"![learning curve]({files['learning_curve'].name})", ""]
    parts += ["## Results", "", header, rule, *body, "",
              f"Raw numbers: [{files['csv'].name}]({files['csv'].name}).", ""]
    return "\n".join(parts)


def format_table(results):
    """The results as an aligned text table, for the console."""
    shown = results.assign(
        freeze=results["freeze"].map(lambda f: "" if f is None or f != f else str(f)),
        accuracy=[f"{a:.3f} ± {s:.3f}" for a, s in zip(results["accuracy"], results["accuracy_std"])],
        fit_seconds=results["fit_seconds"].round(1),
        predict_seconds=results["predict_seconds"].round(2),
    ).drop(columns=["accuracy_std", "n_test", "frozen_blocks"])
    return shown.to_string(index=False)

