"""checkpoint_flow: resumable multi-step work for scripts, notebooks and training runs."""

from importlib import metadata as _metadata

from .errors import (
    CheckpointCorruptError,
    CheckpointExistsError,
    CheckpointFlowError,
    CheckpointFlowWarning,
    CheckpointFormatError,
    CheckpointLockedError,
    CheckpointNotFoundError,
    CheckpointReadError,
    CheckpointSignatureError,
    CheckpointWriteError,
    FanOutError,
    StepNotFoundError,
    UndigestableValueError,
    UnpicklableStateError,
)
from .fanout import MapStep
from .flow import CheckpointFlow
from .flow_record import RunInfo, StepEntry
from .flow_retention import FlowRetention, KeepLastRecords, KeepLatestRun, RecordSummary
from .memo import apply_checkpoint, del_checkpoint, set_checkpoint_dir, set_checkpoint_file
from .policies import (
    LoadPolicy,
    StepLoad,
    load_always,
    load_first,
    load_never,
    load_steps,
)
from .policy import Policy
from .retries import Retry
from .runs import RunSummary
from .status import FlowStatus, StepStatus
from .steps import Step, StepContext
from .storage.handlers import FsspecHandler, LocalHandler, StateHandler
from .training import (
    Boundary,
    CheckpointInfo,
    CheckpointManager,
    LoadedCheckpoint,
    Restored,
    RetentionRule,
    Trigger,
    at_boundary,
    at_loop_unit,
    every_n_epochs,
    every_n_steps,
    keep_all,
    keep_best,
    keep_last,
    min_interval,
    never,
    on_improvement,
)

__all__ = [
    "Boundary",
    "CheckpointInfo",
    "FlowRetention",
    "LoadPolicy",
    "LoadedCheckpoint",
    "Policy",
    "RecordSummary",
    "Restored",
    "RetentionRule",
    "StepLoad",
    "Trigger",
    "at_boundary",
    "at_loop_unit",
    "every_n_epochs",
    "every_n_steps",
    "keep_all",
    "keep_best",
    "keep_last",
    "load_always",
    "load_first",
    "load_never",
    "load_steps",
    "min_interval",
    "never",
    "on_improvement",
    "CheckpointCorruptError",
    "CheckpointExistsError",
    "CheckpointFlow",
    "CheckpointFlowError",
    "CheckpointFormatError",
    "CheckpointFlowWarning",
    "CheckpointLockedError",
    "CheckpointManager",
    "CheckpointNotFoundError",
    "CheckpointReadError",
    "CheckpointSignatureError",
    "CheckpointWriteError",
    "FanOutError",
    "FlowStatus",
    "FsspecHandler",
    "KeepLastRecords",
    "KeepLatestRun",
    "LocalHandler",
    "MapStep",
    "Retry",
    "RunInfo",
    "RunSummary",
    "StateHandler",
    "Step",
    "StepContext",
    "StepEntry",
    "StepNotFoundError",
    "StepStatus",
    "UndigestableValueError",
    "UnpicklableStateError",
    "apply_checkpoint",
    "del_checkpoint",
    "set_checkpoint_dir",
    "set_checkpoint_file",
]

try:
    __version__ = _metadata.version("checkpoint_flow")
except _metadata.PackageNotFoundError:  # a source tree used without installing it
    __version__ = "0+unknown"
