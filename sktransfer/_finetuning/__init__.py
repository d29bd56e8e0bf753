"""Fine-tuning estimators: the shared base, the classifier, the regressor and the
search over depths."""
