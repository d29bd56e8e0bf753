"""The comparison's outputs: results.csv, plots, and report.md with a plain reading."""

from pathlib import Path

KIND_COLORS = {"pixels": "#8c8c8c", "features": "#1f77b4", "finetune": "#2ca02c",
               "scratch": "#d62728"}


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


def _largest_labels(results):
    """Rows of the largest ``labels_per_class`` ("all" counts as largest)."""
    values = results["labels_per_class"].unique()
    largest = "all" if "all" in list(values) else max(values, key=int)
    return results[results["labels_per_class"] == largest]


def plot_accuracy(results, path):
    """Bars of accuracy by method, and fine-tuning accuracy by freeze depth."""
    from matplotlib.figure import Figure

    rows = _largest_labels(results)
    finetune = rows[rows["kind"] == "finetune"]
    figure = Figure(figsize=(11, 0.45 * len(rows) + 2), layout="constrained")
    bars, depths = figure.subplots(1, 2, width_ratios=(3, 2))
    ordered = rows.sort_values("accuracy")
    bars.barh([row_label(r) for _, r in ordered.iterrows()], ordered["accuracy"],
              xerr=ordered["accuracy_std"], color=[KIND_COLORS[k] for k in ordered["kind"]])
    bars.set_xlabel("accuracy (mean ± std over folds)")
    bars.set_xlim(0, 1)
    bars.set_title("accuracy by method")
    for y, value in enumerate(ordered["accuracy"]):
        bars.text(value - 0.02, y, f"{value:.3f}", va="center", ha="right", fontsize=8,
                  color="white")
    if len(finetune):
        order = finetune.sort_values("frozen_blocks")
        depths.errorbar(order["frozen_blocks"], order["accuracy"], yerr=order["accuracy_std"],
                        marker="o", color=KIND_COLORS["finetune"], label="fine-tune")
        depths.set_xticks(order["frozen_blocks"], [str(f) for f in order["freeze"]])
        for kind in ("features", "pixels", "scratch"):
            best = rows[rows["kind"] == kind]
            if len(best):
                top = best.loc[best["accuracy"].idxmax()]
                depths.axhline(top["accuracy"], color=KIND_COLORS[kind], linestyle="--",
                               label=f"best {kind}")
        depths.set_xlabel("freeze (frozen bottom blocks)")
        depths.set_ylabel("accuracy")
        depths.set_title("fine-tuning by freeze depth")
        depths.legend(fontsize=8)
    else:
        depths.set_visible(False)
    figure.savefig(path, dpi=110)


def plot_learning_curve(results, path):
    """Accuracy against labels per class, one line per method."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 5), layout="constrained")
    axes = figure.subplots()
    counts = sorted({int(k) for k in results["labels_per_class"] if k != "all"})
    position = {**{k: k for k in counts}, "all": (max(counts) * 2 if counts else 1)}
    for label, group in results.groupby(results.apply(row_label, axis=1), sort=False):
        x = [position[k if k == "all" else int(k)] for k in group["labels_per_class"]]
        axes.errorbar(x, group["accuracy"], yerr=group["accuracy_std"], marker="o",
                      label=label, color=KIND_COLORS[group["kind"].iloc[0]])
    axes.set_xscale("log")
    axes.set_xticks(list(position.values()), [str(k) for k in position])
    axes.set_xlabel("labels per class")
    axes.set_ylabel("accuracy")
    axes.set_title("learning curve")
    axes.legend(fontsize=8)
    figure.savefig(path, dpi=110)


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
    finetune = rows[rows["kind"] == "finetune"]
    if len(finetune):
        top = finetune.loc[finetune["accuracy"].idxmax()]
        worst = finetune.loc[finetune["accuracy"].idxmin()]
        lines.append(
            f"Among fine-tuning depths, freeze={top['freeze']} was best ({top['accuracy']:.3f}); "
            f"freeze={worst['freeze']} was worst ({worst['accuracy']:.3f})."
        )
    scratch = rows[rows["kind"] == "scratch"]
    if len(scratch) and len(transfer):
        top_transfer = transfer["accuracy"].max()
        gap = top_transfer - scratch["accuracy"].max()
        lines.append(
            f"The same network trained from random weights reaches "
            f"{scratch['accuracy'].max():.3f}: pretraining is worth {gap * 100:+.1f} points."
        )
    counts = [k for k in results["labels_per_class"].unique() if k != "all"]
    if counts:
        fewest = results[results["labels_per_class"] == min(counts, key=int)]
        top = fewest.loc[fewest["accuracy"].idxmax()]
        lines.append(f"With only {min(counts, key=int)} labels per class, the best method was "
                     f"{row_label(top)} ({top['accuracy']:.3f}).")
    lines.append("Differences smaller than the ± spread over folds are within noise.")
    return " ".join(lines)


def _markdown(results, files, title, description):
    table = results.assign(
        accuracy=[f"{a:.3f} ± {s:.3f}" for a, s in zip(results["accuracy"], results["accuracy_std"])],
        fit_seconds=results["fit_seconds"].map("{:.1f}".format),
        predict_seconds=results["predict_seconds"].map("{:.2f}".format),
        freeze=results["freeze"].map(lambda f: "" if f is None or f != f else str(f)),
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

