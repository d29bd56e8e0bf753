"""The comparison's outputs: results.csv, plots, and report.md with a plain reading."""

from pathlib import Path

from sktransfer._finetuning.base import BATCHNORM_TRAIN_FROM, batchnorm_mode
from sktransfer.study.compare import MIN_TEST_IMAGES
from sktransfer.study.plots import plot_accuracy, plot_layers, plot_learning_curve
from sktransfer.study.probe import score_column
from sktransfer.study.results import (CHOSEN_BY_CV, cell_text, difference, integer_text,
                                      integers, labeller, largest_labels, metric_columns,
                                      primary_metric, probe_table)
from sktransfer.study.tasks import metric_label


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

    See Also
    --------
    compare : Run the study that gives ``results``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = results.assign(frozen_blocks=integers(results["frozen_blocks"]))
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


def reading(results):
    """A few plain sentences on what the table shows, ending with a recommendation."""
    metric = primary_metric(results)
    name = metric_label(metric)
    rows = largest_labels(results)
    label_of = labeller(rows)
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
            f"{difference(gap, metric)} {'above' if gap > 0 else 'below'} the best "
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
            f"{'+' if gap >= 0 else '-'}{difference(gap, metric)} at this training budget."
        )
    counts = [k for k in results["labels_per_class"].unique() if k != "all"]
    if counts:
        fewest = results[results["labels_per_class"] == min(counts, key=int)]
        top = fewest.loc[fewest[metric].idxmax()]
        lines.append(f"With only {min(counts, key=int)} labels per class, the best method was "
                     f"{labeller(fewest)(top)} ({top[metric]:.3f}).")
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
    rows = largest_labels(results)
    label_of = labeller(rows)
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
        text += (f" It is within {difference(margin, metric)} of the most accurate "
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
    label_of = labeller(finetune)
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
    finetune = results[results["kind"] == "finetune"]
    stopped = finetune["early_stopping"].map(cell_text)
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
        freeze=results["freeze"].map(cell_text),
        chosen=results["chosen"].map(cell_text),
        backbone=results["backbone"].map(cell_text),
        frozen_blocks=integer_text(results["frozen_blocks"]),
        early_stopping=results["early_stopping"].map(cell_text),
    )
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
        freeze=results["freeze"].map(cell_text),
        chosen=results["chosen"].map(cell_text),
        fit_seconds=results["fit_seconds"].round(1),
        predict_seconds=results["predict_seconds"].round(2),
    ).drop(columns=["early_stopping", "n_test", "frozen_blocks"], errors="ignore")
    if shown["backbone"].dropna().nunique() <= 1:
        shown = shown.drop(columns="backbone")
    return shown.to_string(index=False)


def _finetune_settings(finetune):
    """What the fine-tuning rows' "auto" settings resolved to, in words."""
    small = [batchnorm_mode("auto", n) == "frozen" for n in finetune["n_train"]]  # compare's default
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
