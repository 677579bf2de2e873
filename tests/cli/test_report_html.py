"""The HTML report: ``optimize --report FILE.html`` and ``graphc report RUN...``. Each page is
parsed with html.parser; its figures are checked against the model actually written."""
import json
from html.parser import HTMLParser

import onnx
import pytest

from graphc.cli.main import main
from graphc.report_html import render_html, runs_from_file

FACTORY = """
import torch
from graphc.models.reference import SmallVGG


def make():
    torch.manual_seed(0)
    return SmallVGG(size=8, width=8).eval()
"""


class Page(HTMLParser):
    """Tags, attributes, script blocks and visible text of a page."""

    def __init__(self, text):
        super().__init__()
        self.tags, self.scripts, self.text, self.titles = [], [], [], []
        self._in = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in.append(tag)

    def handle_endtag(self, tag):
        while self._in and self._in.pop() != tag:
            pass

    def handle_data(self, data):
        where = self._in[-1] if self._in else ""
        if where == "script":
            self.scripts.append(data)
        elif where == "title":
            self.titles.append(data)
        else:
            self.text.append(data)

    def count(self, tag):
        return sum(t == tag for t, _ in self.tags)


def assert_self_contained(page: Page):
    for tag, attrs in page.tags:
        assert tag not in ("link", "img", "iframe", "object", "embed"), tag
        for k, v in attrs.items():
            assert k not in ("src", "href") and "url(" not in (v or ""), (tag, k, v)
        if tag == "script":
            assert attrs.get("type") == "application/json"


@pytest.fixture(autouse=True)
def no_calibration(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def factory(tmp_path):
    f = tmp_path / "net.py"
    f.write_text(FACTORY)
    return f"{f}:make"


def optimize(spec, *extra):
    return main(["optimize", spec, "--input-shape", "1,1,8,8", "-q", *extra])


def test_optimize_writes_a_page_whose_layers_match_the_output(factory, tmp_path, capsys):
    page_path, model_path = tmp_path / "run.html", tmp_path / "out.onnx"
    assert optimize(factory, "--passes", "fold-bn,prune(ratio=0.5)", "--report", str(page_path), "-o", str(model_path),
                    "--measure") == 0
    text = page_path.read_text()
    page = Page(text)
    assert_self_contained(page)
    assert page.count("svg") >= 3  # MACs per pass, channels and MACs per layer
    words = " ".join(page.text)
    for heading in ("Pipeline", "Per-pass deltas", "Channels per layer", "MACs per layer", "Time per layer, after"):
        assert heading in words
    run = json.loads(page.scripts[0])[0]
    assert run["pipeline"] == "fold-bn,prune(ratio=0.5)" and [p["name"] for p in run["passes"]] == ["fold-bn", "prune"]
    out = onnx.load(model_path)
    inits = {i.name: i for i in out.graph.initializer}
    convs = {n.name: list(inits[n.input[1]].dims) for n in out.graph.node if n.op_type == "Conv"}
    layers = {r["name"]: r for r in run["layers"]}
    assert convs and set(convs) <= set(layers)
    for name, dims in convs.items():
        assert layers[name]["channels_after"] == dims[0]
    halved = [r for r in run["layers"] if r["op"] == "conv2d"]
    # onnxruntime's profile, per layer (a fused BN/ReLU counts on its conv)
    assert all(r["measured_ms_after"] is not None and r["measured_ms_after"] > 0 for r in halved)
    assert all(r["channels_after"] < r["channels_before"] for r in halved)
    assert sum(r["macs_after"] for r in run["layers"]) < sum(r["macs_before"] for r in run["layers"])
    # every layer's bar carries its figure in a tooltip
    name, ch = halved[0]["name"], halved[0]["channels_after"]
    assert any(t == f"{name} after: {ch}" for t in page.titles)


def test_report_draws_a_sweep_from_saved_runs(factory, tmp_path, capsys):
    runs = []
    for ratio in ("0.25", "0.5"):
        path = tmp_path / f"r{ratio}.json"
        assert optimize(factory, "--passes", f"prune(ratio={ratio})", "--data", "digits", "--measure",
                        "--report", str(path)) == 0
        runs.append(str(path))
    out = tmp_path / "sweep.html"
    assert main(["report", *runs, "-o", str(out), "--title", "ratio sweep"]) == 0
    page = Page(out.read_text())
    assert_self_contained(page)
    words = " ".join(page.text)
    assert "Target sweep" in words and "ratio sweep" in page.titles
    charts = [a.get("aria-label") for t, a in page.tags if t == "svg"]
    assert "accuracy vs MACs" in charts and "accuracy vs latency" in charts
    saved = [json.loads(open(r).read()) for r in runs]
    # source + one point per run, at the run's accuracy
    circles = [t for t, _ in page.tags if t == "circle"]
    assert len(circles) == 2 * 3
    for s in saved:
        acc = s["metrics"]["accuracy"]["after"]
        assert any(f"{acc:.4g}" in t for t in page.titles)
    # a page reads back as the runs it embeds
    again = runs_from_file(out)
    assert [r["pipeline"] for r in again] == [s["pipeline"] for s in saved]


def test_names_from_the_model_are_escaped():
    evil = "<script>alert(1)</script>"
    run = {"pipeline": f"prune({evil})", "exact": False, "passes": [{"name": evil, "changed": True, "delta": {}}],
           "before": {"macs": 10}, "after": {"macs": 5}, "metrics": {}, "notes": [evil],
           "layers": [{"name": evil, "op": "conv2d", "channels_before": 4, "channels_after": 2, "macs_before": 10,
                       "macs_after": 5}]}
    page = Page(render_html([run]))
    assert_self_contained(page)
    assert page.count("script") == 1
    assert evil in " ".join(page.text)  # shown as text, not run
    assert json.loads(page.scripts[0])[0]["layers"][0]["name"] == evil


@pytest.mark.parametrize("setup,args,msg", [
    (None, ["report", "{d}/absent.json", "-o", "{d}/x.html"], "no such run file"),
    ("[1, 2]", ["report", "{d}/in.json", "-o", "{d}/x.html"], "not a saved graphc run"),
    ("{{", ["report", "{d}/in.json", "-o", "{d}/x.html"], "not JSON"),
    ('{"pipeline": "fuse", "passes": []}', ["report", "{d}/in.json", "-o", "{d}/x.txt"], "should end in .html"),
    ('{"pipeline": "fuse", "passes": [], "layers": [{"name": "c", "op": "conv2d", "macs_after": "many"}]}',
     ["report", "{d}/in.json", "-o", "{d}/x.html"], "'layers' is malformed"),
    ('{"pipeline": "fuse", "passes": [{"name": "x", "delta": {"macs": [1]}}]}',
     ["report", "{d}/in.json", "-o", "{d}/x.html"], "a pass record is malformed"),
    ('{"pipeline": "fuse", "passes": [], "metrics": {"accuracy": {"before": "high"}}}',
     ["report", "{d}/in.json", "-o", "{d}/x.html"], "'metrics' is malformed"),
])
def test_bad_report_input_is_one_line_exit_2(tmp_path, capsys, setup, args, msg):
    if setup is not None:
        (tmp_path / "in.json").write_text(setup)
    assert main([a.format(d=tmp_path) for a in args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0]
    assert not (tmp_path / "x.html").exists()
