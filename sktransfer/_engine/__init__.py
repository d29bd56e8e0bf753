"""The engine: devices, images, preprocessing, weights, backbones and their blocks,
inference (torch and ONNX Runtime), the per-image cache and file writing. It never
imports the estimators or the study."""
