"""The peers: `stream run`'s job written with other libraries, for the `peers` scenario.

Each job module runs as a child process, the Quix Streams and arroyo ones under their own
venv's python (venvs.py), so this package imports nothing at import time.
"""
