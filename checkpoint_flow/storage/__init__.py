"""Storage: where bytes go and how checkpoints are laid out in them.

Modules, lowest first: ``protocol`` (the `StateHandler` protocol and its byte types), ``files``
(atomic local file writes), ``local`` and ``fsspec_handler`` (the two handlers), ``handlers``
(choosing one for a location), ``codec`` (bytes <-> objects, hashing, compression, sealed
records), ``tree`` (maps as Merkle tries), ``layout`` (the names things get under a location),
``values`` (value blobs), ``records`` (commit records), ``nodes`` (tree nodes, kept in records),
``snapshots`` (saving a state as a change), ``collection`` (reachability, verification,
collection), ``store`` (the `Store` tying them together; format 2, see FORMAT.md),
``namespaces`` (self-contained entries for the store's clients), ``lock_records``,
``lock_base``, ``local_lock`` and ``record_lock`` (who holds a run lock, what every run lock
does, and its two kinds) and ``locks`` (choosing the run lock for a location). Nothing here
imports the flow, memo, fan-out or training modules.
"""
