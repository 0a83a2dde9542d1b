"""``python -m dispatcher`` in a checkout: the same as ``durable-dispatcher``."""

from durable.dispatcher.__main__ import main

main()
