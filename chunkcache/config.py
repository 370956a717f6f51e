"""The one configuration object of a ChunkCache, built once at the edge (CLI, app, caller)."""

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from chunkcache.errors import ConfigError, check_int
from chunkcache.names import (CODECS, DEFAULT_CODEC, DEFAULT_EVICTION, DEFAULT_MEMORY_BYTES, DEFAULT_TOKEN_BUDGET,
                              DEFAULT_WORKING_CACHE_BYTES, DEFAULT_ZSTD_LEVEL, EVICTIONS)
from chunkcache.prompt import PromptConfig

if TYPE_CHECKING:  # importing chunkcache.storage pulls in torch; config stays light
    from chunkcache.storage.redis_config import RedisConfig

# Where the model and every tensor of a request live ("cuda:N" picks a GPU), and the model's
# (and working cache's) dtype. RoPE angles, scores and logits stay float32 whatever the dtype.
DEVICES = ("cpu", "cuda")
DEVICE_PATTERN = re.compile(r"cpu|cuda(:[0-9]+)?")
DTYPES = ("float32", "bfloat16", "float16")
# Selections a service may use; "oracle" (true deviation from a full prefill) is a diagnostic
# that costs more than the full prefill it is compared with, so it is accepted only by eval.
DEVIATIONS = ("probe", "vattn", "v", "k")
DIAGNOSTIC_DEVIATIONS = ("oracle",)


def _lever(default, help_text: str, **extra):
    """A BlendConfig field whose meaning is written once: in its `help` metadata (the CLI's flags
    are generated from `dataclasses.fields(BlendConfig)` and show it)."""
    return field(default=default, metadata={"help": help_text, **extra})


@dataclass(frozen=True)
class BlendConfig:
    """Selective recompute (CacheBlend and its extensions, recompute.py) and APE's two knobs.

    The one definition of every blend lever and its default: a request carries a BlendConfig
    (`Request.blend`), its plan is derived from it (`recompute.BlendPlan`), the CLI's flags are
    generated from its fields. Each field's meaning is its `help` metadata. A ratio of 0 is plain
    reuse: no probe, growth or repair.
    """

    recompute_ratio: float = _lever(0.15, "blend: share of the context tokens recomputed (per request: recompute_ratio)")
    check_layer: int = _lever(1, "v/k/vattn: layers 0..N recompute every token, the deviation is measured at N")
    deviation_of: str = _lever(
        "probe", "how blend picks the context tokens to recompute: probe = the question's attention in layers "
        "[probe_from*L, L) after one pass of the question over the re-positioned cache; vattn / v / k = CacheBlend's "
        "fresh-vs-cached V deviation (weighted by the question's attention) / V / K deviation at check_layer",
        choices=DEVIATIONS)
    probe_from: float = _lever(1 / 3, "probe: sum the question's attention over layers [F*L, L)")
    full_layers: int = _lever(0, "probe: leading layers that still recompute every context token (0 = none)")
    gradual_start: float = _lever(
        1.0, "gradual filtering: the first recomputed layer's budget as a multiple of the ratio, shrinking linearly to "
        "(2 - x) at the last layer (same compute), survivors re-scored by each layer's question attention; 1 = a fixed budget")
    span_window: int = _lever(
        0, "average the token scores over this many neighbours within a passage, so recomputed tokens come in runs; 0 = off")
    sink_tokens: int = _lever(0, "always recompute the first k tokens of every chunk (EPIC-style), counted against the budget")
    adaptive_coverage: float | None = _lever(
        None, "recompute the fewest tokens that cover this share of the total score, never more than the ratio; off when unset")
    grow_tolerance: float | None = _lever(
        None, "per-query ratio: before the first token, recompute grow_step more of the context until the first token's "
        "distribution moves less than this KL (nats) between two budgets, or grow_max_ratio is reached (the extra time "
        "is in TTFT); off when unset")
    grow_step: float = _lever(0.05, "growth: share of the context added per step")
    grow_max_ratio: float = _lever(0.5, "growth: ceiling of the grown ratio")
    # Repair while decoding is off by default: on 30 2WikiMQA examples 10% of the context repaired
    # in the first decode step kept only 0.70 of blend's TTFT saving at the end of a 32-token
    # answer (the goal is 0.75) and did not raise fidelity (0.666 vs 0.675); README, "Repair while
    # decoding: the trade". One step when it is on, because every repair step also recomputes the
    # question and the answer so far. The budget is a share of the context because the time it
    # may take is: what blend saves before the first token grows with the context.
    repair_ratio: float = _lever(
        0.0, "repair while decoding: share of the blended context recomputed during the first decode steps, spread "
        "evenly over repair_steps, the question and the answer so far refreshed at each (costs decode time, never TTFT); 0 = off")
    repair_steps: int = _lever(1, "repair while decoding: how many of the first decode steps repair")
    ape_temperature: float = _lever(0.9, "APE: temperature T on the question's attention logits over the contexts")
    ape_scale: float = _lever(0.9, "APE: scale S on the contexts' attention weight")

    def __post_init__(self):
        if not 0.0 <= self.recompute_ratio <= 1.0:
            raise ConfigError(f"recompute_ratio must be in [0, 1], got {self.recompute_ratio}")
        if self.check_layer < 0:
            raise ConfigError(f"check_layer must be >= 0, got {self.check_layer}")
        if self.deviation_of not in DEVIATIONS + DIAGNOSTIC_DEVIATIONS:
            raise ConfigError(f"deviation_of must be one of {DEVIATIONS}, got {self.deviation_of!r}")
        if not 0.0 <= self.probe_from < 1.0:
            raise ConfigError(f"probe_from must be in [0, 1), got {self.probe_from}")
        if self.full_layers < 0:
            raise ConfigError(f"full_layers must be >= 0, got {self.full_layers}")
        if not 1.0 <= self.gradual_start <= 2.0:
            raise ConfigError(f"gradual_start must be in [1, 2] (1 = fixed budget), got {self.gradual_start}")
        if self.span_window < 0:
            raise ConfigError(f"span_window must be >= 0, got {self.span_window}")
        if self.grow_tolerance is not None and self.grow_tolerance <= 0:
            raise ConfigError(f"grow_tolerance must be > 0 or None, got {self.grow_tolerance}")
        if not 0.0 < self.grow_step <= 1.0 or not 0.0 <= self.grow_max_ratio <= 1.0:
            raise ConfigError(f"grow_step must be in (0, 1] and grow_max_ratio in [0, 1], got {self.grow_step}, {self.grow_max_ratio}")
        if not 0.0 <= self.repair_ratio <= 1.0 or self.repair_steps < 0:
            raise ConfigError(f"repair_ratio must be in [0, 1] and repair_steps >= 0, got {self.repair_ratio}, {self.repair_steps}")
        if self.sink_tokens < 0:
            raise ConfigError(f"sink_tokens must be >= 0, got {self.sink_tokens}")
        if self.adaptive_coverage is not None and not 0.0 < self.adaptive_coverage <= 1.0:
            raise ConfigError(f"adaptive_coverage must be in (0, 1] or None, got {self.adaptive_coverage}")
        if not (0.0 < self.ape_temperature <= 2.0 and 0.0 < self.ape_scale <= 2.0):
            raise ConfigError(f"ape_temperature and ape_scale must be in (0, 2], got {self.ape_temperature}, {self.ape_scale}")


@dataclass(frozen=True)
class RefineConfig:
    """Idle-time refinement (`refiner.py`): while nothing waits, full-prefill the contexts that
    were recently answered inexactly (most requested first) and store their chain entries, so
    their next answer is exact.

    enabled: off in the library by default (`chunkcache serve` turns it on). idle_s: nothing
    has waited or run for this long before work starts. idle_share: the share of idle time it
    may use (after t seconds of work it rests t * (1 - share) / share). max_bytes: chain-entry
    bytes it may write in the process's life (None = no cap). max_pending: contexts remembered
    (the least requested are forgotten first).
    """

    enabled: bool = False
    idle_s: float = 0.05
    idle_share: float = 0.8
    max_bytes: int | None = None
    max_pending: int = 1024

    def __post_init__(self):
        if self.idle_s < 0 or not 0.0 < self.idle_share <= 1.0:
            raise ConfigError(f"idle_s must be >= 0 and idle_share in (0, 1], got {self.idle_s}, {self.idle_share}")
        if self.max_bytes is not None and self.max_bytes < 0:
            raise ConfigError(f"max_bytes must be >= 0 or None, got {self.max_bytes}")
        if self.max_pending < 1:
            raise ConfigError(f"max_pending must be >= 1, got {self.max_pending}")


@dataclass(frozen=True)
class CacheConfig:
    """Everything a ChunkCache needs.

    store_dir: where the converted model, the KV store and the document index live.
    model: None/"default" (SmolLM2-135M-Instruct), a local HF checkpoint dir, or a .gguf file.
    codec / zstd_level: how chunk KV is stored; memory_bytes / disk_bytes: tier budgets (chain
    entries and per-chunk entries share them); eviction: the disk tier's policy.
    device: "cpu", "cuda" or "cuda:N"; dtype: one of DTYPES (the model's weights, activations and
    working cache). redis: a KV tier shared by replicas, below memory and disk (None = none).
    chain_entries: full and prefix answers store each chunk's exact in-context KV (`chain.py`),
    and reuse / blend / prefix answers load the longest stored leading run exactly.
    refine: idle-time refinement of inexact contexts (see RefineConfig).
    """

    store_dir: str
    model: str | None = None
    prompt: PromptConfig = field(default_factory=PromptConfig)
    blend: BlendConfig = field(default_factory=BlendConfig)
    codec: str = DEFAULT_CODEC
    zstd_level: int | None = DEFAULT_ZSTD_LEVEL  # names.py says why it is off
    memory_bytes: int = DEFAULT_MEMORY_BYTES
    disk_bytes: int | None = None
    # Disk eviction under disk_bytes: "lfu" keeps the most reused entries (a chain entry of a
    # popular context, a passage many questions retrieve), ties broken by recency.
    eviction: str = DEFAULT_EVICTION
    persist: bool = True
    # Packed warm-up attends densely across the batch; past ~512 tokens the wasted attention
    # outgrows the gain (6.1 chunks/s at 512 vs 4.4 at 2048 on 2 cores).
    warm_batch_tokens: int = 512
    max_new_tokens_limit: int = 1024
    max_batch: int = 16  # requests decoded together in one forward (continuous batching)
    # Rows per scheduler step: the running decodes, then prompt work in pieces (scheduler.py).
    token_budget: int = DEFAULT_TOKEN_BUDGET
    # Working caches of the requests running at once; a request waits for its share (at least
    # one request of the model's whole context window always fits).
    working_cache_bytes: int = DEFAULT_WORKING_CACHE_BYTES
    device: str = "cpu"
    dtype: str = "float32"
    redis: "RedisConfig | None" = None
    chain_entries: bool = True
    refine: RefineConfig = field(default_factory=RefineConfig)

    def __post_init__(self):
        if self.redis is not None:
            from chunkcache.storage.redis_config import RedisConfig

            if not isinstance(self.redis, RedisConfig):
                raise ConfigError(f"redis must be a RedisConfig or None, got {type(self.redis).__name__}")
        if not isinstance(self.store_dir, str) or not self.store_dir:
            raise ConfigError(f"store_dir must be a non-empty path string, got {self.store_dir!r}")
        if self.codec not in CODECS:
            raise ConfigError(f"codec must be one of {CODECS}, got {self.codec!r}")
        if self.zstd_level is not None and not 1 <= self.zstd_level <= 22:
            raise ConfigError(f"zstd_level must be in 1..22 or None, got {self.zstd_level}")
        if self.memory_bytes < 0 or (self.disk_bytes is not None and self.disk_bytes <= 0):
            raise ConfigError(f"memory_bytes must be >= 0 and disk_bytes > 0, got {self.memory_bytes}, {self.disk_bytes}")
        if not isinstance(self.max_batch, int) or isinstance(self.max_batch, bool) or not 1 <= self.max_batch <= 256:
            raise ConfigError(f"max_batch must be an integer in [1, 256], got {self.max_batch!r}")
        check_int("token_budget", self.token_budget, 1)
        check_int("working_cache_bytes", self.working_cache_bytes, 1)
        if self.warm_batch_tokens < 1:
            raise ConfigError(f"warm_batch_tokens must be >= 1, got {self.warm_batch_tokens}")
        if self.eviction not in EVICTIONS:
            raise ConfigError(f"eviction must be one of {EVICTIONS}, got {self.eviction!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if not isinstance(self.device, str) or not DEVICE_PATTERN.fullmatch(self.device):
            raise ConfigError(f"device must be one of {DEVICES} or 'cuda:N', got {self.device!r}")
        if self.device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise ConfigError(f"device {self.device!r} requested but CUDA is not available on this machine "
                                  "(torch.cuda.is_available() is False); use device='cpu'")
            index, count = int(self.device.partition(":")[2] or 0), torch.cuda.device_count()
            if index >= count:
                raise ConfigError(f"device {self.device!r} requested but this machine has {count} CUDA device(s)")

    @property
    def torch_dtype(self):
        """The torch dtype named by `dtype`."""
        import torch

        return getattr(torch, self.dtype)
