"""``python -m checkpoint_flow``: the checkpoint-flow command."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
