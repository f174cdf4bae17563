"""`--workers` agree on reloads through the reload board and report a failed follow."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from serve.settings import ServeSettings


def test_workers_agree_on_concurrent_reloads_and_report_a_failed_follow(
    ckpts, under_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers' services in one event loop, sharing a state folder as --workers do."""

    import serve.heartbeat
    import serve.service
    import serve.worker_sync
    from serve.metrics import Metrics
    from serve.service import Service

    monkeypatch.setattr(serve.worker_sync, "POLL_S", 0.05)
    # Beats 5x as often as a beat goes stale, as in the service (3x): with the real 1 s beat a
    # 0.5 s staleness made a worker's readiness depend on when in its beat it was read.
    monkeypatch.setattr(serve.heartbeat, "INTERVAL_S", 0.1)
    monkeypatch.setattr(serve.service, "STALE_S", 0.5)
    state = under_root / "state"
    state.mkdir()
    doomed = under_root / "doomed"
    shutil.copytree(ckpts["cbam_rgb"], doomed)

    def service(index: int) -> Service:
        return Service(
            ServeSettings(
                model=str(ckpts["cbam"]),
                workers=2,
                state_dir=str(state),
                worker_index=index,
                threads=1,
            ),
            Metrics(),
        )

    async def settle(*services: Service) -> None:
        for _ in range(200):
            behind = [s.sync.behind(s.generation) for s in services]
            if all(n is None or n == s.sync.failed for n, s in zip(behind, services, strict=True)):
                return
            await asyncio.sleep(0.05)

    async def scenario() -> None:
        a, b = service(0), service(1)
        await a.start()
        await b.start()
        try:
            # Reloads arriving at both workers at once run one after another, numbered 1, 2.
            infos = await asyncio.gather(
                a.reload(str(ckpts["ecab"])), b.reload(str(ckpts["bridge_rgb"]))
            )
            assert sorted(i.generation for i in infos) == [1, 2]
            await settle(a, b)
            last = max(infos, key=lambda i: i.generation)
            assert a.generation == b.generation == 2
            assert a.handle.path == b.handle.path == Path(last.path)
            assert a.readiness().status == b.readiness().status == "ready"
            # Every worker's generation, from their heartbeats.
            await asyncio.sleep(1.2)
            assert [(w.index, w.generation, w.ready) for w in a.readiness().workers] == [
                (0, 2, True),
                (1, 2, True),
            ]
            # A reload the other worker cannot follow: it keeps serving, but is not ready.
            await a.reload(str(doomed))
            shutil.rmtree(doomed)
            await settle(b)
            assert b.generation == 2 and b.handle.path == Path(last.path)
            ready = b.readiness()
            assert ready.status == "not ready" and "reload 3" in ready.reason
            assert "failed" in ready.reason and a.readiness().status == "ready"
            # The next good reload brings it back.
            await a.reload(str(ckpts["cbam"]))
            await settle(b)
            assert b.generation == 4 and b.readiness().status == "ready"
            # A worker whose heartbeat stopped (it died or hangs) is listed as not ready.
            await b.sync.stop()
            await asyncio.sleep(0.6)
            assert [w.ready for w in a.readiness().workers] == [True, False]
        finally:
            await a.stop()
            await b.stop()

    asyncio.run(scenario())
