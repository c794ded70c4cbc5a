"""Entry point: ``python -m exo_emulator``."""

from exo_emulator.cli import main

if __name__ == "__main__":
    main()
