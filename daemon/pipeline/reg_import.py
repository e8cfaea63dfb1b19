"""An operator's photos become the regularization set of a class, on the worker like any GPU job.

``distillery reg import --class woman <folder>`` streams the photos to the daemon, which validates and
normalises each one before queueing (the same checks as a /distill upload) and keeps them as the job's input
images. The worker then VAE-encodes them with the resident model, a batch at a time, and caches the latents
under the same (base model, class, resolution) key a generated set would use; every later /distill of that
class uses the imported set. The uploaded photos are deleted once their latents are stored.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image

from daemon.jobs.model import Stage
from daemon.jobs.worker import JobContext, Outcome
from daemon.models.resident import Resident
from daemon.pipeline.image import open_png
from daemon.pipeline.regularization import import_photos
from daemon.store.lmdb_store import Store


@dataclass
class RegImportPipeline:
    resident: Resident
    store: Store
    resolution: int  # the training resolution, part of the cache key

    def __call__(self, ctx: JobContext) -> Outcome:
        job = ctx.job
        subject_class = job.requested_class
        if subject_class is None:
            raise ValueError("a regularization import names its class")
        total = len(job.inputs)
        ctx.stage(Stage.REGULARIZATION, f"Encoding {total} photos of a {subject_class} for regularization.")

        def photos() -> Iterator[Image.Image]:
            for name in job.inputs:
                yield open_png(self.store.get_image(name))

        reg = import_photos(
            self.resident,
            subject_class,
            photos(),
            self.resolution,
            self.store,
            on_progress=lambda done: ctx.progress(done, total, what="Photo"),
            should_stop=ctx.should_stop,
        )
        self.store.delete_images(job.inputs)
        summary = (
            f"{reg.count} photos of a {subject_class} are now the regularization set for "
            f"{self.resident.base_model} at {self.resolution} px."
        )
        return Outcome(summary=summary)
