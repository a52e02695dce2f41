"""``python -m infercore.cli``: the same as the ``infercore`` command."""

import sys

from .main import main

sys.exit(main())
