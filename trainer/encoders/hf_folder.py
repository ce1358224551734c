"""Reading Hugging Face-format model folders without the `transformers` library."""

from __future__ import annotations

import collections
import contextlib
import pickle
import shutil
import struct
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, ClassVar

import numpy as np
import safetensors.numpy
from tokenizers import Tokenizer
from tokenizers.implementations import BertWordPieceTokenizer


def ensure_tokenizer_json(folder: Path) -> Path:
    """The folder's tokenizer.json, or one built from its WordPiece vocab.txt."""
    existing = folder / "tokenizer.json"
    if existing.is_file():
        Tokenizer.from_file(str(existing))  # fail early on a broken file
        return existing
    vocab = folder / "vocab.txt"
    if not vocab.is_file():
        raise FileNotFoundError(f"{folder} has neither tokenizer.json nor vocab.txt")
    # Uncased checkpoints (MiniLM, google/mobilebert-uncased) lowercase and strip accents.
    lowercase = "uncased" in folder.name.lower() or _vocab_is_lowercase(vocab)
    tok = BertWordPieceTokenizer(str(vocab), lowercase=lowercase, strip_accents=lowercase)
    out = Path(tempfile.mkdtemp(prefix="repedge-tok-")) / "tokenizer.json"
    tok.save(str(out))
    return out


def _vocab_is_lowercase(vocab: Path) -> bool:
    words = vocab.read_text(encoding="utf-8").split("\n")[1000:3000]
    return not any(w[:1].isupper() for w in words)


# --- weights -------------------------------------------------------------------------------

SAFETENSORS = "model.safetensors"
TORCH_BIN = "pytorch_model.bin"

# torch storage class name -> numpy dtype; bfloat16 is read as raw uint16 and widened below.
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype("<u2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read, or that does not fit the model."""


def read_state_dict(folder: Path) -> dict[str, np.ndarray]:
    """All tensors of a Hugging Face folder's ``model.safetensors`` or ``pytorch_model.bin``."""
    if (folder / SAFETENSORS).is_file():
        return dict(safetensors.numpy.load_file(str(folder / SAFETENSORS)))
    if (folder / TORCH_BIN).is_file():
        return read_torch_bin(folder / TORCH_BIN)
    raise FileNotFoundError(f"{folder} has neither {SAFETENSORS} nor {TORCH_BIN}")


@contextlib.contextmanager
def safetensors_view(folder: Path) -> Iterator[Path]:
    """``folder`` itself if it has ``model.safetensors``; else, for the ``with`` block, a
    temporary folder with its config.json and its ``pytorch_model.bin`` tensors rewritten
    as safetensors (for loaders such as KerasHub's that read safetensors only)."""
    if (folder / SAFETENSORS).is_file():
        yield folder
        return
    tensors = read_state_dict(folder)
    with tempfile.TemporaryDirectory(prefix="repedge-hf-") as tmp:
        out = Path(tmp)
        shutil.copy2(folder / "config.json", out / "config.json")
        safetensors.numpy.save_file(tensors, str(out / SAFETENSORS))
        yield out


def read_torch_bin(path: Path) -> dict[str, np.ndarray]:
    """A PyTorch ``torch.save`` state dict as numpy arrays, without importing torch.

    Handles the zip format (torch >= 1.6: ``<name>/data.pkl`` + ``<name>/data/<key>``) and
    the older single-stream format. Only tensors, OrderedDicts and plain containers are
    unpickled: any other global in the pickle is refused, so a hostile file cannot run code.
    """
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            state = _read_zip_checkpoint(archive)
    else:
        with path.open("rb") as stream:
            state = _read_legacy_checkpoint(stream)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state dict")
    return {k: v for k, v in state.items() if isinstance(v, np.ndarray)}


@dataclass
class _Storage:
    """A flat torch storage: its dtype, and its bytes once they are known."""

    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclass
class _PendingTensor:
    """A tensor view of a storage; legacy files give the storage bytes after the pickle."""

    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def to_numpy(self) -> np.ndarray:
        assert self.storage.data is not None
        flat = self.storage.data[self.offset :]
        strides = tuple(s * flat.itemsize for s in self.stride)
        view = np.lib.stride_tricks.as_strided(flat, self.shape, strides, writeable=False)
        array = np.array(view)  # a packed copy, independent of the storage buffer
        return _widen_bfloat16(array) if self.storage.dtype == np.dtype("<u2") else array


def _widen_bfloat16(raw: np.ndarray) -> np.ndarray:
    # bfloat16 is the top half of a float32.
    return (raw.astype(np.uint32) << 16).view(np.float32)


def _rebuild_tensor(storage, offset, shape, stride, *_ignored) -> _PendingTensor:
    return _PendingTensor(storage, int(offset), tuple(shape), tuple(stride))


def _rebuild_parameter(tensor, *_ignored) -> _PendingTensor:
    return tensor


class _TorchUnpickler(pickle.Unpickler):
    """Unpickles a state dict into ``_PendingTensor``s; storages come from ``open_storage``."""

    _GLOBALS: ClassVar[dict[tuple[str, str], object]] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    }

    def __init__(self, stream, open_storage) -> None:
        super().__init__(stream)
        self._open_storage = open_storage

    def find_class(self, module: str, name: str):
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if (module, name) in self._GLOBALS:
            return self._GLOBALS[(module, name)]
        raise CheckpointError(f"refusing to unpickle {module}.{name} from a checkpoint")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise CheckpointError(f"unexpected persistent id {pid!r}")
        _, dtype, key, _location, numel, *view = pid
        if view and view[0] is not None:
            raise CheckpointError("storage views (torch < 0.4 checkpoints) are not supported")
        return self._open_storage(str(key), dtype, int(numel))


def _read_zip_checkpoint(archive: zipfile.ZipFile) -> object:
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
    if len(pickles) != 1:
        raise CheckpointError(f"expected one data.pkl in the archive, found {pickles}")
    root = pickles[0][: -len("data.pkl")]
    byteorder = f"{root}byteorder"
    if byteorder in archive.namelist() and archive.read(byteorder).strip() != b"little":
        raise CheckpointError("big-endian checkpoints are not supported")
    storages: dict[str, _Storage] = {}

    def open_storage(key: str, dtype: np.dtype, numel: int) -> _Storage:
        if key not in storages:
            raw = archive.read(f"{root}data/{key}")
            storages[key] = _Storage(dtype, numel, np.frombuffer(raw, dtype, count=numel))
        return storages[key]

    with archive.open(pickles[0]) as stream:
        state = _TorchUnpickler(stream, open_storage).load()
    return _materialize(state)


def _read_legacy_checkpoint(stream: BinaryIO) -> object:
    # Layout: magic, protocol, sys_info, the state dict (storages by key), the list of
    # storage keys, then each storage as int64 element count + raw little-endian bytes.
    if _safe_load(stream) != _LEGACY_MAGIC:
        raise CheckpointError("not a PyTorch checkpoint (neither zip nor legacy magic number)")
    _safe_load(stream)  # protocol version
    sys_info = _safe_load(stream)
    if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
        raise CheckpointError("big-endian checkpoints are not supported")
    storages: dict[str, _Storage] = {}

    def open_storage(key: str, dtype: np.dtype, numel: int) -> _Storage:
        return storages.setdefault(key, _Storage(dtype, numel))

    state = _TorchUnpickler(stream, open_storage).load()
    for key in _safe_load(stream):
        storage = storages[str(key)]
        (numel,) = struct.unpack("<q", stream.read(8))
        raw = stream.read(numel * storage.dtype.itemsize)
        storage.data = np.frombuffer(raw, storage.dtype, count=numel)
    return _materialize(state)


def _safe_load(stream: BinaryIO) -> object:
    def no_storage(*_args):
        raise CheckpointError("unexpected storage in a checkpoint header")

    return _TorchUnpickler(stream, no_storage).load()


def _materialize(obj: object) -> object:
    if isinstance(obj, _PendingTensor):
        return obj.to_numpy()
    if isinstance(obj, dict):
        return type(obj)((k, _materialize(v)) for k, v in obj.items())
    if isinstance(obj, list | tuple):
        return type(obj)(_materialize(v) for v in obj)
    return obj
