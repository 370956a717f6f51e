"""chunkcache as a vLLM KV connector: documents' KV from chunkcache's store into vLLM's paged cache.

Load it by module path, no patch to vLLM (runs in vLLM's venv: scripts/setup_vllm.sh):

    KVTransferConfig(kv_connector="ChunkCacheConnector", kv_connector_module_path="chunkcache.integrations.vllm",
                     kv_role="kv_both", kv_connector_extra_config=connector_settings(cache))

and send chunkcache's prompt ([prefix][doc 0]...[doc n-1][question], `chunkcache.prompt`) with
`kv_transfer_params=request_params(doc_ids)` (both in `chunkcache.integrations.vllm_plan`).

Scheduler side (`get_num_new_matched_tokens`): the leading prompt tokens the store holds, past
what vLLM's own prefix cache has: the prefix, then each document from its chain entry (exact)
while that run lasts, else from its per-chunk entry re-positioned (chunkcache's `reuse`); see
`vllm_plan.plan_load`. Worker side: `start_load_kv` writes them into the request's blocks layer
by layer (dequantize, RoPE at the document's place, scatter into the paged cache) before the
forward; `wait_for_save` stores what vLLM computed (the prefix, exact chain entries, document 0's
per-chunk entry; `vllm_plan.plan_save`). Loads are synchronous: on a CPU the forward waits
for them anyway, and a missing entry is reported through `get_block_ids_with_load_errors`, so
vLLM recomputes those blocks.

Counted on both sides: vLLM counts the loaded tokens as external prefix-cache hits
(`vllm:external_prefix_cache_hits`, `RequestOutput.num_cached_tokens`); the connector's own
counters (documents by source, store hits and misses, entries saved) go through vLLM's connector
stats (`get_kv_connector_stats`) into Prometheus as `vllm:chunkcache_*` counters, and each finished
request's plan comes back in `RequestOutput.kv_transfer_params["chunkcache"]`.
"""

import re
from dataclasses import dataclass, field
from typing import Any

import torch
from vllm.distributed.kv_transfer.kv_connector.v1.base import KVConnectorBase_V1, KVConnectorMetadata, KVConnectorRole
from vllm.distributed.kv_transfer.kv_connector.v1.metrics import KVConnectorPromMetrics, KVConnectorStats
from vllm.logger import init_logger

from chunkcache.integrations import vllm_paged as paged
from chunkcache.kernels import dequant_rope, lossless_codec
from chunkcache.integrations.vllm_plan import (
    PARAMS_KEY,
    ConnectorSettings,
    RequestDocs,
    Segment,
    plan_load,
    plan_save,
    request_docs,
)
from chunkcache.storage import CodecSpec, KVStore, StoreConfig

log = init_logger(__name__)
COUNTERS = ("documents_from_chain", "documents_from_chunk", "tokens_loaded", "store_hits", "store_misses", "entries_saved")
_LAYER = re.compile(r"layers\.(\d+)\.")
# LMDB forbids opening one environment twice in a process; with vLLM's in-process engine
# (VLLM_ENABLE_V1_MULTIPROCESSING=0) the scheduler-side and worker-side connectors share it.
_STORES: dict[str, KVStore] = {}


def open_store(s: ConnectorSettings) -> KVStore:
    path = str(s.store_dir).rstrip("/") + "/kv"
    if path not in _STORES:
        _STORES[path] = KVStore(StoreConfig(path=path, codec=s.codec, zstd_level=s.zstd_level, memory_bytes=s.memory_bytes))
    return _STORES[path]


@dataclass
class LoadRequest:
    req_id: str
    block_ids: list[int]
    segments: tuple[Segment, ...]
    start: int  # first token to write (vLLM's own prefix-cache hit ends here)
    end: int


@dataclass
class SaveRequest:
    req_id: str
    block_ids: list[int]
    segments: tuple[Segment, ...]


@dataclass
class ChunkCacheMetadata(KVConnectorMetadata):
    loads: list[LoadRequest] = field(default_factory=list)
    saves: list[SaveRequest] = field(default_factory=list)


@dataclass
class _Plan:
    """Scheduler-side state of one request."""

    docs: RequestDocs
    segments: tuple[Segment, ...]
    local: int  # tokens vLLM's own prefix cache supplies (block-aligned)
    external: int = 0  # tokens the connector loads
    saves: tuple[Segment, ...] = ()
    block_ids: list[int] = field(default_factory=list)
    saved: bool = False


@dataclass
class ChunkCacheStats(KVConnectorStats):
    """The connector's counters for one interval (summed over workers)."""

    def __post_init__(self):
        for name in COUNTERS:
            self.data.setdefault(name, 0)

    def reset(self):
        self.data = dict.fromkeys(COUNTERS, 0)

    def aggregate(self, other: KVConnectorStats) -> KVConnectorStats:
        for name in COUNTERS:
            self.data[name] += other.data.get(name, 0)
        return self

    def reduce(self) -> dict[str, int | float]:
        return dict(self.data)

    def is_empty(self) -> bool:
        return not any(self.data.values())


class ChunkCachePromMetrics(KVConnectorPromMetrics):
    """`vllm:chunkcache_<counter>` per engine, fed by ChunkCacheStats."""

    def __init__(self, vllm_config, metric_types, labelnames, per_engine_labelvalues):
        super().__init__(vllm_config, metric_types, labelnames, per_engine_labelvalues)
        self._counters = {}
        for name in COUNTERS:
            # "vllm:" so that LLM.get_metrics() (which keeps vLLM's own names only) shows them too
            metric = self._counter_cls(name=f"vllm:chunkcache_{name}", documentation=f"chunkcache connector: {name.replace('_', ' ')}",
                                       labelnames=labelnames)
            self._counters[name] = {i: metric.labels(*v) for i, v in per_engine_labelvalues.items()}

    def observe(self, transfer_stats_data: dict[str, Any], engine_idx: int = 0):
        for name in COUNTERS:
            if transfer_stats_data.get(name):
                self._counters[name][engine_idx].inc(transfer_stats_data[name])


class ChunkCacheConnector(KVConnectorBase_V1):
    """See the module docstring."""

    def __init__(self, vllm_config, role: KVConnectorRole, kv_cache_config=None):
        super().__init__(vllm_config=vllm_config, role=role, kv_cache_config=kv_cache_config)
        self._settings = ConnectorSettings.from_extra_config(self._kv_transfer_config.kv_connector_extra_config or {})
        self._block_size = vllm_config.cache_config.block_size
        model = vllm_config.model_config
        self._dtype = model.dtype
        self._lossless = lossless_codec(model.dtype).name
        self._head_dim = model.get_head_size()
        paged.check_layout(self._dtype, self._head_dim)
        self._freqs = paged.inv_freq(model.hf_config)
        self._store = open_store(self._settings)
        self._plans: dict[str, _Plan] = {}  # scheduler side
        self._caches: dict[int, torch.Tensor] = {}  # worker side: layer index -> paged cache
        self._stats = ChunkCacheStats()
        self._failed_blocks: set[int] = set()

    # ---------------------------------------------------------------- scheduler side
    def get_num_new_matched_tokens(self, request, num_computed_tokens: int) -> tuple[int | None, bool]:
        docs = request_docs(self._settings, request.prompt_token_ids or (), request.kv_transfer_params, self._lossless)
        if docs is None:
            return 0, False
        own = (request.kv_transfer_params or {}).get(PARAMS_KEY, {}).get("recompute_last")
        segments = plan_load(docs, self._store.contains, self._settings.recompute_last if own is None else int(own))
        self._plans[request.request_id] = _Plan(docs, segments, num_computed_tokens)
        end = segments[-1].end if segments else 0
        return max(0, end - num_computed_tokens), False

    def update_state_after_alloc(self, request, blocks, num_external_tokens: int):
        plan = self._plans.get(request.request_id)
        if plan is not None:
            plan.external = num_external_tokens

    def build_connector_meta(self, scheduler_output) -> KVConnectorMetadata:
        meta = ChunkCacheMetadata()
        for new in scheduler_output.scheduled_new_reqs:
            plan = self._plans.get(new.req_id)
            if plan is None:
                continue
            plan.block_ids = list(new.block_ids[0])
            if plan.external:
                meta.loads.append(LoadRequest(new.req_id, plan.block_ids, plan.segments, plan.local, plan.local + plan.external))
            plan.saves = plan_save(plan.docs, plan.segments if plan.external else (), self._store.contains, plan.local)
            self._maybe_save(meta, plan, new.req_id, new.num_computed_tokens + scheduler_output.num_scheduled_tokens[new.req_id])
        cached = scheduler_output.scheduled_cached_reqs
        for i, req_id in enumerate(cached.req_ids):
            plan = self._plans.get(req_id)
            if plan is None or plan.saved:
                continue
            if cached.new_block_ids[i] is not None:
                plan.block_ids += list(cached.new_block_ids[i][0])
            self._maybe_save(meta, plan, req_id, cached.num_computed_tokens[i] + scheduler_output.num_scheduled_tokens.get(req_id, 0))
        return meta

    def _maybe_save(self, meta: ChunkCacheMetadata, plan: _Plan, req_id: str, computed_after_step: int) -> None:
        """Save once this step has computed every token the saved entries cover."""
        if plan.saves and not plan.saved and computed_after_step >= max(s.end for s in plan.saves):
            meta.saves.append(SaveRequest(req_id, list(plan.block_ids), plan.saves))
            plan.saved = True

    def request_finished(self, request, block_ids: list[int]) -> tuple[bool, dict[str, Any] | None]:
        plan = self._plans.pop(request.request_id, None)
        if plan is None:
            return False, None
        loaded = [s for s in plan.segments if s.end > plan.local] if plan.external else []
        summary = {"loaded_tokens": plan.external, "local_tokens": plan.local,
                   "documents": len(plan.docs.chunks),
                   "from_chain": sum(s.kind == "chain" for s in loaded), "from_chunk": sum(s.kind == "chunk" for s in loaded),
                   "prefix_loaded": any(s.kind == "prefix" for s in loaded),
                   "saved": [s.kind for s in plan.saves] if plan.saved else []}
        return False, {PARAMS_KEY: summary}

    # ---------------------------------------------------------------- worker side
    def register_kv_caches(self, kv_caches: dict[str, torch.Tensor]):
        for name, cache in kv_caches.items():
            m = _LAYER.search(name)
            if m is None:
                raise ValueError(f"cannot tell the layer index of KV cache {name!r}")
            self._caches[int(m.group(1))] = cache

    def start_load_kv(self, forward_context, **kwargs: Any) -> None:
        meta = self._get_connector_metadata()
        for load in meta.loads:
            self._load(load)

    def _load(self, load: LoadRequest) -> None:
        for seg in load.segments:
            a, b = max(seg.start, load.start), min(seg.end, load.end)
            if a >= b:
                continue
            payload = self._store.get_payload(seg.key)
            if payload is None:  # evicted or corrupt since the scheduler looked: vLLM recomputes from here
                self._stats.data["store_misses"] += 1
                blocks, _ = paged.slots(load.block_ids, self._block_size, a, load.end)
                self._failed_blocks.update(blocks.tolist())
                log.warning("chunkcache: entry for tokens %d-%d of %s is gone; vLLM recomputes them", a, b, load.req_id)
                return
            self._stats.data["store_hits"] += 1
            if seg.kind == "chunk":  # keys before RoPE: rotate them to the document's place
                positions = torch.arange(seg.start, seg.end)
                k, v = dequant_rope(payload.k, payload.k_scale, payload.v, payload.v_scale, positions, self._freqs, 1.0,
                                    payload.codec, self._dtype)  # [L, H, n, d] each
            else:  # prefix and chain entries hold keys rotated at these very positions
                kv = payload.decode(self._dtype)  # [L, 2, H, n, d]
                k, v = kv[:, 0], kv[:, 1]
            blocks, offsets = paged.slots(load.block_ids, self._block_size, a, b)
            lo, hi = a - seg.start, b - seg.start
            for layer, cache in self._caches.items():
                paged.write(cache, blocks, offsets, k[layer, :, lo:hi], v[layer, :, lo:hi])
            self._stats.data["tokens_loaded"] += b - a
            if seg.kind != "prefix":
                self._stats.data[f"documents_from_{seg.kind}"] += 1

    def wait_for_layer_load(self, layer_name: str) -> None:
        return  # start_load_kv wrote every layer before the forward

    def save_kv_layer(self, layer_name: str, kv_layer: torch.Tensor, attn_metadata, **kwargs: Any) -> None:
        return  # saved in wait_for_save, once every layer of the step is computed

    def wait_for_save(self):
        if not self.has_connector_metadata():
            return
        for save in self._get_connector_metadata().saves:
            self._save(save)

    def _save(self, save: SaveRequest) -> None:
        layers = sorted(self._caches)
        lossless, rotated, plain = CodecSpec(self._lossless), [], []
        for seg in save.segments:
            blocks, offsets = paged.slots(save.block_ids, self._block_size, seg.start, seg.end)
            kv = torch.stack([paged.read(self._caches[l], blocks, offsets, self._head_dim) for l in layers])  # [L, 2, H, n, d]
            if seg.kind == "chunk":  # a per-chunk entry keeps keys before RoPE
                kv = kv.float()
                kv[:, 0] = paged.unrotate(kv[:, 0], torch.arange(seg.start, seg.end), self._freqs)
                plain.append((seg.key, kv))
            else:
                rotated.append((seg.key, kv.contiguous()))
        stored = 0
        if rotated and self._store.offer_many(rotated, codec=lossless, rotated=True):
            stored += len(rotated)
        if plain and self._store.offer_many(plain):
            stored += len(plain)
        self._stats.data["entries_saved"] += stored

    def get_block_ids_with_load_errors(self) -> set[int]:
        failed, self._failed_blocks = self._failed_blocks, set()
        return failed

    def get_kv_connector_stats(self) -> KVConnectorStats | None:
        if self._stats.is_empty():
            return None
        out, self._stats = self._stats, ChunkCacheStats()
        return out

    @classmethod
    def build_kv_connector_stats(cls, data: dict[str, Any] | None = None) -> KVConnectorStats | None:
        return ChunkCacheStats(data=dict(data or {}))

    @classmethod
    def build_prom_metrics(cls, vllm_config, metric_types, labelnames, per_engine_labelvalues):
        return ChunkCachePromMetrics(vllm_config, metric_types, labelnames, per_engine_labelvalues)
