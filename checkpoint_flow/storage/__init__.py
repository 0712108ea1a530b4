"""Storage: where bytes go and how checkpoints are laid out in them.

Modules, lowest first: ``protocol`` (the `StateHandler` protocol and its byte types), ``files``
(atomic local file writes), ``local`` and ``fsspec_handler`` (the two handlers), ``handlers``
(choosing one for a location), ``codec`` (bytes <-> objects, hashing, compression, sealed
records), ``tree`` (maps as Merkle tries), ``store`` (snapshots, commit records, verification,
collection; format 2, see FORMAT.md), ``namespaces`` (self-contained entries for the store's
clients) and ``locks`` (one run at a time). Nothing here imports the flow, memo, fan-out or
training modules.
"""
