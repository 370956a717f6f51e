"""`ChunkCache`: the one object applications use; a thin face over its three parts.

chunk_store.ChunkStore (chunk KV: key, warm, load, delete), answerer.Answerer (one answer over
given passages) and document_service.DocumentService (documents, corpus, retrieval).
"""

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path

import torch

from chunkcache.answerer import Answerer
from chunkcache.chain import ChainStore, prompt_links
from chunkcache.chunk_store import ChunkStore
from chunkcache.chunk_kv import compute_prefix
from chunkcache.config import BlendConfig, CacheConfig
from chunkcache.document_service import DocumentService
from chunkcache.engine import Engine
from chunkcache.errors import InvalidRequestError
from chunkcache.kv import WorkingKV
from chunkcache.model import Generator
from chunkcache.names import DEFAULT_MODE, DEFAULT_ORDER
from chunkcache.model_files import load_model, model_fingerprint, resolve_model_dir
from chunkcache.prompt import Passage, PromptBuilder, Turn, as_passage
from chunkcache.refiner import Refiner, compute_chain
from chunkcache.sampling import SamplingParams
from chunkcache.scheduler import Scheduler
from chunkcache.storage import KVStore, StoreConfig
from chunkcache.types import Answer, SchedulerStats


log = logging.getLogger(__name__)


class ChunkCache:
    """Answers questions over passages, reusing each passage's precomputed KV cache.

    >>> cc = ChunkCache(store_dir="./store")
    >>> cc.answer("Who wrote it?", ["passage one ...", {"title": "T", "text": "..."}]).text

    One instance may be shared by threads. Answers from several threads are decoded together
    (`scheduler.Scheduler`: continuous batching, up to `config.max_batch` at once). Model work is
    serialized by the model lock, taken per prompt phase and per decode step; the
    corpus has its own reader-writer lock (retrieval and document reads run together and while
    the model works; ingest and delete run alone); the KV store locks itself (`locked_corpus.py`).
    """

    def __init__(self, store_dir: str | Path | None = None, model: str | None = None, config: CacheConfig | None = None, **overrides):
        if config is None:
            if store_dir is None:
                raise InvalidRequestError("ChunkCache needs store_dir= (a directory for the model, KV store and index)")
            config = CacheConfig(store_dir=str(store_dir), model=model, **overrides)
        elif store_dir is not None or model is not None or overrides:
            raise InvalidRequestError("pass either config= or store_dir/model/options, not both")
        self.config = config
        self._lock = threading.RLock()  # the one model lock, shared by the parts below
        root = Path(config.store_dir)
        root.mkdir(parents=True, exist_ok=True)
        self.model_dir = resolve_model_dir(config.model, root)
        hf_model, tokenizer = load_model(self.model_dir, config.torch_dtype, config.device)
        self.generator = Generator(hf_model, tokenizer, model_fingerprint(hf_model, hf_model.config.to_dict()))
        self.engine = Engine(self.generator)
        self.prompt = PromptBuilder(tokenizer, config.prompt)
        with torch.inference_mode():
            self.prefix = compute_prefix(self.engine, self.prompt.prefix_ids)
        store = KVStore(StoreConfig(path=str(root / "kv") if config.persist else None, codec=config.codec,
                                         zstd_level=config.zstd_level, memory_bytes=config.memory_bytes,
                                         disk_bytes=config.disk_bytes, eviction=config.eviction, redis=config.redis))
        self.chunks = ChunkStore(self.engine, self.prefix, self.prompt.prefix_digest, store, self._lock,
                                 config.warm_batch_tokens)
        spec = self.generator.spec
        slot_bytes = WorkingKV.slot_bytes(spec, self.generator.dtype)
        pool_slots = max(1, config.working_cache_bytes // slot_bytes)
        if pool_slots < spec.max_positions:
            log.warning("working_cache_bytes holds %d tokens of working cache, fewer than one request of the model's whole "
                        "context (%d): longer requests will be refused", pool_slots, spec.max_positions)
        self.scheduler = Scheduler(self.engine, self._lock, config.max_batch, config.token_budget, pool_slots, slot_bytes)
        self.chains = ChainStore(self.engine, self.prefix, self.prompt.prefix_digest, store)
        self.refiner = Refiner(self.engine, self.prefix, self.chains, self._lock, lambda: self._answerer.busy, config.refine)
        self._answerer = Answerer(config, self.engine, self.prompt, self.prefix, self.chunks, self._lock, self.scheduler,
                                  self.chains, on_blended=self.refiner.note)
        self._documents = DocumentService(root / "corpus", tokenizer, self.prompt, self.chunks)

    # -- chunk KV -------------------------------------------------------------------------------
    @property
    def store(self) -> KVStore:
        """The tiered KV store holding chunk KV (owned by `self.chunks`)."""
        return self.chunks.store

    def warm(self, passages: Iterable, progress: bool = False, desc: str = "warm-up",
             on_progress: Callable[[int, int], None] | None = None, verify: bool = False) -> int:
        """Precompute and store the KV of every passage not stored yet; returns how many were computed.

        Work is written in batches (one store transaction each), so an interrupted warm-up keeps
        every finished batch and a rerun resumes where it stopped. verify: also check every
        stored entry's checksum, and recompute the corrupt ones (instead of trusting existence).
        """
        ids = [self.prompt.passage_ids(as_passage(p)) for p in passages]
        return self.chunks.warm(ids, progress=progress, desc=desc, on_progress=on_progress, verify=verify)

    # -- answering ------------------------------------------------------------------------------
    def answer(
        self,
        question: str,
        passages: Sequence,
        mode: str = DEFAULT_MODE,
        recompute_ratio: float | None = None,
        max_new_tokens: int = 32,
        sampling: SamplingParams | None = None,
        on_token: Callable[[str], None] | None = None,
        return_logprobs: bool = False,
        blend: BlendConfig | None = None,
        should_stop: Callable[[], bool] | None = None,
        teacher_ids: Sequence[int] | None = None,
        history: Sequence[Turn] = (),
        stop: str | Sequence[str] | None = None,
        chain: bool | None = None,
    ) -> Answer:
        """Answer `question` over `passages` (strings or {"title", "text"} dicts, in prompt order).

        mode: "full" | "reuse" | "blend" | "ape". recompute_ratio: blend's share of context
        tokens to recompute (default from the config). on_token receives each new text piece.
        blend: per-request levers (a BlendConfig: selection, growth, repair, APE's temperature and
        scale; the ratio is `recompute_ratio`, else the cache config's); default from the config.
        should_stop: polled before each scheduler step; True ends the answer early with
        finish_reason "cancelled" (a client that went away, a timeout), or, before the first
        token, raises RequestCancelledError (nothing is left to return).
        teacher_ids: a reference answer's tokens (evaluation); the Answer then carries
        `teacher_agreement`, the share of positions where this run's top-1 token equals the
        reference's with the reference's tokens fed in. history: earlier chat turns (oldest
        first), placed in the suffix; chunk KV never depends on them. stop: a string or up to 4;
        the answer ends at the first of them (finish_reason "stop"), which is not part of the
        text; streamed pieces never hold text a stop sequence later removes.
        chain: use chain entries for this answer (look up the exact leading run; full and prefix
        store theirs); None = `config.chain_entries`. Evaluations of unique contexts pass False.
        """
        return self._answerer.answer(question, passages, mode=mode, recompute_ratio=recompute_ratio,
                                     max_new_tokens=max_new_tokens, sampling=sampling, on_token=on_token,
                                     return_logprobs=return_logprobs, blend=blend,
                                     should_stop=should_stop, teacher_ids=teacher_ids, history=history, stop=stop,
                                     chain=chain)

    def warm_exact(self, contexts: Iterable[Sequence], progress: bool = False, desc: str = "exact warm-up") -> int:
        """Store the chain entries of each context (a list of passages in prompt order): a later
        answer over the same passages in the same order is then exact from the first token on
        and computes nothing but the question. Contexts stored already cost a lookup. Returns
        how many contexts were computed."""
        links = [[self.prompt.passage_ids(as_passage(p)) for p in passages] for passages in contexts]
        return self._store_chains(links, progress, desc)

    def warm_queries(self, questions: Iterable[str], top_k: int = 5, order: str = DEFAULT_ORDER,
                     progress: bool = False) -> int:
        """`warm_exact` over what each logged question retrieves (see `query`), the question
        included: replaying a query log ahead of time makes a repeat of a logged question exact up
        to its last prompt token, and any other question over the same passages exact in its
        passages. Returns how many prompts were computed."""
        links = []
        for q in questions:
            if isinstance(q, str) and q.strip():
                hits = self.retrieve(q, top_k=top_k, order=order)
                if hits:
                    ids = [self.prompt.passage_ids(Passage(h.text, h.title)) for h in hits]
                    links.append(prompt_links(ids, self.prompt.suffix_ids(q)))
        return self._store_chains(links, progress, "exact warm-up (query log)")

    def _store_chains(self, contexts: list[list[list[int]]], progress: bool, desc: str) -> int:
        """compute_chain for each list of links not stored yet; returns how many were computed."""
        from tqdm.auto import tqdm

        computed = 0
        for ids in tqdm(contexts, desc=desc, unit="context", disable=not progress):
            if ids and self.chains.stored_run(ids) < len(ids):
                computed += compute_chain(self.engine, self.prefix, self.chains, ids, self._lock) > 0
        return computed

    # -- documents and retrieval ----------------------------------------------------------------
    @property
    def corpus(self):
        """The persistent document index in `store_dir/corpus` (opened on first use)."""
        return self._documents.corpus

    def add_documents(self, docs: Iterable, progress: bool = False) -> list[str]:
        """Add or replace documents ({"id", "text", "title"?, "metadata"?} or retrieval.Document).

        Re-adding an id replaces its chunks; chunk KV is computed lazily or by `warm_corpus`.
        """
        return self._documents.add(docs, progress=progress)

    @staticmethod
    def loadable(path: Path) -> bool:
        """Whether `load_files` reads this file (.txt, .md, .jsonl)."""
        from chunkcache.retrieval.loaders import loadable

        return loadable(path)

    @staticmethod
    def load_files(files: Sequence[tuple[Path, str]]) -> list:
        """Documents (retrieval.Document) of (file, name) pairs for `add_documents`: a text file's
        document is named `name` (id and source), a JSONL file's lines keep their ids."""
        from chunkcache.retrieval.loaders import load_named

        return load_named(list(files))

    def delete_document(self, doc_id: str) -> list[str]:
        """Remove a document from the index; KV entries only it referenced are dropped from the store."""
        return self._documents.delete(doc_id)

    def get_document(self, doc_id: str):
        return self._documents.get(doc_id)

    def list_documents(self, offset: int = 0, limit: int = 100):
        return self._documents.list(offset, limit)

    def warm_corpus(self, progress: bool = False, on_progress: Callable[[int, int], None] | None = None, verify: bool = False) -> int:
        """Precompute the KV of every indexed chunk not stored yet (resumable); returns how many were computed.
        verify: also recompute entries whose checksum fails."""
        return self._documents.warm(progress=progress, on_progress=on_progress, verify=verify)

    def retrieve(self, question: str, top_k: int = 5, order: str = DEFAULT_ORDER):
        """Retrieval alone: the best chunks for `question` (retrieval.ChunkHit list)."""
        return self._documents.retrieve(question, top_k=top_k, order=order)

    def query(self, question: str, top_k: int = 5, mode: str = DEFAULT_MODE, order: str = DEFAULT_ORDER, **kwargs) -> Answer:
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
        answer = self.answer(question, [Passage(h.text, h.title) for h in hits], mode=mode, **kwargs)
        # Each passage says which chunk it was; TTFT of a query includes retrieval.
        return replace(answer, ttft_s=answer.ttft_s + retrieval_s, total_s=answer.total_s + retrieval_s,
                       timings=replace(answer.timings, retrieval=retrieval_s),
                       passages=tuple(p.retrieved(h) for p, h in zip(answer.passages, hits)))

    # -- housekeeping ---------------------------------------------------------------------------
    def stats(self):
        """Store statistics (hits, misses, bytes, entries, evictions, corrupt entries per tier)."""
        return self.store.stats()

    def scheduler_stats(self) -> SchedulerStats:
        """Steps, rows and working-cache memory of the scheduler (`types.SchedulerStats`)."""
        return self.scheduler.stats()

    def close(self) -> None:
        self.refiner.close()  # it takes the model lock per layer: stop it first
        self.scheduler.close()  # outside the model lock: the running requests need it to finish
        with self._lock:
            self._documents.close()
            self.store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
