"""``python -m nas_cli``: the same CLI as the ``nas`` console script."""

from nas_cli.main import main

main()
