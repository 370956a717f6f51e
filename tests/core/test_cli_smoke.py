"""The `chunkcache` command as a user types it: the installed entry point in a subprocess, every
sub-command with the flag combinations the README and --help document; and a static check that
no sub-command's code reads a flag its parser lacks (the `ingest --warm` crash of December)."""

import ast
import inspect
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from process_support import wait_ready
from redis_support import free_port

from chunkcache import cli

pytestmark = pytest.mark.slow
DEMO_DOCS = Path(cli.__file__).parent / "demo" / "docs"
EXE = shutil.which("chunkcache", path=str(Path(sys.executable).parent)) or "chunkcache"


def _reads(fn, seen=None) -> set[str]:
    """Every `args.<name>` read by `fn` and by the module's functions it calls with `args`."""
    seen = seen if seen is not None else set()
    if fn.__name__ in seen:
        return set()
    seen.add(fn.__name__)
    tree = ast.parse(inspect.getsource(fn))
    names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "args"}
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)):
        callee = getattr(cli, call.func.id, None)
        if inspect.isfunction(callee) and any(isinstance(a, ast.Name) and a.id == "args" for a in call.args):
            names |= _reads(callee, seen)
    return names - {"func"}


def test_no_command_reads_a_flag_its_parser_lacks():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.choices and "ingest" in a.choices)
    for name, p in sub.choices.items():
        dests = {a.dest for a in p._actions}
        fn = p.get_default("func")
        missing = {r for r in _reads(fn) if r not in dests and not r.startswith("_")}
        # getattr(args, "threads", None) style reads are not attribute reads, so they cannot hide here
        assert not missing, f"`chunkcache {name}` reads args.{sorted(missing)} but its parser has no such flag"


def run(*argv, store, timeout=600, check=True, env=None) -> subprocess.CompletedProcess:
    out = subprocess.run([EXE, *argv, "--store", str(store)] if "--store" not in argv else [EXE, *argv],
                         capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})})
    if check:
        assert out.returncode == 0, f"chunkcache {' '.join(argv)} exited {out.returncode}:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory, default_model_dir) -> Path:
    """A fresh store holding a copy of the converted default model (as `--model default` finds it)."""
    path = tmp_path_factory.mktemp("cli-store")
    shutil.copytree(default_model_dir, path / "models" / default_model_dir.name)
    return path


def test_help_of_every_command():
    for command in ("ingest", "warm", "query", "serve", "answer", "eval", "bench"):
        out = subprocess.run([EXE, command, "--help"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and f"usage: chunkcache {command}" in out.stdout


def test_ingest_warm_query_and_answer_as_typed(store, tmp_path):
    out = run("ingest", str(DEMO_DOCS), "--quiet", store=store)  # without --warm
    assert "ingested 5 documents" in out.stdout
    out = run("ingest", str(DEMO_DOCS), "--warm", "--quiet", store=store)  # the README's main job
    assert "warmed" in out.stdout
    out = run("ingest", str(DEMO_DOCS), "--warm", "--verify", "--quiet", store=store)
    assert "warmed 0 chunk caches" in out.stdout
    out = run("ingest", str(DEMO_DOCS), "--verify", store=store, check=False)
    assert out.returncode == 2 and "use it with --warm" in out.stderr
    out = run("warm", "--verify", "--quiet", store=store)
    assert "warmed 0 chunk caches" in out.stdout
    out = run("query", "What does a corrupt entry cause?", "--top-k", "3", "--mode", "blend", "--stream",
              "--max-new-tokens", "8", store=store)
    assert out.stdout.strip() and "[blend] ttft" in out.stderr and out.stderr.count("score") == 3
    notes = tmp_path / "notes.txt"
    notes.write_text("The river Sarn runs through Velmora, a town of weavers.")
    out = run("answer", "Which river runs through Velmora?", "--passage", "Ostrel's harbour freezes in winter.",
              "--passage-file", str(notes), "--mode", "blend", "--max-new-tokens", "8", "--stop", "\n\n", store=store)
    assert out.stdout.strip() and "[blend] ttft" in out.stderr and "cache hits" in out.stderr
    assert "whole prompt a repeat" not in out.stderr
    # A full answer stores the prompt's chain entries in the store's LMDB: the next process's
    # answer to the same prompt is exact up to its last token.
    question = ["Which river runs through Velmora?", "--passage-file", str(notes), "--max-new-tokens", "4"]
    full = run("answer", *question, "--mode", "full", store=store)
    again = run("answer", *question, "--mode", "blend", store=store)
    assert "whole prompt a repeat" in again.stderr and again.stdout == full.stdout


def test_serve_starts_answers_and_stops(store):
    port = free_port()
    proc = subprocess.Popen([EXE, "serve", "--store", str(store), "--port", str(port), "--log-level", "warning", "--threads", "1"],
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            wait_ready(client, proc, 300, lambda: proc.stdout.read().decode() if proc.poll() is not None else "")
            r = client.post("/v1/answer", json={"question": "What is checked on every read?", "max_new_tokens": 4,
                                                "passages": ["Every read checks the entry's checksum."], "stop": "\n\n"})
            assert r.status_code == 200, r.text
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        rc = proc.wait(60)
    assert rc in (0, 130), proc.stdout.read().decode()[-3000:]  # 130: stopped by Ctrl-C, as a shell reports it


def test_eval_and_bench_in_their_quickest_form(store, tmp_path):
    data = tmp_path / "qa.jsonl"
    passages = [{"title": "Velmora", "text": "The river Sarn runs through Velmora."},
                {"title": "Ostrel", "text": "Ostrel's harbour freezes every winter."}]
    data.write_text("\n".join(json.dumps({"question": q, "answers": [a], "passages": passages})
                              for q, a in (("Which river runs through Velmora?", "Sarn"), ("What freezes in winter?", "Ostrel's harbour"))))
    out = run("eval", "--data", str(data), "--limit", "2", "--modes", "full,blend", "--max-new-tokens", "4",
              "--json", str(tmp_path / "eval.json"), "--quiet", store=store)
    assert "| blend" in out.stdout and json.loads((tmp_path / "eval.json").read_text())["config"]["n_examples"] == 2
    out = run("bench", "--data", str(cli.DEMO_QA), "--out", str(tmp_path / "bench"), "--store", str(store), "--sizes", "2",
              "--repeats", "1", "--limit", "2", "--ratios", "0.15", "--peers", "none", "--decode-tokens", "0",
              "--chunk-tokens", "64", "--max-new-tokens", "4", "--quiet", store=store, timeout=900)
    assert (tmp_path / "bench" / "bench.json").is_file() and (tmp_path / "bench" / "summary.md").is_file()
