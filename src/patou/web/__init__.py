"""`patou serve`: a local web app to start runs, review their results and correct labels.

Server-rendered pages (FastAPI + Jinja2) with a little JavaScript for keyboard review; it binds
127.0.0.1 by default and only serves files of the runs it knows (see files.py).
"""
from .app import create_app

__all__ = ["create_app"]
