"""The service's one configuration: `ECAB_SERVE_*` environment variables, overridden by flags."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MB = 1024 * 1024
# Settings without a flag: the token (argv is visible to every local user) and what the
# `--workers` supervisor sets for each worker itself.
NOT_FLAGS = frozenset({"token", "state_dir", "worker_index"})


class ServeSettings(BaseSettings):
    """Validated once at start-up (env or `python -m serve` flags) and passed inward.

    Each field's description is its flag's help, and its default is shown after it: a
    description names a default only where the default is None (what None means).
    """

    model_config = SettingsConfigDict(env_prefix="ECAB_SERVE_", frozen=True, extra="forbid")

    model: str | None = Field(
        default=None,
        description="checkpoint folder, or an experiment folder (its best/ export is served)",
    )
    host: str = Field(
        default="127.0.0.1",
        description="interface to bind; 0.0.0.0 exposes the service to the network",
    )
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port (0: any free one)")
    device: str = Field(
        default="cpu",
        pattern=r"^(cpu|cuda(:\d+)?)$",
        description="torch device for inference: cpu, cuda or cuda:N",
    )
    threads: int | None = Field(
        default=None,
        ge=1,
        description="torch intra-op threads (default: all cores but one, which the event loop "
        "and image decoding need)",
    )
    max_batch: int = Field(default=32, ge=1, le=4096, description="most images per forward pass")
    max_wait_ms: float = Field(
        default=3.0,
        ge=0.0,
        le=1000.0,
        description="longest wait for requests already being decoded to join a batch",
    )
    max_images_per_request: int = Field(
        default=16, ge=1, le=1024, description="most images in one request"
    )
    max_body_bytes: int = Field(
        default=10 * MB, ge=1024, description="largest request body in bytes; larger gets 413"
    )
    max_pixels: int = Field(
        default=12_000_000,
        ge=1,
        description="largest image to decode, width × height (a JPEG counts at the size it "
        "decodes to: drafted toward the model's input); larger gets 413",
    )
    max_request_pixels: int = Field(
        default=48_000_000,
        ge=1,
        description="pixels decoded for one request, all images together; more gets 413",
    )
    max_decodes: int = Field(
        default=2,
        ge=1,
        le=256,
        description="images decoded at once per worker (each holds up to max_pixels × 4 bytes "
        "a few times over while it decodes): bounds decoding memory",
    )
    max_in_flight: int = Field(
        default=64,
        ge=1,
        description="requests a worker processes at once (their bodies received); beyond it "
        "503 with Retry-After",
    )
    read_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="longest wait for a request's headers, or for the next piece of its "
        "body; then 408 and the connection is closed",
    )
    request_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="deadline of a /predict request from its headers to its answer: 408 "
        "while the body is still arriving, else 504",
    )
    drain_s: float = Field(
        default=10.0,
        ge=0,
        le=600,
        description="on SIGTERM, how long requests in flight may take to finish",
    )
    top_k: int = Field(default=5, ge=1, description="classes returned when the query omits top_k")
    token: SecretStr | None = Field(
        default=None,
        description="bearer token: protects /predict when set; /reload is refused without one",
    )
    model_root: str | None = Field(
        default=None,
        description="/reload loads only checkpoints under this folder (relative paths are "
        "taken from it); default: the folder holding --model's experiment",
    )
    ray_gpus: float = Field(
        default=0.25,
        gt=0,
        le=1,
        description="share of a GPU each Ray Serve replica reserves with --device cuda: a "
        "small model needs a fraction, and fractions let replicas share a card",
    )
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="server processes, each with its own model copy and micro-batcher: one "
        "Python process is GIL-bound, so on CPU use about one per core",
    )
    state_dir: str | None = Field(
        default=None,
        description="set by --workers: the folder where workers share reloads and heartbeats",
    )
    worker_index: int | None = Field(
        default=None, description="set by --workers: this worker's slot, 0..workers-1"
    )

    @field_validator("token", mode="before")
    @classmethod
    def _blank_token_is_none(cls, value: object) -> object:
        # Compose writes `ECAB_SERVE_TOKEN: ${ECAB_SERVE_TOKEN:-}`: unset there means "no token",
        # not "the empty token", which no client could send.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("token")
    @classmethod
    def _token_a_header_can_carry(cls, value: SecretStr | None) -> SecretStr | None:
        # An Authorization header carries it: non-ASCII arrives as Latin-1 and the ends are
        # stripped, so such a token could never match and every request would get 401.
        text = value.get_secret_value() if value is not None else ""
        if not (text.isascii() and text.isprintable()) or text != text.strip():
            raise ValueError("must be printable ASCII, no spaces at its ends (a header sends it)")
        return value

    def inference_threads(self) -> int:
        # A forward whose threads compete with the event loop for every core is slower, per
        # request, than one that leaves the loop a core (measured: 9.1 vs 5.5 ms p50 on 2 cores).
        return self.threads or max(1, (os.cpu_count() or 2) // self.workers - 1)


@dataclass(frozen=True)
class RayOptions:
    """How `python -m serve --ray-replicas N` runs on Ray; replicas only ever see ServeSettings."""

    replicas: int
    address: str | None = None  # None: start an embedded Ray

    @classmethod
    def from_flags(
        cls, replicas: int | None, address: str | None, settings: ServeSettings
    ) -> RayOptions | None:
        """None without --ray-replicas; ValueError, in flag terms, for what Ray cannot serve."""
        if replicas is None:
            if address is not None:
                raise ValueError("--ray-address needs --ray-replicas N")
            return None
        if replicas < 1:
            raise ValueError(f"--ray-replicas={replicas} must be >= 1")
        if settings.model is None:
            # /reload would reach one replica only, so every replica must load the model itself.
            raise ValueError("--ray-replicas needs --model (or ECAB_SERVE_MODEL)")
        if settings.port == 0:
            raise ValueError("--ray-replicas needs a fixed --port: Ray Serve's proxy binds it")
        if settings.workers > 1:
            raise ValueError("--workers is for uvicorn; on Ray, --ray-replicas sets the processes")
        if re.fullmatch(r"cuda:[1-9]\d*", settings.device):
            raise ValueError(
                f"--device {settings.device}: each Ray replica sees only the GPU Ray gave it; "
                "use --device cuda"
            )
        return cls(replicas, address)
