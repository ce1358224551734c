"""The "int4" FlatBuffer variant: 4-bit weights that ai-edge-litert runs with builtin ops.

ai-edge-quantizer (AEQ) gives the fully-connected layers channel-wise int4 weights with
dynamic-range (float activation) kernels. It cannot quantize the token-embedding table
here: Keras' embedding converts to GATHER, and AEQ only handles EMBEDDING_LOOKUP. So the
table is quantized by hand, weight-only: a per-row int4 (or int8) constant feeding a
DEQUANTIZE into the unchanged GATHER. LiteRT dequantizes a constant once, at first use,
so the file shrinks while the float table costs RAM (vocabulary x hidden x 4 bytes).
"""

from __future__ import annotations

import numpy as np

# Weight granularity of the fully-connected layers: AEQ's names (CHANNELWISE,
# BLOCKWISE_32, ...).
DEFAULT_GRANULARITY = "CHANNELWISE"


def quantize_int4(
    fp32_model: bytes, embedding_bits: int = 4, granularity: str = DEFAULT_GRANULARITY
) -> bytes:
    """fp32 FlatBuffer -> int4 fully-connected weights + ``embedding_bits`` token table."""
    return quantize_embedding_table(quantize_dense_int4(fp32_model, granularity), embedding_bits)


def quantize_dense_int4(fp32_model: bytes, granularity: str = DEFAULT_GRANULARITY) -> bytes:
    """AEQ: int4 weights, float activations quantized on the fly, for FULLY_CONNECTED."""
    from ai_edge_quantizer import qtyping, quantizer

    q = quantizer.Quantizer(bytearray(fp32_model))
    q.add_dynamic_config(
        regex=".*",
        operation_name=qtyping.TFLOperationName.FULLY_CONNECTED,
        num_bits=4,
        granularity=qtyping.QuantGranularity[granularity],
    )
    return bytes(q.quantize().quantized_model)


def quantize_rows(table: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row quantization: (integer values as int8, one scale per row)."""
    qmax = 2 ** (bits - 1) - 1
    scales = np.abs(table).max(axis=1) / qmax
    scales = np.where(scales > 0, scales, 1.0).astype(np.float32)
    values = np.clip(np.round(table / scales[:, None]), -qmax - 1, qmax).astype(np.int8)
    return values, scales


def pack_int4(values: np.ndarray) -> np.ndarray:
    """Two 4-bit values per byte, the first in the low nibble (TFLite's layout)."""
    flat = values.reshape(-1).astype(np.uint8) & 0x0F
    if flat.size % 2:
        flat = np.append(flat, np.uint8(0))
    return (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8)


def quantize_embedding_table(model_bytes: bytes, bits: int = 4) -> bytes:
    """Store the largest constant float GATHER table (the token embedding) in ``bits``.

    The GATHER then reads DEQUANTIZE(table), which LiteRT computes once.
    """
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    if bits not in (4, 8):
        raise ValueError(f"embedding bits must be 4 or 8, got {bits}")
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    graph, gather, table_index = _token_table(model, schema)
    table = model.subgraphs[graph].tensors[table_index]
    data = np.frombuffer(bytes(model.buffers[table.buffer].data), np.float32)
    values, scales = quantize_rows(data.reshape(list(table.shape)), bits)

    model.buffers[table.buffer].data = pack_int4(values) if bits == 4 else values.view(np.uint8)
    float_table = _float_twin(table, schema)
    table.type = schema.TensorType.INT4 if bits == 4 else schema.TensorType.INT8
    table.quantization = schema.QuantizationParametersT()
    table.quantization.scale = scales.tolist()
    table.quantization.zeroPoint = [0] * len(scales)
    table.quantization.quantizedDimension = 0

    subgraph = model.subgraphs[graph]
    subgraph.tensors.append(float_table)
    dequantize = schema.OperatorT()
    dequantize.opcodeIndex = _opcode(model, schema.BuiltinOperator.DEQUANTIZE, schema)
    dequantize.inputs = [table_index]
    dequantize.outputs = [len(subgraph.tensors) - 1]
    subgraph.operators[gather].inputs[0] = len(subgraph.tensors) - 1
    subgraph.operators.insert(gather, dequantize)  # operators run in list order
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


def _float_twin(tensor, schema):
    """A new float32 activation tensor of the table's shape (the DEQUANTIZE output)."""
    twin = schema.TensorT()
    twin.shape = list(tensor.shape)
    twin.type = schema.TensorType.FLOAT32
    twin.buffer = 0  # buffer 0 is the empty buffer: computed at run time
    twin.name = (tensor.name or b"token_table") + b"/dequantized"
    return twin


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
