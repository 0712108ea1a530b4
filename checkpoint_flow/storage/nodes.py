"""Tree nodes: queued for the next commit, or loaded from the record holding them and verified
against their hash. `Nodes` is the `tree.NodeStore` of a store's trees.
"""

from __future__ import annotations

import hmac
import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import CheckpointCorruptError
from .codec import Signer
from .records import RecordLog

_NODE_CACHE = 20_000


@dataclass
class Nodes:
    """The nodes of one location's trees: those queued for the next commit and a cache of those
    loaded."""

    log: RecordLog
    signer: Signer
    _pending: list[str] = field(default_factory=list, repr=False)
    _cache: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict, repr=False)

    @property
    def location(self) -> str:
        return self.log.location

    def add(self, node: dict[str, Any]) -> dict[str, str]:
        """Queue a node for the next commit; return its reference."""
        raw = json.dumps(node, sort_keys=True, separators=(",", ":"))
        seq = self.log.next_seq()
        ref = f"{seq}.{len(self._pending)}.{self.signer.name_of([raw.encode()])}"
        self._pending.append(raw)
        self._cache_node(ref, node)
        return {"@": ref}

    def load(self, ref: Mapping[str, str]) -> dict[str, Any]:
        """The node a reference names, verified against its hash."""
        try:
            key = ref["@"]
            seq_text, index_text, digest = key.split(".")
            seq, index = int(seq_text), int(index_text)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointCorruptError(
                f"node reference {ref!r} at {self.location}", "is not one"
            ) from exc
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        if seq == self.log.next_seq() and index < len(self._pending):
            raw = self._pending[index]
        else:
            nodes = self.log.record_nodes(seq)
            if index >= len(nodes):
                raise CheckpointCorruptError(
                    f"record {seq} at {self.location}", f"has no node {index} (named by {key})"
                )
            raw = nodes[index]
        if not _same_name(self.signer.name_of([raw.encode()]), digest):
            raise CheckpointCorruptError(
                f"node {key} at {self.location}",
                f"does not match its hash: record {seq} was altered",
            )
        node = json.loads(raw)
        if not isinstance(node, dict):
            raise CheckpointCorruptError(f"node {key} at {self.location}", "is not an object")
        self._cache_node(key, node)
        return node

    def _cache_node(self, key: str, node: dict[str, Any]) -> None:
        self._cache[key] = node
        if len(self._cache) > _NODE_CACHE:
            self._cache.popitem(last=False)

    @property
    def pending(self) -> list[str]:
        """The nodes queued for the next commit, in order."""
        return self._pending

    def committed(self) -> None:
        """The queued nodes were committed: start the next commit's queue."""
        self._pending = []

    def mark(self) -> int:
        """How many nodes are queued; `rewind` drops the ones queued after."""
        return len(self._pending)

    def rewind(self, mark: int) -> None:
        del self._pending[mark:]

    def discard(self) -> None:
        """Forget nodes queued for a commit that will not happen."""
        prefix = f"{self.log.next_seq()}."
        for key in [k for k in self._cache if k.startswith(prefix)]:
            del self._cache[key]
        self._pending = []


def _same_name(computed: str, given: str) -> bool:
    return hmac.compare_digest(computed, given)
