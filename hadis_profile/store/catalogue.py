"""What a run is measured over: its models (with the spec hash that invalidates them), the
hardware it ran on, and the prompt set (with the hash that identifies it).

These are the run's axes; every other record refers to them, so the record
mixins build on :class:`Catalogue` and use its ``_require_*`` checks.
"""

from __future__ import annotations

from collections.abc import Sequence

from hadis_profile.errors import HadisError
from hadis_profile.fileio import canonical_json, sha256_text
from hadis_profile.store.core import StoreCore
from hadis_profile.store.values import decode_json


def spec_hash_of(spec: dict) -> str:
    """The hash that identifies a model spec: any change invalidates its measurements."""
    return sha256_text(canonical_json(spec))


class Catalogue(StoreCore):
    """Models, hardware and prompts of a run."""

    # ---------------------------------------------------------------- models and hardware

    def upsert_model(
        self,
        name: str,
        *,
        spec_hash: str | None = None,
        steps: int | None = None,
        height: int | None = None,
        width: int | None = None,
        dtype: str | None = None,
        spec: dict | None = None,
    ) -> bool:
        """Record a model; True when it changed and its old records were deleted.

        A changed spec (other checkpoint, steps, resolution ...) makes every
        earlier measurement of that model meaningless, so latency, images (with
        their scores, confidences and features) and external rows naming it go.
        So do other weights behind the same spec: ``spec["checkpoint"]`` (the
        resolved snapshot commit or content hash) differing from the stored one
        (:func:`same_checkpoint`). Other models are untouched. ``spec_hash``
        defaults to the hash of ``spec``.
        """
        if not name:
            raise HadisError("A model needs a non-empty name.")
        spec = spec or {}
        new_hash = spec_hash or spec_hash_of(spec)
        with self.transaction():
            row = self._db.execute(
                "SELECT spec_hash, spec_json FROM models WHERE name=?", (name,)
            ).fetchone()
            stored = (
                decode_json(row[1], f"spec of model {name!r}").get("checkpoint")
                if row is not None
                else None
            )
            changed = row is not None and (
                row[0] != new_hash or not same_checkpoint(stored, spec.get("checkpoint"))
            )
            if not changed and "checkpoint" in spec:  # an unknown value keeps the known one
                spec = {**spec, "checkpoint": _known(stored, spec["checkpoint"])}
            if changed:
                self._delete_model_records(name)
            self._db.execute(
                "INSERT INTO models (name, spec_hash, steps, height, width, dtype, spec_json) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                "spec_hash=excluded.spec_hash, steps=excluded.steps, height=excluded.height, "
                "width=excluded.width, dtype=excluded.dtype, spec_json=excluded.spec_json",
                (name, new_hash, steps, height, width, dtype, canonical_json(spec)),
            )
            if row is None or changed:
                self._run_json_dirty = True
        return changed

    def _delete_model_records(self, name: str) -> None:
        # images cascade to scores, confidences and features.
        self._db.execute("DELETE FROM latency WHERE model=?", (name,))
        self._db.execute("DELETE FROM latency_samples WHERE model=?", (name,))
        self._db.execute("DELETE FROM images WHERE model=?", (name,))
        self._db.execute("DELETE FROM external WHERE light=? OR heavy=?", (name, name))

    def models(self) -> dict[str, dict]:
        """name -> {spec_hash, steps, height, width, dtype, spec}, in insertion order."""
        rows = self._db.execute(
            "SELECT name, spec_hash, steps, height, width, dtype, spec_json FROM models "
            "ORDER BY rowid"
        )
        return {
            r[0]: {
                "spec_hash": r[1],
                "steps": r[2],
                "height": r[3],
                "width": r[4],
                "dtype": r[5],
                "spec": decode_json(r[6], f"spec of model {r[0]!r}"),
            }
            for r in rows
        }

    def _require_model(self, name: str) -> None:
        if not self._db.execute("SELECT 1 FROM models WHERE name=?", (name,)).fetchone():
            raise HadisError(f"Model '{name}' is not in the run; call upsert_model first.")

    def upsert_hardware(
        self,
        label: str,
        *,
        device_name: str | None = None,
        driver: str | None = None,
        libraries: dict | None = None,
    ) -> None:
        """Record the device a latency was measured on (label like ``a100``)."""
        if not label:
            raise HadisError("A hardware entry needs a non-empty label.")
        with self.transaction():
            self._db.execute(
                "INSERT INTO hardware (label, device_name, driver, libraries_json) "
                "VALUES (?, ?, ?, ?) ON CONFLICT(label) DO UPDATE SET "
                "device_name=excluded.device_name, driver=excluded.driver, "
                "libraries_json=excluded.libraries_json",
                (label, device_name, driver, canonical_json(libraries or {})),
            )
            self._run_json_dirty = True

    def hardware(self) -> list[dict]:
        rows = self._db.execute(
            "SELECT label, device_name, driver, libraries_json FROM hardware ORDER BY label"
        )
        return [
            {
                "label": r[0],
                "device_name": r[1],
                "driver": r[2],
                "libraries": decode_json(r[3], f"library list of hardware {r[0]!r}"),
            }
            for r in rows
        ]

    # ---------------------------------------------------------------- prompts

    def add_prompts(self, texts: Sequence[str]) -> list[int]:
        """Store the prompt set; prompt ``i`` gets id ``i``.

        Re-adding the same set (resume) is a no-op, and a longer list whose start
        is the stored set extends it. Changing a stored prompt is refused: its
        images would silently answer a different prompt.
        """
        texts = [str(t) for t in texts]
        with self.transaction():
            stored = self.prompts()
            for i, (old, new) in enumerate(zip(stored, texts, strict=False)):
                if old != new:
                    raise HadisError(
                        f"Prompt {i} differs from the one stored in the run; reset the run "
                        "to change the prompt set."
                    )
            if len(texts) < len(stored):
                raise HadisError(
                    f"The run holds {len(stored)} prompts but only {len(texts)} were given; "
                    "reset the run to shrink the prompt set."
                )
            new = [(i, t, sha256_text(t)) for i, t in enumerate(texts) if i >= len(stored)]
            if new:
                self._db.executemany("INSERT INTO prompts (id, text, sha256) VALUES (?, ?, ?)", new)
                self._set_meta("prompt_set_hash", self._compute_prompt_set_hash())
                self._run_json_dirty = True
        return list(range(len(texts)))

    def prompts(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT text FROM prompts ORDER BY id")]

    def n_prompts(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM prompts").fetchone()[0]

    def _compute_prompt_set_hash(self) -> str:
        shas = [r[0] for r in self._db.execute("SELECT sha256 FROM prompts ORDER BY id")]
        return sha256_text("\n".join(shas))

    def prompt_set_hash(self) -> str | None:
        """sha256 over the ordered per-prompt sha256s (hex, newline-joined); None if empty."""
        return self._meta("prompt_set_hash")

    def _require_prompt(self, prompt_id: int) -> None:
        if not self._db.execute("SELECT 1 FROM prompts WHERE id=?", (int(prompt_id),)).fetchone():
            raise HadisError(f"Prompt {prompt_id} is not in the run; call add_prompts first.")


def same_checkpoint(old: dict | None, new: dict | None) -> bool:
    """False only when both identities are known and differ (unknown never invalidates)."""

    def known(ident: dict | None) -> list:
        if not ident:
            return []
        items = [ident.get("commit") or ident.get("sha256")]
        items += [c.get("commit") or c.get("sha256") for c in ident.get("components", [])]
        return items

    a, b = known(old), known(new)
    if not a or not b or len(a) != len(b):
        return True
    return all(x is None or y is None or x == y for x, y in zip(a, b, strict=True))


def _known(old: dict | None, new: dict | None) -> dict | None:
    """``new`` with every unknown (None) commit or hash filled from ``old``."""
    if not old or not new:
        return new or old

    def fill(a: dict, b: dict) -> dict:
        out = dict(b)
        for key in ("commit", "sha256"):
            if out.get(key) is None and a.get(key) is not None:
                out[key] = a[key]
        return out

    merged = fill(old, new)
    if "components" in new:
        olds = old.get("components", [])
        merged["components"] = [
            fill(olds[i], c) if i < len(olds) else c for i, c in enumerate(new["components"])
        ]
    return merged
