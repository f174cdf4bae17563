"""Pydantic models of every request and response body (they are also the OpenAPI docs)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Requests -------------------------------------------------------------------------------------


class PredictJSON(_Strict):
    """`POST /predict` as JSON (the alternative to a multipart upload in the field `files`)."""

    images: list[Annotated[str, Field(min_length=1)]] = Field(
        min_length=1,
        description="base64-encoded image files (PNG, JPEG, WebP, BMP, GIF), plain or as "
        "data: URLs",
        examples=[
            [
                "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg=="
            ]
        ],
    )


class PredictQuery(_Strict):
    """The query of `POST /predict`."""

    top_k: int | None = Field(
        default=None, ge=1, description="classes per image (default 5, at most all)"
    )
    attention: bool = Field(
        default=True, description="include the weights of every attention module"
    )
    cam: bool = Field(
        default=False,
        description="include a Grad-CAM map of the top-1 class on the last stage (costs one "
        "backward pass)",
    )


class ReloadRequest(_Strict):
    path: str | None = Field(
        default=None,
        description="checkpoint or experiment folder to serve next; omitted: re-read the current "
        "one (an experiment folder's best/ may have changed)",
    )


# Responses ------------------------------------------------------------------------------------


class Error(BaseModel):
    detail: str = Field(description="what was wrong, in the client's terms")


class ClassScore(BaseModel):
    label: str
    index: int
    probability: float


class AttentionWeights(BaseModel):
    channel: list[float] | None = Field(
        default=None, description="per-channel gate of the module (one weight per channel)"
    )
    spatial: list[list[float]] | None = Field(
        default=None, description="CBAM's spatial map, H×W rows"
    )
    sources: dict[str, float] | None = Field(
        default=None,
        description="bridge gates: each source layer's share of the fused vector (sums to 1)",
    )


class ImagePrediction(BaseModel):
    name: str = Field(description="the upload's file name, or images[i] for JSON")
    top: list[ClassScore] = Field(description="the top-k classes, most probable first")
    attention: dict[str, AttentionWeights] | None = Field(
        default=None,
        description="weights of every attention module by name (unless attention=false)",
    )
    cam: list[list[float]] | None = Field(
        default=None,
        description="with cam=true: where the model looked for its top-1 class, h×w rows in "
        "[0, 1] at the last stage's resolution (Grad-CAM)",
    )
    cam_shape: list[int] | None = Field(default=None, description="[h, w] of `cam`")


class PredictResponse(BaseModel):
    model: str = Field(description="the checkpoint that answered, relative to the model root")
    predictions: list[ImagePrediction]


class AttentionModule(BaseModel):
    name: str
    kind: str = Field(description="the module's class")
    outputs: list[Literal["channel", "spatial"]]
    channels: int
    sources: list[str] | None = Field(
        default=None,
        description="bridge gates: the conv outputs whose descriptors feed the gate ('stem', "
        "'stage1.block0.conv1', ...)",
    )


class WorkerStatus(BaseModel):
    index: int = Field(description="the worker's slot, 0..workers-1")
    generation: int = Field(description="the reload it serves (0: its start-up model)")
    ready: bool
    pid: int | None = Field(default=None, description="only with the bearer token")


class ModelInfo(BaseModel):
    """Without the bearer token: what the model is, never where it lives or on which host."""

    name: str = Field(description="the checkpoint, relative to the model root")
    generation: int = Field(description="reloads this worker has followed (0: start-up model)")
    workers: list[WorkerStatus] | None = Field(
        default=None, description="every worker's generation (--workers only)"
    )
    architecture: str
    attention: str
    attention_kwargs: dict[str, Any] = Field(
        description="every option the gates are built with, defaults included (min_width...)"
    )
    config: dict[str, Any] = Field(description="the full ModelConfig of the checkpoint")
    attention_modules: list[AttentionModule]
    parameters: int
    input_shape: list[int] = Field(description="C, H, W the model takes")
    classes: list[str]
    data: dict[str, Any] = Field(description="the dataset description (normalisation included)")
    metrics: dict[str, Any]
    train: dict[str, Any] | None = Field(default=None, description="the training recipe")
    loaded_at: float = Field(description="Unix time of the load")
    # With the bearer token only: paths and host details.
    path: str | None = Field(default=None, description="the checkpoint folder (token only)")
    source: str | None = Field(
        default=None, description="what was asked for: a checkpoint or experiment (token only)"
    )
    search: dict[str, Any] | None = Field(
        default=None, description="the search config and trial parameters (token only)"
    )
    pid: int | None = Field(default=None, description="the answering worker (token only)")


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    model: str | None = Field(default=None, description="the checkpoint, relative to the root")
    generation: int | None = None
    reason: str | None = Field(default=None, description="why not ready")
    workers: list[WorkerStatus] | None = Field(
        default=None, description="every worker's generation and readiness (--workers only)"
    )
