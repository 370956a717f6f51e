"""A vLLM engine behind a pipe: the bench's vLLM peer runs this with `.venv-vllm/bin/python -m
chunkcache.integrations.vllm_worker` from the repository root (vLLM lives in its own venv,
scripts/setup_vllm.sh). Run it as a module, not by path: by path, the sibling `vllm.py` would
shadow the vllm package.

Protocol: JSON lines. The first line is the engine's settings
  {"model": DIR, "dtype": "float32", "max_model_len": N, "threads": T, "kv_connector": {...} | null}
and the worker answers {"ready": true, "vllm": VERSION} (or {"error": ...}). Then one request per
line, one answer per line:
  {"op": "generate", "ids": [...], "max_tokens": 1, "reset": false, "kv_transfer_params": {...}?}
    -> {"wall_s", "tokens": [...], "prompt_tokens", "cached_tokens", "decode_s"}
       wall_s: the whole call, token ids in, last token out (max_tokens=1: the TTFT);
       decode_s: engine time from the first to the last token (None for one token).
  {"op": "reset"} -> {"ok": true}   (drops vLLM's prefix cache)
  {"op": "quit"}
Only the standard library and vLLM are imported here (plus, through vLLM, the connector).
"""

import json
import os
import sys
import time


def _engine(settings: dict):
    threads = int(settings.get("threads") or 1)
    # vLLM-CPU binds one OpenMP thread per core it is given; the bench gives it as many as torch has.
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "0" if threads == 1 else f"0-{threads - 1}")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(settings.get("kv_cache_gib", 1)))
    from vllm import LLM

    kwargs = {}
    if settings.get("kv_connector"):
        from vllm.config import KVTransferConfig

        kwargs["kv_transfer_config"] = KVTransferConfig(
            kv_connector="ChunkCacheConnector", kv_connector_module_path="chunkcache.integrations.vllm",
            kv_role="kv_both", kv_connector_extra_config=settings["kv_connector"])
    # enforce_eager: torch.compile's warm-up costs minutes on 2 cores and is not what is measured.
    return LLM(model=settings["model"], dtype=settings.get("dtype", "float32"), enable_prefix_caching=True,
               max_model_len=int(settings["max_model_len"]), max_num_batched_tokens=int(settings["max_model_len"]),
               enforce_eager=True, seed=0, disable_log_stats=False, **kwargs)


def _generate(llm, req: dict) -> dict:
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    if req.get("reset"):
        llm.reset_prefix_cache()
    extra = {"kv_transfer_params": req["kv_transfer_params"]} if req.get("kv_transfer_params") else None
    params = SamplingParams(max_tokens=int(req.get("max_tokens", 1)), temperature=0.0, ignore_eos=True, extra_args=extra)
    t0 = time.perf_counter()
    out = llm.generate([TokensPrompt(prompt_token_ids=list(req["ids"]))], params, use_tqdm=False)[0]
    wall = time.perf_counter() - t0
    tokens = list(out.outputs[0].token_ids)
    m = out.metrics
    decode = None
    if m is not None and len(tokens) > 1 and m.last_token_ts > m.first_token_ts > 0:
        decode = m.last_token_ts - m.first_token_ts
    return {"wall_s": wall, "tokens": tokens, "prompt_tokens": len(out.prompt_token_ids or ()),
            "cached_tokens": out.num_cached_tokens, "decode_s": decode}


def main() -> int:
    # The protocol gets a private copy of fd 1; fd 1 itself goes to stderr, so nothing vLLM or its
    # engine-core subprocess prints (they inherit the descriptors) mixes into the replies.
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def send(obj: dict) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    try:
        settings = json.loads(sys.stdin.readline())
        llm = _engine(settings)
        import vllm

        send({"ready": True, "vllm": vllm.__version__})
    except Exception as exc:  # reported to the bench, which prints it as the peer's skip reason
        send({"error": f"{type(exc).__name__}: {exc}"})
        return 1
    for line in sys.stdin:
        req = json.loads(line)
        op = req.get("op")
        try:
            if op == "generate":
                send(_generate(llm, req))
            elif op == "reset":
                llm.reset_prefix_cache()
                send({"ok": True})
            elif op == "quit":
                break
            else:
                send({"error": f"unknown op {op!r}"})
        except Exception as exc:
            send({"error": f"{type(exc).__name__}: {exc}"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
