"""`python -m patou.cli`: the same as the `patou` command."""
from patou.cli import app

app()
