"""Image records and what is measured per image: metric scores, discriminator confidences
and feature vectors, plus the FID reference statistics those vectors are compared with.

An image is (model, prompt, seed index); its id is stable when it is
re-recorded, so a resumed run updates rows rather than duplicating them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hadis_profile.errors import HadisError, InputError
from hadis_profile.store.catalogue import Catalogue
from hadis_profile.store.values import (
    check_metric_id,
    check_scorer,
    decode_vector,
    finite,
    finite_array,
    vector_blob,
)


class ImageRecords(Catalogue):
    """Per-image writes and the readers that resume and summarise them."""

    def put_image(
        self,
        model: str,
        prompt_id: int,
        seed_index: int,
        seed: int | None = None,
        path: str | None = None,
    ) -> int:
        """Record one generated image and return its id (stable when re-recorded)."""
        with self.transaction():
            self._require_model(model)
            self._require_prompt(prompt_id)
            row = self._db.execute(
                "INSERT INTO images (model, prompt_id, seed_index, seed, path) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(model, prompt_id, seed_index) DO UPDATE SET "
                "seed=excluded.seed, path=excluded.path RETURNING id",
                (model, int(prompt_id), int(seed_index), seed, None if path is None else str(path)),
            ).fetchone()
        return int(row[0])

    def _require_image(self, image_id: int) -> None:
        if not self._db.execute("SELECT 1 FROM images WHERE id=?", (int(image_id),)).fetchone():
            raise HadisError(f"Image {image_id} is not in the run; call put_image first.")

    def put_scores(self, image_id: int, scores: dict[str, float]) -> None:
        """Per-image metric values, metric id like ``clip_score:openai/clip-vit-large-patch14``."""
        rows = [
            (int(image_id), check_metric_id(m), finite(v, f"score '{m}' of image {image_id}"))
            for m, v in scores.items()
        ]
        with self.transaction():
            self._require_image(image_id)
            self._db.executemany(
                "INSERT OR REPLACE INTO scores (image_id, metric, value) VALUES (?, ?, ?)", rows
            )

    def put_confidence(self, image_id: int, value: float, *, scorer: str) -> None:
        """The discriminator's P(real) for one image, under the scorer that produced it."""
        v = finite(value, f"confidence of image {image_id}")
        with self.transaction():
            self._require_image(image_id)
            self._db.execute(
                "INSERT OR REPLACE INTO confidences (image_id, scorer, value) VALUES (?, ?, ?)",
                (int(image_id), check_scorer(scorer), v),
            )

    def put_feature_vector(self, image_id: int, extractor: str, vector: Any) -> None:
        """One image's feature vector (float32 or float64) for set-level metrics like FID."""
        dtype, dim, blob = vector_blob(vector, f"feature vector of image {image_id}")
        with self.transaction():
            self._require_image(image_id)
            self._db.execute(
                "INSERT OR REPLACE INTO features (image_id, extractor, dtype, dim, vector) "
                "VALUES (?, ?, ?, ?, ?)",
                (int(image_id), check_scorer(extractor), dtype, dim, blob),
            )

    def put_reference_stats(self, extractor: str, mu: Any, sigma: Any) -> None:
        """The FID reference set's mean [dim] and covariance [dim, dim] for one extractor."""
        mu = finite_array(mu, f"reference mean of '{extractor}'", ndim=1).astype(np.float64)
        sigma = finite_array(sigma, f"reference covariance of '{extractor}'", ndim=2)
        d = mu.shape[0]
        if sigma.shape != (d, d):
            raise HadisError(
                f"The reference covariance of '{extractor}' has shape {sigma.shape}, "
                f"expected ({d}, {d})."
            )
        with self.transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO reference_stats (extractor, dim, mu, sigma) "
                "VALUES (?, ?, ?, ?)",
                (
                    check_scorer(extractor),
                    d,
                    mu.astype("<f8").tobytes(),
                    sigma.astype("<f8").tobytes(),
                ),
            )

    def reference_stats(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        out = {}
        for ext, d, mu, sigma in self._db.execute(
            "SELECT extractor, dim, mu, sigma FROM reference_stats ORDER BY extractor"
        ):
            what = f"FID reference statistic of {ext!r}"
            if not isinstance(d, int) or d < 1:
                raise InputError(f"The run store holds a {what} of dimension {d!r}.")
            out[ext] = (
                decode_vector(mu, "float64", d, what).copy(),
                decode_vector(sigma, "float64", d * d, what).reshape(d, d).copy(),
            )
        return out

    # ---------------------------------------------------------------- resume and summaries

    def done_prompts(self, model: str, images_per_prompt: int | None = None) -> set[int]:
        """Resume: prompts whose images for ``model`` are all recorded.

        With ``images_per_prompt`` a prompt counts only when that many images
        exist; without it any image counts (writers commit a prompt's images as
        one unit of work, so a prompt is either complete or absent).
        """
        need = 1 if images_per_prompt is None else int(images_per_prompt)
        rows = self._db.execute(
            "SELECT prompt_id FROM images WHERE model=? GROUP BY prompt_id HAVING COUNT(*) >= ?",
            (model, need),
        )
        return {r[0] for r in rows}

    def saved_images(self) -> list[tuple[int, str, int, int, str]]:
        """(image id, model, prompt id, seed index, path) of every image saved to disk."""
        return [
            tuple(r)
            for r in self._db.execute(
                "SELECT id, model, prompt_id, seed_index, path FROM images "
                "WHERE path IS NOT NULL ORDER BY id"
            )
        ]

    def scored_image_ids(self, scorer: str) -> set[int]:
        """Images that already have a confidence from ``scorer`` (for resuming)."""
        rows = self._db.execute("SELECT image_id FROM confidences WHERE scorer=?", (scorer,))
        return {r[0] for r in rows}

    def confidence_means(self, scorer: str) -> dict[str, float]:
        """Mean confidence per model under ``scorer``."""
        rows = self._db.execute(
            "SELECT i.model, AVG(c.value) FROM confidences c JOIN images i ON i.id = c.image_id "
            "WHERE c.scorer=? GROUP BY i.model ORDER BY i.model",
            (scorer,),
        )
        return {m: float(v) for m, v in rows}

    # ---------------------------------------------------------------- confidence scorers

    def confidence_scorers(self) -> list[str]:
        """Every confidence scorer the run holds values of, sorted."""
        return [
            r[0] for r in self._db.execute("SELECT DISTINCT scorer FROM confidences ORDER BY 1")
        ]
