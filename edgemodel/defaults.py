"""What the node, node bench and evaluation must agree on when they run a model: the batch
shape and the interpreter threads. One place, so a benchmark measures the node's settings.
"""

from __future__ import annotations

import os

# Most tweets per interpreter call, and most tokens (rows x padded length) per call: the
# second bounds the interpreter's working memory (node/batcher.py bucket_by_length).
MAX_BATCH = 32
MAX_BATCH_TOKENS = 256


def serving_threads() -> int:
    """Interpreter threads for serving: one core fewer than the machine has (1 to 4). The
    node's MQTT thread and, usually, the broker run on the same board, and interpreter
    threads that outnumber the free cores wait on each other (the latency tail)."""
    return max(1, min(4, (os.cpu_count() or 1) - 1))


def evaluation_threads() -> int:
    """Interpreter threads for offline scoring (trainer evaluate, node bench's accuracy):
    every core, up to 4; nothing else competes for them."""
    return max(1, min(4, os.cpu_count() or 1))
