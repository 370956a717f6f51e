"""Codec, mode and order names have one definition (chunkcache/names.py) that every layer derives from."""

import typing

from chunkcache import names


def _choices(parser, command: str, flag: str):
    sub = next(a for a in parser._subparsers._group_actions if a.choices)  # the sub-command action
    action = next(a for a in sub.choices[command]._actions if flag in a.option_strings)
    return tuple(action.choices), action.default


def test_cli_choices_and_defaults_are_the_names():
    from chunkcache.cli import build_parser

    parser = build_parser()
    for command in ("answer", "query"):
        assert _choices(parser, command, "--mode") == (names.MODES, names.DEFAULT_MODE)
        assert _choices(parser, command, "--codec") == (names.CODECS, names.DEFAULT_CODEC)
    assert _choices(parser, "query", "--order") == (names.ORDERS, names.DEFAULT_ORDER)


def test_api_literals_and_defaults_are_the_names():
    from chunkcache.api.schemas import Mode, Order, QueryRequest

    assert typing.get_args(Mode) == names.MODES and typing.get_args(Order) == names.ORDERS
    fields = QueryRequest.model_fields
    assert fields["mode"].default == names.DEFAULT_MODE and fields["order"].default == names.DEFAULT_ORDER


def test_config_and_storage_use_the_codec_names():
    from chunkcache.config import CacheConfig
    from chunkcache.storage import CODECS
    from chunkcache.storage.header import CODEC_IDS

    assert CODECS == names.CODECS and CacheConfig(store_dir="x").codec == names.DEFAULT_CODEC
    # Codec ids are on disk: these values must never change.
    assert CODEC_IDS == {"fp16": 1, "bf16": 2, "int8": 3, "int4": 4, "fp32": 5, "kvq4": 6, "kvq3": 7,
                         "ans20v10": 8, "ans16": 9, "ans8v4": 10, "st4": 11, "st6": 12}


def test_the_codec_layouts_are_the_codec_names_in_order():
    """names.CODECS is the torch-free vocabulary; kernels.LAYOUTS the one description of each
    codec's layout that storage and the kernels read. Same names, same order, ids = positions."""
    import torch

    from chunkcache.kernels import LAYOUTS, lossless_codec

    assert tuple(c.name for c in LAYOUTS) == names.CODECS
    assert [c.id for c in LAYOUTS] == list(range(1, len(names.CODECS) + 1))
    assert {dtype: lossless_codec(dtype).name for dtype in (torch.float32, torch.float16, torch.bfloat16)} == {
        torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
