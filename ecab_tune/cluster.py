"""Ray start-up shared by the search, the study and the service: join a cluster, or start one
embedded.

Joining is one place because Ray's own failures are slow and cryptic: a Ray client without
`RAY_AUTH_MODE=token` never sends its token and retries for 30 s, a GCS address retries for
20 s, and both end in a traceback. So a join first asks the cluster a bounded gRPC question
(twice when it wants a token that Ray would not send), turns token auth on when the cluster
wants it and a token is known, and says in one line what is wrong. The private Ray pieces it
relies on (tested against Ray 2.60) stay in this module.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

PROBE_TIMEOUT_S = 5.0  # one gRPC call; a join that fails says so well within 15 s
CLIENT_PORT, GCS_PORT = 10001, 6379  # what `ray start --head` listens on by default
AUTH_MODE = "RAY_AUTH_MODE"


class ClusterJoinError(ConnectionError):
    """Joining a Ray cluster failed; the message is one line: the address and the likely cause."""


def netloc(host: str, port: int) -> str:
    """`host:port` as a URL writes it: an IPv6 host is bracketed (`[::1]:8080`)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_resources(cpus: float, gpus: float) -> None:
    """What one trial or job may ask of Ray; fractions of a GPU share it."""
    if not (0 < cpus < math.inf):  # Ray takes nan and inf, then never schedules the trial
        raise ValueError(f"--cpus-per-trial={cpus} must be > 0 and finite")
    if not 0 <= gpus <= 1:
        # A trial trains on one device (no multi-GPU training yet): a second GPU would idle.
        raise ValueError(
            f"--gpus-per-trial={gpus} must be in [0, 1]: a trial trains on one GPU; "
            "fractions share one (0.25: four trials per GPU)"
        )


def start_ray(address: str | None, dashboard: bool, tag: str) -> None:
    """Join `address` ('auto', 'host:6379', 'ray://host:10001'), or start Ray in-process.

    Raises ClusterJoinError (one line) when the cluster cannot be joined.
    """
    import ray

    if ray.is_initialized():
        return
    if address is not None:
        join_cluster(address)
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


def auth_token() -> tuple[str, str] | None:
    """The token Ray would send, and where it came from, in Ray's order of precedence:
    RAY_AUTH_TOKEN, the file RAY_AUTH_TOKEN_PATH names, ~/.ray/auth_token."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return os.environ["RAY_AUTH_TOKEN"].strip(), "RAY_AUTH_TOKEN"
    named = os.environ.get("RAY_AUTH_TOKEN_PATH")
    path = Path(named) if named else Path.home() / ".ray" / "auth_token"
    try:
        token = path.read_text().strip()
    except OSError:
        if named:  # Ray aborts on an unreadable RAY_AUTH_TOKEN_PATH rather than fall back
            raise ClusterJoinError(f"RAY_AUTH_TOKEN_PATH={named} cannot be read") from None
        return None
    return (token, str(path)) if token else None


def join_cluster(address: str) -> None:
    """Connect this process to the cluster at `address`, or raise ClusterJoinError."""
    import ray

    where = f"the Ray cluster at {address}"
    named = os.environ.get("RAY_ADDRESS", "").strip()
    if address == "auto" and named:
        # As in ray.init("auto"): RAY_ADDRESS names the cluster, a ray:// one through the client.
        address, where = named, f"{where} (RAY_ADDRESS={named})"
    client = address.startswith("ray://")
    target = address.removeprefix("ray://") if client else _gcs_address(address, where)
    if client and not target.rpartition(":")[2].isdigit():
        raise ClusterJoinError(
            f"cannot join {where}: ray:// needs the head's client port (ray://HOST:{CLIENT_PORT})"
        )
    if target != address.removeprefix("ray://"):
        where += f" ({target})"
    _authenticate(target, client, where)
    for attempt in (1, 2):
        try:
            ray.init(address=address)
            return
        except Exception as exc:  # every failure to join becomes one line
            # The cluster accepted us but its client server failed to start our session (seen
            # under load: "Starting Ray client server failed"); a new session usually starts.
            if attempt == 1 and client and isinstance(exc, ConnectionAbortedError):
                print(f"cannot join {where} yet: {_cause(exc)}; trying again", file=sys.stderr)
                continue
            raise ClusterJoinError(f"cannot join {where}: {_cause(exc)}") from None


def _gcs_address(address: str, where: str) -> str:
    """host:port of the GCS that `address` ('auto' or host:port) names."""
    from ray._private.services import canonicalize_bootstrap_address

    try:
        found = canonicalize_bootstrap_address(address)
    except ConnectionError:
        found = None
    except ValueError:
        raise ClusterJoinError(
            f"cannot join {where}: not a Ray address (use auto, HOST:{GCS_PORT} or "
            f"ray://HOST:{CLIENT_PORT})"
        ) from None
    if not found:
        raise ClusterJoinError(
            f"cannot join {where}: no Ray cluster is running on this machine (start one with "
            "`ray start --head`, or name it: --address HOST:6379 or ray://HEAD:10001)"
        )
    return found


def _authenticate(target: str, client: bool, where: str) -> None:
    """Ask the cluster once as this process's Ray would; if it wants a token Ray would not send,
    turn token auth on and ask again with the known one."""
    try:
        token = auth_token()
    except ClusterJoinError as exc:
        raise ClusterJoinError(f"cannot join {where}: {exc}") from None
    mode = os.environ.get(AUTH_MODE, "").lower()
    sent = token if mode == "token" else None  # an explicit RAY_AUTH_MODE is respected
    status = _probe(target, client, sent, where)
    if status == "ok":
        return
    if token is None:
        raise ClusterJoinError(
            f"cannot join {where}: it requires a token and none is set (export RAY_AUTH_TOKEN, "
            "or write it to ~/.ray/auth_token; `ray get-auth-token` on the head prints it)"
        )
    if sent is None and not mode:
        _enable_token_auth()
        if _probe(target, client, token, where) == "ok":
            return
    if mode and mode != "token":
        cause = f"it requires a token, and RAY_AUTH_MODE={mode} keeps the one in {token[1]} unsent"
    else:
        cause = (
            f"it rejected the token from {token[1]} (the cluster was started with another one; "
            "`ray get-auth-token` on the head prints it)"
        )
    raise ClusterJoinError(f"cannot join {where}: {cause}")


def _probe(target: str, client: bool, token: tuple[str, str] | None, where: str) -> str:
    """'ok' or 'unauthenticated'; any other answer raises ClusterJoinError."""
    import grpc
    from ray.core.generated import (
        gcs_service_pb2,
        gcs_service_pb2_grpc,
        ray_client_pb2,
        ray_client_pb2_grpc,
    )

    metadata = [("authorization", f"Bearer {token[0]}")] if token else []
    with grpc.insecure_channel(target) as channel:
        try:
            if client:
                ray_client_pb2_grpc.RayletDriverStub(channel).ClusterInfo(
                    ray_client_pb2.ClusterInfoRequest(type=ray_client_pb2.ClusterInfoType.PING),
                    timeout=PROBE_TIMEOUT_S,
                    metadata=metadata,
                )
            else:
                gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetClusterId(
                    gcs_service_pb2.GetClusterIdRequest(),
                    timeout=PROBE_TIMEOUT_S,
                    metadata=metadata,
                )
            return "ok"
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details() or ""
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return "unauthenticated"
    port, other = ("client", "GCS") if client else ("GCS", "client")
    default = CLIENT_PORT if client else GCS_PORT
    if code == grpc.StatusCode.UNAVAILABLE and "resolv" in details.lower():
        cause = f"the host {target.rpartition(':')[0]} is not known (the name does not resolve)"
    elif code == grpc.StatusCode.UNAVAILABLE:
        cause = f"nothing answers at {target} (is the cluster up? the head's {port} port is "
        cause += f"{default} unless `ray start` was given another)"
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
        cause = f"no answer from {target} within {PROBE_TIMEOUT_S:.0f} s (wrong host? a firewall?)"
    elif code == grpc.StatusCode.UNIMPLEMENTED:
        cause = (
            f"{target} is not the head's Ray {port} port (ray://HOST:{CLIENT_PORT} takes the "
            f"client port, auto or HOST:{GCS_PORT} the GCS port; is this the {other} port?)"
        )
    else:
        cause = f"{target} answered {code.name}"
    raise ClusterJoinError(f"cannot join {where}: {cause}")


def _enable_token_auth() -> None:
    """Make this process's Ray send its token, as `ray.init("auto")` does when it finds one;
    Ray's client and an explicit GCS address otherwise connect without it."""
    from ray._raylet import AuthenticationTokenLoader, Config

    os.environ[AUTH_MODE] = "token"
    Config.initialize("")  # Ray caches its config: re-read RAY_AUTH_MODE
    AuthenticationTokenLoader.instance().reset_cache()


def _cause(exc: BaseException) -> str:
    """The one line that explains a failed ray.init: the innermost message, version mismatch
    condensed."""
    chain = [exc]
    while (chain[-1].__cause__ or chain[-1].__context__) not in (None, *chain):
        chain.append(chain[-1].__cause__ or chain[-1].__context__)
    for err in chain:
        text = str(err)
        if "Version mismatch" in text:
            return _version_mismatch(text)
    lines = [line.strip() for line in str(chain[-1]).splitlines() if line.strip()]
    if len(lines) > 1:  # e.g. "Initialization failure from server:" and the server's traceback
        return f"{lines[0].rstrip(':')}: {lines[-1]}"
    return lines[0] if lines else type(chain[-1]).__name__


def _version_mismatch(text: str) -> str:
    # Ray's text: "The cluster was started with: Ray: A Python: B This process ... Ray: C ..."
    values = [line.split(":", 1)[1].strip() for line in text.splitlines() if ":" in line]
    versions = [v for v in values if v and v[0].isdigit()]
    if len(versions) == 4:
        return (
            f"version mismatch: the cluster runs Ray {versions[0]} on Python {versions[1]}, "
            f"this process Ray {versions[2]} on Python {versions[3]} (install the same versions)"
        )
    return "version mismatch: " + " ".join(text.split())
