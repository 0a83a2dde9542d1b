"""``python -m durable.cli``: the same as the ``durable`` command."""

from .commands import main

raise SystemExit(main())
