"""One module per CLI subcommand; see ``infercore.cli``."""
