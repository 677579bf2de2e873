"""Third-party passes: a plugin distribution (a dist-info folder with ``graphc.passes`` entry
points, found by importlib.metadata on the path) whose passes the CLI lists and runs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from graphc.ir import load_json, save_json

PLUGIN = '''
from dataclasses import dataclass
from typing import ClassVar

from graphc.registry import Pass, PassResult


@dataclass(frozen=True)
class StripRelu(Pass):
    """Remove every relu (a plugin pass). Lossy.

        %y = relu(%x)     ==>   (readers of %y read %x)
    """

    name: ClassVar[str] = "plugin-strip-relu"
    exact: ClassVar[bool] = False
    keep: int = 0

    def run(self, graph, ctx):
        relus = graph.find("relu")[self.keep:]
        for n in relus:
            n.output.replace_all_uses_with(n.input(0), outputs=True)
            graph.erase(n)
        return PassResult(bool(relus), {"removed": len(relus)})


def count_nodes(graph, ctx):
    """Change nothing (a plain-function plugin pass)."""
    return False
'''


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("plugin")
    (root / "graphc_tplugin.py").write_text(PLUGIN)
    info = root / "graphc_tplugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: graphc-tplugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent("""\
        [graphc.passes]
        plugin-strip-relu = graphc_tplugin:StripRelu
        plugin-count = graphc_tplugin:count_nodes
        plugin-broken = graphc_tplugin:does_not_exist
        """))
    return root


def graphc_cli(plugin_path, *args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(plugin_path), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "graphc", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


def test_plugin_passes_are_listed_and_run_from_the_cli(plugin_path, tmp_path, build):
    model = tmp_path / "m.json"
    save_json(build.relu_chain(3), model)
    out = tmp_path / "out.json"
    r = graphc_cli(plugin_path, "optimize", model, "--passes", "plugin-strip-relu(keep=1),plugin-count", "-o", out,
                   "--report", tmp_path / "r.json", "--check", "1")
    assert r.returncode == 0, r.stderr
    assert [n.op for n in load_json(out).nodes] == ["relu"]
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["passes"][0]["stats"] == {"removed": 2} and not rep["exact"]
    assert rep["check"]["ok"] and not rep["check"]["enforced"]  # one relu of a relu chain computes the same; lossy: not enforced
    # A broken entry point warns once and does not take graphc down.
    assert "pass plugin 'plugin-broken'" in r.stderr and "not loaded" in r.stderr

    r = graphc_cli(plugin_path, "passes", "--json")
    names = {p["name"]: p for p in json.loads(r.stdout)["passes"]}
    assert names["plugin-strip-relu"]["module"] == "graphc_tplugin" and not names["plugin-strip-relu"]["exact"]
    assert names["plugin-strip-relu"]["options"] == [{"name": "keep", "type": "int", "default": "0", "required": False}]
    assert names["plugin-count"]["summary"] == "Change nothing (a plain-function plugin pass)."
    assert "fold-bn" in names
