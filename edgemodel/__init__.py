"""The model contract shared by trainer, provisioning and node.

A model bundle (FlatBuffer + tokenizer + label map + manifest, :mod:`edgemodel.bundle`),
the text cleaning it prescribes (:mod:`edgemodel.textclean`) and the inference path that
runs it (:mod:`edgemodel.inference`). It imports none of ``node``, ``trainer`` or
``provisioning``: all three build on it.
"""
