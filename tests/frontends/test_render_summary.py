"""A finished generation's summary: what was made, at the size it was made."""

from __future__ import annotations

from distillery.v1 import distillery_pb2 as pb

from frontends.render import JobView, generation_summary


def finished(spec: pb.GenerateSpec, *sizes: tuple[int, int]) -> JobView:
    view = JobView()
    view.kind, view.generate, view.state = pb.JOB_KIND_GENERATE, spec, pb.JOB_STATE_SUCCEEDED
    view.images = [pb.ImageInfo(name=f"j-{n}.png", width=w, height=h) for n, (w, h) in enumerate(sizes, start=1)]
    return view


def test_the_size_line_is_the_pictures_size_and_says_where_a_hires_pass_started() -> None:
    plain = pb.GenerateSpec(prompt="a cat", width=512, height=768, steps=25, cfg=7, seed=3, count=2)
    assert "512x768, 25 steps, CFG 7, seeds 3-4" in generation_summary(finished(plain, (512, 768), (512, 768)))
    power = pb.GenerateSpec(prompt="a cat", width=512, height=512, steps=25, cfg=7, seed=3, count=1, power=True)
    assert "1024x1024 (from 512x512), 25 steps" in generation_summary(finished(power, (1024, 1024)))
    upscaled = pb.GenerateSpec(prompt="a cat", width=64, height=64, steps=4, cfg=7, seed=1, count=1, power=True)
    upscaled.upscale_image, upscaled.power_scale = "j0-1.png", 1.5
    lines = generation_summary(finished(upscaled, (96, 96))).splitlines()
    assert "96x96 (from 64x64), 4 steps, CFG 7, seed 1" in lines
    assert "Upscaled from j0-1.png: 1.5 times, latent" in lines
    # Pictures whose size is unknown (records from before sizes were kept) leave the requested size.
    assert "512x512, 25 steps" in generation_summary(finished(power, (0, 0)))
