"""Keras classifier -> ONNX, the peer `node bench` times LiteRT against.

The same fine-tuned weights as the bundle's FlatBuffers, exported with tf2onnx (opset 17)
from the same serving graph (:func:`trainer.export.serving_model`: int32 [batch, seq]
``input_ids``, ``segment_ids``, ``attention_mask`` -> ``logits`` and the other outputs),
then quantized by ONNX Runtime's own dynamic int8 (``quantize_dynamic``: int8 weights,
activations quantized per call), its counterpart of the bundle's int8 variant.

The files go beside the FlatBuffers as ``onnx-fp32.onnx`` and ``onnx-int8.onnx``: they
are not bundle variants (not in the manifest, never served by a node), only measured.
Needs the ``onnx`` extra: ``pip install 'repedge[trainer,onnx]'``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import keras
import tensorflow as tf

from edgemodel.bundle import EMBEDDING_OUTPUT, INPUT_NAMES, OUTPUT_NAME, RELATED_OUTPUT
from trainer.export import serving_model

OPSET = 17
ONNX_FILES = {"fp32": "onnx-fp32.onnx", "int8": "onnx-int8.onnx"}


def _serving_function(model: keras.Model) -> tuple[tf.types.experimental.GenericFunction, list]:
    served = serving_model(model)
    specs = [tf.TensorSpec([None, None], tf.int32, name=n) for n in INPUT_NAMES]
    names = (OUTPUT_NAME, RELATED_OUTPUT, EMBEDDING_OUTPUT)

    @tf.function(input_signature=specs)
    def serve(input_ids, segment_ids, attention_mask):
        out = served([input_ids, segment_ids, attention_mask], training=False)
        if not isinstance(out, dict):
            return {OUTPUT_NAME: out}
        return {name: out[name] for name in names if name in out}

    return serve, specs


def _name_outputs(onnx_model, wanted: list[str]) -> None:
    """tf2onnx names outputs after graph tensors (``Identity:0``); give them the serving
    signature's names, as the FlatBuffer has, so both runtimes are asked for "logits"."""
    graph = onnx_model.graph
    if [o.name for o in graph.output] == wanted:
        return
    if len(graph.output) != len(wanted):
        raise RuntimeError(f"ONNX graph has {len(graph.output)} outputs, expected {wanted}")
    for output, name in zip(graph.output, wanted, strict=True):
        old = output.name
        for node in graph.node:
            node.output[:] = [name if x == old else x for x in node.output]
            node.input[:] = [name if x == old else x for x in node.input]
        output.name = name


def export_onnx(model: keras.Model, out_dir: Path, quantize: bool = True) -> dict[str, Path]:
    """Write ``onnx-fp32.onnx`` (and ``onnx-int8.onnx``) into ``out_dir``; return them."""
    try:
        import onnx
        import tf2onnx
    except ImportError as exc:
        raise RuntimeError("ONNX export needs: pip install 'repedge[trainer,onnx]'") from exc
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    serve, specs = _serving_function(model)
    structured = serve.get_concrete_function().structured_outputs
    wanted = sorted(structured)  # tf.function returns dict outputs sorted by key
    onnx_model, _ = tf2onnx.convert.from_function(serve, input_signature=specs, opset=OPSET)
    _name_outputs(onnx_model, wanted)
    onnx.checker.check_model(onnx_model)
    paths = {"fp32": out_dir / ONNX_FILES["fp32"]}
    onnx.save(onnx_model, str(paths["fp32"]))
    if quantize:
        paths["int8"] = quantize_int8(paths["fp32"], out_dir / ONNX_FILES["int8"])
    return paths


def gemm_to_matmul(onnx_model) -> int:
    """Rewrite ``Gemm(x, W, b)`` with a constant ``W`` as ``MatMul`` + ``Add``; return how many.

    tf2onnx emits Gemm for some of the Dense layers and MatMul for others, and ONNX Runtime's
    dynamic quantization has an integer kernel for MatMul only: without this a third of the
    encoder's weights would stay float and the peer would be timed at a disadvantage.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    graph = onnx_model.graph
    weights = {t.name: t for t in graph.initializer}
    rewritten = 0
    for index, node in reversed(list(enumerate(graph.node))):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (
            node.op_type != "Gemm"
            or node.input[1] not in weights
            or attrs.get("transA", 0)
            or attrs.get("alpha", 1.0) != 1.0
            or (len(node.input) > 2 and node.input[2] and attrs.get("beta", 1.0) != 1.0)
        ):
            continue
        if attrs.get("transB", 0):
            kernel = numpy_helper.to_array(weights[node.input[1]]).T
            weights[node.input[1]].CopyFrom(
                numpy_helper.from_array(np.ascontiguousarray(kernel), node.input[1])
            )
        product = f"{node.name}_matmul_out"
        replacement = [helper.make_node("MatMul", node.input[:2], [product], f"{node.name}_matmul")]
        if len(node.input) > 2 and node.input[2]:
            replacement.append(
                helper.make_node("Add", [product, node.input[2]], list(node.output), node.name)
            )
        else:
            replacement[0].output[:] = list(node.output)
        del graph.node[index]
        for offset, new in enumerate(replacement):
            graph.node.insert(index + offset, new)
        rewritten += 1
    return rewritten


def quantize_int8(fp32_path: Path, out_path: Path) -> Path:
    """ONNX Runtime's dynamic int8: its recommended post-training scheme for transformers."""
    import onnx
    from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        model = onnx.load(str(fp32_path))
        gemm_to_matmul(model)
        matmuls = Path(tmp) / "matmul.onnx"
        onnx.save(model, str(matmuls))
        # Shape inference and graph clean-up first, as ONNX Runtime's docs advise.
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(matmuls), str(prepared), skip_symbolic_shape=True)
        quantize_dynamic(str(prepared), str(out_path), weight_type=QuantType.QInt8)
    return out_path


def export_run(run_dir: Path, out_dir: Path | None = None) -> dict[str, Path]:
    """A finished run's best checkpoint -> ONNX beside its bundle (``RUN/bundle``), or in
    ``out_dir``, which gets a copy of the run's bundle first if it holds none."""
    from edgemodel.bundle import MANIFEST_FILE
    from trainer.compress import load_run_model

    model, bundle = load_run_model(Path(run_dir))
    target = Path(out_dir) if out_dir else bundle.root
    if not (target / MANIFEST_FILE).is_file():
        shutil.copytree(bundle.root, target, dirs_exist_ok=True)
    return export_onnx(model, target)


def peer_bundle_from_base(
    base: str, out_dir: Path, variants: tuple[str, ...] = ("fp32", "int8"), seed: int = 13
) -> dict[str, Path]:
    """A pretrained encoder with a fresh, seeded (untrained) head as a bundle with the given
    FlatBuffer variants plus the ONNX pair: the same weights in both runtimes, for timing
    where no fine-tuned checkpoint is at hand. Its labels mean nothing."""
    from edgemodel.bundle import write_bundle
    from edgemodel.data import POLARITY_LABELS
    from trainer.encoders import load_encoder
    from trainer.export import export_variants
    from trainer.model import build_classifier

    keras.utils.set_random_seed(seed)
    encoder = load_encoder(base)
    model = build_classifier(encoder.backbone, num_labels=len(POLARITY_LABELS))
    out_dir = Path(out_dir)
    staging = out_dir.parent / f".{out_dir.name}.flatbuffers"
    paths = export_variants(model, staging, variants)
    write_bundle(
        out_dir,
        variant_files=paths,
        tokenizer_file=encoder.tokenizer_file,
        labels=list(POLARITY_LABELS),
        name=f"{encoder.name}-untrained-head",
        version="0.0.0",
        base_model=encoder.name,
        architecture=encoder.architecture,
        max_length=64,
        entity_input=True,
        training={"note": f"untrained head (seed {seed}): for runtime timing only"},
    )
    shutil.rmtree(staging, ignore_errors=True)
    return export_onnx(model, out_dir)
