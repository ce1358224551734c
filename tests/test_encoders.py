"""Encoders against the reference implementation (transformers), without torch.

The references in tests/fixtures were written by tests/fixtures/make_encoder_fixtures.py
with transformers 4.57.6 / torch 2.13.0 in a separate venv.
"""

from __future__ import annotations

import io
import pickle
import shutil
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
import safetensors.numpy

from trainer.encoders import load_encoder
from trainer.encoders.bert import load_bert
from trainer.encoders.hf_folder import CheckpointError, read_state_dict, read_torch_bin
from trainer.encoders.mobilebert import (
    MobileBertBackbone,
    assign_hf_weights,
    load_mobilebert,
)

FIXTURES = Path(__file__).parent / "fixtures"
TINY = FIXTURES / "mobilebert_tiny"


def encode(backbone: keras.Model, ref: np.lib.npyio.NpzFile) -> dict[str, np.ndarray]:
    out = backbone(
        {
            "token_ids": ref["input_ids"],
            "segment_ids": ref["token_type_ids"],
            "padding_mask": ref["attention_mask"],
        }
    )
    return {k: keras.ops.convert_to_numpy(v) for k, v in out.items()}


def max_diff(backbone: keras.Model, ref: np.lib.npyio.NpzFile) -> tuple[float, float | None]:
    """Max abs difference of sequence_output on unpadded tokens, and of pooled_output."""
    out = encode(backbone, ref)
    real = ref["attention_mask"].astype(bool)
    seq = float(np.abs(out["sequence_output"] - ref["last_hidden_state"])[real].max())
    pooled = None
    if "pooler_output" in ref.files:
        pooled = float(np.abs(out["pooled_output"] - ref["pooler_output"]).max())
    return seq, pooled


# --- MobileBERT parity ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["mobilebert_tiny", "mobilebert_layer_norm", "mobilebert_no_bottleneck"]
)
def test_mobilebert_matches_transformers(name: str) -> None:
    folder = FIXTURES / name
    seq, pooled = max_diff(load_mobilebert(folder), np.load(folder / "reference.npz"))
    assert seq < 1e-4
    assert pooled is None or pooled < 1e-4


def test_mobilebert_from_pytorch_bin_only(tmp_path: Path) -> None:
    for file in ("config.json", "pytorch_model.bin"):
        shutil.copy(TINY / file, tmp_path / file)
    seq, pooled = max_diff(load_mobilebert(tmp_path), np.load(TINY / "reference.npz"))
    assert seq < 1e-4 and pooled < 1e-4


def test_load_encoder_dispatches_and_prunes() -> None:
    full = load_encoder(str(TINY))
    assert full.architecture == "mobilebert" and full.tokenizer_file.is_file()
    pruned = load_encoder(str(TINY), num_layers=1).backbone
    assert pruned.num_layers == 1
    kept = {w.path: w for w in full.backbone.weights}
    for w in pruned.weights:
        np.testing.assert_array_equal(w.numpy(), kept[w.path].numpy())


def test_task_checkpoint_prefix_and_heads_are_accepted() -> None:
    # google/mobilebert-uncased is a MobileBertForPreTraining: "mobilebert." + "cls." heads.
    state = {f"mobilebert.{k}": v for k, v in read_state_dict(TINY).items()}
    state["cls.predictions.bias"] = np.zeros(80, np.float32)
    backbone = load_mobilebert(TINY)
    fresh = MobileBertBackbone.from_config(backbone.get_config())
    assign_hf_weights(fresh, state)
    for a, b in zip(backbone.weights, fresh.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_missing_pooler_only_warns() -> None:
    state = {k: v for k, v in read_state_dict(TINY).items() if not k.startswith("pooler.")}
    backbone = MobileBertBackbone.from_config(load_mobilebert(TINY).get_config())
    with pytest.warns(UserWarning, match="no pooler"):
        assign_hf_weights(backbone, state)
    seq, _ = max_diff(backbone, np.load(TINY / "reference.npz"))
    assert seq < 1e-4


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.pop("encoder.layer.1.ffn.0.output.LayerNorm.weight"), "missing"),
        (lambda s: s.update({"encoder.layer.0.extra.weight": np.zeros(2)}), "unknown"),
        (
            lambda s: s.update({"embeddings.word_embeddings.weight": np.zeros((9, 16))}),
            "shape",
        ),
    ],
)
def test_checkpoint_mismatch_fails_clearly(edit, message: str) -> None:
    state = read_state_dict(TINY)
    edit(state)
    backbone = MobileBertBackbone.from_config(load_mobilebert(TINY).get_config())
    with pytest.raises(CheckpointError, match=message):
        assign_hf_weights(backbone, state)


def test_backbone_survives_keras_save_and_load(tmp_path: Path) -> None:
    backbone = load_mobilebert(TINY)
    backbone.save(tmp_path / "mb.keras")
    restored = keras.saving.load_model(tmp_path / "mb.keras")
    ref = np.load(TINY / "reference.npz")
    np.testing.assert_allclose(
        encode(restored, ref)["sequence_output"], encode(backbone, ref)["sequence_output"]
    )


# --- torch-free .bin reader -------------------------------------------------------------------


def test_bin_reader_equals_safetensors() -> None:
    from_bin = read_torch_bin(TINY / "pytorch_model.bin")
    from_st = safetensors.numpy.load_file(str(TINY / "model.safetensors"))
    assert sorted(from_bin) == sorted(from_st)
    for key, value in from_st.items():
        assert from_bin[key].dtype == value.dtype, key
        np.testing.assert_array_equal(from_bin[key], value, err_msg=key)


@pytest.mark.parametrize("file", ["torch_tensors.bin", "torch_tensors_legacy.bin"])
def test_bin_reader_dtypes_views_and_legacy_format(file: str) -> None:
    expected = np.load(FIXTURES / "torch_tensors.npz")
    got = read_torch_bin(FIXTURES / file)
    assert sorted(got) == sorted(expected.files)
    for key in expected.files:
        assert got[key].dtype == expected[key].dtype, key
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


class _Exploit:
    def __reduce__(self):
        return (print, ("unpickled code ran",))


def test_bin_reader_refuses_arbitrary_globals(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("evil/data.pkl", pickle.dumps({"w": _Exploit()}, protocol=2))
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(CheckpointError, match=r"refusing to unpickle \w+\.print"):
        read_torch_bin(path)


# --- BERT through KerasHub --------------------------------------------------------------------


def _exact_gelu(backbone: keras.Model) -> None:
    """KerasHub's BERT uses tanh-approximated GELU; HF BERT checkpoints use the exact one."""
    for i in range(backbone.num_layers):
        dense = backbone.get_layer(f"transformer_layer_{i}")._feedforward_intermediate_dense
        dense.activation = lambda x: keras.activations.gelu(x, approximate=False)


def test_bert_from_pytorch_bin_only() -> None:
    folder = FIXTURES / "bert_tiny_bin"
    assert not (folder / "model.safetensors").exists()
    ref = np.load(folder / "reference.npz")
    backbone = load_bert(folder)
    seq, _ = max_diff(backbone, ref)
    assert seq < 2e-3  # approximate GELU; 2.6e-4 measured
    _exact_gelu(backbone)
    assert max_diff(backbone, ref)[0] < 1e-5


def test_minilm_matches_transformers() -> None:
    ref = np.load(FIXTURES / "minilm_reference.npz")
    backbone = load_encoder().backbone
    seq, _ = max_diff(backbone, ref)
    assert seq < 2e-2  # approximate GELU; 3.6e-3 measured on values up to 5.4
    _exact_gelu(backbone)
    assert max_diff(backbone, ref)[0] < 1e-4  # the GELU is the whole difference


# --- TFLite -----------------------------------------------------------------------------------


def test_mobilebert_exports_to_builtin_tflite(tmp_path: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    from trainer.export import export_variants
    from trainer.model import build_classifier

    keras.utils.set_random_seed(0)
    # Wide enough that every Dense kernel has >= 1024 weights, which the converter's
    # dynamic-range int8 quantizes (smaller tensors stay float).
    backbone = MobileBertBackbone(
        vocabulary_size=500,
        num_layers=2,
        hidden_dim=128,
        embedding_dim=32,
        intra_bottleneck_dim=32,
        intermediate_dim=128,
        max_sequence_length=64,
    )
    model = build_classifier(backbone, num_labels=3)
    paths = export_variants(model, tmp_path, ("fp32", "int8"))

    rng = np.random.default_rng(0)
    ids = rng.integers(5, 500, (4, 12)).astype(np.int32)
    mask = np.ones_like(ids)
    ids[1, 7:], mask[1, 7:] = 0, 0  # a padded row
    batches = [(ids, mask), (ids[:1, :5], mask[:1, :5])]  # resized at run time
    for variant, path in paths.items():
        interpreter = Interpreter(model_path=str(path))
        ops = {op["op_name"] for op in interpreter._get_ops_details()}
        assert not {op for op in ops if op.startswith("Flex") or op == "CUSTOM"}, ops
        int8_weights = sum(t["dtype"] == np.int8 for t in interpreter.get_tensor_details())
        assert (int8_weights > 0) == (variant == "int8")
        runner = interpreter.get_signature_runner()
        for batch_ids, batch_mask in batches:
            segments = np.zeros_like(batch_ids)
            expected = model([batch_ids, segments, batch_mask], training=False)["logits"]
            expected = keras.ops.convert_to_numpy(expected)
            got = runner(input_ids=batch_ids, segment_ids=segments, attention_mask=batch_mask)
            error = np.abs(got["logits"] - expected).max() / np.abs(expected).max()
            assert error < (1e-5 if variant == "fp32" else 2e-2), (variant, error)
