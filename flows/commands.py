"""Extra CLI commands: importing a module registers its commands on `flows.cli.app`."""

from flows import deploy, manage, serve  # noqa: F401
