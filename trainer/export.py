"""Keras classifier -> TFLite FlatBuffer variants (builtin ops only, dynamic shapes).

Route: ``keras.export.ExportArchive`` with [None, None] int32 specs -> SavedModel ->
``TFLiteConverter.from_saved_model``. The resulting models resize to any batch and
sequence length. (Keras' own ``export(format="litert")`` enables Flex ops, which the
light runtime cannot run.)
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from edgemodel.bundle import (
    EMBEDDING_OUTPUT,
    INPUT_NAMES,
    OUTPUT_NAME,
    RELATED_OUTPUT,
    VARIANT_FILES,
)
from edgemodel.inference import Encoded
from trainer.int4 import DEFAULT_INT4, Int4Recipe, quantize_int4
from trainer.settings import ALL_VARIANTS


def serving_model(model: keras.Model) -> keras.Model:
    """The exported graph: the polarity logits, the related logits where the model has that
    head, and the pooled vector (``embedding``) that per-entity heads read.

    Models without a ``mean_pool`` layer (e.g. hand-built test models) export as they are.
    """
    try:
        pooled = model.get_layer("mean_pool").output
    except ValueError:
        return model
    out = model.output
    outputs = dict(out) if isinstance(out, dict) else {OUTPUT_NAME: out}
    outputs[EMBEDDING_OUTPUT] = pooled
    return keras.Model(model.inputs, outputs, name=f"{model.name}_serving")


def save_serving_model(model: keras.Model, directory: Path) -> Path:
    """SavedModel with one signature: int32 [batch, seq] inputs -> {"logits", ...}."""
    served = serving_model(model)
    archive = keras.export.ExportArchive()
    archive.track(served)
    specs = [tf.TensorSpec([None, None], tf.int32, name=n) for n in INPUT_NAMES]
    names = (OUTPUT_NAME, RELATED_OUTPUT, EMBEDDING_OUTPUT)

    def serve(input_ids, segment_ids, attention_mask):
        out = served([input_ids, segment_ids, attention_mask], training=False)
        if not isinstance(out, dict):
            return {OUTPUT_NAME: out}
        return {name: out[name] for name in names if name in out}

    archive.add_endpoint("serving_default", serve, input_signature=specs)
    archive.write_out(str(directory), verbose=False)
    return directory


def calibration_samples(
    encoded: Sequence[Encoded], length: int = 24, limit: int = 200
) -> list[Encoded]:
    """Real tweets, unpadded, all cut to one length (the converter wants one shape).

    Padding in calibration data would let the -1e9 attention mask set the int8 scale
    of the attention scores and wreck them; tweets shorter than ``length`` are skipped.
    """
    picked = []
    for e in encoded:
        if len(e) >= length:
            ids = [*e.input_ids[: length - 1], e.input_ids[-1]]  # keep the final [SEP]
            picked.append(Encoded(ids, [0] * length))
        if len(picked) >= limit:
            break
    if not picked:
        raise ValueError(f"no calibration tweet has {length} tokens or more")
    return picked


def _representative(samples: Iterable[Encoded]) -> Callable[[], Iterable[dict]]:
    def gen():
        for e in samples:
            n = len(e)
            yield {
                "input_ids": np.asarray([e.input_ids], np.int32),
                "segment_ids": np.asarray([e.segment_ids], np.int32),
                "attention_mask": np.ones((1, n), np.int32),
            }

    return gen


def convert(
    saved_model: Path,
    variant: str,
    calibration: Sequence[Encoded] = (),
    int4: Int4Recipe = DEFAULT_INT4,
    int4_calibration: Sequence[Encoded] = (),
) -> bytes:
    """One variant's FlatBuffer. ``calibration``: equal-length tweets for int8-full;
    ``int4_calibration``: unpadded tweets of any length for GPTQ (see :class:`Int4Recipe`)."""
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if variant == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif variant == "int8-full":
        if not calibration:
            raise ValueError("int8-full needs calibration tweets")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _representative(calibration)
        # Integer kernels wherever one exists; ops without one (e.g. some LayerNorm
        # arithmetic) stay float rather than failing the conversion.
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
            tf.lite.OpsSet.TFLITE_BUILTINS,
        ]
    elif variant == "int4":
        # ai-edge-quantizer works on the float FlatBuffer.
        return quantize_int4(convert(saved_model, "fp32"), int4, int4_calibration)
    elif variant != "fp32":
        raise ValueError(f"unknown variant {variant!r}; known: {sorted(VARIANT_FILES)}")
    return converter.convert()


def export_variants(
    model: keras.Model,
    out_dir: Path,
    variants: Sequence[str] = ALL_VARIANTS,
    calibration: Sequence[Encoded] = (),
    int4: Int4Recipe = DEFAULT_INT4,
    int4_calibration: Sequence[Encoded] = (),
) -> dict[str, Path]:
    """Write each requested variant to ``out_dir/<canonical name>``; return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    with tempfile.TemporaryDirectory(prefix="repedge-savedmodel-") as tmp:
        saved = save_serving_model(model, Path(tmp) / "saved")
        for variant in variants:
            path = out_dir / VARIANT_FILES[variant][0]
            path.write_bytes(convert(saved, variant, calibration, int4, int4_calibration))
            paths[variant] = path
    return paths
