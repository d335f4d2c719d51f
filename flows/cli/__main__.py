"""`python -m flows.cli`: the same as the `grok-batch` command."""

from flows.cli import main

if __name__ == "__main__":
    main()
