"""The "int4" FlatBuffer variant: 4-bit weights that ai-edge-litert runs with builtin ops.

ai-edge-quantizer (AEQ) gives the encoder's fully-connected layers int4 weights with
dynamic-range (float activation) kernels. It cannot quantize the token-embedding table
here: Keras' embedding converts to GATHER, and AEQ only handles EMBEDDING_LOOKUP. So the
table is rewritten by hand: int4 (or int8) values with one scale per row; the GATHER
picks integer rows, which are dequantized and multiplied by their gathered row scales.
Dequantizing the whole table instead (a constant DEQUANTIZE before the GATHER) would hold
it as float in RAM: +26 MiB RSS for a 23k-token table.

How the dense weights are rounded is an :class:`Int4Recipe`: OCTAV clipping per block, or
GPTQ error compensation over calibration tweets; and which dense layers stay int8 (mixed
precision, chosen by measuring each layer's cost, see benchmarks/int4_sensitivity.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgemodel.inference import Encoded

# Scale groups of the fully-connected weights, in AEQ's names (CHANNELWISE,
# BLOCKWISE_32/64/128/256). On the MiniLM run (docs/size_frontier.md) one scale per 32
# weights kept the most fp32 argmaxes; per 128 saved 0.5 MB for ~0.5 points of agreement,
# per output channel 0.4 MB for ~4 points.
DEFAULT_GRANULARITY = "BLOCKWISE_32"
FLOAT32 = 0  # TensorType.FLOAT32 in the TFLite schema
# Only the encoder's layers (KerasHub names them transformer_layer_N): the 3-class head
# is 1,152 weights, and int4 with one scale per class would save nothing but accuracy.
DENSE_SCOPE = "transformer_layer"
ALGORITHMS = ("octav", "gptq")


@dataclass(frozen=True)
class Int4Recipe:
    """How the int4 variant is made from the fp32 FlatBuffer."""

    granularity: str = DEFAULT_GRANULARITY
    # "octav": per block, the clipping range that minimises that block's own rounding
    # error. "gptq": each weight's rounding error is pushed onto the weights of its row not
    # yet rounded, weighted by the layer's input Hessian from calibration tweets (Frantar
    # et al. 2022), so that what the quantizer stores already sits on its grid and the
    # layer's *output* error is small, not each weight's.
    algorithm: str = "octav"
    # Regular expressions over the FlatBuffer's tensor names of dense layers that stay
    # int8 (mixed precision), e.g. "transformer_layer_5_1/feedforward_output".
    int8_scopes: tuple[str, ...] = ()
    embedding_bits: int = 4

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"int4 algorithm {self.algorithm!r} is not one of {ALGORITHMS}")
        if self.embedding_bits not in (4, 8):
            raise ValueError(f"embedding bits must be 4 or 8, got {self.embedding_bits}")

    def describe(self) -> dict:
        return {
            "granularity": self.granularity,
            "algorithm": self.algorithm,
            "int8_scopes": list(self.int8_scopes),
            "embedding_bits": self.embedding_bits,
        }


DEFAULT_INT4 = Int4Recipe()


def quantize_int4(
    fp32_model: bytes, recipe: Int4Recipe = DEFAULT_INT4, calibration: Sequence[Encoded] = ()
) -> bytes:
    """fp32 FlatBuffer -> int4 (and int8 where the recipe says) dense weights + token table."""
    dense = quantize_dense_int4(fp32_model, recipe, calibration)
    return quantize_embedding_table(dense, recipe.embedding_bits)


def quantize_dense_int4(
    fp32_model: bytes, recipe: Int4Recipe = DEFAULT_INT4, calibration: Sequence[Encoded] = ()
) -> bytes:
    """AEQ: int4 weights, float activations quantized on the fly, for FULLY_CONNECTED.

    OCTAV picks clipping ranges that minimise the quantization error instead of using
    min/max; on MiniLM it cut the logit error of int4 by a fifth at the same size. GPTQ
    needs ``calibration``: unpadded tweets, one per sample, as the node feeds them.
    """
    from ai_edge_quantizer import algorithm_manager, qtyping, quantizer

    names = algorithm_manager.AlgorithmName
    fc = qtyping.TFLOperationName.FULLY_CONNECTED
    q = quantizer.Quantizer(bytearray(fp32_model))
    q.add_dynamic_config(
        regex=DENSE_SCOPE,
        operation_name=fc,
        num_bits=4,
        granularity=qtyping.QuantGranularity[recipe.granularity],
        algorithm_key=names.GPTQ if recipe.algorithm == "gptq" else names.OCTAV,
    )
    for scope in recipe.int8_scopes:  # AEQ applies the last matching rule
        q.add_dynamic_config(
            regex=scope,
            operation_name=fc,
            num_bits=8,
            granularity=qtyping.QuantGranularity.CHANNELWISE,
            algorithm_key=names.MIN_MAX_UNIFORM_QUANT,
        )
    if recipe.algorithm != "gptq":
        return bytes(q.quantize().quantized_model)
    if not calibration:
        raise ValueError("GPTQ needs calibration tweets")
    result = q.calibrate({"serving_default": calibration_batches(calibration)}, num_threads=2)
    return bytes(q.quantize(result).quantized_model)


def calibration_batches(tweets: Sequence[Encoded], max_batch: int = 64) -> list[dict]:
    """Tweets of equal length batched together: no padding reaches the Hessian, and AEQ's
    calibration, which steps through the graph op by op per sample in Python, runs once
    per length instead of once per tweet (512 tweets: minutes rather than half an hour)."""
    by_length: dict[int, list[Encoded]] = {}
    for e in tweets:
        by_length.setdefault(len(e), []).append(e)
    batches = []
    for length in sorted(by_length):
        group = by_length[length]
        for start in range(0, len(group), max_batch):
            part = group[start : start + max_batch]
            batches.append(
                {
                    "input_ids": np.asarray([e.input_ids for e in part], np.int32),
                    "segment_ids": np.asarray([e.segment_ids for e in part], np.int32),
                    "attention_mask": np.ones((len(part), length), np.int32),
                }
            )
    return batches


def quantize_rows(
    table: np.ndarray, bits: int, clip_ratios: Sequence[float] = (1.0,)
) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row quantization: (integer values as int8, one scale per row).

    Each row takes the clipping range, among ``clip_ratios`` times its largest magnitude,
    with the least squared rounding error: at 4 bits one outlier would otherwise stretch
    the grid of 384 values (a lookup table has no inputs for GPTQ to compensate over).
    """
    qmax = 2 ** (bits - 1) - 1
    peak = np.abs(table).max(axis=1)
    best_err = np.full(len(table), np.inf)
    best_values = np.zeros(table.shape, np.int8)
    best_scales = np.ones(len(table), np.float32)
    for ratio in clip_ratios:
        scales = np.where(peak > 0, peak * ratio / qmax, 1.0).astype(np.float32)
        values = np.clip(np.round(table / scales[:, None]), -qmax - 1, qmax)
        err = ((values * scales[:, None] - table) ** 2).sum(axis=1)
        better = err < best_err
        best_err[better] = err[better]
        best_values[better] = values[better].astype(np.int8)
        best_scales[better] = scales[better]
    return best_values, best_scales


# Clipping ratios the token table's rows choose from (int4): the least-error one per row.
TABLE_CLIP_RATIOS = tuple(np.round(np.linspace(0.5, 1.0, 21), 3))


def pack_int4(values: np.ndarray) -> np.ndarray:
    """Two 4-bit values per byte, the first in the low nibble (TFLite's layout)."""
    flat = values.reshape(-1).astype(np.uint8) & 0x0F
    if flat.size % 2:
        flat = np.append(flat, np.uint8(0))
    return (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8)


def quantize_embedding_table(model_bytes: bytes, bits: int = 4) -> bytes:
    """Store the largest constant float GATHER table (the token embedding) in ``bits``.

    GATHER(table, ids) becomes DEQUANTIZE(GATHER(int table, ids)) * GATHER(row scales, ids):
    only the looked-up rows are ever float, so the table stays packed in the mapped file.
    """
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    if bits not in (4, 8):
        raise ValueError(f"embedding bits must be 4 or 8, got {bits}")
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    graph, position, table_index = _token_table(model, schema)
    subgraph = model.subgraphs[graph]
    gather = subgraph.operators[position]
    table, rows = subgraph.tensors[table_index], subgraph.tensors[gather.outputs[0]]
    data = np.frombuffer(bytes(model.buffers[table.buffer].data), np.float32)
    ratios = TABLE_CLIP_RATIOS if bits == 4 else (1.0,)
    values, scales = quantize_rows(data.reshape(list(table.shape)), bits, ratios)

    int_type = schema.TensorType.INT4 if bits == 4 else schema.TensorType.INT8
    model.buffers[table.buffer].data = (
        pack_int4(values) if bits == 4 else values.reshape(-1).view(np.uint8)
    )
    table.type, table.quantization = int_type, _unit_scale(schema)

    name = table.name or b"token_table"
    int_rows = _activation(subgraph, rows, name + b"/rows_int", int_type, schema)
    float_rows = _activation(subgraph, rows, name + b"/rows_unscaled", FLOAT32, schema)
    row_scales = _activation(subgraph, rows, name + b"/row_scales", FLOAT32, schema, width=1)
    scale_table = _constant(model, subgraph, scales.reshape(-1, 1), name + b"/scales", schema)
    ids, output = gather.inputs[1], gather.outputs[0]
    gather.outputs = [int_rows]
    op_kind = schema.BuiltinOperator
    ops = [
        _op(model, schema, op_kind.DEQUANTIZE, [int_rows], [float_rows]),
        _op(model, schema, op_kind.GATHER, [scale_table, ids], [row_scales],
            (gather.builtinOptionsType, gather.builtinOptions)),
        _op(model, schema, op_kind.MUL, [float_rows, row_scales], [output],
            (schema.BuiltinOptions.MulOptions, schema.MulOptionsT())),
    ]  # fmt: skip
    subgraph.operators[position + 1 : position + 1] = ops  # operators run in list order
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _token_table(model, schema) -> tuple[int, int, int]:
    """(subgraph, GATHER operator, params tensor) of the largest constant float table."""
    best: tuple[int, int, int, int] | None = None
    for g, subgraph in enumerate(model.subgraphs):
        for o, op in enumerate(subgraph.operators):
            code = model.operatorCodes[op.opcodeIndex]
            if max(code.builtinCode, code.deprecatedBuiltinCode) != schema.BuiltinOperator.GATHER:
                continue
            tensor = subgraph.tensors[op.inputs[0]]
            data = model.buffers[tensor.buffer].data
            if tensor.type != schema.TensorType.FLOAT32 or data is None or len(tensor.shape) != 2:
                continue
            size = int(np.prod(tensor.shape))
            if best is None or size > best[0]:
                best = (size, g, o, op.inputs[0])
    if best is None:
        raise ValueError("no GATHER with a constant float table: is this an fp32 FlatBuffer?")
    return best[1], best[2], best[3]


def _unit_scale(schema):
    """Quantization parameters that make DEQUANTIZE a plain integer -> float cast."""
    params = schema.QuantizationParametersT()
    params.scale, params.zeroPoint = [1.0], [0]
    return params


def _activation(subgraph, like, name: bytes, ttype: int, schema, width: int | None = None) -> int:
    """A new run-time tensor shaped like ``like`` (last dimension ``width`` if given)."""
    t = schema.TensorT()
    t.name, t.type, t.buffer = name, ttype, 0  # buffer 0: no data, computed at run time
    t.shape = [*like.shape[:-1], width or like.shape[-1]]
    if like.shapeSignature is not None:  # dynamic batch and sequence dimensions
        t.shapeSignature = [*like.shapeSignature[:-1], width or like.shapeSignature[-1]]
    if ttype != FLOAT32:
        t.quantization = _unit_scale(schema)
    subgraph.tensors.append(t)
    return len(subgraph.tensors) - 1


def _constant(model, subgraph, value: np.ndarray, name: bytes, schema) -> int:
    buffer = schema.BufferT()
    buffer.data = np.ascontiguousarray(value, np.float32).reshape(-1).view(np.uint8)
    model.buffers.append(buffer)
    t = schema.TensorT()
    t.name, t.type, t.shape = name, FLOAT32, list(value.shape)
    t.buffer = len(model.buffers) - 1
    subgraph.tensors.append(t)
    return len(subgraph.tensors) - 1


def _op(model, schema, builtin: int, inputs: list[int], outputs: list[int], options=None):
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = _opcode(model, builtin, schema), inputs, outputs
    if options is not None:
        op.builtinOptionsType, op.builtinOptions = options
    return op


def _opcode(model, builtin: int, schema) -> int:
    for i, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            return i
    code = schema.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, 127)  # the int8 field saturates at 127
    code.version = 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1
