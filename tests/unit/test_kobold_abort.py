"""An aborted Kobold generation ends its engine job and gives the model back (tiny model)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from common.auth import Authenticator
from common.config import ServalConfig
from common.model import ModelContainer
from endpoints.Kobold.jobs import JobRegistry, owner_of
from endpoints.Kobold.plan import KoboldPlan
from endpoints.Kobold.types.generation import GenerateRequest
from endpoints.state import ServerState


def test_abort_cancels_the_engine_job(tiny_models: Path) -> None:
    async def scenario() -> None:
        config = ServalConfig.model_validate({"model": {"model_dir": str(tiny_models)}})
        container = ModelContainer(config)
        state = ServerState(config=config, auth=Authenticator(None), container=container)
        async for _ in container.load(container.plan_load("tiny-a")):
            pass
        engine = container.engine
        assert engine is not None
        try:
            body = GenerateRequest.model_validate(
                {"prompt": "The", "max_length": 400, "use_default_badwordsids": True}
            )
            lease = await container.acquire()
            plan = KoboldPlan(body, lease, state, stream=True)
            job = JobRegistry().open(owner_of("k"), "g", 1, stream=True)
            job.start(plan.chunks(await plan.jobs("req")), on_end=lease.release)
            updates = job.updates()
            for _ in range(3):
                await anext(updates)
            assert engine.active_jobs == 1
            assert await job.abort()
            for _ in range(100):  # the worker drops the job at its next step
                if engine.active_jobs == 0 and engine.queued_jobs == 0:
                    break
                await asyncio.sleep(0.02)
            assert (engine.active_jobs, engine.queued_jobs) == (0, 0)
            assert 3 <= len(job.completions[0].token_ids) < 400

            # The lease is back: a load, which waits for running requests, goes ahead.
            async def switch() -> None:
                async for _ in container.load(container.plan_load("tiny-b")):
                    pass

            await asyncio.wait_for(switch(), timeout=30)
            assert container.name == "tiny-b"
        finally:
            if container.engine is not None:
                await container.unload()

    asyncio.run(scenario())
