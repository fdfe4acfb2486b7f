"""The power-limit contract between the operator and the node agent.

The operator writes ``egpu-operator.io/power-limit-request`` on a node: ``{"<gpu uuid>": watts}``.
The node agent clamps each request to NVML's constraints, applies it (or, read-only, only
reports what it would do), re-applies it when it drifts (NVML limits do not survive a driver
reload, GPU reset or reboot), and reports in ``egpu-operator.io/power-limit-status``. A GPU
dropped from the request goes back to its default limit.
"""

import json
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.alias_generators import to_camel

_REQUEST = TypeAdapter(dict[str, Annotated[int, Field(gt=0)]])


class PowerContractError(ValueError):
    """A malformed power annotation; the message names the annotation and the fix."""


class PowerLimitStatus(BaseModel):
    """What the agent did with one GPU's request."""

    model_config = ConfigDict(frozen=True, alias_generator=to_camel, populate_by_name=True)

    requested_watts: int | None
    # What the agent asked NVML for, after clamping; None when nothing could be applied.
    target_watts: int | None
    # What NVML reports now.
    applied_watts: int | None
    clamped: bool = False
    dry_run: bool = False
    error: str | None = None


_STATUS = TypeAdapter(dict[str, PowerLimitStatus])


def parse_request(text: str | None) -> dict[str, int]:
    if not text:
        return {}
    try:
        return _REQUEST.validate_json(text)
    except ValidationError:
        raise PowerContractError(
            'annotation egpu-operator.io/power-limit-request must be JSON like {"GPU-<uuid>": 200} with positive whole watts'
        ) from None


def dump_request(request: dict[str, int]) -> str:
    return json.dumps(request, sort_keys=True, separators=(",", ":"))


def parse_status(text: str | None) -> dict[str, PowerLimitStatus]:
    if not text:
        return {}
    try:
        return _STATUS.validate_json(text)
    except ValidationError:
        raise PowerContractError("annotation egpu-operator.io/power-limit-status is not valid; the agent rewrites it") from None


def dump_status(status: dict[str, PowerLimitStatus]) -> str:
    data = {uuid: entry.model_dump(by_alias=True) for uuid, entry in status.items()}
    return json.dumps(data, sort_keys=True, separators=(",", ":"))
