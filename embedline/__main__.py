"""``python -m embedline`` = the ``embedline`` command."""

from embedline.flows.entry import main

if __name__ == "__main__":
    main()
