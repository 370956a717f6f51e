"""The model fingerprint (part of every KV key) says what the model computes, never where it lies."""

import json
import shutil

import torch

from chunkcache.config import CacheConfig
from chunkcache.facade import ChunkCache
from chunkcache.model_files import load_model, model_fingerprint

PASSAGES = [{"title": "Velmora", "text": "The river Sarn runs through Velmora, a town of weavers."},
            {"title": "Ostrel", "text": "Ostrel's harbour freezes every winter; its ferries stop in January."}]


def fingerprint(model_dir) -> str:
    model, _ = load_model(model_dir)
    return model_fingerprint(model, model.config.to_dict())


def test_the_same_weights_at_another_path_give_the_same_fingerprint(tiny_model_dir, tmp_path):
    copy = shutil.copytree(tiny_model_dir, tmp_path / "elsewhere" / "renamed-model")
    model, _ = load_model(copy)
    assert model.config.to_dict()["_name_or_path"] != str(tiny_model_dir)  # the path is in the config ...
    assert fingerprint(copy) == fingerprint(tiny_model_dir)  # ... but not in the fingerprint


def test_a_changed_rope_setting_or_weight_changes_the_fingerprint(tiny_model_dir, tmp_path):
    base = fingerprint(tiny_model_dir)
    rope = shutil.copytree(tiny_model_dir, tmp_path / "rope")
    config = json.loads((rope / "config.json").read_text())
    params = config.get("rope_parameters") or {}
    config["rope_parameters"] = {**params, "rope_theta": 20000.0, "rope_type": params.get("rope_type", "default")}
    config.pop("rope_theta", None)
    (rope / "config.json").write_text(json.dumps(config))
    assert fingerprint(rope) != base

    model, _ = load_model(tiny_model_dir)
    with torch.no_grad():  # one element of one weight, far from any strided sample's start
        w = model.model.layers[1].mlp.down_proj.weight
        w.view(-1)[w.numel() // 2 + 7] += 1e-3
    assert model_fingerprint(model, model.config.to_dict()) != base


def test_a_moved_store_keeps_every_hit(tiny_model_dir, tmp_path):
    """The model lives inside the store (as the converted default model does); moving the whole
    store directory elsewhere keeps every KV entry a hit."""
    store = tmp_path / "store-a"
    shutil.copytree(tiny_model_dir, store / "models" / "tiny")
    with ChunkCache(config=CacheConfig(store_dir=str(store), model=str(store / "models" / "tiny"))) as cc:
        assert cc.warm(PASSAGES) == 2
        first = cc.answer("Which river runs through Velmora?", PASSAGES, mode="reuse", max_new_tokens=4)
    moved = shutil.move(str(store), str(tmp_path / "moved" / "store-b"))
    with ChunkCache(config=CacheConfig(store_dir=moved, model=f"{moved}/models/tiny")) as cc:
        assert cc.warm(PASSAGES) == 0
        again = cc.answer("Which river runs through Velmora?", PASSAGES, mode="reuse", max_new_tokens=4)
    assert [p.hit for p in again.passages] == [True, True]
    assert again.token_ids == first.token_ids
