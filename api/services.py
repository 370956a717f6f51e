"""What the routes of one app share: the facade, the settings, the model queues, jobs, metrics."""

from dataclasses import dataclass

from chunkcache.api.jobs import JobRunner
from chunkcache.api.metrics import ServiceMetrics
from chunkcache.api.settings import ServiceConfig
from chunkcache.api.work_queue import ModelQueue
from chunkcache.facade import ChunkCache


@dataclass(frozen=True)
class Services:
    cache: ChunkCache
    config: ServiceConfig
    queue: ModelQueue  # answers: generation work
    writes: ModelQueue  # document writes (embedding, index): their own lane, so queries cannot starve them
    jobs: JobRunner
    metrics: ServiceMetrics
    model_name: str
    created: int  # unix time the app was built; the OpenAI model card's `created`
