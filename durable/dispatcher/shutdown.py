"""Shutdown on SIGTERM/SIGINT: the first signal asks for a graceful stop (stop claiming,
let in-flight runs reach their next durable point within the grace period, release the
leases of the rest); a second signal exits at once."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

log = logging.getLogger("dispatcher.shutdown")

SIGNALS = (signal.SIGTERM, signal.SIGINT)
EXIT_ON_SECOND_SIGNAL = 1


_early: list[signal.Signals] = []


def catch_early_signals() -> None:
    """Until :meth:`Shutdown.start` installs the loop's handlers, remember a SIGTERM/SIGINT
    instead of dying of it (settings, logging and the workflow modules load first): the
    dispatcher then stops as soon as it starts, with status 0."""
    for sig in SIGNALS:
        signal.signal(sig, lambda signum, frame: _early.append(signal.Signals(signum)))


class Shutdown:
    """Installs the signal handlers on start(); ``requested`` is set by the first signal
    (or was, by one caught before, see :func:`catch_early_signals`)."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self.requested = asyncio.Event()
        self.signal_name: str | None = None
        self._installed: list[signal.Signals] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            loop.add_signal_handler(sig, self._on_signal, sig)
            self._installed.append(sig)
        if _early:
            self._on_signal(_early[0])
            _early.clear()

    def stop(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._installed:
            loop.remove_signal_handler(sig)
        self._installed.clear()

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.requested.is_set():
            log.warning("second %s: exiting now; runs still held resume elsewhere after their lease "
                        "expires", sig.name)
            logging.shutdown()
            os._exit(EXIT_ON_SECOND_SIGNAL)
        self.signal_name = sig.name
        log.warning("%s received: no new claims; in-flight runs get %.0f s to reach their next durable "
                    "point, then their leases are released (send it again to exit at once)",
                    sig.name, self.grace_s)
        self.requested.set()
