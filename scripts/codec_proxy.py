"""A quick proxy for a codec's effect on blend answers: first-token KL and greedy-answer change
over a few QA examples, with chunk KV passed through a simulated codec.

Every chunk is computed once (an fp32 store); a candidate is a function kv [L, 2, H, T, d] fp32
(keys before RoPE) -> (dequantized kv like it, stored bits of the chunk). The store's payload
reads are patched to hand blend the candidate's dequantized KV, so placing and blend's token
selection see exactly what a stored entry of that codec would give.

    taskset -c 1 python scripts/codec_proxy.py --skip 12 --limit 24 --out /tmp/proxy.json st4 ans20v10

Candidates are scripts/codec_candidates.py's names (a stored codec, `st:K:V` step plans, `lvl:`
and `fs:` probes); full and fp16-store answers are kept in the store directory and computed once
per example set. The report per candidate:
compression against fp16 (all bits the candidate counts), first-token KL to full and its
change against the fp16 store, KL to the fp16-store answer, and how many greedy answers differ
from the fp16 store's.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

MODEL = "/work/bench/store/models/smollm2-135m-instruct"  # the converted default model on the bench machine


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("candidates", nargs="+")
    ap.add_argument("--limit", type=int, default=16)
    ap.add_argument("--skip", type=int, default=0, help="examples skipped first (a held-out set)")
    ap.add_argument("--store", default="/work/h24exp/store")
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--data", default="2wikimqa")
    ap.add_argument("--model", default=MODEL, help="a converted model directory")
    args = ap.parse_args()
    torch.set_num_threads(1)

    import codec_candidates
    from chunkcache.evaluation import _answer_text, load_examples, resolve_data
    from chunkcache.facade import ChunkCache
    from chunkcache.prompt import as_passage
    from chunkcache.sampling import SamplingParams
    from chunkcache.scores import kl_divergence, token_f1
    from chunkcache.storage import Payload
    from chunkcache.storage.store import KVStore

    path, _ = resolve_data(args.data)
    examples = load_examples(path)[args.skip : args.skip + args.limit]
    passages = list({(p["title"], p["text"]): p for ex in examples for p in ex.passages}.values())
    out_path = Path(args.out)
    results = json.loads(out_path.read_text()) if out_path.exists() else {}

    original = KVStore.get_payload
    current = {"sim": None, "memo": {}, "bits": 0, "values": 0}

    def patched(self, key):
        p = original(self, key)
        if p is None or current["sim"] is None:
            return p
        if key not in current["memo"]:
            kv = p.q.float().clone()
            hat, bits = current["sim"](kv)
            current["memo"][key] = hat
            current["bits"] += bits
            current["values"] += kv.numel()
        return Payload("fp32", p.shape, current["memo"][key])

    KVStore.get_payload = patched

    with ChunkCache(store_dir=args.store, model=args.model, codec="fp32", memory_bytes=0, persist=True,
                    chain_entries=False) as cache:
        cache.warm(passages, progress=False)
        lengths = [len(cache.prompt.passage_ids(as_passage(p))) for p in passages]

        def answer(ex, mode):
            ans = cache.answer(ex.question, list(ex.passages), mode=mode, max_new_tokens=args.max_new_tokens,
                               return_logprobs=True, sampling=SamplingParams(ignore_eos=True), chain=False)
            return _answer_text(cache, ans)[1], ans.first_logprobs

        memo = Path(args.store) / f"answers-{args.data}-{args.skip}-{args.limit}-{args.max_new_tokens}.pt"
        if memo.exists():  # full and fp16-store answers of these examples, computed once
            full, base = torch.load(memo)
        else:
            full = [answer(ex, "full") for ex in examples]
            current.update(sim=codec_candidates.get("fp16"))
            base = [answer(ex, "blend") for ex in examples]
            torch.save((full, base), memo)
        for name in args.candidates:
            current.update(sim=codec_candidates.get(name), memo={}, bits=0, values=0)
            t = time.perf_counter()
            runs = [answer(ex, "blend") for ex in examples]
            kl = [kl_divergence(f[1], r[1]) for r, f in zip(runs, full)]
            kl_base = [kl_divergence(f[1], b[1]) for b, f in zip(base, full)]
            fid = [token_f1(r[0], f[0]) for r, f in zip(runs, full)]
            fid_base = [token_f1(b[0], f[0]) for b, f in zip(base, full)]
            rep = {
                "n": len(runs), "x_vs_fp16": 16 * current["values"] / max(1, current["bits"]),
                "bits_per_value": current["bits"] / max(1, current["values"]),
                "kl_change": statistics.fmean(a - b for a, b in zip(kl, kl_base)),
                "kl_to_fp16": statistics.fmean(kl_divergence(b[1], r[1]) for r, b in zip(runs, base)),
                "fidelity_change": statistics.fmean(a - b for a, b in zip(fid, fid_base)),
                "changed": sum(r[0] != b[0] for r, b in zip(runs, base)),
                "seconds": time.perf_counter() - t,
                "per_example_kl_to_fp16": [kl_divergence(b[1], r[1]) for r, b in zip(runs, base)],
                "per_example_changed": [int(r[0] != b[0]) for r, b in zip(runs, base)],
            }
            results[name] = rep
            out_path.write_text(json.dumps(results, indent=1))
            print(f"{name:28s} x{rep['x_vs_fp16']:5.2f} bits {rep['bits_per_value']:.3f} KL->fp16 {rep['kl_to_fp16']:.5f} "
                  f"dKL {rep['kl_change']:+.5f} dfid {rep['fidelity_change']:+.3f} changed {rep['changed']}/{rep['n']} "
                  f"({rep['seconds']:.0f} s)", flush=True)
    print(f"chunks {len(lengths)}, tokens median {statistics.median(lengths)}, mean {statistics.fmean(lengths):.1f}")


if __name__ == "__main__":
    main()
