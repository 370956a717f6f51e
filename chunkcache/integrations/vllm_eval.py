"""How close chunkcache's KV, loaded into vLLM by the connector, keeps vLLM to its own full prefill.

Run in vLLM's venv from the repository root:

    .venv-vllm/bin/python -m chunkcache.integrations.vllm_eval --model DIR --data 2wikimqa.jsonl --limit 8 --json out.json

Per example (a question over its passages, in the data's order), side by side in one engine:
  full           vLLM's own prefill (the connector stays out: no kv_transfer_params), the reference;
  reuse          every passage from its per-chunk entry, re-positioned (each passage was first
                 answered alone behind the prefix, which stores that entry): only the question is computed;
  recompute@k    the same, but the connector reports the last k passages as missing, so vLLM
                 recomputes them, attending to the loaded ones: the best selective recompute the
                 unpatched interface allows (a suffix of the prompt; see the README).
Fidelity is token F1 of the greedy answer against full's answer (chunkcache.scores); TTFT is vLLM's
own first-token latency of the request (RequestOutput.metrics), prefix cache dropped before each.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a converted checkpoint directory (the ChunkCache store's models/...)")
    p.add_argument("--data", required=True, help="QA JSONL: question, passages[{title, text}]")
    p.add_argument("--limit", type=int, default=8)
    p.add_argument("--recompute", default="1,2", help="k values of recompute@k (default: %(default)s)")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--json", default=None, help="write the per-example results here")
    args = p.parse_args(argv)
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams
    from vllm.config import KVTransferConfig
    from vllm.inputs import TokensPrompt

    from chunkcache.integrations.vllm_plan import PARAMS_KEY, request_params
    from chunkcache.model_files import load_model, model_fingerprint
    from chunkcache.prompt import Passage, PromptBuilder, PromptConfig
    from chunkcache.scores import token_f1

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    builder = PromptBuilder(tokenizer, PromptConfig())
    model, _ = load_model(args.model)
    fingerprint = model_fingerprint(model, model.config.to_dict())
    del model
    store = tempfile.mkdtemp(prefix="vllm-eval-store.")
    extra = {"store_dir": store, "fingerprint": fingerprint, "prefix_ids": list(builder.prefix_ids)}
    llm = LLM(model=args.model, dtype="float32", enable_prefix_caching=True, enforce_eager=True, seed=0, max_model_len=8192,
              max_num_batched_tokens=8192, disable_log_stats=False,
              kv_transfer_config=KVTransferConfig(kv_connector="ChunkCacheConnector", kv_connector_module_path="chunkcache.integrations.vllm",
                                                  kv_role="kv_both", kv_connector_extra_config=extra))
    ks = [int(k) for k in args.recompute.split(",") if k.strip()]

    def run(chunks, suffix, params, max_tokens):
        ids = list(builder.prefix_ids) + [t for c in chunks for t in c] + suffix
        llm.reset_prefix_cache()
        extra_args = {"kv_transfer_params": params} if params else None
        out = llm.generate([TokensPrompt(prompt_token_ids=ids)], SamplingParams(max_tokens=max_tokens, temperature=0.0, extra_args=extra_args),
                           use_tqdm=False)[0]
        return out

    rows = []
    with open(args.data) as f:
        examples = [json.loads(line) for line in f][: args.limit]
    for ex in examples:
        chunks = [builder.passage_ids(Passage(p["text"], p.get("title") or "")) for p in ex["passages"]]
        suffix = builder.suffix_ids(ex["question"])
        full = run(chunks, suffix, None, args.max_tokens)
        for c in chunks:  # each passage alone behind the prefix: the connector stores its per-chunk entry
            run([c], suffix, request_params([c]), 1)
        ref = tokenizer.decode(full.outputs[0].token_ids, skip_special_tokens=True)
        row = {"id": ex.get("id"), "passages": len(chunks), "prompt_tokens": len(full.prompt_token_ids),
               "full": {"ttft_s": full.metrics.first_token_latency, "text": ref}}
        for name, k in [("reuse", 0)] + [(f"recompute@{k}", k) for k in ks]:
            out = run(chunks, suffix, request_params(chunks, recompute_last=k), args.max_tokens)
            text = tokenizer.decode(out.outputs[0].token_ids, skip_special_tokens=True)
            plan = out.kv_transfer_params[PARAMS_KEY]
            row[name] = {"ttft_s": out.metrics.first_token_latency, "text": text, "fidelity": token_f1(text, ref),
                         "first_token_agrees": out.outputs[0].token_ids[:1] == full.outputs[0].token_ids[:1],
                         "loaded_tokens": plan["loaded_tokens"], "from_chunk": plan["from_chunk"], "from_chain": plan["from_chain"]}
        rows.append(row)
        print(json.dumps({k: (v if not isinstance(v, dict) else {kk: vv for kk, vv in v.items() if kk != "text"}) for k, v in row.items()}),
              file=sys.stderr, flush=True)
    names = ["reuse"] + [f"recompute@{k}" for k in ks]
    summary = {"n": len(rows), "full_ttft_s": statistics.median(r["full"]["ttft_s"] for r in rows)}
    for name in names:
        summary[name] = {"fidelity": statistics.mean(r[name]["fidelity"] for r in rows),
                         "first_token_agreement": statistics.mean(r[name]["first_token_agrees"] for r in rows),
                         "ttft_s": statistics.median(r[name]["ttft_s"] for r in rows)}
    print(json.dumps(summary, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "examples": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
