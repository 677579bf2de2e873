"""The wheel installs graphc.ir, graphc.passes and graphc.backends inside the graphc package
and nothing at the top level (pyproject's explicit package list and package-dir)."""
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_installs_graphc_namespace_only(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path / "dist"), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("graphc-*.whl"))
    tops = {n.split("/")[0] for n in zipfile.ZipFile(wheel).namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"graphc"}
    names = zipfile.ZipFile(wheel).namelist()
    for mod in ("graphc/ir/graph.py", "graphc/ir/ops/nn.py", "graphc/backends/torch.py", "graphc/frontends/fx.py",
                "graphc/cli/inspect.py", "graphc/passes/__init__.py"):
        assert mod in names, mod

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    r = subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    check = ("import importlib.util, graphc, graphc.ir, graphc.backends.torch;"
             "from graphc.ir import Graph;"
             "assert 'site-packages' in graphc.__file__, graphc.__file__;"
             "print([m for m in ('ir', 'passes', 'backends') if importlib.util.find_spec(m)])")
    r = subprocess.run([str(py), "-c", check], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]"
