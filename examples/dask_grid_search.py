"""The README's "Scaling out" example: a freeze-depth grid search and feature
extraction on a local Dask cluster (needs: pip install "sktransfer[dask]").

    python examples/dask_grid_search.py
"""

import joblib
from dask.distributed import Client, LocalCluster
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV
from sktransfer import FineTuneClassifier
from sktransfer.dask import extract_features

if __name__ == "__main__":
    client = Client(LocalCluster(n_workers=2, threads_per_worker=1))
    digits = load_digits()
    X, y = digits.data / 16.0, digits.target
    search = GridSearchCV(FineTuneClassifier(image_size=48, image_shape=(8, 8), max_epochs=3),
                          {"freeze": ["all", 6, 3]}, cv=3)
    with joblib.parallel_config(backend="dask"):
        search.fit(X, y)
    print(search.best_params_, search.best_score_)

    # Features of a large collection: a lazy dask array, rows in input order.
    features = extract_features(X, search.best_estimator_, partition_size=256)
    print(features.compute().shape)
