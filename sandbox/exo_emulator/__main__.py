"""Entry point: ``python -m sandbox.exo_emulator`` (``python -m exo_emulator`` on a node)."""

from .cli import main

if __name__ == "__main__":
    main()
