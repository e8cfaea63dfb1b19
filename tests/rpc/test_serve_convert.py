"""/serve's options from the chat grammar through the wire into the daemon's request, and the job's record back."""

from __future__ import annotations

import pytest

from daemon.pipeline.serve_request import GenerationDefaults, resolve
from daemon.rpc.convert import generate_params_to_pb, serve_request_from_pb
from frontends.commands import parse_serve

DEFAULTS = GenerationDefaults(resolution=64, size_multiple=8, steps=4)


def test_sampler_and_power_reach_the_daemon_and_the_job_record() -> None:
    request = serve_request_from_pb(parse_serve('a man --sampler "euler a" --power=1.5 --upscalemethod lanczos'))
    assert (request.sampler, request.power, request.upscale_method) == ("euler a", True, "lanczos")
    assert request.power_scale == pytest.approx(1.5)
    record = generate_params_to_pb(resolve(request, [], DEFAULTS))
    assert (record.sampler, record.power, record.upscale_method) == ("Euler a", True, "lanczos")
    assert record.power_scale == pytest.approx(1.5)
    plain = serve_request_from_pb(parse_serve("a man"))
    assert (plain.power, plain.power_scale, plain.sampler) == (False, None, "")
    assert not generate_params_to_pb(resolve(plain, [], DEFAULTS)).power
