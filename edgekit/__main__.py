"""`python -m edgekit`: the edgekit command, as the console script runs it (and `torchrun -m edgekit compile …`)."""

from edgekit.entry import main

if __name__ == "__main__":
    main()
