"""Ray start-up shared by the search and the study: join a cluster, or start one embedded."""

from __future__ import annotations


def check_resources(cpus: float, gpus: float) -> None:
    """What one trial or job may ask of Ray; fractions of a GPU share it."""
    if cpus <= 0:
        raise ValueError(f"--cpus-per-trial={cpus} must be > 0")
    if not 0 <= gpus <= 1:
        # A trial trains on one device (no multi-GPU training yet): a second GPU would idle.
        raise ValueError(
            f"--gpus-per-trial={gpus} must be in [0, 1]: a trial trains on one GPU; "
            "fractions share one (0.25: four trials per GPU)"
        )


def start_ray(address: str | None, dashboard: bool, tag: str) -> None:
    """Join `address` ('auto', 'host:6379', 'ray://host:10001'), or start Ray in-process."""
    import ray

    if ray.is_initialized():
        return
    if address is not None:
        ray.init(address=address)
        print(f"[{tag}] joined the Ray cluster at {address}", flush=True)
        return
    # "local": a new instance; None would join whatever cluster `ray start` last made here.
    context = ray.init(address="local", include_dashboard=dashboard, dashboard_host="127.0.0.1")
    resources = ray.cluster_resources()
    print(
        f"[{tag}] embedded Ray: {resources.get('CPU', 0):.0f} CPUs, "
        f"{resources.get('GPU', 0):.0f} GPUs",
        flush=True,
    )
    if dashboard and context.dashboard_url:
        print(
            f"[{tag}] Ray dashboard: http://{context.dashboard_url} "
            "(token auth on: `ray get-auth-token` prints the token)",
            flush=True,
        )
