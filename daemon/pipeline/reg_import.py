"""An operator's photos become the regularization set of a class, on a worker like any GPU job.

``distillery reg import --class woman <folder>`` streams the photos to the daemon, which validates and
normalises each one before queueing (the same checks as a /distill upload) and keeps them as the job's input
images. The daemon hands them to the job as values; the worker VAE-encodes them with the resident model, a
batch at a time, and returns the latents as the set for the same (base model, class, resolution) key a
generated set would use, so every later /distill of that class uses the imported set. The daemon stores the
set and deletes the uploaded photos in the job's final transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image

from daemon.jobs.contract import JobContext, Outcome, RegSet
from daemon.jobs.model import Stage
from daemon.models.resident import Resident
from daemon.pipeline.image import open_png
from daemon.pipeline.regularization import DictRegCache, import_photos, reg_cache_key


@dataclass
class RegImportPipeline:
    resident: Resident
    resolution: int  # the training resolution, part of the cache key

    def __call__(self, ctx: JobContext) -> Outcome:
        job = ctx.job
        subject_class = job.requested_class
        if subject_class is None:
            raise ValueError("a regularization import names its class")
        total = len(ctx.inputs.photos)
        ctx.stage(Stage.REGULARIZATION, f"Encoding {total} photos of a {subject_class} for regularization.")

        def photos() -> Iterator[Image.Image]:
            for png in ctx.inputs.photos:
                yield open_png(png)

        cache = DictRegCache()
        reg = import_photos(
            self.resident,
            subject_class,
            photos(),
            self.resolution,
            cache,
            on_progress=lambda done: ctx.progress(done, total, what="Photo"),
            should_stop=ctx.should_stop,
        )
        key = reg_cache_key(self.resident.base_model_hash, subject_class, self.resolution)
        summary = (
            f"{reg.count} photos of a {subject_class} are now the regularization set for "
            f"{self.resident.base_model} at {self.resolution} px."
        )
        return Outcome(summary=summary, reg_set=RegSet(key, cache.data[key]), delete_images=list(job.inputs))
