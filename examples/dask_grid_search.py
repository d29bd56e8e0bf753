"""
Scaling out with Dask: a grid search and feature extraction
===========================================================

The README's "Scaling out" example: a freeze-depth grid search whose fits run as tasks
on a Dask cluster (through joblib's dask backend), then the features of a whole image
collection as a lazy dask array computed on the same cluster, with
:func:`sktransfer.dask.extract_features`. It needs the dask extra:
``pip install "sktransfer[dask]"``.

Here the cluster is a :class:`~distributed.LocalCluster` of 2 worker processes with 1
thread each. Worker processes are started by importing the main script afresh, so the
work sits behind ``if __name__ == "__main__":`` (sphinx-gallery runs it too). On a
real cluster, only the ``Client`` line changes: ``Client("tcp://scheduler:8786")``, or
a cluster object of dask-jobqueue or dask-kubernetes. Small enough for the
documentation build: the search fits 600 digits at 48 px for 3 epochs. Run it as a script with
``python examples/dask_grid_search.py``.
"""

# %%
# The grid search, the features and the plot
# -------------------------------------------
# ``joblib.parallel_config(backend="dask")`` sends each of the 9 fits (3 depths x 3
# folds) to the workers as a task; the refit of the best depth follows.
# :func:`~sktransfer.dask.extract_features` then maps the fitted model's ``transform``
# (for a fine-tuned classifier: its penultimate features) over partitions of 256
# images, lazily; ``compute`` runs it on the workers, which each receive the fitted
# network once. Rows come back in input order: all 1,797 digits here. The figure shows
# the cross-validated accuracy for each depth, and the features of every digit
# projected on their first two principal components, coloured by digit.

import joblib
import matplotlib.pyplot as plt
import pandas as pd
from dask.distributed import Client, LocalCluster
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.model_selection import GridSearchCV

from sktransfer import FineTuneClassifier
from sktransfer.dask import extract_features

if __name__ == "__main__":
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None)
    client = Client(cluster)
    print(client)

    digits = load_digits()
    X, y = digits.data / 16.0, digits.target
    search = GridSearchCV(
        FineTuneClassifier(image_size=48, image_shape=(8, 8), max_epochs=3,
                           random_state=0, progress=False),
        {"freeze": ["all", 6, 3]}, cv=3)
    with joblib.parallel_config(backend="dask"):
        search.fit(X[:600], y[:600])
    results = pd.DataFrame(search.cv_results_)[["param_freeze", "mean_test_score",
                                                "std_test_score", "mean_fit_time"]]
    print(results.round(3).to_string(index=False))
    print(search.best_params_, round(search.best_score_, 3))

    features = extract_features(X, search.best_estimator_, partition_size=256)
    print(features)
    computed = features.compute()
    print(computed.shape)
    client.close()
    cluster.close()

    projected = PCA(n_components=2).fit_transform(computed)
    fig, (ax_score, ax_pca) = plt.subplots(1, 2, figsize=(11, 4.5), layout="constrained")
    ax_score.bar([str(f) for f in results["param_freeze"]], results["mean_test_score"],
                 yerr=results["std_test_score"], capsize=4, color="#2ca02c")
    ax_score.set_xlabel("freeze")
    ax_score.set_ylabel("accuracy (mean ± std over 3 folds)")
    ax_score.set_title("grid search on the Dask cluster")
    scatter = ax_pca.scatter(projected[:, 0], projected[:, 1], c=y, cmap="tab10", s=6)
    ax_pca.legend(*scatter.legend_elements(), title="digit", fontsize=7, loc="best",
                  ncols=2)
    ax_pca.set_xlabel("first principal component")
    ax_pca.set_ylabel("second principal component")
    ax_pca.set_title(f"features of {len(X)} digits "
                     f"(freeze={search.best_params_['freeze']!r})")
    plt.show()
