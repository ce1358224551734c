"""What every repedge package shares, and nothing else: the ground floor.

It imports no service package (node, broker, dashboard, trainer, provisioning, bench),
so any of them may import it. docs/architecture.md draws the layers.
"""
