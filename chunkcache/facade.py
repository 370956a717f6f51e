"""`ChunkCache`: the one object applications use."""

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from chunkcache.answering import Request, forced_tokens, generate
from chunkcache.chunks import compute_chunks, compute_prefix, pack_batches
from chunkcache.config import BlendConfig, CacheConfig
from chunkcache.engine import ApeParams, Engine
from chunkcache.recompute import BlendPlan
from chunkcache.errors import ContextTooLongError, InvalidRequestError
from chunkcache.model import Generator
from chunkcache.model_files import load_model, model_fingerprint, resolve_model_dir
from chunkcache.prompt import Passage, PromptBuilder, as_passage
from chunkcache.sampling import Sampler, SamplingParams
from chunkcache.storage import KVStore, StoreConfig, chunk_key
from chunkcache.types import MODES, Answer, PassageHit, Timings


class ChunkCache:
    """Answers questions over passages, reusing each passage's precomputed KV cache.

    >>> cc = ChunkCache(store_dir="./store")
    >>> cc.answer("Who wrote it?", ["passage one ...", {"title": "T", "text": "..."}]).text

    Model work is serialized by an internal lock, so one instance may be shared by threads.
    """

    def __init__(self, store_dir: str | Path | None = None, model: str | None = None, config: CacheConfig | None = None, **overrides):
        if config is None:
            if store_dir is None:
                raise InvalidRequestError("ChunkCache needs store_dir= (a directory for the model, KV store and index)")
            config = CacheConfig(store_dir=str(store_dir), model=model, **overrides)
        elif store_dir is not None or model is not None or overrides:
            raise InvalidRequestError("pass either config= or store_dir/model/options, not both")
        self.config = config
        self._lock = threading.RLock()
        root = Path(config.store_dir)
        root.mkdir(parents=True, exist_ok=True)
        model_dir = resolve_model_dir(config.model, root)
        hf_model, tokenizer = load_model(model_dir, config.torch_dtype, config.device)
        self.model_dir = model_dir
        self.generator = Generator(hf_model, tokenizer, model_fingerprint(hf_model, hf_model.config.to_dict()))
        self.engine = Engine(self.generator, ApeParams(config.blend.ape_temperature, config.blend.ape_scale))
        self.prompt = PromptBuilder(tokenizer, config.prompt)
        with torch.inference_mode():
            self.prefix = compute_prefix(self.engine, self.prompt.prefix_ids)
        self.store = KVStore(
            StoreConfig(
                path=str(root / "kv") if config.persist else None,
                codec=config.codec,
                zstd_level=config.zstd_level,
                memory_bytes=config.memory_bytes,
                disk_bytes=config.disk_bytes,
            )
        )
        self._corpus = None
        self._codec_tag = self.store.codec.tag

    # -- keys and warm-up -------------------------------------------------------------------
    def _key(self, ids: Sequence[int]) -> bytes:
        return chunk_key(self.generator.fingerprint, self.prompt.prefix_digest, ids, self._codec_tag)

    def warm(self, passages: Iterable, progress: bool = False, desc: str = "warm-up",
             on_progress: Callable[[int, int], None] | None = None, verify: bool = False) -> int:
        """Precompute and store the KV of every passage not stored yet; returns how many were computed.

        Work is written in batches (one store transaction each), so an interrupted warm-up keeps
        every finished batch and a rerun resumes where it stopped. verify: also check every
        stored entry's checksum, and recompute the corrupt ones (instead of trusting existence).
        """
        items = [self.prompt.passage_ids(as_passage(p)) for p in passages]
        todo: dict[bytes, list[int]] = {}
        for ids in items:
            key = self._key(ids)
            if key not in todo and not (self.store.verify(key) if verify else self.store.contains(key)):
                todo[key] = ids
        keys = list(todo)
        lengths = [len(todo[k]) for k in keys]
        computed = 0
        bar = tqdm(total=len(keys), desc=desc, unit="chunk", disable=not progress)
        for batch in pack_batches(lengths, self.config.warm_batch_tokens):
            with self._lock, torch.inference_mode():
                caches = compute_chunks(self.engine, self.prefix, [todo[keys[i]] for i in batch])
            self.store.put_many((keys[i], kv) for i, kv in zip(batch, caches))
            computed += len(batch)
            bar.update(len(batch))
            if on_progress is not None:
                on_progress(computed, len(keys))
        bar.close()
        return computed

    def _load_chunks(self, chunk_ids: list[list[int]]) -> tuple[list, list[bool], float, float]:
        """Each chunk's KV: a stored `Payload` (undecoded, placed by the fused dequant + RoPE
        path) or, on a miss, the pre-RoPE tensor [L, 2, Hkv, n, d] computed now.
        Returns (kvs, hits, lookup_s, warm_s)."""
        t0 = time.perf_counter()
        keys = [self._key(ids) for ids in chunk_ids]
        found = [self.store.get_payload(k) for k in keys]
        lookup_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        missing = [i for i, kv in enumerate(found) if kv is None]
        if missing:
            computed = compute_chunks(self.engine, self.prefix, [chunk_ids[i] for i in missing])
            # The store is an optimisation: a failed write (disk full) is logged, counted and
            # reported to the caller's store.write_report(); the answer goes on with the KV.
            self.store.offer_many((keys[i], kv) for i, kv in zip(missing, computed))
            for i, kv in zip(missing, computed):
                found[i] = kv
        warm_s = time.perf_counter() - t0
        hits = [True] * len(found)
        for i in missing:
            hits[i] = False
        return found, hits, lookup_s, warm_s

    # -- answering ----------------------------------------------------------------------------
    def answer(
        self,
        question: str,
        passages: Sequence,
        mode: str = "blend",
        recompute_ratio: float | None = None,
        max_new_tokens: int = 32,
        sampling: SamplingParams | None = None,
        on_token: Callable[[str], None] | None = None,
        return_logprobs: bool = False,
        hits_meta: Sequence[dict] | None = None,
        blend: BlendConfig | None = None,
        should_stop: Callable[[], bool] | None = None,
        teacher_ids: Sequence[int] | None = None,
    ) -> Answer:
        """Answer `question` over `passages` (strings or {"title", "text"} dicts, in prompt order).

        mode: "full" | "reuse" | "blend" | "ape". recompute_ratio: blend's share of context
        tokens to recompute (default from the config). on_token receives each new text piece.
        blend: per-request selection settings (check layer, deviation, sink tokens); default
        from the config. should_stop: polled before each decode step; True ends the answer early
        with finish_reason "cancelled" (a client that went away, a timeout).
        teacher_ids: a reference answer's tokens (evaluation); the Answer then carries
        `teacher_agreement`, the share of positions where this run's top-1 token equals the
        reference's with the reference's tokens fed in.
        """
        t_start = time.perf_counter()
        if mode not in MODES:
            raise InvalidRequestError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if isinstance(passages, (str, bytes)) or not isinstance(passages, Sequence) or len(passages) == 0:
            raise InvalidRequestError("passages must be a non-empty list of strings or {'title', 'text'} dicts")
        if not isinstance(max_new_tokens, int) or not 1 <= max_new_tokens <= self.config.max_new_tokens_limit:
            raise InvalidRequestError(f"max_new_tokens must be an integer in [1, {self.config.max_new_tokens_limit}], got {max_new_tokens!r}")
        ratio = self.config.blend.recompute_ratio if recompute_ratio is None else recompute_ratio
        if not isinstance(ratio, (int, float)) or not 0.0 <= ratio <= 1.0:
            raise InvalidRequestError(f"recompute_ratio must be in [0, 1], got {ratio!r}")
        items: list[Passage] = [as_passage(p) for p in passages]
        suffix = self.prompt.suffix_ids(question)
        chunk_ids = [self.prompt.passage_ids(p) for p in items]
        self._check_length(chunk_ids, suffix, max_new_tokens, mode)
        sampler = Sampler(sampling or SamplingParams())
        t_tok = time.perf_counter() - t_start

        with self._lock, torch.inference_mode():
            cached, hits, lookup_s, warm_s = (None, [False] * len(items), 0.0, 0.0)
            if mode != "full":
                cached, hits, lookup_s, warm_s = self._load_chunks(chunk_ids)
            blend = blend or self.config.blend
            plan = None
            if mode == "blend":
                plan = BlendPlan(
                    ratio=float(ratio),
                    deviation_of=blend.deviation_of,
                    check_layer=blend.check_layer,
                    full_layers=blend.full_layers,
                    probe_from=blend.probe_from,
                    gradual_start=blend.gradual_start,
                    span_window=blend.span_window,
                    forced=forced_tokens(chunk_ids, blend.sink_tokens),
                    adaptive_coverage=blend.adaptive_coverage,
                    chunk_lengths=tuple(len(c) for c in chunk_ids),
                )
            req = Request(mode, tuple(map(tuple, chunk_ids)), tuple(suffix), max_new_tokens, plan,
                          grow_tolerance=blend.grow_tolerance, grow_step=blend.grow_step, grow_max_ratio=blend.grow_max_ratio,
                          repair_tokens=blend.repair_tokens, repair_steps=blend.repair_steps)
            emitted: list[int] = []
            state = {"text": ""}

            def push(token: int):
                emitted.append(token)
                if on_token is not None:
                    text = self.generator.tokenizer.decode(emitted, skip_special_tokens=True)
                    if len(text) > len(state["text"]) and not text.endswith("\ufffd"):
                        on_token(text[len(state["text"]):])
                        state["text"] = text

            teacher = tuple(int(t) for t in teacher_ids) if teacher_ids else None
            out = generate(self.engine, self.prefix, req, cached, sampler, t_start, push, should_stop, teacher)
        text = self.generator.tokenizer.decode(list(out.token_ids), skip_special_tokens=True).strip()
        meta = list(hits_meta) if hits_meta is not None else [{}] * len(items)
        passages_out = tuple(
            PassageHit(index=i, tokens=len(ids), hit=hit, title=p.title, **meta[i])
            for i, (ids, hit, p) in enumerate(zip(chunk_ids, hits, items))
        )
        total = time.perf_counter() - t_start
        n = sum(len(c) for c in chunk_ids)
        return Answer(
            text=text,
            mode=mode,
            ttft_s=out.ttft_s,
            total_s=total,
            timings=Timings(tokenize=t_tok, lookup=lookup_s, warm=warm_s, reposition=out.reposition_s, prefill=out.prefill_s, decode=out.decode_s),
            context_tokens=n,
            prompt_tokens=self.prefix.length + n + len(suffix),
            recomputed_tokens=out.recomputed,
            generated_tokens=len(out.token_ids),
            token_ids=out.token_ids,
            passages=passages_out,
            finish_reason=out.finish_reason,
            recompute_ratio=float(ratio) if mode == "blend" else None,
            repaired_tokens=out.repaired,
            teacher_agreement=out.teacher_agreement,
            first_logprobs=torch.log_softmax(out.first_logits, -1) if return_logprobs else None,
        )

    def _check_length(self, chunk_ids, suffix, max_new_tokens: int, mode: str) -> None:
        limit = self.generator.spec.max_positions
        context = max(len(c) for c in chunk_ids) if mode == "ape" else sum(len(c) for c in chunk_ids)
        need = self.prefix.length + context + len(suffix) + max_new_tokens
        if need > limit:
            raise ContextTooLongError(
                f"the prompt needs {need} positions (prefix {self.prefix.length} + passages {context} + "
                f"question {len(suffix)} + max_new_tokens {max_new_tokens}) but the model's context is {limit}; "
                "send fewer or shorter passages or lower max_new_tokens"
            )

    # -- documents and retrieval ---------------------------------------------------------------
    @property
    def corpus(self):
        """The persistent document index in `store_dir/corpus` (opened on first use)."""
        with self._lock:
            if self._corpus is None:
                from chunkcache.retrieval import Corpus

                self._corpus = Corpus(str(Path(self.config.store_dir) / "corpus"), self.generator.tokenizer)
            return self._corpus

    def add_documents(self, docs: Iterable, progress: bool = False) -> list[str]:
        """Add or replace documents ({"id", "text", "title"?, "metadata"?} or retrieval.Document).

        Re-adding an id replaces its chunks; chunk KV is computed lazily or by `warm_corpus`.
        """
        with self._lock:
            report = self.corpus.ingest(docs, progress=progress)
            self.corpus.flush()
        return list(report.doc_ids)

    def delete_document(self, doc_id: str) -> list[str]:
        """Remove a document from the index; KV entries only it referenced are dropped from the store."""
        with self._lock:
            owned = {r.content_digest: r for r in self.corpus.iter_chunks() if r.doc_id == doc_id}
            freed = self.corpus.delete_document(doc_id)
            self.corpus.flush()
            for digest in freed:
                record = owned.get(digest)
                if record is not None:
                    self.store.delete(self._key(self.prompt.passage_ids(Passage(record.text, record.title))))
        return freed

    def get_document(self, doc_id: str):
        return self.corpus.get_document(doc_id)

    def list_documents(self, offset: int = 0, limit: int = 100):
        return self.corpus.list_documents(offset, limit)

    def warm_corpus(self, progress: bool = False, on_progress: Callable[[int, int], None] | None = None, verify: bool = False) -> int:
        """Precompute the KV of every indexed chunk not stored yet (resumable); returns how many were computed.
        verify: also recompute entries whose checksum fails."""
        records = list(self.corpus.iter_chunks())
        passages = [Passage(r.text, r.title) for r in records]
        return self.warm(passages, progress=progress, desc="warm corpus", on_progress=on_progress, verify=verify)

    def retrieve(self, question: str, top_k: int = 5, order: str = "score"):
        """Retrieval alone: the best chunks for `question` (retrieval.ChunkHit list)."""
        if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= 100:
            raise InvalidRequestError(f"top_k must be an integer in [1, 100], got {top_k!r}")
        return self.corpus.search(question, top_k=top_k, order=order)

    def query(self, question: str, top_k: int = 5, mode: str = "blend", order: str = "score", **kwargs) -> Answer:
        """Retrieve the `top_k` chunks for `question` from the corpus and answer over them.

        order: "score" (best first) or "document" (by document id and chunk ordinal). Other
        keyword arguments are those of `answer`. The Answer's passages carry doc_id, ordinal, score.
        """
        if not isinstance(question, str) or not question.strip():
            raise InvalidRequestError("the question is empty; send a non-empty 'question' string")
        t0 = time.perf_counter()
        hits = self.retrieve(question, top_k=top_k, order=order)
        if not hits:
            raise InvalidRequestError("the corpus is empty: add documents before querying")
        retrieval_s = time.perf_counter() - t0
        answer = self.answer(
            question,
            [Passage(h.text, h.title) for h in hits],
            mode=mode,
            hits_meta=[{"doc_id": h.doc_id, "ordinal": h.ordinal, "score": float(h.score)} for h in hits],
            **kwargs,
        )
        # TTFT of a query includes retrieval.
        return replace(
            answer,
            ttft_s=answer.ttft_s + retrieval_s,
            total_s=answer.total_s + retrieval_s,
            timings=replace(answer.timings, retrieval=retrieval_s),
        )

    # -- housekeeping --------------------------------------------------------------------------
    def stats(self):
        """Store statistics (hits, misses, bytes, entries, evictions, corrupt entries per tier)."""
        return self.store.stats()

    def close(self) -> None:
        with self._lock:
            if self._corpus is not None:
                self._corpus.close()
                self._corpus = None
            self.store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
