"""The `nas` command line: Typer commands (``commands/``, one module per group) over the pipelines
here, one package per job (``data/``, ``runs/``, ``training/``, ``evaluation/``, ``search/``,
``export/``), which call the library (search_spaces, predictors, kernels).

Where things go: a new command group is one module in ``nas_cli/commands/`` with ``register(app)``
plus one line in ``nas_cli/commands/__init__.py``; a new dataset is a loader plus one
``DATASETS.register`` line in ``nas_cli/data/datasets.py``; a new search algorithm is one
``ALGORITHMS.register`` line in ``nas_cli/search/algorithms.py``.
"""
