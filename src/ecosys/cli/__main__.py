"""``python -m ecosys.cli``: the same as the ``eco`` command."""

from .commands import main

if __name__ == "__main__":
    main()
