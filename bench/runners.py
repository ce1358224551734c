"""The model runners `node bench` times: the node's own LiteRT :class:`Classifier`, and an
ONNX Runtime peer behind the same two calls (``encode``, ``predict_logits``).

The peer reuses the bundle's :class:`TweetEncoder` and :func:`pad_batch`, so both runtimes
see identical token ids for every tweet; only the model call differs. ONNX Runtime is an
optional extra (``pip install repedge[onnx]``), imported only when an .onnx file is timed.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from edgemodel.bundle import INPUT_NAMES, OUTPUT_NAME, BundleError, ModelBundle
from edgemodel.inference import Classifier, Encoded, TweetEncoder, pad_batch

LITERT = "litert"
ONNXRUNTIME = "onnxruntime"


class Runner(Protocol):
    labels: list[str]

    def encode(self, text: str, entity: str | None = None) -> Encoded: ...

    def predict_logits(self, batch: Sequence[Encoded]) -> np.ndarray: ...


class OnnxRunner:
    """An ONNX export of the bundle's model, run by ONNX Runtime on the CPU."""

    def __init__(self, bundle: ModelBundle, onnx_path: Path, num_threads: int) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise RuntimeError(
                f"{onnx_path.name} needs ONNX Runtime: pip install 'repedge[onnx]'"
            ) from exc
        self.labels = list(bundle.labels)
        self.encoder = TweetEncoder.from_bundle(bundle)
        options = ort.SessionOptions()
        # Like the LiteRT interpreter: num_threads for one operator at a time, no
        # parallelism across operators, full graph optimisation.
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(
            str(onnx_path), options, providers=["CPUExecutionProvider"]
        )
        inputs = {i.name for i in self._session.get_inputs()}
        if inputs != set(INPUT_NAMES):
            raise BundleError(
                f"{onnx_path} takes inputs {sorted(inputs)}, expected {list(INPUT_NAMES)}"
            )

    def encode(self, text: str, entity: str | None = None) -> Encoded:
        return self.encoder.encode(text, entity)

    def predict_logits(self, batch: Sequence[Encoded]) -> np.ndarray:
        if not batch:
            return np.zeros((0, len(self.labels)), np.float32)
        feeds = pad_batch(batch, self.encoder.pad_id)
        (logits,) = self._session.run([OUTPUT_NAME], feeds)
        return np.asarray(logits, np.float32)


def open_runner(runtime: str, bundle_root: Path, model_file: str, num_threads: int) -> Runner:
    """A runner for one model file of a bundle folder (.tflite: LiteRT, .onnx: ORT)."""
    if runtime == LITERT:
        bundle = ModelBundle.load(bundle_root / model_file)
        return Classifier(bundle, num_threads=num_threads)
    if runtime == ONNXRUNTIME:
        bundle = ModelBundle.load(bundle_root, verify=False)
        return OnnxRunner(bundle, bundle_root / model_file, num_threads)
    raise ValueError(f"unknown runtime {runtime!r}")


def runtime_version(runtime: str) -> str | None:
    names = {LITERT: ("ai-edge-litert", "tflite-runtime"), ONNXRUNTIME: ("onnxruntime",)}
    for name in names.get(runtime, ()):
        try:
            return f"{name} {importlib.metadata.version(name)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return None
