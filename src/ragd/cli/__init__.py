"""The command line (``ragd``) and its front-ends: the only code besides the app that may use
the composition root."""

from ragd.cli.main import app, main

__all__ = ["app", "main"]
