"""One answer over given passages: validate, load chunk KV, build the Request, generate, report."""

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import torch

from chunkcache.chain import ChainStore, prompt_links
from chunkcache.chunk_store import ChunkStore
from chunkcache.config import BlendConfig, CacheConfig
from chunkcache.detokenize import IncrementalDetokenizer
from chunkcache.engine import Engine
from chunkcache.errors import CacheClosedError, ContextTooLongError, InvalidRequestError
from chunkcache.kv import PrefixKV
from chunkcache.names import CHAIN_MODES, DEFAULT_MODE, MODES
from chunkcache.prompt import Passage, PromptBuilder, Turn, as_passage
from chunkcache.prompt_phase import capacity, prepare, start
from chunkcache.prompt_work import PromptWork
from chunkcache.request import Request
from chunkcache.sampling import Sampler, SamplingParams
from chunkcache.scheduler import Scheduler
from chunkcache.stopping import StopText, stop_sequences
from chunkcache.stream import decode_alone
from chunkcache.types import Answer, PassageHit, Timings


class Answerer:
    """Answers one question over passages given in prompt order (see `ChunkCache.answer`)."""

    def __init__(self, config: CacheConfig, engine: Engine, prompt: PromptBuilder, prefix: PrefixKV,
                 chunks: ChunkStore, lock: threading.RLock, scheduler: Scheduler, chains: ChainStore,
                 on_blended: Callable[[tuple[tuple[int, ...], ...]], None] | None = None):
        self.config = config
        self.chains = chains
        self._on_blended = on_blended  # told of every context answered inexactly (idle refinement)
        self._active = 0  # answers between their start and their end (see `busy`)
        self._active_lock = threading.Lock()
        self.engine = engine
        self.prompt = prompt
        self.prefix = prefix
        self.chunks = chunks
        self._lock = lock
        self.scheduler = scheduler

    def answer(self, question: str, passages: Sequence, mode: str = DEFAULT_MODE, recompute_ratio: float | None = None,
               max_new_tokens: int = 32, sampling: SamplingParams | None = None,
               on_token: Callable[[str], None] | None = None, return_logprobs: bool = False,
               blend: BlendConfig | None = None,
               should_stop: Callable[[], bool] | None = None, teacher_ids: Sequence[int] | None = None,
               history: Sequence[Turn] = (), stop: str | Sequence[str] | None = None,
               chain: bool | None = None) -> Answer:
        with self._active_lock:
            self._active += 1
        try:
            return self._answer(question, passages, mode, recompute_ratio, max_new_tokens, sampling, on_token,
                                return_logprobs, blend, should_stop, teacher_ids, history, stop,
                                self.config.chain_entries if chain is None else chain)
        finally:
            with self._active_lock:
                self._active -= 1

    @property
    def busy(self) -> bool:
        """Some answer is being prepared, prefilled or decoded (idle refinement waits for this)."""
        return self._active > 0 or self.scheduler.busy

    def _answer(self, question, passages, mode, recompute_ratio, max_new_tokens, sampling, on_token, return_logprobs,
                blend, should_stop, teacher_ids, history, stop, chain: bool) -> Answer:
        t_start = time.perf_counter()
        if self.scheduler.closed:
            raise CacheClosedError("this ChunkCache is closed; open a new one to answer")
        ratio = self._validate(mode, passages, max_new_tokens, recompute_ratio)
        stops = stop_sequences(stop)
        items: list[Passage] = [as_passage(p) for p in passages]
        suffix = self.prompt.suffix_ids(question, history)
        chunk_ids = [self.prompt.passage_ids(p) for p in items]
        self._check_length(chunk_ids, suffix, max_new_tokens, mode)
        sampler = Sampler(sampling or SamplingParams())
        tokenizer = self.engine.gen.tokenizer
        t_tok = time.perf_counter() - t_start

        # The request's levers: the caller's or the cache's, with this request's ratio.
        blend = replace(blend or self.config.blend, recompute_ratio=ratio)
        text_out = _TextStream(tokenizer, on_token, stops)
        push = text_out.push
        # In this thread: store reads overlap the model's work for others. First the longest
        # leading run of chunks stored in context (exact), then per-chunk entries for the rest.
        # The question is the last link: a repeat of the whole prompt computes only its last token.
        t0 = time.perf_counter()
        links = prompt_links(chunk_ids, suffix)
        exact = self.chains.lookup(links) if chain and mode in CHAIN_MODES else []
        whole = len(exact) > len(chunk_ids)  # every prompt token but the last is stored
        e = min(len(exact), len(items))  # exact passages
        lookup_s = time.perf_counter() - t0
        cached, hits, warm_s, kv_stored = (None, [None] * len(items), 0.0, True)  # full: cache not used
        if mode == "prefix":
            cached, hits = exact, [True] * e + [False] * (len(items) - e)
        elif mode != "full" and e < len(items):
            rest = self.chunks.load(chunk_ids[e:])
            cached, hits, lookup_s = exact + rest.kvs, [True] * e + rest.hits, lookup_s + rest.lookup_s
            warm_s, kv_stored = rest.warm_s, rest.stored
        elif mode != "full":
            cached, hits = exact, [True] * e
        if whole:  # the question link is one more exact chunk; the last question token is the suffix
            req = Request(mode, tuple(map(tuple, links)), tuple(suffix[-1:]), max_new_tokens, blend, exact_chunks=len(links))
        else:
            req = Request(mode, tuple(map(tuple, chunk_ids)), tuple(suffix), max_new_tokens, blend, exact_chunks=e)
        # The working cache's memory is held from here to the answer's end (back-pressure while
        # the pool is short; refused at once if it can never fit).
        ticket = object()
        self.scheduler.admission.acquire(ticket, capacity(self.prefix, req), should_stop)
        try:
            with torch.inference_mode():  # placing the chunks needs no model: it overlaps others' steps
                prepared = prepare(self.engine, self.prefix, req, cached)
            if teacher_ids:  # evaluation: the decode is replayed with the reference fed in, alone
                teacher = tuple(int(t) for t in teacher_ids)
                with self._lock, torch.inference_mode():
                    stream = start(self.engine, self.prefix, req, None, sampler, t_start, push, should_stop, prepared)
                    out = decode_alone(self.engine, stream, teacher)
            else:  # in pieces and batched with whatever else runs (greedy tokens are the same)
                future = self.scheduler.submit(lambda: PromptWork(self.engine, req, prepared, sampler, t_start, push, should_stop))
                out = future.result().result()
            answer = self._report(out, req, items, chunk_ids, links, hits, e, len(exact), ratio, t_start, t_tok, lookup_s,
                                  warm_s, kv_stored, text_out, return_logprobs, chain)
        finally:
            self.scheduler.admission.release(ticket)
        return answer

    def _report(self, out, req: Request, items, chunk_ids, links, hits, e: int, stored: int, ratio, t_start: float,
                t_tok: float, lookup_s: float, warm_s: float, kv_stored: bool, text_out, return_logprobs: bool,
                chain: bool) -> Answer:
        """The Answer of a finished generation (and, after a full prefill, its chain entries).
        e: exact passages; stored: exact links (the passages', then the question's)."""
        mode, tokenizer = req.mode, self.engine.gen.tokenizer
        cut = text_out.finish()  # the text before a stop sequence, if one ended the answer
        text = (cut if cut is not None else tokenizer.decode(list(out.token_ids), skip_special_tokens=True)).strip()
        passages_out = tuple(
            PassageHit(index=i, tokens=len(ids), hit=hit, title=p.title, exact=i < e)
            for i, (ids, hit, p) in enumerate(zip(chunk_ids, hits, items))
        )
        n = sum(len(c) for c in chunk_ids)
        total_s = time.perf_counter() - t_start - out.replay_s
        if chain and mode in ("full", "prefix") and stored < len(links):
            # After the answer (its total time does not include it): the prompt as this full
            # prefill computed it, one chain entry per link (chunk, question) not stored yet.
            self.chains.save(out.kv, links, start=stored)
        elif chain and mode in ("reuse", "blend") and stored < len(links) and self._on_blended is not None:
            self._on_blended(tuple(map(tuple, links)))
        return Answer(
            text=text,
            mode=mode,
            ttft_s=out.ttft_s,
            total_s=total_s,
            timings=Timings(tokenize=t_tok, lookup=lookup_s, warm=warm_s, reposition=out.reposition_s, prefill=out.prefill_s, decode=out.decode_s),
            context_tokens=n,
            prompt_tokens=self.prefix.length + sum(req.lengths) + len(req.suffix_ids),
            question_exact=stored > len(items),
            recomputed_tokens=out.recomputed,
            generated_tokens=len(out.token_ids),
            token_ids=out.token_ids,
            passages=passages_out,
            finish_reason=out.finish_reason,
            recompute_ratio=float(ratio) if mode == "blend" else None,
            repaired_tokens=out.repaired,
            teacher_agreement=out.teacher_agreement,
            kv_stored=kv_stored,
            first_logprobs=torch.log_softmax(out.first_logits, -1) if return_logprobs else None,
        )

    def _validate(self, mode: str, passages, max_new_tokens, recompute_ratio) -> float:
        """Raises InvalidRequestError naming the bad value; returns the recompute ratio to use."""
        if mode not in MODES:
            raise InvalidRequestError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if isinstance(passages, (str, bytes)) or not isinstance(passages, Sequence) or len(passages) == 0:
            raise InvalidRequestError("passages must be a non-empty list of strings or {'title', 'text'} dicts")
        limit = self.config.max_new_tokens_limit
        if not isinstance(max_new_tokens, int) or not 1 <= max_new_tokens <= limit:
            raise InvalidRequestError(f"max_new_tokens must be an integer in [1, {limit}], got {max_new_tokens!r}")
        if mode == "prefix" and not self.config.chain_entries:
            raise InvalidRequestError("mode 'prefix' reuses chain entries, which this cache has turned off "
                                      "(chain_entries=False); use 'full' or turn them on")
        ratio = self.config.blend.recompute_ratio if recompute_ratio is None else recompute_ratio
        if not isinstance(ratio, (int, float)) or not 0.0 <= ratio <= 1.0:
            raise InvalidRequestError(f"recompute_ratio must be in [0, 1], got {ratio!r}")
        return float(ratio)

    def _check_length(self, chunk_ids, suffix, max_new_tokens: int, mode: str) -> None:
        limit = self.engine.gen.spec.max_positions
        context = max(len(c) for c in chunk_ids) if mode == "ape" else sum(len(c) for c in chunk_ids)
        need = self.prefix.length + context + len(suffix) + max_new_tokens
        if need > limit:
            raise ContextTooLongError(
                f"the prompt needs {need} positions (prefix {self.prefix.length} + passages {context} + "
                f"question {len(suffix)} + max_new_tokens {max_new_tokens}) but the model's context is {limit}; "
                "send fewer or shorter passages or lower max_new_tokens"
            )


class _TextStream:
    """Generated tokens as text: new pieces to `on_token`, if anyone listens, cut before the
    first of the stop sequences, if any are set (held-back text is released by `finish`)."""

    def __init__(self, tokenizer, on_token: Callable[[str], None] | None, stops: tuple[str, ...]):
        self._detok = IncrementalDetokenizer(tokenizer) if on_token is not None or stops else None
        self._on_token = on_token
        self._stop = StopText(stops) if stops else None

    def push(self, token: int) -> bool:
        """The per-token callback of `start`; True once a stop sequence completed the text."""
        if self._detok is None:
            return False
        piece = self._detok.push(token)
        if self._stop is not None:
            piece = self._stop.feed(piece)
        if piece and self._on_token is not None:
            self._on_token(piece)
        return self._stop is not None and self._stop.stopped

    def finish(self) -> str | None:
        """After the last token: releases any held-back tail; the answer's text when a stop
        sequence ended it, else None (the caller decodes the tokens)."""
        if self._stop is None:
            return None
        rest = self._stop.flush()
        if rest and self._on_token is not None:
            self._on_token(rest)
        return self._stop.text if self._stop.stopped else None
