"""checkpoint_flow: resumable multi-step work for scripts, notebooks and model training."""

from .training import CheckpointManager

__all__ = ["CheckpointManager"]
