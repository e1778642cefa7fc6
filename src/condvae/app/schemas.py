"""The JSON bodies of the API (pydantic models: FastAPI validates them and shows them in /docs)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Scalar = bool | int | float | str | None


class Evidence(BaseModel):
    """A model and an item with what is observed of it.

    Images: ``image`` (a base64 PNG or JPEG, a data: URL is fine; cropped to the model's aspect
    and resized) or ``x`` (nested lists [H][W] or [C][H][W] of values in [0, 1]); ``mask`` nested
    lists of 0/1 of [H][W] (every channel of a pixel) or [C][H][W], or a base64 PNG, white =
    observed. Tables: ``x`` one row of raw values (null = unknown), ``mask`` 0/1 per feature
    (default: observed where ``x`` has a value)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="a model name from GET /api/models")
    image: str | None = Field(None, description="base64 PNG/JPEG (images only)")
    x: list[Any] | None = Field(None, description="the item's values (nested lists) instead of image")
    mask: list[Any] | str | None = Field(None, description="observed = 1; a base64 PNG for images")
    seed: int = Field(0, ge=0, le=2**31 - 1)


class ConditionRequest(Evidence):
    method: str = Field("ipa", description="a method from GET /api/methods")
    options: dict[str, Scalar] = Field(default_factory=dict, description="the method's options")
    n: int = Field(8, ge=1, description="completions returned")
    display: Literal["mean", "sample"] = Field(
        "mean", description="completions as the decoder's mean at each z, or a draw from p(x | z)"
    )
    arrays: bool = Field(False, description="also return the numbers, not only PNGs")


class DesignRequest(Evidence):
    method: str = Field("ipa", description="the conditioning method whose completions score the candidates")
    completions: int = Field(16, ge=1, description="completions per candidate score")


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["condition", "design"]
    request: dict[str, Any]


class ImageUpload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: str = Field(description="base64 PNG/JPEG (a data: URL is fine)")
