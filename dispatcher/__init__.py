"""The dispatcher daemon, for ``python -m dispatcher`` from a checkout of this repository.

The daemon's code is :mod:`durable.dispatcher` (installed with durable; its command is
``durable-dispatcher``). This folder is not installed: it only lets a checkout run
``python -m dispatcher`` as the README and the benchmarks do.
"""

from durable.dispatcher import *  # noqa: F401,F403
from durable.dispatcher import __all__  # noqa: F401
