"""checkpoint_flow: resumable multi-step work for scripts, notebooks and training runs."""

from .errors import (
    CheckpointCorruptError,
    CheckpointFlowError,
    CheckpointLockedError,
    CheckpointSignatureError,
    CheckpointWriteError,
    FanOutError,
    StepNotFoundError,
    UnpicklableStateError,
)
from .fanout import MapStep
from .flow import CheckpointFlow, FlowStatus, StepStatus
from .handlers import FsspecHandler, LocalHandler, StateHandler
from .steps import Step, StepContext
from .store import KeepLastRecords, KeepLatestRun

__all__ = [
    "CheckpointCorruptError",
    "CheckpointFlow",
    "CheckpointFlowError",
    "CheckpointLockedError",
    "CheckpointSignatureError",
    "CheckpointWriteError",
    "FanOutError",
    "FlowStatus",
    "FsspecHandler",
    "KeepLastRecords",
    "KeepLatestRun",
    "LocalHandler",
    "MapStep",
    "StateHandler",
    "Step",
    "StepContext",
    "StepNotFoundError",
    "StepStatus",
    "UnpicklableStateError",
]
__version__ = "0.1.0"
