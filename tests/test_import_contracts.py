"""Architecture contracts: core and protocols stay pure; layers only import downwards."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run(
        [str(lint)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "core and protocols are pure" in proc.stdout
    assert "KEPT" in proc.stdout and "BROKEN" not in proc.stdout


def test_purity_contract_catches_a_planted_clock_import(tmp_path: Path) -> None:
    """The same contract, applied to a copy of the layout whose protocol imports ``time``."""
    import os
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    pure = next(c for c in config["contracts"] if c["name"].startswith("core and protocols"))
    for package, body in (("core", ""), ("protocols", "import time\n")):
        folder = tmp_path / "fakepnyx" / package
        folder.mkdir(parents=True)
        (folder / "__init__.py").write_text(body)
    (tmp_path / "fakepnyx" / "__init__.py").write_text("")
    sources = [m.replace("pnyx.", "fakepnyx.", 1) for m in pure["source_modules"]]
    forbidden = ", ".join(f'"{m}"' for m in pure["forbidden_modules"])
    (tmp_path / "contracts.toml").write_text(
        '[tool.importlinter]\nroot_package = "fakepnyx"\ninclude_external_packages = true\n\n'
        '[[tool.importlinter.contracts]]\nname = "planted"\ntype = "forbidden"\n'
        f"source_modules = {sources!r}\nforbidden_modules = [{forbidden}]\n".replace("'", '"')
    )
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run(
        [str(lint), "--config", str(tmp_path / "contracts.toml")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert proc.returncode != 0, proc.stdout
    assert "BROKEN" in proc.stdout
    assert "fakepnyx.protocols is not allowed to import time" in proc.stdout
