"""The comparison's outputs: results.csv, plots, and report.md with a plain reading."""

from pathlib import Path

import numpy as np

from sktransfer.study.compare import CHOSEN_BY_CV, MIN_TEST_IMAGES, probe_table
from sktransfer.study.probe import plot_layer_probe, score_column
from sktransfer.study.tasks import metric_label
from sktransfer._finetuning.base import BATCHNORM_TRAIN_FROM, batchnorm_mode

KIND_COLORS = {"classical": "#8c8c8c", "features": "#1f77b4", "finetune": "#2ca02c",
               "scratch": "#d62728"}
#: Several methods of one kind get shades of the kind's colour map, dark to light.
KIND_COLORMAPS = {"classical": "Greys", "features": "Blues", "finetune": "Greens",
                  "scratch": "Reds"}
MARKERS = ("o", "s", "^", "D", "v", "P")
#: The primary metrics the comparison ranks by, one per task (higher is better).
PRIMARY_METRICS = ("accuracy", "f1_macro", "r2")


def primary_metric(results):
    """The metric that ranks the rows: ``attrs["metric"]``, or read off a CSV's columns."""
    return results.attrs.get("metric") or next(m for m in PRIMARY_METRICS if m in results)


def metric_columns(results):
    """Every metric of the results (columns with a ``_std`` partner), the primary first."""
    metrics = [c for c in results.columns if f"{c}_std" in results.columns]
    primary = primary_metric(results)
    return [primary, *(m for m in metrics if m != primary)]


def _difference(gap, metric):
    """A difference of two scores in words: points for proportions, plain for R²."""
    if metric == "r2":
        return f"{abs(gap):.3f}"
    return f"{abs(gap) * 100:.1f} points"


def write_report(results, out_dir, *, title="sktransfer comparison", description=""):
    """Write ``results.csv``, ``accuracy.png`` (and ``learning_curve.png``) and ``report.md``.

    The plot of the scores is ``scores.png`` for a multi-label or regression target.

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
    plot = "accuracy.png" if primary_metric(results) == "accuracy" else "scores.png"
    files = {"csv": out / "results.csv", "plot": out / plot, "report": out / "report.md"}
    results.to_csv(files["csv"], index=False)
    plot_accuracy(results, files["plot"])
    if results["labels_per_class"].nunique() > 1:
        files["learning_curve"] = out / "learning_curve.png"
        plot_learning_curve(results, files["learning_curve"])
    probe = probe_table(results)
    if probe is not None:
        files["layers"], files["layers_csv"] = out / "layers.png", out / "layers.csv"
        probe.to_csv(files["layers_csv"], index=False)
        plot_layers(results, files["layers"])
    files["report"].write_text(_markdown(results, files, title, description))
    return files


def row_label(row, *, with_backbone=False):
    """The method's name in plots and sentences (``with_backbone``: prefixed by it)."""
    if row["kind"] == "finetune" and row["freeze"] != CHOSEN_BY_CV:
        label = f"fine-tune, freeze={_text(row['freeze'])}"
    else:
        label = row["method"]
    backbone = row.get("backbone")
    if with_backbone and isinstance(backbone, str):
        return f"{backbone}: {label}"
    return label


def _labeller(results):
    """``row_label`` for rows of ``results``: prefixed by the backbone when there are several."""
    several = "backbone" in results and results["backbone"].dropna().nunique() > 1
    return lambda row: row_label(row, with_backbone=several)


def method_styles(results):
    """(colour, marker) of each method (``row_label``): a colour family per kind."""
    from matplotlib import colormaps

    styles = {}
    labels = results.apply(_labeller(results), axis=1)
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
    """Bars of the primary score by method, and fine-tuning's score by freeze depth.

    The score is accuracy for class labels, macro F1 for multi-label targets and R²
    for regression. Returns the matplotlib Figure (also saved to ``path`` when given).
    """
    from matplotlib.figure import Figure

    metric = primary_metric(results)
    name = metric_label(metric)
    rows = _largest_labels(results)
    styles = method_styles(rows)
    finetune = rows[rows["kind"] == "finetune"]
    figure = Figure(figsize=(11, 0.45 * len(rows) + 2), layout="constrained")
    bars, depths = figure.subplots(1, 2, width_ratios=(3, 2))
    label_of = _labeller(rows)
    ordered = rows.sort_values(metric)
    labels = [label_of(r) for _, r in ordered.iterrows()]
    bars.barh(labels, ordered[metric], xerr=ordered[f"{metric}_std"],
              color=[styles[label][0] for label in labels])
    bars.set_xlabel(f"{name} (mean ± std over folds)")
    # R² can be negative (worse than the mean): show down to -1 at most.
    low = max(-1.0, min(0.0, float((ordered[metric] - ordered[f"{metric}_std"]).min())))
    # Room right of 1 for the value labels, which sit past the end of the error bar.
    bars.set_xticks(np.linspace(-1, 1, 11) if low < 0 else np.linspace(0, 1, 6))
    bars.set_xlim(low - 0.02 if low < 0 else 0, 1.12)
    bars.set_title(f"{name} by method")
    for y, (value, spread) in enumerate(zip(ordered[metric], ordered[f"{metric}_std"])):
        bars.text(max(value + spread, low) + 0.01, y, f"{value:.3f}", va="center", ha="left",
                  fontsize=8)
    fixed = finetune[finetune["frozen_blocks"].notna()]
    if len(fixed):
        names = fixed["backbone"].astype(object).fillna("")  # an all-NaN column is float
        for backbone, group in fixed.groupby(names, sort=False):
            order = group.sort_values("frozen_blocks")
            frozen = order["frozen_blocks"].astype(int)
            several = fixed["backbone"].nunique() > 1
            depths.errorbar(frozen, order[metric], yerr=order[f"{metric}_std"], marker="o",
                            color=None if several else KIND_COLORS["finetune"],
                            label=f"fine-tune ({backbone})" if several else "fine-tune")
            depths.set_xticks(frozen, [str(f) for f in order["freeze"]])
        for _, chosen in finetune[finetune["frozen_blocks"].isna()].iterrows():
            depths.axhline(chosen[metric], color=styles[label_of(chosen)][0], linestyle=":",
                           label=f"depth chosen by inner CV ({chosen['chosen']})")
        for kind in ("features", "classical", "scratch"):
            best = rows[rows["kind"] == kind]
            if len(best):
                top = best.loc[best[metric].idxmax()]
                depths.axhline(top[metric], color=styles[label_of(top)][0], linestyle="--",
                               label=f"best {kind}")
        depths.set_xlabel("freeze (frozen bottom blocks)")
        depths.set_ylabel(name)
        depths.set_title("fine-tuning by freeze depth")
        depths.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15))
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

    metric = primary_metric(results)
    figure = Figure(figsize=(11, 5), layout="constrained")
    axes = figure.subplots()
    styles = method_styles(results)
    label_of = _labeller(results)
    counts = sorted({int(k) for k in results["labels_per_class"] if k != "all"})
    position = {**{k: k for k in counts}, "all": (max(counts) * 2 if counts else 1)}
    for label, group in results.groupby(results.apply(label_of, axis=1), sort=False):
        x = [position[k if k == "all" else int(k)] for k in group["labels_per_class"]]
        color, marker = styles[label]
        axes.errorbar(x, group[metric], yerr=group[f"{metric}_std"], marker=marker,
                      label=label, color=color, capsize=3)
    axes.set_xscale("log")
    axes.set_xticks(list(position.values()), [str(k) for k in position])
    # The log scale's own minor ticks would label values nobody chose (4, 6, 3x10^1...).
    axes.xaxis.set_minor_locator(NullLocator())
    axes.set_xlabel("labels per class")
    axes.set_ylabel(metric_label(metric))
    axes.set_title("learning curve")
    # Beside the plot: inside, the legend hides the points of the smallest counts.
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
    if path is not None:
        figure.savefig(path, dpi=110)
    return figure


def plot_layers(results, path=None):
    """The comparison's layer probe: the score of every block, one panel per backbone.

    A diagnostic: every block is scored on the outer test folds. The raw-pixel line is
    the comparison's first pixels row, "pixels + logistic regression" (or ridge
    regression): the same standardized linear model on the same folds. Returns the Figure (also saved to ``path`` when given).
    """
    from matplotlib.figure import Figure

    probe = probe_table(results)
    backbones = list(dict.fromkeys(probe["backbone"]))
    figure = Figure(figsize=(8 * len(backbones), 4.5), layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, len(backbones), sharey=True, squeeze=False)[0])
    metric = primary_metric(results)
    pixels = results[results["method"].str.startswith("pixels + ")
                     & (results["labels_per_class"] == "all")]
    for ax, backbone in zip(axes, backbones):
        table = probe[probe["backbone"] == backbone].reset_index(drop=True)
        table.attrs["backbone"] = backbone
        if len(pixels):
            table.attrs["pixels"] = (float(pixels[metric].iloc[0]),
                                     float(pixels[f"{metric}_std"].iloc[0]))
        plot_layer_probe(table, ax=ax)
        ax.set_title(f"which layer transfers ({backbone}): diagnostic, scored on the test folds",
                     fontsize=10)
    if path is not None:
        figure.savefig(path, dpi=110)
    return figure


def reading(results):
    """A few plain sentences on what the table shows, ending with a recommendation."""
    metric = primary_metric(results)
    name = metric_label(metric)
    rows = _largest_labels(results)
    label_of = _labeller(rows)
    best = rows.loc[rows[metric].idxmax()]
    lines = [f"Best: **{label_of(best)}** ({best['kind']}) with {name} "
             f"{best[metric]:.3f} ± {best[f'{metric}_std']:.3f}."]
    classical = rows[rows["kind"] == "classical"]
    transfer = rows[rows["kind"].isin(["features", "finetune"])]
    if len(classical) and len(transfer):
        top_classical = classical.loc[classical[metric].idxmax()]
        top_transfer = transfer.loc[transfer[metric].idxmax()]
        gap = top_transfer[metric] - top_classical[metric]
        verdict = "beats" if gap > 0 else "does not beat"
        lines.append(
            f"Transfer learning {verdict} the classical baseline here: the best transfer "
            f"method ({label_of(top_transfer)}, {top_transfer[metric]:.3f}) is "
            f"{_difference(gap, metric)} {'above' if gap > 0 else 'below'} the best "
            f"classical model ({label_of(top_classical)}, {top_classical[metric]:.3f})."
        )
    lines += _layer_sentences(results, rows)
    lines += _depth_sentences(rows[rows["kind"] == "finetune"], metric)
    lines += _stopping_sentences(results)
    scratch = rows[rows["kind"] == "scratch"]
    if len(scratch) and len(transfer):
        gap = transfer[metric].max() - scratch[metric].max()
        lines.append(
            f"The same network trained from random weights (every epoch of the same budget, "
            f"no early stopping) reaches {scratch[metric].max():.3f}: pretraining is worth "
            f"{'+' if gap >= 0 else '-'}{_difference(gap, metric)} at this training budget."
        )
    counts = [k for k in results["labels_per_class"].unique() if k != "all"]
    if counts:
        fewest = results[results["labels_per_class"] == min(counts, key=int)]
        top = fewest.loc[fewest[metric].idxmax()]
        lines.append(f"With only {min(counts, key=int)} labels per class, the best method was "
                     f"{_labeller(fewest)(top)} ({top[metric]:.3f}).")
    lines.append("Differences smaller than the ± spread over folds are within noise.")
    return " ".join(lines) + "\n\n" + recommendation(results)


def recommendation(results):
    """The method to use on this data: the cheapest within noise of the best.

    Among the rows of the most labels, those whose primary score (accuracy, macro F1
    or R²) is within the best row's spread over folds (at least 0.005) of the best;
    of these, the one that fits fastest. With fewer than ``MIN_TEST_IMAGES`` test
    images per fold, the text says that the choice is mostly noise.
    """
    metric = primary_metric(results)
    rows = _largest_labels(results)
    label_of = _labeller(rows)
    best = rows.loc[rows[metric].idxmax()]
    margin = max(best[f"{metric}_std"], 0.005)
    close = rows[rows[metric] >= best[metric] - margin]
    pick = close.loc[close["fit_seconds"].idxmin()]
    setting = f" (it chose {pick['chosen']} in the outer folds)" if _has(pick, "chosen") else ""
    text = (f"**Recommendation for this data:** {label_of(pick)}{setting}: "
            f"{metric_label(metric)} {pick[metric]:.3f} ± {pick[f'{metric}_std']:.3f}, "
            f"{_seconds(pick['fit_seconds'])} to fit on {pick['n_train']} images and "
            f"{_seconds(pick['predict_seconds'])} to predict {pick['n_test']}.")
    if pick.name != best.name:
        text += (f" It is within {_difference(margin, metric)} of the most accurate "
                 f"({label_of(best)}, {best[metric]:.3f}) and fits "
                 f"{best['fit_seconds'] / max(pick['fit_seconds'], 1e-9):.0f}x faster.")
    text += (" The best of several rows scored on the same folds is slightly optimistic; "
             "the rows chosen by inner CV are not.")
    n_test = rows["n_test"].min()
    if n_test < MIN_TEST_IMAGES:
        text += (f" **Caution:** the test folds held only {n_test:.0f} images each (one image "
                 f"is {100 / n_test:.0f}% of a fold's score), too few to tell these methods "
                 f"apart: this choice is mostly noise. Confirm it on more images (at least "
                 f"{MIN_TEST_IMAGES} per test fold).")
    return text


def _seconds(value):
    return f"{value:.2f} s" if value < 10 else f"{value:.0f} s"


def _has(row, column):
    value = row.get(column)
    return value is not None and value == value and value != ""


def _layer_sentences(results, rows):
    """Which layer transfers best (the diagnostic) and which the inner CV chose."""
    probe = probe_table(results)
    if probe is None:
        return []
    score = score_column(probe)
    sentences = []
    for backbone, table in probe.groupby("backbone", sort=False):
        peak = table.loc[table[score].idxmax()]
        top = table.iloc[-1]
        where = (f"peaks at the top block {top['name']} ({top[score]:.3f})"
                 if peak["block"] == top["block"] else
                 f"peaks at {peak['name']} ({peak[score]:.3f}, block "
                 f"{int(peak['block']) + 1} of {len(table)}) and falls to "
                 f"{top[score]:.3f} at the top block {top['name']}: the most "
                 "ImageNet-specific features transfer worse here than lower ones")
        sentence = (f"Which layer transfers best ({backbone}, layers.png): a linear probe on "
                    f"every block {where}. That curve is a diagnostic, scored on the test folds.")
        chosen = rows[(rows["kind"] == "features") & rows["chosen"].notna()
                      & (rows["backbone"] == backbone)]
        if len(chosen):
            row = chosen.iloc[0]
            metric = primary_metric(results)
            sentence += (f" Chosen inside each training part by inner CV, the layer was "
                         f"{row['chosen']}, scoring {row[metric]:.3f} ± "
                         f"{row[f'{metric}_std']:.3f} on the test folds.")
        sentences.append(sentence)
    return sentences


def _depth_sentences(finetune, metric):
    """What the fine-tuning depths show, and the depth the inner CV chose."""
    sentences = []
    fixed = finetune[finetune["freeze"] != CHOSEN_BY_CV]
    label_of = _labeller(finetune)
    if fixed["freeze"].astype(str).nunique() >= 2:
        top = fixed.loc[fixed[metric].idxmax()]
        worst = fixed.loc[fixed[metric].idxmin()]
        if top[metric] == worst[metric]:
            sentence = (f"All {len(fixed)} fine-tuning depths scored the same "
                        f"({top[metric]:.3f}).")
        else:
            sentence = (f"Among fine-tuning depths, {label_of(top)} was best "
                        f"({top[metric]:.3f}); {label_of(worst)} was worst "
                        f"({worst[metric]:.3f}).")
        if "all" in set(fixed["freeze"].astype(str)):
            sentence += " With freeze=all only the new output layer is trained."
        sentences.append(sentence)
    if len(finetune):
        sentences.append(_finetune_settings(finetune))
    for _, row in finetune[finetune["freeze"] == CHOSEN_BY_CV].iterrows():
        backbone = f" ({row['backbone']})" if isinstance(row.get("backbone"), str) else ""
        sentences.append(
            f"Chosen inside each training part by an inner CV{backbone}, the depth was "
            f"freeze={row['chosen']} over the outer folds; that choice scores "
            f"{row[metric]:.3f} ± {row[f'{metric}_std']:.3f}, the unbiased estimate of "
            "choosing the depth by data.")
    return sentences


def _stopping_sentences(results):
    """Whether fine-tuning stopped early, as the ``early_stopping`` column records it."""
    if "early_stopping" not in results:  # a table from before the column
        return []
    finetune = results[results["kind"] == "finetune"]
    stopped = finetune["early_stopping"].map(_text)
    if not len(finetune) or (stopped == "").all():
        return []
    if (stopped == "True").all():
        return ["Fine-tuning stopped early when the loss on images held out of each "
                "training part stopped improving."]
    if (stopped == "False").all():
        return ["Fine-tuning ran all its epochs without early stopping: the training parts "
                "were too small to hold out images for validation."]
    off = finetune[stopped != "True"]
    counts = ", ".join(dict.fromkeys(off["labels_per_class"].map(str)))
    return [f"Fine-tuning stopped early on images held out of each training part, except in "
            f"{len(off)} of the {len(finetune)} fine-tuning rows (labels_per_class={counts}) "
            "whose training parts were too small to hold images out: those ran all their "
            "epochs (see the early_stopping column)."]


def _scores_as_text(results):
    """Each metric column as "mean ± std" text, the ``_std`` columns dropped."""
    metrics = metric_columns(results)
    shown = results.assign(**{m: [f"{a:.3f} ± {s:.3f}" for a, s in
                                  zip(results[m], results[f"{m}_std"])] for m in metrics})
    return shown.drop(columns=[f"{m}_std" for m in metrics])


def _markdown(results, files, title, description):
    table = _scores_as_text(results).assign(
        fit_seconds=results["fit_seconds"].map("{:.1f}".format),
        predict_seconds=results["predict_seconds"].map("{:.2f}".format),
        freeze=results["freeze"].map(_text),
        chosen=results["chosen"].map(_text),
        backbone=results["backbone"].map(_text),
        frozen_blocks=_integer_text(results["frozen_blocks"]),
    )
    if "early_stopping" in table:
        table["early_stopping"] = results["early_stopping"].map(_text)
    header = "| " + " | ".join(table.columns) + " |"
    rule = "| " + " | ".join("---" for _ in table.columns) + " |"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    parts = [f"# {title}", "", description, "", "## Reading", "", reading(results), "",
             f"![{metric_label(primary_metric(results))} by method and freeze depth]"
             f"({files['plot'].name})", ""]
    if "learning_curve" in files:
        parts += [f"![learning curve]({files['learning_curve'].name})", ""]
    if "layers" in files:
        chosen = dict.fromkeys(results.loc[results["chosen"].notna(), "method"])
        named = " and ".join(f'"{method}"' for method in chosen) or "chosen by inner CV"
        parts += [f"![linear probe on every block: a diagnostic over the test folds]"
                  f"({files['layers'].name})", "",
                  f"The layer probe is a diagnostic: every block is scored on the test folds "
                  f"([{files['layers_csv'].name}]({files['layers_csv'].name})). The rows "
                  f"{named} make their choice inside each training part.", ""]
    parts += ["## Results", "", header, rule, *body, "",
              f"Raw numbers: [{files['csv'].name}]({files['csv'].name}).", ""]
    return "\n".join(parts)


def format_table(results):
    """The results as an aligned text table, for the console."""
    shown = _scores_as_text(results).assign(
        freeze=results["freeze"].map(_text),
        chosen=results["chosen"].map(_text),
        fit_seconds=results["fit_seconds"].round(1),
        predict_seconds=results["predict_seconds"].round(2),
    ).drop(columns=["early_stopping", "n_test", "frozen_blocks"], errors="ignore")
    if shown["backbone"].dropna().nunique() <= 1:
        shown = shown.drop(columns="backbone")
    return shown.to_string(index=False)



def _text(value):
    """A cell as text, blank where missing; whole floats (a CSV's depths) as integers."""
    if value is None or value != value:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _finetune_settings(finetune):
    """What the fine-tuning rows' "auto" settings resolved to, in words."""
    sizes = finetune["n_train"] if "n_train" in finetune else []
    small = [batchnorm_mode("auto", n) == "frozen" for n in sizes]  # compare's default
    if all(small):
        batchnorm = "kept the BatchNorm statistics of the trainable blocks fixed (inference mode)"
    elif not any(small):
        batchnorm = "updated the BatchNorm statistics of the trainable blocks from each batch"
    else:
        batchnorm = ("kept the BatchNorm statistics of the trainable blocks fixed with fewer "
                     f"than {BATCHNORM_TRAIN_FROM} training images and updated them from each "
                     "batch with more")
    return (f"Fine-tuning {batchnorm}. With freeze=all the new head was fit exactly on the "
            "frozen features (the linear probe); at other depths it started at random.")
