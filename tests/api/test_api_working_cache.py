"""Admission by working-cache memory through the real service: a request that can never fit its
working cache gets a 503 that says what to change; the others are answered."""

from api_support import serving

from chunkcache.api import ServiceConfig
from chunkcache.facade import ChunkCache

QUESTION = "When does the ferry leave?"
PASSAGE = "The ferry leaves at seven o'clock from the north pier. " * 3


def test_a_request_that_can_never_fit_gets_503_and_the_rest_are_answered(tmp_path, tiny_model_dir):
    with ChunkCache(store_dir=str(tmp_path), model=str(tiny_model_dir)) as probe:
        slot_bytes = probe.scheduler.slot_bytes
        small = probe.answer(QUESTION, [PASSAGE], max_new_tokens=4)
    need = small.prompt_tokens + 4  # the working cache of that request, in tokens
    budget = (need + 40) * slot_bytes  # room for it, not for five passages
    with ChunkCache(store_dir=str(tmp_path / "b"), model=str(tiny_model_dir), working_cache_bytes=budget) as cc, \
            serving(cc, ServiceConfig()) as client:
        ok = client.post("/v1/answer", json={"question": QUESTION, "passages": [PASSAGE], "max_new_tokens": 4})
        assert ok.status_code == 200, ok.text
        big = client.post("/v1/answer", json={"question": QUESTION, "passages": [PASSAGE] * 5, "max_new_tokens": 4})
        assert big.status_code == 503, big.text
        error = big.json()["error"]
        assert error["type"] == "working_cache_full"
        assert "working-cache tokens" in error["message"] and "fewer or shorter passages" in error["message"]
        assert "Retry-After" not in big.headers  # retrying the same request cannot help
        assert cc.scheduler.admission.pool.used == 0
        again = client.post("/v1/answer", json={"question": QUESTION, "passages": [PASSAGE], "max_new_tokens": 4})
        assert again.status_code == 200 and again.json()["answer"] == ok.json()["answer"]
