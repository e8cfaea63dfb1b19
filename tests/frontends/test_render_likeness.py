"""The likeness as every frontend shows it: the chat summary, /lora <name> and /loras (one shared renderer)."""

from __future__ import annotations

from distillery.v1 import distillery_pb2 as pb

from daemon.jobs.model import LikenessScore
from daemon.rpc.convert import likeness_to_pb
from frontends.render import JobView, lora_line, lora_text, summary_text

ME = pb.Requester(platform="telegram", user="111")
MEASURED = LikenessScore(measured=True, score=78, under_threshold=7, samples=8, median_distance=0.376, step=400)
NOT_MEASURED = LikenessScore(step=500, reason="likeness not measured: no face in the test pictures")


def lora(likeness: LikenessScore | None) -> pb.Lora:
    message = pb.Lora(name="rifttami", owner=ME, subject_class=pb.SUBJECT_CLASS_WOMAN, size_bytes=2_000_000)
    if likeness is not None:
        message.likeness.CopyFrom(likeness_to_pb(likeness))
    return message


def test_lora_and_loras_show_the_likeness_or_why_not() -> None:
    assert "Likeness 78/100: 7 of 8 test pictures look like the photo." in lora_text(lora(MEASURED), ME)
    assert lora_line(lora(MEASURED), ME) == "rifttami - woman, yours, private, likeness 78/100"
    assert "Likeness not measured: no face in the test pictures." in lora_text(lora(NOT_MEASURED), ME)
    assert lora_line(lora(NOT_MEASURED), ME).endswith(", likeness not measured")
    # A LoRA from before likeness was measured says nothing about it.
    assert "ikeness" not in lora_text(lora(None), ME) + lora_line(lora(None), ME)


def test_the_summary_of_a_finished_distill_carries_the_likeness() -> None:
    view = JobView()
    job = pb.Job(id="j", lora_name="rifttami", state=pb.JOB_STATE_SUCCEEDED, kind=pb.JOB_KIND_DISTILL)
    job.likeness.CopyFrom(likeness_to_pb(NOT_MEASURED))
    event = pb.JobEvent(job_id="j", seq=9, state=pb.JOB_STATE_SUCCEEDED, stage=pb.STAGE_DONE, text="done")
    event.finished.job.CopyFrom(job)
    event.finished.lora.CopyFrom(lora(NOT_MEASURED))
    view.apply(event)
    lines = summary_text(view).splitlines()
    assert lines[1] == "Likeness not measured: no face in the test pictures."
