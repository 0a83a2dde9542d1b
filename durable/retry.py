"""Retry policies for steps and child runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import ApplicationError, ConfigurationError


@dataclass(frozen=True)
class RetryPolicy:
    """How a failed step (or child run) is retried. Waits between attempts are durable
    timers: a process dying mid-wait resumes the wait elsewhere.

    ``max_attempts`` counts the first attempt (1 = no retries, 0 = unlimited).
    ``non_retryable`` lists exception types or type names that fail at once.
    """

    initial_interval: float = 1.0
    backoff: float = 2.0
    max_interval: float = 100.0
    max_attempts: int = 3
    non_retryable: tuple[Any, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.initial_interval < 0 or self.max_interval < 0:
            raise ConfigurationError("RetryPolicy intervals must be >= 0 seconds")
        if self.backoff < 1:
            raise ConfigurationError("RetryPolicy.backoff must be >= 1 (1 = constant interval)")
        if self.max_attempts < 0:
            raise ConfigurationError("RetryPolicy.max_attempts must be >= 0 (0 = unlimited)")
        object.__setattr__(self, "non_retryable", tuple(self.non_retryable))

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return min(self.max_interval, self.initial_interval * self.backoff ** (attempt - 1))

    def should_retry(self, exc: BaseException, attempt: int) -> bool:
        if isinstance(exc, ApplicationError) and exc.non_retryable:
            return False
        for t in self.non_retryable:
            if isinstance(t, str):
                if type(exc).__name__ == t or getattr(exc, "type", None) == t:
                    return False
            elif isinstance(t, type) and isinstance(exc, t):
                return False
        return self.max_attempts == 0 or attempt < self.max_attempts

    def to_doc(self) -> dict[str, Any]:
        return {
            "initial_interval": self.initial_interval, "backoff": self.backoff,
            "max_interval": self.max_interval, "max_attempts": self.max_attempts,
            "non_retryable": [t if isinstance(t, str) else t.__name__ for t in self.non_retryable],
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any] | None) -> "RetryPolicy | None":
        return None if not doc else cls(**{**doc, "non_retryable": tuple(doc.get("non_retryable", ()))})


DEFAULT_STEP_RETRY = RetryPolicy()
NO_RETRY = RetryPolicy(max_attempts=1)
