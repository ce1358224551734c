from provisioning.cli import app

app(prog_name="provision")
