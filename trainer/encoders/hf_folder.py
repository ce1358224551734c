"""Reading Hugging Face-format model folders without the `transformers` library."""

from __future__ import annotations

import tempfile
from pathlib import Path

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
