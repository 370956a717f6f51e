"""The one configuration object of a ChunkCache, built once at the edge (CLI, app, caller)."""

from dataclasses import dataclass, field

from chunkcache.errors import ConfigError
from chunkcache.prompt import PromptConfig

CODECS = ("fp16", "bf16", "int8", "int4")
DEVIATIONS = ("v", "k", "vattn")


@dataclass(frozen=True)
class BlendConfig:
    """Defaults of CacheBlend-style selective recompute.

    check_layer: layers 0..check_layer recompute every context token; the deviation measured at
    check_layer picks the tokens that go on. deviation_of: compare fresh and cached "v" or "k",
    or "vattn" (V deviation times the question's attention to the token).
    sink_tokens: the first k tokens of every chunk always recomputed (EPIC-style), counted
    against the budget. adaptive_coverage: if set, recompute the fewest tokens that cover this
    share of the total deviation (never more than the ratio given).
    """

    recompute_ratio: float = 0.15
    check_layer: int = 1
    # V deviation weighted by the question's attention at the check layer: best fidelity at
    # r = 0.15 in scripts/bench_selection.py (fidelity 0.794 vs 0.747 for plain V, first-token KL
    # 0.151 vs 0.170, first 10 2WikiMQA examples, 16-token answers).
    deviation_of: str = "vattn"
    sink_tokens: int = 0
    adaptive_coverage: float | None = None
    ape_temperature: float = 0.9
    ape_scale: float = 0.9

    def __post_init__(self):
        if not 0.0 <= self.recompute_ratio <= 1.0:
            raise ConfigError(f"recompute_ratio must be in [0, 1], got {self.recompute_ratio}")
        if self.check_layer < 0:
            raise ConfigError(f"check_layer must be >= 0, got {self.check_layer}")
        if self.deviation_of not in DEVIATIONS:
            raise ConfigError(f"deviation_of must be one of {DEVIATIONS}, got {self.deviation_of!r}")
        if self.sink_tokens < 0:
            raise ConfigError(f"sink_tokens must be >= 0, got {self.sink_tokens}")
        if self.adaptive_coverage is not None and not 0.0 < self.adaptive_coverage <= 1.0:
            raise ConfigError(f"adaptive_coverage must be in (0, 1] or None, got {self.adaptive_coverage}")
        if not (0.0 < self.ape_temperature <= 2.0 and 0.0 < self.ape_scale <= 2.0):
            raise ConfigError(f"ape_temperature and ape_scale must be in (0, 2], got {self.ape_temperature}, {self.ape_scale}")


@dataclass(frozen=True)
class CacheConfig:
    """Everything a ChunkCache needs.

    store_dir: where the converted model, the KV store and the document index live.
    model: None/"default" (SmolLM2-135M-Instruct), a local HF checkpoint dir, or a .gguf file.
    codec / zstd_level: how chunk KV is stored; memory_bytes / disk_bytes: tier budgets.
    """

    store_dir: str
    model: str | None = None
    prompt: PromptConfig = field(default_factory=PromptConfig)
    blend: BlendConfig = field(default_factory=BlendConfig)
    codec: str = "fp16"
    # zstd saves under 10% on fp16/int8 KV and slows loads 2-3x; worth it for bf16 and int4.
    zstd_level: int | None = None
    memory_bytes: int = 512 * 2**20
    disk_bytes: int | None = None
    persist: bool = True
    # Packed warm-up attends densely across the batch; past ~512 tokens the wasted attention
    # outgrows the gain (6.1 chunks/s at 512 vs 4.4 at 2048 on 2 cores).
    warm_batch_tokens: int = 512
    max_new_tokens_limit: int = 1024

    def __post_init__(self):
        if not isinstance(self.store_dir, str) or not self.store_dir:
            raise ConfigError(f"store_dir must be a non-empty path string, got {self.store_dir!r}")
        if self.codec not in CODECS:
            raise ConfigError(f"codec must be one of {CODECS}, got {self.codec!r}")
        if self.zstd_level is not None and not 1 <= self.zstd_level <= 22:
            raise ConfigError(f"zstd_level must be in 1..22 or None, got {self.zstd_level}")
        if self.memory_bytes < 0 or (self.disk_bytes is not None and self.disk_bytes <= 0):
            raise ConfigError(f"memory_bytes must be >= 0 and disk_bytes > 0, got {self.memory_bytes}, {self.disk_bytes}")
        if self.warm_batch_tokens < 1:
            raise ConfigError(f"warm_batch_tokens must be >= 1, got {self.warm_batch_tokens}")
