"""The wheel installs graphc.ir, graphc.passes and graphc.backends inside the graphc package
and nothing at the top level (pyproject's explicit package list and package-dir).

The wheel is installed into a new, empty virtual environment that sees the packages of the
interpreter running the tests (torch, onnx...) through a ``.pth`` file listing that
interpreter's import path, this checkout left out. ``--system-site-packages`` would not do:
it shows the base interpreter's packages, not those of a virtual environment the tests may run
in. Works alike under a virtual environment (with or without system site packages) and a
system python (``pip install --target`` is not refused there as an externally managed
install).
"""
import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _outer_import_path() -> list[str]:
    """This interpreter's import path, less the source tree: the checkout itself (an editable
    install's entry) and folders in it (pytest's test folders), but not the site-packages of
    a venv made inside the checkout (``python -m venv .venv`` in the README)."""
    keep = []
    for entry in sys.path:
        p = Path(entry or os.getcwd()).resolve()
        in_tree = p == ROOT or (ROOT in p.parents and not {"site-packages", "dist-packages"} & set(p.parts))
        if not p.is_dir() or in_tree:
            continue
        if str(p) not in keep:
            keep.append(str(p))
    return keep


def _pip(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, timeout=timeout)


def _can_build_here() -> bool:
    """Whether this interpreter's setuptools builds wheels: from 70.1 on by itself, before that
    with the ``wheel`` package. A new venv may have none (3.12+) or an old one without
    ``wheel`` (3.11's ensurepip gives setuptools 65)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        major, minor = (int(x) for x in version("setuptools").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return False
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


def test_wheel_installs_graphc_namespace_only(tmp_path):
    # Where this interpreter cannot build the wheel, pip builds it in an isolated environment
    # with pyproject's build requirements.
    isolation = ["--no-build-isolation"] if _can_build_here() else []
    r = _pip("wheel", "--no-deps", *isolation, "-q", "-w", str(tmp_path / "dist"), str(ROOT))
    assert r.returncode == 0, r.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("graphc-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"graphc"}
    for mod in ("graphc/ir/graph.py", "graphc/ir/ops/nn.py", "graphc/backends/torch.py", "graphc/frontends/fx.py",
                "graphc/cli/inspect.py", "graphc/passes/__init__.py"):
        assert mod in names, mod

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    r = _pip("install", "--no-deps", "-q", "--target", site, str(wheel))
    assert r.returncode == 0, r.stderr[-2000:]
    # After the venv's own site-packages: the installed wheel comes first.
    Path(site, "outer_environment.pth").write_text("\n".join(_outer_import_path()) + "\n")

    check = ("import importlib.util, graphc, graphc.ir, graphc.backends.torch, graphc.cli.main, torch;"
             "from graphc.ir import Graph;"
             "print(graphc.__file__);"
             "print([m for m in ('ir', 'passes', 'backends') if importlib.util.find_spec(m)])")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    r = subprocess.run([str(py), "-c", check], capture_output=True, text=True, cwd=tmp_path, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    where, tops = r.stdout.strip().splitlines()
    assert Path(where).resolve().is_relative_to(Path(site).resolve()), where
    assert tops == "[]"
