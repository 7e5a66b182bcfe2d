"""`python -m mbret.cli ...`: the `mbret` command (as `python -m mbret`)."""

from mbret.cli import main

if __name__ == "__main__":
    main()
