"""The model contract shared by trainer, provisioning, node and bench.

A model bundle (FlatBuffer + tokenizer + label map + manifest, :mod:`edgemodel.bundle`),
the text cleaning it prescribes (:mod:`edgemodel.textclean`) and the inference path that
runs it (:mod:`edgemodel.inference`). Beside them, the evaluation helpers that trainer and
bench both use without TensorFlow: data readers (:mod:`edgemodel.data`), the seeded splits
and their one seed (:mod:`edgemodel.splits`), metrics (:mod:`edgemodel.metrics`) and
length-ordered batching (:mod:`edgemodel.batching`). It imports none of ``node``,
``bench``, ``trainer`` or ``provisioning``: all of them build on it.
"""
