"""`python -m mbret ...` runs the `mbret` command: what `torchrun -m mbret index ...` launches per rank."""

from mbret.cli import main

if __name__ == "__main__":
    main()
