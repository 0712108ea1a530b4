"""checkpoint_flow: resumable multi-step work for scripts, notebooks and training runs."""

from .errors import (
    CheckpointCorruptError,
    CheckpointFlowError,
    CheckpointLockedError,
    CheckpointNotFoundError,
    CheckpointReadError,
    CheckpointSignatureError,
    CheckpointWriteError,
    StepNotFoundError,
    UnpicklableStateError,
)
from .flow import CheckpointFlow, FlowStatus, StepStatus
from .handlers import FsspecHandler, LocalHandler, StateHandler
from .memo import apply_checkpoint, set_checkpoint_dir, set_checkpoint_file
from .steps import Step
from .store import KeepLastRecords, KeepLatestRun
from .training import CheckpointManager

__all__ = [
    "CheckpointCorruptError",
    "CheckpointFlow",
    "CheckpointFlowError",
    "CheckpointLockedError",
    "CheckpointManager",
    "CheckpointNotFoundError",
    "CheckpointReadError",
    "CheckpointSignatureError",
    "CheckpointWriteError",
    "FlowStatus",
    "FsspecHandler",
    "KeepLastRecords",
    "KeepLatestRun",
    "LocalHandler",
    "StateHandler",
    "Step",
    "StepNotFoundError",
    "StepStatus",
    "UnpicklableStateError",
    "apply_checkpoint",
    "set_checkpoint_dir",
    "set_checkpoint_file",
]
__version__ = "0.1.0"
