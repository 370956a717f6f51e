"""What one scheduler step costs: B decode rows plus k prompt rows in one forward, as Markdown.

    python scripts/bench_step.py --model .store/test/models/smollm2-135m-instruct --threads 1

Each of `--decodes` requests has a working cache of `--context` tokens (random K/V: attention
costs the same whatever the values) and adds one decode row; one more request adds `k` prompt
rows (a piece of its prefill, after `--context` tokens of its own). Median of `--repeats`
forwards (`Engine.forward_rows`, what `Scheduler._step` runs). The time between a running
request's tokens is at least its step's time, so this table bounds what any token budget can
promise: a step with k prompt rows beside B decodes against a lone decode step (B = 1, k = 0).
"""

import argparse
import statistics
import time

import torch

from chunkcache.bench.report import machine_line
from chunkcache.engine import Engine, Rows, decode_rows
from chunkcache.kv import WorkingKV
from chunkcache.model import Generator
from chunkcache.model_files import load_model, model_fingerprint


def filled_cache(gen: Generator, length: int, room: int) -> WorkingKV:
    """A working cache holding `length` tokens of random K/V at positions 0..length-1."""
    spec = gen.spec
    kv = WorkingKV(spec, length + room, gen.dtype, gen.device)
    kv.reserve(torch.arange(length))
    kv.k[:, :, :length].normal_()
    kv.v[:, :, :length].normal_()
    return kv


def step_ms(engine: Engine, decodes: int, prompt_rows: int, context: int, repeats: int) -> float:
    gen = engine.gen
    caches = [filled_cache(gen, context, repeats + 1) for _ in range(decodes)]
    prompt = filled_cache(gen, context, (repeats + 1) * prompt_rows) if prompt_rows else None
    times = []
    for r in range(repeats + 1):
        rows = [decode_rows(kv, 1, context + r) for kv in caches]
        if prompt is not None:
            pos = torch.arange(prompt.length, prompt.length + prompt_rows)
            rows.append(Rows(prompt, torch.ones(prompt_rows, dtype=torch.int64), prompt.reserve(pos)))
        t0 = time.perf_counter()
        with torch.inference_mode():
            engine.forward_rows(rows)
        if r:  # the first forward warms caches and allocators
            times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a converted model dir (e.g. STORE/models/smollm2-135m-instruct)")
    parser.add_argument("--decodes", default="1,4,16", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--prompt-rows", default="0,16,32,64,128,256", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--context", type=int, default=1300, help="tokens in every cache (default: %(default)s, 5 passages)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_model(args.model, torch.float32, "cpu")
    gen = Generator(model, tokenizer, model_fingerprint(model, model.config.to_dict()))
    engine = Engine(gen)
    table = {(b, k): step_ms(engine, b, k, args.context, args.repeats) for b in args.decodes for k in args.prompt_rows}
    alone = table.get((1, 0))
    print(f"Step time in ms (median of {args.repeats}), every cache {args.context} tokens; "
          f"x = against one lone decode step.\nMachine: {machine_line()}\n")
    print("| decode rows | " + " | ".join(f"+{k} prompt rows" for k in args.prompt_rows) + " |")
    print("|---:|" + "---:|" * len(args.prompt_rows))
    for b in args.decodes:
        cells = [f"{table[b, k]:.0f}" + (f" ({table[b, k] / alone:.1f}x)" if alone else "") for k in args.prompt_rows]
        print(f"| {b} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
