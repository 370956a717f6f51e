"""The codec bench's size accounting on the tiny model: every codec, the source's own included."""

from chunkcache.bench.codecs import SOURCE, _open, _transcode
from chunkcache.prompt import as_passage

PASSAGES = ["The mill wheel turns at dawn.", "Rain fell on the quay for three days and nights."]


def test_transcoded_sizes_count_the_source_codec_too(tiny_model_dir, tmp_path):
    """The source codec (fp32) is measured like any other: its entries are the warm-up's, so its
    size is what the warm-up stored (it once came out 0 and divided by zero)."""
    with _open(tiny_model_dir, tmp_path, SOURCE) as cache:
        cache.warm(PASSAGES, progress=False)
        source_bytes = cache.stats().bytes
        chunk_ids = [cache.prompt.passage_ids(as_passage(p)) for p in PASSAGES]
        assert source_bytes > 0
        assert _transcode(cache, chunk_ids, source_bytes) == source_bytes
    with _open(tiny_model_dir, tmp_path, "fp16") as cache:
        fp16 = _transcode(cache, chunk_ids, source_bytes)
    assert 0 < fp16 < source_bytes  # half the payload, the same headers
