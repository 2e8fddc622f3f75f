"""Which stored blob was derived from which: re-encoded layers and the manifests naming them.

A row `(source, encoding) -> digest` says that `digest` holds the same content as
`source` in another encoding: a zstd layer made from a gzip layer (same diff_id), or a
manifest whose layer descriptors point at such layers (same config, so the same image ID).
A row with no digest records why there is none (a diff_id mismatch, no gzip layer), so the
work is not tried again. The rows live in the store's index (`derived` table), next to the
blobs they name: deleting a source deletes what was derived from it (store.delete_blob), and
eviction takes derived blobs first (store.evict). `transcode_optout` lists the images whose
functions asked for their layers as pushed (the hook reports the annotation).
"""

from __future__ import annotations

from dataclasses import dataclass

from .store import Store


@dataclass(frozen=True)
class Derivation:
    """One row: `digest` is None when the derivation was refused (see `reason`)."""

    source: str
    encoding: str
    digest: str | None
    diff_id: str | None
    reason: str | None


class DerivedIndex:
    """Reads and writes the `derived` table of a store's index."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, source: str, encoding: str) -> Derivation | None:
        rows = self.store.index.query(
            "SELECT source, encoding, digest, diff_id, reason FROM derived WHERE source = ? AND encoding = ?",
            (source, encoding),
        )
        return Derivation(*rows[0]) if rows else None

    def source_of(self, digest: str) -> str | None:
        """The blob `digest` was derived from, if it is a derived blob."""
        rows = self.store.index.query("SELECT source FROM derived WHERE digest = ?", (digest,))
        return str(rows[0][0]) if rows else None

    def record(
        self,
        source: str,
        encoding: str,
        digest: str | None,
        *,
        diff_id: str | None = None,
        reason: str | None = None,
    ) -> None:
        """Remember a derivation (or why there is none), replacing an earlier row."""
        with self.store.index.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO derived (source, encoding, digest, diff_id, reason, created) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (source, encoding, digest, diff_id, reason, self.store.clock()),
            )

    def opt_out(self, image: str) -> None:
        """Never offer re-encoded layers for `image` (`registry/repo:tag`) again."""
        with self.store.index.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO transcode_optout (image, ts) VALUES (?, ?)",
                (image, self.store.clock()),
            )

    def opted_out(self, image: str) -> bool:
        return bool(self.store.index.query("SELECT 1 FROM transcode_optout WHERE image = ?", (image,)))

    def usage(self) -> tuple[int, int]:
        """(bytes, count) of the derived blobs that are stored."""
        row = self.store.index.query(
            "SELECT COALESCE(SUM(b.size), 0), COUNT(*) FROM derived d JOIN blobs b ON b.digest = d.digest"
        )[0]
        return int(row[0]), int(row[1])
