"""bench/results.py: one command calls each registered bench's main(argv), skips scripts not
present, and records what it ran in docs/results.md (stub benches here: the real ones train)."""
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def results(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location("bench_results", ROOT / "bench" / "results.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


STUB = '''
import sys
from pathlib import Path
CALLS = Path(__file__).with_name("calls.txt")
def main(argv=None):
    with CALLS.open("a") as f:
        f.write("{name} " + " ".join(argv) + "\\n")
    return {rc}
'''


def test_runs_each_bench_in_turn_and_records_the_run(results, tmp_path, monkeypatch):
    (tmp_path / "docs").mkdir()
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "a.py").write_text(STUB.format(name="a", rc=0))
    (bench / "b.py").write_text(STUB.format(name="b", rc=0))
    monkeypatch.setattr(results, "BENCHES", [("a", "a.py", ["--full"], ["--quick"]),
                                             ("gone", "gone.py", [], []),
                                             ("b", "b.py", ["--full", "x"], ["--q"])])
    doc = tmp_path / "docs" / "results.md"
    doc.write_text("# Results\n")
    assert results.main(["--quick", "--jobs", "1", "--bench-dir", str(bench), "--doc", str(doc)]) == 0
    assert (bench / "calls.txt").read_text().splitlines() == ["a --quick", "b --q"]
    text = doc.read_text()
    assert "<!-- bench:results-run -->" in text and "| gone | not present |" in text and "| a | ok |" in text
    assert results.main(["--only", "b", "--no-write", "--jobs", "1", "--bench-dir", str(bench), "--doc", str(doc)]) == 0
    assert (bench / "calls.txt").read_text().splitlines()[-1] == "b --full x --no-write"


def test_a_failing_bench_fails_the_run_and_unknown_names_are_refused(results, tmp_path, monkeypatch, capsys):
    (tmp_path / "bad.py").write_text(STUB.format(name="bad", rc=1))
    monkeypatch.setattr(results, "BENCHES", [("bad", "bad.py", [], [])])
    assert results.main(["--no-write", "--jobs", "1", "--bench-dir", str(tmp_path)]) == 1
    assert results.main(["--no-write", "--jobs", "2", "--bench-dir", str(tmp_path)]) == 1
    assert results.main(["--only", "nope", "--bench-dir", str(tmp_path)]) == 2
    assert "unknown bench nope" in capsys.readouterr().err


def test_the_registry_names_scripts_with_a_main():
    spec = importlib.util.spec_from_file_location("bench_results_reg", ROOT / "bench" / "results.py")
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(ROOT / "bench"))
    names = [b[0] for b in mod.BENCHES]
    assert len(set(names)) == len(names)
    scripts = {b[1] for b in mod.BENCHES}
    # every seed method's bench, those of the methods still to land included
    assert {"edp.py", "edp_ablations.py", "olmp.py", "resconv.py", "stream.py", "unify.py",
            "latency_prune.py"} <= scripts
    for _, script, full, quick in mod.BENCHES:
        path = ROOT / "bench" / script
        if path.exists():
            assert "def main(argv" in path.read_text(), script
        assert full != quick, script


RAISES = '''
import argparse
def main(argv=None):
    {body}
'''


def test_a_bench_that_exits_or_raises_is_recorded_and_the_rest_still_run(results, tmp_path, monkeypatch, capsys):
    (tmp_path / "argv.py").write_text(RAISES.format(body="argparse.ArgumentParser().parse_args(argv)"))
    (tmp_path / "boom.py").write_text(RAISES.format(body="raise RuntimeError('boom')"))
    (tmp_path / "ok.py").write_text(STUB.format(name="ok", rc=0))
    monkeypatch.setattr(results, "BENCHES", [("argv", "argv.py", ["--no-such-flag"], []),
                                             ("boom", "boom.py", [], []), ("ok", "ok.py", [], [])])
    doc = tmp_path / "results.md"
    assert results.main(["--jobs", "1", "--bench-dir", str(tmp_path), "--doc", str(doc)]) == 1
    assert (tmp_path / "calls.txt").read_text().splitlines() == ["ok "]
    text = doc.read_text()
    assert "| argv | exit 2 |" in text and "| boom | error |" in text and "| ok | ok |" in text
    assert "RuntimeError: boom" in capsys.readouterr().err


SECTION = '''
import sys, time
from pathlib import Path
from scaling import write_section
def main(argv=None):
    doc = Path(argv[0])
    for i in range(20):  # many read-modify-writes of one file, side by side with the other bench
        write_section("{name}-" + str(i), "{name} " + str(i), doc)
    return 0
'''


def test_jobs_run_benches_side_by_side_in_processes_of_their_own(results, tmp_path, monkeypatch, capsys):
    doc = tmp_path / "results.md"
    doc.write_text("# Results\n")
    for name in ("p", "q", "r"):
        (tmp_path / f"{name}.py").write_text(SECTION.format(name=name))
    (tmp_path / "bad.py").write_text(RAISES.format(body="raise RuntimeError('boom')"))
    monkeypatch.setattr(results, "BENCHES", [(n, f"{n}.py", [str(doc)], ["--quick-argv"]) for n in ("p", "q", "r")]
                        + [("bad", "bad.py", [], [])])
    assert results.main(["--jobs", "2", "--bench-dir", str(tmp_path), "--doc", str(doc)]) == 1
    text = doc.read_text()
    # no bench's write was lost to another's: every section of every bench is there once
    for name in ("p", "q", "r"):
        for i in range(20):
            assert text.count(f"<!-- bench:{name}-{i} -->") == 1, (name, i)
    assert "| p | ok |" in text and "| r | ok |" in text and "| bad | exit 1 |" in text
    assert "2 bench(es) at a time" in text
    out = capsys.readouterr().out
    assert "RuntimeError: boom" in out  # a failed bench's log tail is shown
    assert not list(tmp_path.glob("*.tmp"))
