"""MobileBERT (Sun et al., 2020) as a Keras 3 backbone, plus a Hugging Face weight loader.

KerasHub has no MobileBERT, so the layers are written here in the style of its backbones:
a ``keras.Model`` subclass built functionally, with the call convention of
``keras_hub.models.BertBackbone`` (``token_ids``/``segment_ids``/``padding_mask`` ->
``sequence_output``/``pooled_output``). Every op lowers to TFLite builtins, and batch and
sequence length stay dynamic.

Architecture facts follow the Hugging Face ``MobileBertModel`` (and its ``MobileBertConfig``),
including its quirk that two of the normalisations per block ignore ``layer_norm_eps``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
from keras import ops

from trainer.encoders.hf_folder import CheckpointError, read_state_dict

# Additive attention-mask bias. Bounded (as in Google's BERT code) rather than -1e9/-inf so
# that the int8 scale of the attention scores survives padded inputs; exp(-1e4) is 0 in fp32.
_MASK_BIAS = -10000.0
# torch.nn.LayerNorm's default, used by HF for the embedding and block-output norms.
_TORCH_LAYER_NORM_EPS = 1e-5

_ACTIVATIONS = {
    "relu": keras.activations.relu,
    "gelu": lambda x: keras.activations.gelu(x, approximate=False),
    "gelu_new": lambda x: keras.activations.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: keras.activations.gelu(x, approximate=True),
    "tanh": keras.activations.tanh,
}


def _initializer() -> keras.initializers.Initializer:
    return keras.initializers.TruncatedNormal(stddev=0.02)


@keras.saving.register_keras_serializable(package="repedge")
class NoNorm(keras.layers.Layer):
    """MobileBERT's replacement for LayerNorm: elementwise ``x * gamma + beta``.

    No statistics are computed, which is what makes the model cheap and int8-friendly.
    """

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        dim = input_shape[-1]
        self.gamma = self.add_weight(name="gamma", shape=(dim,), initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(dim,), initializer="zeros")

    def call(self, inputs):
        return inputs * self.gamma + self.beta


def make_norm(normalization_type: str, epsilon: float, name: str, dtype=None) -> keras.layers.Layer:
    """The ``normalization_type`` switch: ``no_norm`` (MobileBERT) or ``layer_norm``."""
    if normalization_type == "no_norm":
        return NoNorm(name=name, dtype=dtype)
    if normalization_type == "layer_norm":
        return keras.layers.LayerNormalization(epsilon=epsilon, name=name, dtype=dtype)
    raise ValueError(
        f"normalization_type must be 'no_norm' or 'layer_norm', not {normalization_type!r}"
    )


def _dense(units: int, name: str, dtype=None) -> keras.layers.Dense:
    return keras.layers.Dense(units, kernel_initializer=_initializer(), name=name, dtype=dtype)


@keras.saving.register_keras_serializable(package="repedge")
class TrigramConcat(keras.layers.Layer):
    """``[x[t+1], x[t], x[t-1]]`` along features, zero-padded at the sequence ends.

    MobileBERT's cheap substitute for a width-3 convolution over the 128-d token embeddings.
    Built from slices and a concat so the sequence length can stay dynamic.
    """

    def call(self, inputs):
        zeros = ops.zeros_like(inputs[:, :1, :])
        following = ops.concatenate([inputs[:, 1:, :], zeros], axis=1)
        preceding = ops.concatenate([zeros, inputs[:, :-1, :]], axis=1)
        return ops.concatenate([following, inputs, preceding], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 3 * input_shape[-1])


@keras.saving.register_keras_serializable(package="repedge")
class PositionEmbedding(keras.layers.Layer):
    """Learned absolute positions, sliced to the input's (dynamic) length and broadcast."""

    def __init__(self, sequence_length: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.sequence_length = sequence_length

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self.position_embeddings = self.add_weight(
            name="embeddings",
            shape=(self.sequence_length, input_shape[-1]),
            initializer=_initializer(),
        )

    def call(self, inputs):
        shape = ops.shape(inputs)
        positions = ops.slice(self.position_embeddings, (0, 0), (shape[1], shape[2]))
        return ops.broadcast_to(ops.expand_dims(positions, 0), shape)

    def get_config(self) -> dict:
        return super().get_config() | {"sequence_length": self.sequence_length}


@keras.saving.register_keras_serializable(package="repedge")
class MobileBertSelfAttention(keras.layers.Layer):
    """Multi-head attention whose query/key and value inputs may differ in width.

    With the default key/query-shared bottleneck, queries and keys come from the 128-d
    bottleneck while values come from the 512-d hidden state. Returns the heads concatenated
    (``num_heads * head_dim``); the output projection lives in the block.
    """

    def __init__(self, num_heads: int, key_dim: int, dropout: float = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.dropout = dropout
        width = num_heads * key_dim
        self.query_dense = _dense(width, "query", self.dtype_policy)
        self.key_dense = _dense(width, "key", self.dtype_policy)
        self.value_dense = _dense(width, "value", self.dtype_policy)
        self.dropout_layer = keras.layers.Dropout(dropout, name="dropout", dtype=self.dtype_policy)

    def build(self, query_shape, key_shape, value_shape, attention_bias_shape=None) -> None:
        self.query_dense.build(query_shape)
        self.key_dense.build(key_shape)
        self.value_dense.build(value_shape)

    def _split_heads(self, x):
        # [batch, seq, heads * dim] -> [batch, heads, seq, dim]
        x = ops.reshape(x, (ops.shape(x)[0], -1, self.num_heads, self.key_dim))
        return ops.transpose(x, (0, 2, 1, 3))

    def call(self, query, key, value, attention_bias, training=None):
        q = self._split_heads(self.query_dense(query))
        k = self._split_heads(self.key_dense(key))
        v = self._split_heads(self.value_dense(value))
        scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) / np.sqrt(self.key_dim)
        probs = ops.softmax(scores + ops.cast(attention_bias, scores.dtype), axis=-1)
        probs = self.dropout_layer(probs, training=training)
        context = ops.transpose(ops.matmul(probs, v), (0, 2, 1, 3))
        return ops.reshape(context, (ops.shape(context)[0], -1, self.num_heads * self.key_dim))

    def compute_output_shape(self, query_shape, key_shape, value_shape, attention_bias_shape):
        return (*query_shape[:-1], self.num_heads * self.key_dim)

    def get_config(self) -> dict:
        return super().get_config() | {
            "num_heads": self.num_heads,
            "key_dim": self.key_dim,
            "dropout": self.dropout,
        }


_BLOCK_ARGS = (
    "hidden_dim",
    "intra_bottleneck_dim",
    "intermediate_dim",
    "num_heads",
    "num_feedforward_networks",
    "use_bottleneck",
    "use_bottleneck_attention",
    "key_query_shared_bottleneck",
    "normalization_type",
    "activation",
    "layer_norm_epsilon",
    "dropout",
    "attention_dropout",
)


@keras.saving.register_keras_serializable(package="repedge")
class MobileBertTransformerLayer(keras.layers.Layer):
    """One MobileBERT block: bottlenecks, attention, stacked FFNs, output bottleneck.

    Sub-layer names mirror the Hugging Face module paths (``bottleneck_input_dense`` is
    ``bottleneck.input.dense``) so the weight map in :func:`hf_weight_map` reads plainly.
    """

    def __init__(
        self,
        hidden_dim: int,
        intra_bottleneck_dim: int,
        intermediate_dim: int,
        num_heads: int,
        num_feedforward_networks: int = 4,
        use_bottleneck: bool = True,
        use_bottleneck_attention: bool = False,
        key_query_shared_bottleneck: bool = True,
        normalization_type: str = "no_norm",
        activation: str = "relu",
        layer_norm_epsilon: float = 1e-12,
        dropout: float = 0.0,
        attention_dropout: float = 0.1,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if activation not in _ACTIVATIONS:
            raise ValueError(f"unsupported activation {activation!r}; known: {list(_ACTIVATIONS)}")
        for arg in _BLOCK_ARGS:
            setattr(self, arg, locals()[arg])
        self.true_hidden_dim = intra_bottleneck_dim if use_bottleneck else hidden_dim
        if self.true_hidden_dim % num_heads:
            raise ValueError(f"width {self.true_hidden_dim} is not divisible by {num_heads} heads")
        self._build_sublayers()

    @property
    def _uses_shared_bottleneck(self) -> bool:
        # use_bottleneck_attention overrides the shared query/key bottleneck.
        return (
            self.use_bottleneck
            and self.key_query_shared_bottleneck
            and not self.use_bottleneck_attention
        )

    def _norm(self, name: str, epsilon: float | None = None) -> keras.layers.Layer:
        eps = self.layer_norm_epsilon if epsilon is None else epsilon
        return make_norm(self.normalization_type, eps, name, self.dtype_policy)

    def _build_sublayers(self) -> None:
        width, policy = self.true_hidden_dim, self.dtype_policy
        if self.use_bottleneck:
            self.bottleneck_input_dense = _dense(
                self.intra_bottleneck_dim, "bottleneck_input_dense", policy
            )
            self.bottleneck_input_norm = self._norm("bottleneck_input_norm")
            if self._uses_shared_bottleneck:
                self.bottleneck_attention_dense = _dense(
                    self.intra_bottleneck_dim, "bottleneck_attention_dense", policy
                )
                self.bottleneck_attention_norm = self._norm("bottleneck_attention_norm")
        self.self_attention = MobileBertSelfAttention(
            self.num_heads,
            width // self.num_heads,
            self.attention_dropout,
            name="self_attention",
            dtype=policy,
        )
        self.attention_output_dense = _dense(width, "attention_output_dense", policy)
        self.attention_output_norm = self._norm("attention_output_norm")
        self.ffn_layers = [
            (
                _dense(self.intermediate_dim, f"ffn_{j}_intermediate_dense", policy),
                _dense(width, f"ffn_{j}_output_dense", policy),
                self._norm(f"ffn_{j}_output_norm"),
            )
            for j in range(self.num_feedforward_networks - 1)
        ]
        self.intermediate_dense = _dense(self.intermediate_dim, "intermediate_dense", policy)
        self.output_dense = _dense(width, "output_dense", policy)
        self.output_norm = self._norm("output_norm", _TORCH_LAYER_NORM_EPS)
        if self.use_bottleneck:
            self.output_bottleneck_dense = _dense(
                self.hidden_dim, "output_bottleneck_dense", policy
            )
            self.output_bottleneck_norm = self._norm("output_bottleneck_norm")
        self.dropout_layer = keras.layers.Dropout(self.dropout, name="dropout", dtype=policy)

    def build(self, hidden_states_shape, attention_bias_shape=None) -> None:
        hidden = tuple(hidden_states_shape)
        inner = (*hidden[:-1], self.true_hidden_dim)
        wide = (*hidden[:-1], self.intermediate_dim)
        if self.use_bottleneck:
            bottleneck = (*hidden[:-1], self.intra_bottleneck_dim)
            self.bottleneck_input_dense.build(hidden)
            self.bottleneck_input_norm.build(bottleneck)
            if self._uses_shared_bottleneck:
                self.bottleneck_attention_dense.build(hidden)
                self.bottleneck_attention_norm.build(bottleneck)
            self.output_bottleneck_dense.build(inner)
            self.output_bottleneck_norm.build(hidden)
        # Input widths as HF defines them: values skip the bottleneck unless
        # use_bottleneck_attention (without bottlenecks inner == hidden).
        value = inner if self.use_bottleneck_attention else hidden
        self.self_attention.build(inner, inner, value)
        for layer, shape in (
            (self.attention_output_dense, inner),
            (self.attention_output_norm, inner),
            (self.intermediate_dense, inner),
            (self.output_dense, wide),
            (self.output_norm, inner),
        ):
            layer.build(shape)
        for intermediate, output, norm in self.ffn_layers:
            intermediate.build(inner)
            output.build(wide)
            norm.build(inner)

    def _activate(self, x):
        return _ACTIVATIONS[self.activation](x)

    def _attention_inputs(self, hidden):
        """(query, key, value, residual) as chosen by the bottleneck flags."""
        if not self.use_bottleneck:
            return hidden, hidden, hidden, hidden
        residual = self.bottleneck_input_norm(self.bottleneck_input_dense(hidden))
        if self.use_bottleneck_attention:
            return residual, residual, residual, residual
        if self._uses_shared_bottleneck:
            shared = self.bottleneck_attention_norm(self.bottleneck_attention_dense(hidden))
            return shared, shared, hidden, residual
        return hidden, hidden, hidden, residual

    def call(self, hidden_states, attention_bias, training=None):
        query, key, value, residual = self._attention_inputs(hidden_states)
        context = self.self_attention(query, key, value, attention_bias, training=training)
        attended = self.attention_output_dense(context)
        if not self.use_bottleneck:
            attended = self.dropout_layer(attended, training=training)
        x = self.attention_output_norm(attended + residual)
        for intermediate, output, norm in self.ffn_layers:
            x = norm(output(self._activate(intermediate(x))) + x)
        out = self.output_dense(self._activate(self.intermediate_dense(x)))
        if not self.use_bottleneck:
            return self.output_norm(self.dropout_layer(out, training=training) + x)
        out = self.output_norm(out + x)
        out = self.dropout_layer(self.output_bottleneck_dense(out), training=training)
        return self.output_bottleneck_norm(out + hidden_states)

    def compute_output_shape(self, hidden_states_shape, attention_bias_shape=None):
        return tuple(hidden_states_shape)

    def get_config(self) -> dict:
        return super().get_config() | {arg: getattr(self, arg) for arg in _BLOCK_ARGS}


@keras.saving.register_keras_serializable(package="repedge")
class MobileBertBackbone(keras.Model):
    """MobileBERT encoder network, called like ``keras_hub.models.BertBackbone``.

    Inputs: ``token_ids``, ``segment_ids``, ``padding_mask`` (int32 [batch, seq], any size).
    Outputs: ``sequence_output`` [batch, seq, hidden_dim] and ``pooled_output`` (the first
    token, through dense + tanh when ``pooler_activation``). Defaults are
    ``google/mobilebert-uncased``'s (24 layers, hidden 512, bottleneck 128, 4 FFNs, NoNorm).
    """

    def __init__(
        self,
        vocabulary_size: int,
        num_layers: int = 24,
        num_heads: int = 4,
        hidden_dim: int = 512,
        embedding_dim: int = 128,
        intermediate_dim: int = 512,
        intra_bottleneck_dim: int = 128,
        num_feedforward_networks: int = 4,
        use_bottleneck: bool = True,
        use_bottleneck_attention: bool = False,
        key_query_shared_bottleneck: bool = True,
        trigram_input: bool = True,
        normalization_type: str = "no_norm",
        activation: str = "relu",
        layer_norm_epsilon: float = 1e-12,
        dropout: float = 0.0,
        attention_dropout: float = 0.1,
        max_sequence_length: int = 512,
        num_segments: int = 2,
        pooler_activation: bool = True,
        dtype=None,
        **kwargs,
    ) -> None:
        # === Layers ===
        self.token_embedding = keras.layers.Embedding(
            vocabulary_size,
            embedding_dim,
            embeddings_initializer=_initializer(),
            name="token_embedding",
            dtype=dtype,
        )
        self.trigram = TrigramConcat(name="trigram_concat", dtype=dtype) if trigram_input else None
        self.embedding_projection = (
            _dense(hidden_dim, "embedding_projection", dtype)
            if trigram_input or embedding_dim != hidden_dim
            else None
        )
        self.position_embedding = PositionEmbedding(
            max_sequence_length, name="position_embedding", dtype=dtype
        )
        self.segment_embedding = keras.layers.Embedding(
            num_segments,
            hidden_dim,
            embeddings_initializer=_initializer(),
            name="segment_embedding",
            dtype=dtype,
        )
        self.embeddings_add = keras.layers.Add(name="embeddings_add", dtype=dtype)
        self.embeddings_norm = make_norm(
            normalization_type, _TORCH_LAYER_NORM_EPS, "embeddings_norm", dtype
        )
        self.embeddings_dropout = keras.layers.Dropout(
            dropout, name="embeddings_dropout", dtype=dtype
        )
        block_config = {
            "hidden_dim": hidden_dim,
            "intra_bottleneck_dim": intra_bottleneck_dim,
            "intermediate_dim": intermediate_dim,
            "num_heads": num_heads,
            "num_feedforward_networks": num_feedforward_networks,
            "use_bottleneck": use_bottleneck,
            "use_bottleneck_attention": use_bottleneck_attention,
            "key_query_shared_bottleneck": key_query_shared_bottleneck,
            "normalization_type": normalization_type,
            "activation": activation,
            "layer_norm_epsilon": layer_norm_epsilon,
            "dropout": dropout,
            "attention_dropout": attention_dropout,
        }
        self.transformer_layers = [
            MobileBertTransformerLayer(**block_config, name=f"transformer_layer_{i}", dtype=dtype)
            for i in range(num_layers)
        ]
        self.pooled_dense = (
            keras.layers.Dense(
                hidden_dim,
                activation="tanh",
                kernel_initializer=_initializer(),
                name="pooled_dense",
                dtype=dtype,
            )
            if pooler_activation
            else None
        )

        # === Functional model ===
        token_ids = keras.Input((None,), dtype="int32", name="token_ids")
        segment_ids = keras.Input((None,), dtype="int32", name="segment_ids")
        padding_mask = keras.Input((None,), dtype="int32", name="padding_mask")
        tokens = self.token_embedding(token_ids)
        if self.trigram is not None:
            tokens = self.trigram(tokens)
        if self.embedding_projection is not None:
            tokens = self.embedding_projection(tokens)
        x = self.embeddings_add(
            [tokens, self.position_embedding(tokens), self.segment_embedding(segment_ids)]
        )
        x = self.embeddings_dropout(self.embeddings_norm(x))
        bias = _attention_bias(padding_mask)
        for block in self.transformer_layers:
            x = block(x, bias)
        first = x[:, 0, :]
        pooled = self.pooled_dense(first) if self.pooled_dense is not None else first
        super().__init__(
            inputs={
                "token_ids": token_ids,
                "segment_ids": segment_ids,
                "padding_mask": padding_mask,
            },
            outputs={"sequence_output": x, "pooled_output": pooled},
            dtype=dtype,
            **kwargs,
        )

        # === Config ===
        self.vocabulary_size = vocabulary_size
        self.num_layers = num_layers
        self.embedding_dim = embedding_dim
        self.trigram_input = trigram_input
        self.max_sequence_length = max_sequence_length
        self.num_segments = num_segments
        self.pooler_activation = pooler_activation
        self._block_config = block_config

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "vocabulary_size": self.vocabulary_size,
            "num_layers": self.num_layers,
            "embedding_dim": self.embedding_dim,
            "trigram_input": self.trigram_input,
            "max_sequence_length": self.max_sequence_length,
            "num_segments": self.num_segments,
            "pooler_activation": self.pooler_activation,
            **self._block_config,
        }

    @classmethod
    def from_config(cls, config: dict) -> MobileBertBackbone:
        return cls(**config)


def _attention_bias(padding_mask):
    """[batch, seq] 1/0 mask -> additive [batch, 1, 1, seq] bias over attended keys."""
    mask = ops.cast(padding_mask, "float32")
    bias = (1.0 - mask) * _MASK_BIAS
    return ops.expand_dims(ops.expand_dims(bias, 1), 1)


# --- Hugging Face checkpoints ---------------------------------------------------------------


def backbone_config_from_hf(hf: dict) -> dict:
    """``MobileBertBackbone`` arguments from a Hugging Face ``MobileBertConfig`` dict."""
    defaults = {  # MobileBertConfig's own defaults, for keys a config.json leaves out
        "num_hidden_layers": 24,
        "num_attention_heads": 4,
        "hidden_size": 512,
        "embedding_size": 128,
        "intermediate_size": 512,
        "intra_bottleneck_size": 128,
        "num_feedforward_networks": 4,
        "use_bottleneck": True,
        "use_bottleneck_attention": False,
        "key_query_shared_bottleneck": True,
        "trigram_input": True,
        "normalization_type": "no_norm",
        "hidden_act": "relu",
        "layer_norm_eps": 1e-12,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
        "classifier_activation": True,
    }
    c = defaults | hf
    return {
        "vocabulary_size": c["vocab_size"],
        "num_layers": c["num_hidden_layers"],
        "num_heads": c["num_attention_heads"],
        "hidden_dim": c["hidden_size"],
        "embedding_dim": c["embedding_size"],
        "intermediate_dim": c["intermediate_size"],
        "intra_bottleneck_dim": c["intra_bottleneck_size"],
        "num_feedforward_networks": c["num_feedforward_networks"],
        "use_bottleneck": c["use_bottleneck"],
        "use_bottleneck_attention": c["use_bottleneck_attention"],
        "key_query_shared_bottleneck": c["key_query_shared_bottleneck"],
        "trigram_input": c["trigram_input"],
        "normalization_type": c["normalization_type"],
        "activation": c["hidden_act"],
        "layer_norm_epsilon": c["layer_norm_eps"],
        "dropout": c["hidden_dropout_prob"],
        "attention_dropout": c["attention_probs_dropout_prob"],
        "max_sequence_length": c["max_position_embeddings"],
        "num_segments": c["type_vocab_size"],
        "pooler_activation": c["classifier_activation"],
    }


def _layer_params(prefix: str, layer: keras.layers.Layer) -> Iterator[tuple[str, object, bool]]:
    """(HF name, Keras variable, transpose?) for one Dense / norm / Embedding layer."""
    if isinstance(layer, keras.layers.Dense):
        yield f"{prefix}.weight", layer.kernel, True  # torch Linear stores [out, in]
        yield f"{prefix}.bias", layer.bias, False
    elif isinstance(layer, NoNorm | keras.layers.LayerNormalization):
        yield f"{prefix}.weight", layer.gamma, False
        yield f"{prefix}.bias", layer.beta, False
    elif isinstance(layer, keras.layers.Embedding):
        yield f"{prefix}.weight", layer.embeddings, False
    elif isinstance(layer, PositionEmbedding):
        yield f"{prefix}.weight", layer.position_embeddings, False
    else:
        raise TypeError(f"no weight map for {type(layer).__name__}")


def _block_params(
    prefix: str, block: MobileBertTransformerLayer
) -> Iterator[tuple[str, object, bool]]:
    modules = [
        ("attention.self.query", block.self_attention.query_dense),
        ("attention.self.key", block.self_attention.key_dense),
        ("attention.self.value", block.self_attention.value_dense),
        ("attention.output.dense", block.attention_output_dense),
        ("attention.output.LayerNorm", block.attention_output_norm),
        ("intermediate.dense", block.intermediate_dense),
        ("output.dense", block.output_dense),
        ("output.LayerNorm", block.output_norm),
    ]
    if block.use_bottleneck:
        modules += [
            ("bottleneck.input.dense", block.bottleneck_input_dense),
            ("bottleneck.input.LayerNorm", block.bottleneck_input_norm),
            ("output.bottleneck.dense", block.output_bottleneck_dense),
            ("output.bottleneck.LayerNorm", block.output_bottleneck_norm),
        ]
        if block._uses_shared_bottleneck:
            modules += [
                ("bottleneck.attention.dense", block.bottleneck_attention_dense),
                ("bottleneck.attention.LayerNorm", block.bottleneck_attention_norm),
            ]
    for j, (intermediate, output, norm) in enumerate(block.ffn_layers):
        modules += [
            (f"ffn.{j}.intermediate.dense", intermediate),
            (f"ffn.{j}.output.dense", output),
            (f"ffn.{j}.output.LayerNorm", norm),
        ]
    for name, layer in modules:
        yield from _layer_params(f"{prefix}.{name}", layer)


def hf_weight_map(backbone: MobileBertBackbone) -> Iterator[tuple[str, object, bool]]:
    """Every backbone variable with its Hugging Face ``MobileBertModel`` parameter name."""
    embeddings = [
        ("word_embeddings", backbone.token_embedding),
        ("position_embeddings", backbone.position_embedding),
        ("token_type_embeddings", backbone.segment_embedding),
        ("LayerNorm", backbone.embeddings_norm),
    ]
    if backbone.embedding_projection is not None:
        embeddings.append(("embedding_transformation", backbone.embedding_projection))
    for name, layer in embeddings:
        yield from _layer_params(f"embeddings.{name}", layer)
    for i, block in enumerate(backbone.transformer_layers):
        yield from _block_params(f"encoder.layer.{i}", block)
    if backbone.pooled_dense is not None:
        yield from _layer_params("pooler.dense", backbone.pooled_dense)


_TF_NAMES = {".gamma": ".weight", ".beta": ".bias"}


def _normalize_keys(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Bare ``MobileBertModel`` names: drop the ``mobilebert.`` prefix of task checkpoints
    and their heads (``cls.*``, ``classifier.*``, ...), and rename TF-era gamma/beta."""
    prefixed = any(k.startswith("mobilebert.") for k in state)
    out = {}
    for key, value in state.items():
        if prefixed:
            if not key.startswith("mobilebert."):
                continue  # a task head
            key = key[len("mobilebert.") :]
        if key.endswith("position_ids"):
            continue  # a non-persistent buffer some older checkpoints saved
        for old, new in _TF_NAMES.items():
            if key.endswith(old):
                key = key[: -len(old)] + new
        out[key] = value
    return out


def assign_hf_weights(
    backbone: MobileBertBackbone, state: dict[str, np.ndarray], source: str = "checkpoint"
) -> None:
    """Copy HF tensors into ``backbone``; fail on missing, misshapen or unknown tensors.

    Tensors of transformer layers beyond ``backbone.num_layers`` are skipped (pruning).
    A missing pooler is tolerated with a warning: the classifier pools the sequence itself.
    """
    state = _normalize_keys(state)
    expected = list(hf_weight_map(backbone))
    names = {name for name, _, _ in expected}
    missing = [n for n in names if n not in state]
    pooler_missing = [n for n in missing if n.startswith("pooler.")]
    if pooler_missing:
        warnings.warn(f"{source} has no pooler weights; pooled_output is random", stacklevel=2)
    missing = sorted(set(missing) - set(pooler_missing))
    unused = _unused_hf_modules(backbone)
    unknown = sorted(
        n
        for n in state
        if n not in names
        and not _beyond(n, backbone.num_layers)
        and not n.startswith(tuple(unused))
    )
    if missing or unknown:
        raise CheckpointError(
            f"{source} does not fit MobileBERT: missing {missing[:8]} ({len(missing)} in all), "
            f"unknown {unknown[:8]} ({len(unknown)} in all)"
        )
    for name, variable, transpose in expected:
        if name in pooler_missing:
            continue
        value = state[name].T if transpose else state[name]
        if tuple(value.shape) != tuple(variable.shape):
            raise CheckpointError(
                f"{source}: {name} has shape {value.shape}, the model expects {variable.shape}"
            )
        variable.assign(value.astype(variable.dtype))


def _unused_hf_modules(backbone: MobileBertBackbone) -> list[str]:
    """Modules HF creates but never calls under this config; their tensors are skipped."""
    unused = []
    if backbone.embedding_projection is None:
        unused.append("embeddings.embedding_transformation.")
    for i, block in enumerate(backbone.transformer_layers):
        shared = block.use_bottleneck and block.key_query_shared_bottleneck
        if shared and block.use_bottleneck_attention:
            unused.append(f"encoder.layer.{i}.bottleneck.attention.")
    return unused


def _beyond(name: str, num_layers: int) -> bool:
    parts = name.split(".")
    return parts[:2] == ["encoder", "layer"] and int(parts[2]) >= num_layers


def load_mobilebert(folder: Path, num_layers: int | None = None) -> MobileBertBackbone:
    """A ``MobileBertBackbone`` with the weights of a Hugging Face MobileBERT folder.

    The folder needs config.json and model.safetensors or pytorch_model.bin (read without
    torch). With ``num_layers`` only the first N transformer layers are kept.
    """
    folder = Path(folder)
    hf_config = json.loads((folder / "config.json").read_text())
    config = backbone_config_from_hf(hf_config)
    if num_layers is not None:
        config["num_layers"] = min(num_layers, config["num_layers"])
    backbone = MobileBertBackbone(**config, name="mobilebert_backbone")
    assign_hf_weights(backbone, read_state_dict(folder), source=str(folder))
    return backbone
