"""The search spaces `pipeline` ships: this folder is the package ``pipeline.search_spaces`` in a
wheel and in an editable install (pyproject.toml maps it), read with importlib.resources."""
