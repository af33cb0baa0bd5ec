"""What the routes share: the config, the keys, the loaded models and the sampler presets."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from common.auth import Authenticator
from common.config import ServalConfig
from common.embeddings import EmbeddingContainer
from common.metrics import Metrics
from common.model import ModelContainer
from common.response_store import ResponseStore
from common.sampling import OverrideState
from endpoints.OAI.types.responses import StoredResponse


@dataclass
class ServerState:
    config: ServalConfig
    auth: Authenticator
    container: ModelContainer
    overrides: OverrideState = field(default_factory=OverrideState)
    started_at: float = field(default_factory=time.time)
    background_tasks: set[asyncio.Task] = field(default_factory=set)
    embeddings: EmbeddingContainer = field(init=False)
    responses: ResponseStore[StoredResponse] = field(init=False)

    def __post_init__(self) -> None:
        self.embeddings = EmbeddingContainer(self.config.embeddings)
        limits = self.config.limits
        self.responses = ResponseStore(limits.responses_stored, limits.responses_ttl)

    @property
    def metrics(self) -> Metrics:
        return self.container.metrics
