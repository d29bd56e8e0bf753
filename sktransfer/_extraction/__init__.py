"""Feature extraction estimators: CNN features, raw pixels, HOG."""
