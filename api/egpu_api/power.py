"""The power-limit contract between the operator and the node agent.

The operator writes ``egpu-operator.io/power-limit-request`` on a node: ``{"<gpu uuid>": watts}``.
The node agent clamps each request to NVML's constraints, applies it (or, read-only, only
reports what it would do), re-applies it when it drifts (NVML limits do not survive a driver
reload, GPU reset or reboot), and reports in ``egpu-operator.io/power-limit-status``. A GPU
dropped from the request goes back to its default limit.

Ownership, so the agent is a good neighbour to DCGM policies and ``nvidia-smi -pl``: the agent
owns a GPU's limit only while NVML still shows the value the agent itself set
(``setByAgentWatts``). A limit that moves to any other value than the agent's target or the
GPU's default was set by someone else: the agent stops re-applying on that GPU and reports
``state: ExternallyManaged`` with a message naming both values. A limit back at the default is
what a driver reload, GPU reset or reboot leaves, so the agent re-applies it. The agent manages
the GPU again when the operator's request for it changes, or when the limit comes back to the
agent's target by itself. Only limits the agent owns are restored to the default: when a request
is dropped, and when the agent stops managing power.
"""

import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, TypeAdapter, ValidationError
from pydantic.alias_generators import to_camel

from egpu_api.keys import POWER_REQUEST_ANNOTATION

# Strict: "65" or true would otherwise pass as watts, and 65.0 as 65.
_REQUEST = TypeAdapter(dict[str, Annotated[StrictInt, Field(gt=0)]])
#: How a request is written, quoted in every complaint about one.
REQUEST_FORM = '{"GPU-<uuid>": 200}, whole watts above 0 for each GPU'
#: Longest piece of a malformed value quoted back: enough to recognise it, not a wall of text.
_QUOTED_MAX = 80


class PowerContractError(ValueError):
    """A malformed power annotation; the message names the annotation and the fix."""


#: ``Managed``: the agent applies the request; ``ExternallyManaged``: someone else set the limit and the
#: agent leaves it alone until the request changes or the limit returns to the agent's target.
PowerState = Literal["Managed", "ExternallyManaged"]
MANAGED: PowerState = "Managed"
EXTERNALLY_MANAGED: PowerState = "ExternallyManaged"


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
    state: PowerState = MANAGED
    # For a person: why the state is what it is (e.g. the observed and the expected watts).
    message: str | None = None
    # The limit the agent itself set and NVML still shows: what the agent may restore. None: the
    # GPU's current limit is not the agent's (never set, set by someone else, or lost to a reset).
    set_by_agent_watts: int | None = None

    def owned_watts(self) -> int | None:
        """The limit the agent owns on this GPU, reading statuses written before ``setByAgentWatts``
        existed as their writer meant them: an applied, non-dry-run target was the agent's."""
        if "set_by_agent_watts" in self.model_fields_set:
            return self.set_by_agent_watts
        legacy = not self.dry_run and self.error is None and self.applied_watts == self.target_watts
        return self.target_watts if legacy and self.state == MANAGED else None


_STATUS = TypeAdapter(dict[str, PowerLimitStatus])


def parse_request(text: str | None) -> dict[str, int]:
    """The request annotation as GPU uuid -> watts; ``PowerContractError`` naming the annotation,
    what is wrong (the first bad entry, by its GPU) and the form it must take."""
    if not text:
        return {}
    try:
        return _REQUEST.validate_json(text)
    except ValidationError as error:
        raise PowerContractError(
            f"annotation {POWER_REQUEST_ANNOTATION} must be JSON like {REQUEST_FORM}; {_request_problem(text, error)}"
        ) from None


def _request_problem(text: str, error: ValidationError) -> str:
    first = error.errors()[0]
    if first["type"] == "json_invalid":
        return f"{_shown(text)} is not JSON"
    if not first["loc"]:
        return f"{_shown(text)} is not a JSON object of GPU uuids"
    gpu = str(first["loc"][0])
    return f'GPU "{_shown(gpu)}": {_shown(json.dumps(first["input"]))} is not a whole number of watts above 0'


def _shown(text: str) -> str:
    """``text`` with control characters escaped, cut to ``_QUOTED_MAX`` characters."""
    shown = json.dumps(text)[1:-1].replace('\\"', '"')
    return f"{shown[:_QUOTED_MAX]}..." if len(shown) > _QUOTED_MAX else shown


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
