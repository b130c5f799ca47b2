"""``python -m iqa_tune``: the ``iqa-tune`` command from a source tree (no install needed, e.g. on a GPU host)."""

import sys

from .cli import main

sys.exit(main())
