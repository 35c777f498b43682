"""The package layout README.md states: `aeqprop/` imports none of the other packages (it finds them by
name through aeqprop/registry.py), at module level or inside a function."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OTHERS = {"protocols", "sim_backends", "drivers", "cli", "benchmarks"}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_core_imports_none_of_the_other_packages():
    found = {
        f"{path.relative_to(ROOT)}: {', '.join(sorted(imported_packages(path) & OTHERS))}"
        for path in sorted((ROOT / "aeqprop").glob("*.py"))
        if imported_packages(path) & OTHERS
    }
    assert not found, found


def test_the_check_sees_an_import_inside_a_function(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from protocols.base import check_beta\n    import drivers.scpi\n")
    assert imported_packages(probe) & OTHERS == {"protocols", "drivers"}


def test_the_module_map_lists_every_module_and_no_other():
    """docs/layout.md has a section per package and one row per module: added or removed modules show here."""
    import re

    text = (ROOT / "docs" / "layout.md").read_text(encoding="utf-8")
    listed: set[str] = set()
    package = ""
    for line in text.splitlines():
        section = re.match(r"## `(\w+)/`", line)
        if section:
            package = section.group(1)
        elif line.startswith("## "):
            package = ""
        row = re.match(r"\| `([\w.]+\.py)` \|", line)
        if row:
            listed.add(f"{package}/{row.group(1)}" if package else row.group(1))
    tree = {
        str(path.relative_to(ROOT))
        for package in ("aeqprop", "sim_backends", "protocols", "drivers")
        for path in (ROOT / package).glob("*.py")
    } | {"cli.py"}
    assert listed == tree, f"not listed: {sorted(tree - listed)}; listed but absent: {sorted(listed - tree)}"
