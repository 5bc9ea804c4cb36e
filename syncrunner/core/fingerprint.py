"""Row fingerprints: a record read again exactly as it was when its row was written is not mapped,
validated or written again.

Each row of an SQL source gets a 64-bit hash (XXH3, seeded) of the source row as read (the repr of its values), salted with the spec's
digest, the syncrunner version and the run's validation flag: editing the spec or upgrading
changes every fingerprint, so the next run maps everything once. The hash is stored with the row
in `_sr_fingerprint`. Per chunk, the records' target keys (a compiled projection of just the key fields) are looked up (on
PostgreSQL the database compares: it sends back only the keys whose stored fingerprint differs);
a record whose stored fingerprint equals its own is counted unchanged and skipped, its key still
counted as seen by a delete sweep and its cursor still moving the watermark. A stored row edited in
the target is not compared while its source row stays the same (`--force` rewrites it). Everything
else takes the normal path: map, validate, upsert (which compares columns), so a wrong match
could only come from a 64-bit hash collision.

The upsert never counts a fingerprint-only difference as an update: after it, rows whose columns
all equal the incoming ones just take the new fingerprint (TargetDialect.refresh_fingerprints)."""
from __future__ import annotations

import hashlib
import struct
from xxhash import xxh3_64_intdigest

from syncrunner import __version__
from syncrunner.spec.model import Spec

FP_COLUMN = "_sr_fingerprint"


def uses_fingerprints(spec: Spec) -> bool:
    return spec.source.kind == "sql" and spec.target.fingerprint


class Fingerprinter:
    """XXH3's 64 bits over the row's text, seeded from the salt. Not a defence against anyone:
    change detection only, where any good 64-bit hash serves, and it runs on every row read:
    0.16 us per bench row against 0.78 for the salted SHA-1 it replaced (the stdlib's cheapest
    digest per call; keyed BLAKE2b was 1.0). Moved to signed as PostgreSQL's BIGINT stores it."""

    def __init__(self, spec: Spec, *, skip_validation: bool):
        salt = f"{__version__}|{spec.digest}|{'novalidate' if skip_validation else 'validate'}|xxh3"
        self.seed = _FIRST64(hashlib.sha1(salt.encode()).digest())[0] & _MASK

    def of(self, records: list[dict]) -> list[int]:
        texts = (repr(tuple(r.values())) for r in records)
        seed, digest, shift = self.seed, xxh3_64_intdigest, _SHIFT
        return [digest(t.encode(), seed) - shift for t in texts]


_FIRST64 = struct.Struct(">q").unpack_from
_MASK = (1 << 64) - 1
_SHIFT = 1 << 63  # unsigned 64 bits -> BIGINT's range, one to one
