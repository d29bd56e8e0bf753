"""The comparison's plots: scores by method and depth, the learning curve, the layer probe."""

import numpy as np

from sktransfer.study.probe import plot_layer_probe
from sktransfer.study.results import labeller, largest_labels, primary_metric, probe_table
from sktransfer.study.tasks import metric_label

KIND_COLORS = {"classical": "#8c8c8c", "features": "#1f77b4", "finetune": "#2ca02c",
               "scratch": "#d62728"}


#: Several methods of one kind get shades of the kind's colour map, dark to light.
KIND_COLORMAPS = {"classical": "Greys", "features": "Blues", "finetune": "Greens",
                  "scratch": "Reds"}


MARKERS = ("o", "s", "^", "D", "v", "P")


def method_styles(results):
    """(colour, marker) of each method (``row_label``): a colour family per kind."""
    from matplotlib import colormaps

    styles = {}
    labels = results.apply(labeller(results), axis=1)
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


def plot_accuracy(results, path=None):
    """Bars of the primary score by method, and fine-tuning's score by freeze depth.

    The score is accuracy for class labels, macro F1 for multi-label targets and R²
    for regression. Returns the matplotlib Figure (also saved to ``path`` when given).
    """
    from matplotlib.figure import Figure

    metric = primary_metric(results)
    name = metric_label(metric)
    rows = largest_labels(results)
    styles = method_styles(rows)
    finetune = rows[rows["kind"] == "finetune"]
    figure = Figure(figsize=(11, 0.45 * len(rows) + 2), layout="constrained")
    bars, depths = figure.subplots(1, 2, width_ratios=(3, 2))
    label_of = labeller(rows)
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
    label_of = labeller(results)
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

