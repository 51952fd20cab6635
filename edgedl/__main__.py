"""``python -m edgedl`` is the ``edgedl`` command."""

from .cli import main

if __name__ == "__main__":
    main()
