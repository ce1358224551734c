from node.cli import app

app(prog_name="node")
