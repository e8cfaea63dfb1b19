"""/serve's richer options on the demo models: prompt weights, samplers, the hires pass, image to image.

Each is deterministic by seed and changes the picture against the same request without it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from daemon.pipeline.generate import GeneratePipeline
from daemon.store.lmdb_store import Store
from tests.pipeline.generate_fixtures import NAMES, params, pixels, run

pytest_plugins = ["tests.fixtures_models", "tests.pipeline.generate_fixtures"]


def picture(generate: GeneratePipeline, store: Store, journal: Any, **changes: Any) -> np.ndarray[Any, Any]:
    return pixels(run(generate, store, journal, params(NAMES[0], **changes)).images[0].png)


def test_prompt_weights_change_the_picture_and_unit_weights_do_not(
    generate: GeneratePipeline, store: Store, journal: Any
) -> None:
    plain = picture(generate, store, journal, full_prompt="a photo of rifttami in a red hat")
    unit = picture(generate, store, journal, full_prompt="a photo of (rifttami:1.0) in a red hat")
    weighted = picture(generate, store, journal, full_prompt="a photo of (rifttami:1.4) in a [red] hat")
    again = picture(generate, store, journal, full_prompt="a photo of (rifttami:1.4) in a [red] hat")
    assert np.array_equal(unit, plain)
    assert np.array_equal(weighted, again)
    assert np.abs(weighted.astype(int) - plain).max() > 10
    negative = picture(generate, store, journal, negative_prompt="(blurry:1.5), lowres")
    assert np.abs(negative.astype(int) - picture(generate, store, journal)).max() > 10
