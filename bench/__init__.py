"""`node bench`: the paper's table (size, accuracy, latency, resources) on any device.

``suite`` runs the whole measurement (``run_bench``); ``measure`` times one model file in
its own process; ``mqtt`` is the end-to-end row through a real broker; ``runners`` wraps
LiteRT and ONNX Runtime behind one interface; ``report`` / ``plots`` / ``paper`` write the
results; ``device`` describes the machine; ``tweets`` loads the tweets it runs.
"""
