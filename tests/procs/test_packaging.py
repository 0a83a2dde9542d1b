"""The built wheel carries the migrations and can migrate a real database on its own.

Builds a wheel of this checkout, installs it into a fresh virtualenv (with its
dependencies; if that cannot be done within a few minutes, with --no-deps into a venv that
sees this interpreter's packages), and runs durable.migrate there, away from the source
tree, so the migrations must come from the installed ``durable/_sql``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import site
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest

from durable.store.migrate import LATEST_VERSION
from helpers import ROOT

INSTALL_TIMEOUT_S = 180


def _run(cmd: list[str], *, timeout: float, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _build_wheel(out: Path) -> Path:
    readme = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"].get("readme")
    if isinstance(readme, str) and not (ROOT / readme).is_file():
        pytest.fail(f"pyproject.toml names readme = {readme!r} but {ROOT / readme} does not exist: "
                    "the wheel (and pip install of the checkout) cannot be built", pytrace=False)
    if importlib.util.find_spec("hatchling") is not None:
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)]
    else:
        cmd = [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(ROOT)]
    res = _run(cmd, timeout=INSTALL_TIMEOUT_S, env=_clean_env())
    if res.returncode != 0:
        pytest.fail(f"building the wheel failed ({' '.join(cmd)}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    wheels = sorted(out.glob("durable-*.whl"))
    assert len(wheels) == 1, f"expected one durable wheel in {out}, found {wheels}"
    return wheels[0]


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _install(wheel: Path, tmp: Path) -> tuple[Path, str]:
    """Install into a fresh venv with deps; fall back to --no-deps on this interpreter's packages."""
    venv = tmp / "venv"
    res = _run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    assert res.returncode == 0, res.stderr
    py = _venv_python(venv)
    try:
        res = _run([str(py), "-m", "pip", "install", "-q", str(wheel)], timeout=INSTALL_TIMEOUT_S, env=_clean_env())
        if res.returncode == 0:
            return py, "fresh venv, wheel installed with its dependencies"
        reason = res.stderr[-2000:]
    except subprocess.TimeoutExpired:
        reason = f"pip install took over {INSTALL_TIMEOUT_S} s"

    # Fallback: dependencies come from this interpreter's site-packages (a .pth file, since
    # sys.executable may itself be a venv whose packages --system-site-packages would miss).
    venv = tmp / "venv-fallback"
    res = _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], timeout=120)
    assert res.returncode == 0, res.stderr
    py = _venv_python(venv)
    purelib = _run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], timeout=60)
    Path(purelib.stdout.strip(), "zz_parent_site.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    res = _run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], timeout=INSTALL_TIMEOUT_S, env=_clean_env())
    assert res.returncode == 0, f"fallback install failed too:\n{res.stderr[-2000:]}"
    return py, f"fallback venv with --no-deps ({reason.strip()[:200]})"


SNIPPET = textwrap.dedent(
    """
    import asyncio, json, sys
    import durable.store.migrate as m
    from durable.store.connections import connect

    async def main(dsn, schema):
        conn = await connect(dsn, schema=schema, timeout=10)
        async with conn:
            version = await m.migrate(conn, schema)
            await m.check_schema(conn, schema)
        print(json.dumps({"version": version, "latest": m.LATEST_VERSION,
                          "module": m.__file__, "sql": m.migrations_location()}))

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


def test_wheel_contains_migrations_and_migrates(tmp_path: Path, pg_dsn: str, fresh_schema) -> None:
    wheel = _build_wheel(tmp_path / "dist")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    assert "durable/_sql/0001_initial.sql" in names, sorted(names)
    for mig in sorted(p.name for p in (ROOT / "sql").glob("[0-9][0-9][0-9][0-9]_*.sql")):
        assert f"durable/_sql/{mig}" in names
    # the web console's templates and static files (issue 16): served from the package, no CDN
    ui = ROOT / "durable" / "ui"
    for asset in sorted([*ui.glob("templates/*.html"), *ui.glob("static/*")]):
        assert f"durable/ui/{asset.relative_to(ui).as_posix()}" in names, asset

    py, how = _install(wheel, tmp_path)
    run_dir = tmp_path / "elsewhere"  # not the checkout, so `import durable` cannot find the source
    run_dir.mkdir()
    res = _run([str(py), "-c", SNIPPET, pg_dsn, fresh_schema.schema], timeout=120, cwd=run_dir, env=_clean_env())
    assert res.returncode == 0, f"{how}:\n{res.stdout}\n{res.stderr}"
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["version"] == LATEST_VERSION == out["latest"], (how, out)
    venv_root = py.parent.parent
    assert Path(out["module"]).resolve().is_relative_to(venv_root.resolve()), (how, out)
    assert Path(out["sql"]).resolve() == (Path(out["module"]).resolve().parents[1] / "_sql"), (how, out)
    assert "dispatcher/__init__.py" not in names, "a bare dispatcher package would be installed"
