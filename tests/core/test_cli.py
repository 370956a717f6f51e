"""The chunkcache command end to end on the real default model."""

import json

import pytest

from chunkcache.cli import build_parser, main


def test_every_command_has_help(capsys):
    parser = build_parser()
    for command in ("eval", "answer", "ingest", "warm", "query", "serve"):
        with pytest.raises(SystemExit) as exc:
            parser.parse_args([command, "--help"])
        assert exc.value.code == 0
        assert "usage: chunkcache " + command in capsys.readouterr().out


@pytest.mark.slow  # the real default model
def test_eval_on_the_demo_set_writes_the_report(tmp_path, default_model_dir, capsys):
    out = tmp_path / "eval.json"
    rc = main([
        "eval", "--limit", "2", "--modes", "full,reuse,blend,ape", "--recompute-ratio", "0.15,1.0",
        "--max-new-tokens", "8", "--store", str(tmp_path / "store"), "--model", str(default_model_dir),
        "--json", str(out), "--quiet",
    ])
    assert rc == 0
    report = json.loads(out.read_text())
    runs = report["runs"]
    assert set(runs) == {"full", "reuse", "blend@0.15", "blend@1", "ape"}
    for name, rep in runs.items():
        for key in ("n", "f1", "em", "fidelity", "first_token_agreement", "ttft_median_s", "ttft_speedup", "first_token_kl"):
            assert key in rep, (name, key)
        assert rep["n"] == 2
    assert runs["full"]["fidelity"] == 1.0 and runs["full"]["ttft_speedup"] == 1.0
    assert runs["blend@1"]["fidelity"] == 1.0 and runs["blend@1"]["first_token_agreement"] == 1.0
    assert runs["blend@1"]["first_token_kl"] < 1e-4
    assert len(report["examples"]) == 2
    assert "| blend@0.15 |" in capsys.readouterr().out


def test_bad_arguments_exit_with_a_message(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--recompute-ratio", "2"])
    assert exc.value.code == 2
    assert "--recompute-ratio takes numbers in [0, 1]" in capsys.readouterr().err
    rc = main(["eval", "--data", str(tmp_path / "missing.jsonl"), "--store", str(tmp_path)])
    assert rc == 2
    assert "does not exist" in capsys.readouterr().err


def test_api_key_file_wins_and_the_flag_warns(tmp_path, capsys):
    from chunkcache.cli import _api_key, build_parser
    from chunkcache.errors import ChunkCacheError

    key_file = tmp_path / "key"
    key_file.write_text("s3cret-key-from-file\n")
    args = build_parser().parse_args(["serve", "--api-key-file", str(key_file)])
    assert _api_key(args) == "s3cret-key-from-file"
    assert "warning" not in capsys.readouterr().err
    args = build_parser().parse_args(["serve", "--api-key", "flag-key-12345"])
    assert _api_key(args) == "flag-key-12345"
    assert "process list" in capsys.readouterr().err
    assert _api_key(build_parser().parse_args(["serve"])) is None
    with pytest.raises(ChunkCacheError, match="cannot read --api-key-file"):
        _api_key(build_parser().parse_args(["serve", "--api-key-file", str(tmp_path / "missing")]))


def test_a_query_log_is_read_as_plain_lines_or_jsonl(tmp_path):
    from chunkcache.cli import _logged_questions
    from chunkcache.errors import ChunkCacheError

    log = tmp_path / "log.txt"
    log.write_text('Who keeps the lighthouse?\n\n{"question": "When does the ferry leave?", "ts": 3}\n  Why?  \n')
    assert _logged_questions(str(log)) == ["Who keeps the lighthouse?", "When does the ferry leave?", "Why?"]
    log.write_text('{"q": "no question field"}\n')
    with pytest.raises(ChunkCacheError, match=r"log.txt:1: a JSON line needs a string \"question\" field"):
        _logged_questions(str(log))
    log.write_text("\n \n")
    with pytest.raises(ChunkCacheError, match="holds no questions"):
        _logged_questions(str(log))
    with pytest.raises(ChunkCacheError, match="cannot read --queries"):
        _logged_questions(str(tmp_path / "missing.txt"))


@pytest.mark.slow  # the real default model
def test_warm_with_a_query_log_stores_those_contexts_exactly(tmp_path, default_model_dir, capsys):
    store = tmp_path / "store"
    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"id": "ferry", "title": "Ferry", "text": "The ferry to Orlen leaves at seven and returns at noon."}) + "\n"
                    + json.dumps({"id": "mill", "title": "Mill", "text": "The old mill grinds barley for three villages."}) + "\n")
    log = tmp_path / "log.txt"
    log.write_text("When does the ferry leave?\n")
    common = ["--store", str(store), "--model", str(default_model_dir)]
    assert main(["ingest", str(docs), *common, "--quiet"]) == 0
    assert main(["warm", "--queries", str(log), "--top-k", "2", *common, "--quiet"]) == 0
    assert "stored 1 contexts exactly" in capsys.readouterr().out
    assert main(["query", "When does the ferry leave?", "--top-k", "2", "--max-new-tokens", "2", *common]) == 0
    err = capsys.readouterr().err  # one line per passage with its cache state, then the timings
    assert err.count(" exact ") == 2 and "recomputed 0" in err
