"""The house: three floors that import one way, and one installed package.

``server/``, ``nodes/`` and ``scenarios/`` are ``swarm``'s sub-packages through the links in
``swarm/`` (docs/architecture.md, "Three floors"); these tests fail when a module imports a floor
above its own, when a module imports the folders by their bare names, or when installing the
project would put another top-level package into a user's environment.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

BARE = re.compile(r"(^\s*|[\"'])(from|import) (server|nodes|scenarios)\b", re.M)  # code, or code in a string


def test_the_floors_import_one_way_and_without_cycles():
    """import-linter's contracts in pyproject.toml (layers over the floors, no cycles) hold."""
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "import-linter is part of the test extra"
    result = subprocess.run([lint], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 kept, 0 broken" in result.stdout


def test_no_module_imports_the_folders_by_their_bare_names():
    """``import server`` would load a second copy of a module beside ``swarm.server``'s."""
    offenders = []
    for folder in ("swarm", "server", "nodes", "tests", "benchmarks", "scripts"):
        for path in (REPO / folder).rglob("*.py"):
            if not path.is_symlink() and BARE.search(path.read_text()):
                offenders.append(str(path.relative_to(REPO)))
    assert not offenders, offenders


def test_installing_adds_the_one_top_level_package(tmp_path):
    """``pip install .`` (here into a target folder) puts ``swarm`` alone at the top, with the
    floors, the config tree and its data files inside it; the installed copy imports from there."""
    # From a copy (links kept as links): setuptools builds in the source tree.
    source = tmp_path / "source"
    source.mkdir()
    for part in ("pyproject.toml", "README.md", "swarm", "server", "nodes", "scenarios"):
        if (REPO / part).is_dir():
            shutil.copytree(REPO / part, source / part, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / part, source / part)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, capture_output=True, timeout=300)
    top = {p.name for p in target.iterdir() if not p.name.endswith(".dist-info")}
    assert top == {"swarm"}
    assert (target / "swarm" / "scenarios" / "config.yaml").is_file()
    assert (target / "swarm" / "scenarios" / "device" / "raspberry_pi_4.yaml").is_file()
    assert (target / "swarm" / "server" / "data" / "domainnet_classes.txt").is_file()
    probe = ("import swarm, swarm.nodes.protocol, swarm.server.server_app, swarm.nodes.client_app;"
             "from swarm.config import compose_config; compose_config([]);"
             "print(swarm.__file__)")
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                            env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().startswith(str(target))


def test_no_function_in_the_server_or_the_nodes_runs_over_60_lines():
    """A function a newcomer can read in one screen (decorators and docstring included)."""
    import ast

    long = []
    for folder in ("server", "nodes"):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = node.end_lineno - min([node.lineno] + [d.lineno for d in node.decorator_list]) + 1
                    if lines > 60:
                        long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long
