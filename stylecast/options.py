"""Job options: the one model that says what a job may be asked to do.  Unknown keys are errors."""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from stylecast.errors import OptionsError

X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")


class TransferOptions(BaseModel):
    """Which parts of the template's style to apply.  Everything is on by default."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    color: bool = Field(True, description="chroma: the template's colour balance and palette (a*, b*)")
    tone: bool = Field(True, description="lightness: the template's contrast curve and exposure (L*)")
    pacing: bool = Field(True, description="re-cut the source to the template's shot lengths (and beat)")
    transitions: bool = Field(True, description="fades and dissolves like the template's")
    motion: bool = Field(True, description="synthetic camera moves matching the template's motion profile")
    audio: bool = Field(True, description="match the template's loudness (LUFS); audio is always re-cut with the picture")
    framing: bool = Field(True, description="letterbox bars like the template's")


# Output sides in pixels: what output.width / output.height accept, and what a side derived from the other
# one (with the source's aspect) must come to (stylecast.plan.output_spec).
MIN_OUTPUT_SIDE = 16
MAX_OUTPUT_SIDE = {"width": 7680, "height": 4320}


class OutputOptions(BaseModel):
    """Output encoding.  Width/height default to the source's display size; fps to the source's rate."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    width: int | None = Field(None, ge=MIN_OUTPUT_SIDE, le=MAX_OUTPUT_SIDE["width"],
                              description="pixels; rounded down to even")
    height: int | None = Field(None, ge=MIN_OUTPUT_SIDE, le=MAX_OUTPUT_SIDE["height"],
                               description="pixels; rounded down to even")
    fps: float | None = Field(None, gt=0, le=120, description="frames per second (constant)")
    crf: int = Field(20, ge=0, le=51, description="x264 constant rate factor: lower = better and bigger")
    preset: Literal[X264_PRESETS] = Field("veryfast", description="x264 speed/size trade-off")  # type: ignore[valid-type]


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    transfer: TransferOptions = Field(default_factory=TransferOptions)
    strength: float = Field(1.0, ge=0.0, le=1.0, description="0 = keep the source's look, 1 = the template's look")
    output: OutputOptions = Field(default_factory=OutputOptions)
    max_duration_s: float | None = Field(None, gt=0, description="cap on the output length, seconds")
    seed: int = Field(0, ge=0, description="seed for the deterministic choices of the planner (shake phase, …)")

    @model_validator(mode="after")
    def _check(self) -> Options:
        if self.output.width is not None:
            self.output.width -= self.output.width % 2
        if self.output.height is not None:
            self.output.height -= self.output.height % 2
        return self


def parse_options(value: str | dict | None) -> Options:
    """Options from a dict, a JSON string, or ``@path`` to a JSON file; raises `OptionsError` with a clear line."""
    if value is None or value == "":
        return Options()
    if isinstance(value, str):
        text = value
        if value.startswith("@"):
            try:
                text = Path(value[1:]).read_text(encoding="utf-8")
            except OSError as exc:
                raise OptionsError(f"cannot read options file {value[1:]}: {exc.strerror}") from None
            except UnicodeDecodeError:
                raise OptionsError(f"options file {value[1:]} is not a UTF-8 JSON file") from None
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise OptionsError(f"options are not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(value, dict):
        raise OptionsError("options must be a JSON object")
    try:
        return Options.model_validate(value)
    except ValidationError as exc:
        raise OptionsError(f"invalid options: {format_validation_error(exc)}") from None


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars and arrays turned into the JSON values they hold (a researcher's
    ``np.float32(0.8)`` or ``np.int64`` seed), mappings and sequences walked; anything else as it is."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def options_payload(options: Options | Mapping | str) -> dict:
    """The ``options`` object of a job request, from an `Options` model, a mapping or JSON text.

    A model gives what differs from the defaults, nested changes included: after ``o = Options();
    o.transfer.pacing = False`` pydantic counts ``transfer`` as unset, so ``exclude_unset`` would drop the change.
    A mapping is sent as given (the service validates it), with numpy values made plain; JSON text (or
    ``@path``) is read as `parse_options` reads it and raises `OptionsError` when it is not an object."""
    if isinstance(options, Options):  # python mode + _plain: a numpy value assigned to a field serialises too
        return _plain(options.model_dump(exclude_defaults=True, warnings=False))
    if isinstance(options, str):
        return parse_options(options).model_dump(mode="json", exclude_defaults=True)
    if isinstance(options, Mapping):
        return _plain(options)
    raise OptionsError(f"options must be an Options model, a dict or JSON text, not {type(options).__name__}")


def format_validation_error(exc: ValidationError) -> str:
    """One line: 'transfer.colour: Extra inputs are not permitted; strength: ...'."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)
