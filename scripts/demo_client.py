"""Wait for the demo service, then ask one question in `full` and `blend` modes and print TTFT.

    python scripts/demo_client.py --url http://127.0.0.1:8000 [--api-key KEY] [--once]

Each answer ends at its first blank line (the stop sequence "\\n\\n"). With --once the exit status
says whether the demo worked: 1 if a request failed, or if blend's median time to the first
token was later than full's.
"""

import argparse
import os
import sys
import time

import httpx

QUESTION = "What happens to a stored entry whose checksum does not match?"
STOP = ["\n\n"]  # the answer is its first paragraph: the model would otherwise repeat itself to the limit


def alive(pid: int | None) -> bool:
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def wait_ready(client: httpx.Client, timeout_s: float, server_pid: int | None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if not alive(server_pid):
            sys.exit("the service exited before it became ready (its log is above)")
        time.sleep(0.5)
    sys.exit(f"the service did not become ready within {timeout_s:.0f} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--question", default=QUESTION)
    ap.add_argument("--repeats", type=int, default=3, help="queries per mode; the median TTFT is reported")
    ap.add_argument("--server-pid", type=int, default=None, help="stop waiting if this process (the service) exits")
    ap.add_argument("--once", action="store_true", help="exit 1 unless every request worked and blend was no slower than full")
    args = ap.parse_args()
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    with httpx.Client(base_url=args.url, headers=headers, timeout=300) as client:
        wait_ready(client, 600, args.server_pid)
        print(f"Q: {args.question}")
        ttft = {}
        for mode in ("full", "blend"):
            runs = []
            for _ in range(args.repeats):
                r = client.post("/v1/query", json={"question": args.question, "mode": mode, "top_k": 5, "max_new_tokens": 48,
                                                   "stop": STOP})
                if r.status_code != 200:
                    print(f"[{mode}] the service answered {r.status_code}: {r.text}", file=sys.stderr)
                    return 1
                runs.append(r.json())
            runs.sort(key=lambda a: a["ttft_s"])
            body = runs[len(runs) // 2]
            ttft[mode] = body["ttft_s"]
            sources = ", ".join(f"{s['doc_id']}#{s['ordinal']}{'' if s['cache'] == 'hit' else ' (' + s['cache'] + ')'}" for s in body["sources"])
            print(f"\n[{mode}] TTFT {body['ttft_s'] * 1000:.0f} ms (median of {len(runs)}), total {body['total_s'] * 1000:.0f} ms, "
                  f"context {body['context_tokens']} tokens, recomputed {body['recomputed_tokens']}, "
                  f"{body['generated_tokens']} tokens ({body['finish_reason']})\n  sources: {sources}\n  A: {body['answer']}")
        print(f"\nblend reached the first token {ttft['full'] / ttft['blend']:.1f}x sooner than a full prefill.")
        if args.once:
            if ttft["blend"] > ttft["full"]:
                print(f"demo failed: blend's TTFT {ttft['blend'] * 1000:.0f} ms is later than full's {ttft['full'] * 1000:.0f} ms",
                      file=sys.stderr)
                return 1
            return 0
        print(f"The service keeps running at {args.url} (OpenAPI docs at {args.url}/docs); Ctrl-C stops it.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
