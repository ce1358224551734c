"""repedge trainer: fine-tune, export quantized FlatBuffers, evaluate (offline, TensorFlow)."""

import os

# Keras 3 must use TensorFlow: the TFLite converter takes TF graphs.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
