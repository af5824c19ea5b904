"""``python -m medseg`` runs the CLI."""

from __future__ import annotations

import sys

from medseg.cli import main

sys.exit(main())
