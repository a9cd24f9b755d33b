"""The house stays walkable: no layering circle between models and registry, no module past 700 lines, one
command module per stage."""

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

SRC = Path(__file__).resolve().parents[2] / "src" / "facegate"
MAX_LINES = 700


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_models_never_import_the_registry():
    offenders = {
        p.name: sorted(m for m in _imports(p) if m == "facegate.registry" or m.startswith("facegate.registry."))
        for p in (SRC / "models").rglob("*.py")
    }
    assert {name: mods for name, mods in offenders.items() if mods} == {}


def test_a_registry_uri_resolves_above_models_only():
    from facegate.errors import FacegateError
    from facegate.models import load_embedder as load_local

    with pytest.raises(FacegateError) as err:
        load_local("models:/facegate@champion")
    assert err.value.code == "registry_uri"
    assert "facegate.bundles" in err.value.message


def test_no_module_is_longer_than_700_lines():
    lengths = {str(p.relative_to(SRC)): len(p.read_text(encoding="utf-8").splitlines()) for p in SRC.rglob("*.py")}
    assert {name: n for name, n in lengths.items() if n > MAX_LINES} == {}


def test_every_verb_lives_in_its_stage_module():
    import typer

    from facegate.cli import app

    command = typer.main.get_command(app)
    ctx = type(command).context_class(command)
    homes = {}
    for name in command.list_commands(ctx):
        sub = command.get_command(ctx, name)
        callback = sub.callback if sub.callback is not None else None
        if callback is not None:
            homes[name] = callback.__module__
    assert homes, "no verbs found"
    assert all(module.startswith("facegate.cli.") and module != "facegate.cli" for module in homes.values()), homes
