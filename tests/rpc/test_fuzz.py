"""Every RPC of the real daemon (demo preset) under requests generated from the proto descriptors.

For each method of ``distillery.v1.Distillery``, hypothesis builds request messages field by field from the
descriptors: strings that are empty, huge, NUL-laden, in other scripts, format strings, markup and chat mentions,
or real identifiers (a job, LoRA and image that exist); numbers at and past the limits the daemon documents;
unknown enum values; every oneof branch; NaN and infinity. Client streams get random sequences of their parts
plus the fixed cases: no spec, chunks before the spec, the spec twice, an oversized upload and very many chunks.

Each answer's code must be one the README's "Status codes" table lists for that RPC (never UNKNOWN or INTERNAL)
and no message may carry an exception class, a traceback or a path. The last test checks that the daemon is
still healthy and that nothing it refused was stored.

CI runs ``DISTILLERY_FUZZ_EXAMPLES`` (default 12) examples per RPC; a long run sets it higher, e.g. 500, and
prints the requests sent per RPC (the README's reliability section has the figures of the last long run).
"""

from __future__ import annotations

import math
import re
import signal
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from distillery.v1 import distillery_pb2 as pb
from distillery.v1 import distillery_pb2_grpc as pb_grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.rpc.guard import USER_MESSAGE_KEY
from daemon.store.lmdb_store import Store, StoreConfig
from tests.daemon_process import RunningDaemon, start_daemon
from tests.reliability.helpers import count_from_env

README = Path(__file__).resolve().parents[2] / "README.md"
SERVICE = pb.DESCRIPTOR.services_by_name["Distillery"]
EXAMPLES = count_from_env("DISTILLERY_FUZZ_EXAMPLES", 12)
CALL_TIMEOUT_S = 60.0
MIB = 1024 * 1024
OWNER = pb.Requester(platform="cli", user="fuzz-owner", chat="terminal")
STRANGER = pb.Requester(platform="telegram", user="4242", chat="4242")
# Text that must never appear in a status message: exception classes, tracebacks, source paths, library names.
LEAKS = re.compile(
    r"Traceback|File \"|\.py\b|<class |\b[A-Za-z]*(Error|Exception)\b|lmdb|MDB_|grpc\._|/tmp/|/usr/|site-packages"
)

UINT32_EDGES = [0, 1, 2, 4, 5, 6, 10, 50, 100, 101, 500, 1000, 10_000, 2**31 - 1, 2**31, 2**32 - 1]
UINT64_EDGES = [*UINT32_EDGES, 2**32, 2**53 + 1, 2**63, 2**64 - 1]
FLOAT_EDGES = [
    0.0,
    -0.0,
    0.5,
    0.6,
    1.0,
    1.5,
    2.0,
    7.0,
    20.0,
    21.0,
    -1.0,
    1e30,
    -1e30,
    math.nan,
    math.inf,
    -math.inf,
]
HOSTILE_TEXT = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\n",
    "line\nbreak",
    "tab\there",
    "\x1b[31mred",
    "\u202egnp.exe",
    "x" * 5000,
    "y" * 200_000,
    "Παράδειγμα",
    "名前のテスト",
    "اسم",
    "😀" * 50,
    "%s%s%n%x",
    "{0}{name!r}",
    "<b>bold</b> &amp;",
    "<!channel> <!here> <@U012345>",
    "*bold* _it_ ~s~ `code`",
    "@everyone",
    "../../../etc/passwd",
    "rifttami",
    "rifttami.png",
    "0" * 24,
    "http://127.0.0.1/x.png",
    "https://example.invalid/a.png",
    "file:///etc/passwd",
    "2:3",
    "99:1",
]


@dataclass
class Seeded:
    """What exists in the daemon before fuzzing: one finished distill job of OWNER."""

    job_id: str
    lora_name: str
    image_name: str
    portrait: bytes = field(repr=False)


@dataclass
class Tally:
    sent: Counter[str] = field(default_factory=Counter)
    codes: dict[str, Counter[str]] = field(default_factory=dict)
    accepted_jobs: set[str] = field(default_factory=set)

    def note(self, method: str, code: grpc.StatusCode) -> None:
        self.sent[method] += 1
        self.codes.setdefault(method, Counter())[code.name] += 1


def documented_codes() -> dict[str, set[str]]:
    """The README's "Status codes" table: RPC name -> the codes it may answer."""
    text = README.read_text()
    section = text.split("### Status codes", 1)[1]
    table: dict[str, set[str]] = {}
    for line in section.splitlines()[1:]:
        if line.startswith("#"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0].startswith("`"):
            table[cells[0].strip("`")] = set(re.findall(r"[A-Z][A-Z_]+", cells[1]))
    return table


CODES = documented_codes()
TALLY = Tally()


def test_the_readme_lists_codes_for_every_rpc() -> None:
    assert set(CODES) == {method.name for method in SERVICE.methods}
    for method, codes in CODES.items():
        assert "OK" in codes and not codes & {"UNKNOWN", "INTERNAL"}, method


# -- the daemon -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, demo_models: tuple[Path, Path]) -> Iterator[RunningDaemon]:
    running = start_daemon(tmp_path_factory.mktemp("fuzz") / "state", demo_models)
    yield running
    running.stop(signal.SIGTERM)


@pytest.fixture(scope="module")
def channel(daemon: RunningDaemon) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(daemon.target) as opened:
        yield opened


@pytest.fixture(scope="module")
def seeded(channel: grpc.Channel, portrait_png: bytes) -> Seeded:
    stub = pb_grpc.DistilleryStub(channel)
    spec = pb.DistillSpec(upload=True, requester=OWNER, idempotency_key="fuzz-seed")
    events = list(stub.Distill(iter([pb.SubmitRequest(spec=spec), pb.SubmitRequest(chunk=portrait_png)])))
    finished = events[-1]
    assert finished.state == pb.JOB_STATE_SUCCEEDED, finished.text
    job = finished.finished.job
    return Seeded(job.id, job.lora_name, job.image_name, portrait_png)


# -- requests from descriptors --------------------------------------------------------------------------------


def text_strategy(seed: Seeded) -> st.SearchStrategy[str]:
    real = [seed.job_id, seed.lora_name, seed.image_name, seed.lora_name.upper(), f"{seed.job_id}-1.png"]
    return st.one_of(st.sampled_from(HOSTILE_TEXT + real), st.text(max_size=40))


def scalar_strategy(descriptor: FieldDescriptor, seed: Seeded) -> st.SearchStrategy[Any]:
    kind = descriptor.type
    if kind == FieldDescriptor.TYPE_STRING:
        return text_strategy(seed)
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.one_of(
            st.binary(max_size=64),
            st.sampled_from([b"", b"\x00" * 4096, b"z" * 4097, b"\x89PNG\r\n\x1a\n", seed.portrait]),
        )
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_ENUM:
        known = list(descriptor.enum_type.values_by_number)
        return st.sampled_from([*known, -1, max(known) + 1, 99, 2**31 - 1])
    if kind in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return st.one_of(st.sampled_from(FLOAT_EDGES), st.floats(-1e6, 1e6, width=32))
    if kind in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return st.one_of(st.sampled_from(UINT32_EDGES), st.integers(0, 2**32 - 1))
    if kind in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return st.one_of(st.sampled_from(UINT64_EDGES), st.integers(0, 2**64 - 1))
    if kind in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32):
        return st.integers(-(2**31), 2**31 - 1)
    if kind in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64):
        return st.integers(-(2**63), 2**63 - 1)
    raise AssertionError(f"no strategy for field type {kind} ({descriptor.full_name})")


def message_strategy(descriptor: Descriptor, seed: Seeded) -> st.SearchStrategy[Message]:
    """A message of this type with a random subset of its fields set: at most one branch of each oneof."""
    if descriptor.full_name == "distillery.v1.Requester":
        generic = _fields_strategy(descriptor, seed)
        return st.one_of(st.sampled_from([OWNER, STRANGER, pb.Requester()]), generic)
    return _fields_strategy(descriptor, seed)


def _fields_strategy(descriptor: Descriptor, seed: Seeded) -> st.SearchStrategy[Message]:
    cls = GetMessageClass(descriptor)

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        message = cls()
        oneofs = [oneof for oneof in descriptor.oneofs if len(oneof.fields) > 1 or not oneof.name.startswith("_")]
        chosen = {oneof.name: draw(st.sampled_from([None, *oneof.fields])) for oneof in oneofs}
        for item in descriptor.fields:
            oneof = item.containing_oneof
            if oneof is not None and oneof.name in chosen:
                if chosen[oneof.name] is not item:
                    continue
            elif not draw(st.booleans()):
                continue
            _set(message, item, draw, seed)
        return message

    return build()


def _set(message: Message, item: FieldDescriptor, draw: st.DrawFn, seed: Seeded) -> None:
    if item.message_type is not None and item.message_type.GetOptions().map_entry:
        return  # requests carry no maps
    if item.type == FieldDescriptor.TYPE_MESSAGE:
        strategy = message_strategy(item.message_type, seed)
        if item.is_repeated:
            getattr(message, item.name).extend(draw(st.lists(strategy, max_size=7)))
        else:
            getattr(message, item.name).CopyFrom(draw(strategy))
        return
    strategy = scalar_strategy(item, seed)
    if item.is_repeated:
        getattr(message, item.name).extend(draw(st.lists(strategy, max_size=7)))
    else:
        setattr(message, item.name, draw(strategy))


def stream_strategy(method: MethodDescriptor, seed: Seeded) -> st.SearchStrategy[list[Message]]:
    return st.lists(message_strategy(method.input_type, seed), max_size=6)


def valid_requests(seed: Seeded) -> dict[str, list[Message]]:
    """A request each RPC accepts (or refuses for a reason of state, not shape), as a frontend would send it."""
    own_job = dict(job_id=seed.job_id, requester=OWNER)
    own_lora = dict(name=seed.lora_name, requester=OWNER)
    spec = pb.GenerateSpec(prompt="a portrait", loras=[pb.LoraWeight(name=seed.lora_name)], steps=2, seed=1)
    reg_spec = pb.RegularizationSpec(requester=pb.Requester(platform="cli", user="op"), subject_class=1)
    return {
        "Distill": [pb.SubmitRequest(spec=pb.DistillSpec(image_name=seed.image_name, requester=OWNER))],
        "Submit": [pb.SubmitRequest(spec=pb.DistillSpec(image_name=seed.image_name, requester=OWNER))],
        "Watch": [pb.WatchRequest(**own_job)],
        "GetJob": [pb.GetJobRequest(**own_job)],
        "ListJobs": [pb.ListJobsRequest(requester=OWNER, limit=5)],
        "CancelJob": [pb.CancelJobRequest(**own_job)],
        "SetClientState": [pb.SetClientStateRequest(client_state=b"chat 7", **own_job)],
        "GetLora": [pb.GetLoraRequest(**own_lora)],
        "ListLoras": [pb.ListLorasRequest(requester=OWNER, include_public=True)],
        "DownloadLora": [pb.GetLoraRequest(**own_lora)],
        "GetImage": [pb.GetImageRequest(name=seed.image_name, requester=OWNER)],
        "GetStatus": [pb.GetStatusRequest()],
        "Generate": [pb.GenerateRequest(spec=spec, requester=OWNER)],
        "GetImageInfo": [pb.GetImageRequest(name=seed.image_name, requester=OWNER)],
        "UpdateLora": [pb.UpdateLoraRequest(description="my LoRA", **own_lora)],
        # A stranger's delete: the fuzzing must not remove the LoRA the other requests use.
        "DeleteLora": [pb.DeleteLoraRequest(name=seed.lora_name, requester=STRANGER)],
        "GetUserStats": [pb.GetUserStatsRequest(requester=OWNER)],
        # An operator's prune of what ended years ago: nothing the other requests use goes.
        "PruneEvents": [pb.PruneEventsRequest(requester=reg_spec.requester, older_than_days=3650)],
        "ImportRegularization": [
            pb.RegularizationUpload(spec=reg_spec),
            *(pb.RegularizationUpload(photo=seed.portrait) for _ in range(3)),
        ],
    }


def one_bad_field(base: list[Message], seed: Seeded) -> st.SearchStrategy[list[Message]]:
    """The valid request with one field, anywhere in its first message, set to a drawn (often hostile) value."""

    slots = _slots(base[0].DESCRIPTOR, ())
    if not slots:
        return st.just(base)

    @st.composite
    def build(draw: st.DrawFn) -> list[Message]:
        first = type(base[0])()
        first.CopyFrom(base[0])
        path, item = draw(st.sampled_from(slots))
        target = first
        for step in path:
            if step.is_repeated:
                entries = getattr(target, step.name)
                target = entries[0] if len(entries) else entries.add()
            else:
                target = getattr(target, step.name)
        value = draw(scalar_strategy(item, seed))
        if item.is_repeated:
            getattr(target, item.name).append(value)
        else:
            setattr(target, item.name, value)
        return [first, *base[1:]]

    return build()


def _slots(
    descriptor: Descriptor, path: tuple[FieldDescriptor, ...]
) -> list[tuple[tuple[FieldDescriptor, ...], Any]]:
    """Every scalar field inside a message type, with the message fields that lead to it."""
    found: list[tuple[tuple[FieldDescriptor, ...], Any]] = []
    for item in descriptor.fields:
        if item.message_type is None:
            found.append((path, item))
        elif item not in path and not item.message_type.GetOptions().map_entry:
            found.extend(_slots(item.message_type, (*path, item)))
    return found


# -- calling and judging --------------------------------------------------------------------------------------


def call(channel: grpc.Channel, method: MethodDescriptor, request: Message | list[Message]) -> grpc.StatusCode:
    """Send one request (or stream) and return the status; a job the daemon accepts is cancelled at once."""
    path = f"/{SERVICE.full_name}/{method.name}"
    serialize = GetMessageClass(method.input_type).SerializeToString
    deserialize = GetMessageClass(method.output_type).FromString
    requests = request if isinstance(request, list) else [request]
    kinds = (method.client_streaming, method.server_streaming)
    try:
        if kinds == (False, False):
            reply = channel.unary_unary(path, serialize, deserialize)(request, timeout=CALL_TIMEOUT_S)
            _accepted(channel, requests, [reply])
        elif kinds == (True, False):
            reply = channel.stream_unary(path, serialize, deserialize)(iter(requests), timeout=CALL_TIMEOUT_S)
            _accepted(channel, requests, [reply])
        else:
            if kinds == (False, True):
                stream = channel.unary_stream(path, serialize, deserialize)(request, timeout=CALL_TIMEOUT_S)
            else:
                stream = channel.stream_stream(path, serialize, deserialize)(
                    iter(requests), timeout=CALL_TIMEOUT_S
                )
            first = next(stream, None)
            stream.cancel()
            _accepted(channel, requests, [first] if first is not None else [])
        code = grpc.StatusCode.OK
    except grpc.RpcError as error:
        code = error.code()
        details = error.details() or ""
        assert not LEAKS.search(details), f"{method.name} leaked internal text: {details!r}"
        marked = any(key == USER_MESSAGE_KEY for key, _ in error.trailing_metadata() or ())
        assert marked and details.strip(), f"{method.name} answered {code.name} without a sentence: {details!r}"
    TALLY.note(method.name, code)
    assert code.name in CODES[method.name], f"{method.name} answered {code.name}, not listed in the README"
    return code


def _accepted(channel: grpc.Channel, requests: list[Message], replies: list[Message]) -> None:
    """Note the job a reply created (Submit's job, an ACCEPTED event) and cancel it so the queue stays short."""
    stub = pb_grpc.DistilleryStub(channel)
    for reply in replies:
        if isinstance(reply, pb.SubmitReply) and not reply.duplicate:
            job_id = reply.job.id
        elif isinstance(reply, pb.JobEvent) and reply.WhichOneof("detail") == "accepted":
            job_id = reply.job_id
        else:
            continue
        TALLY.accepted_jobs.add(job_id)
        owner = stub.GetJob(pb.GetJobRequest(job_id=job_id, requester=_requester_of(requests))).owner
        try:
            stub.CancelJob(pb.CancelJobRequest(job_id=job_id, requester=owner))
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION  # it ended already


def _requester_of(requests: list[Message]) -> pb.Requester:
    """The requester a request names, wherever it sits (the request, or the spec a stream starts with)."""
    for message in requests:
        for _, value in message.ListFields():
            if isinstance(value, pb.Requester):
                return value
            if isinstance(value, Message) and "requester" in value.DESCRIPTOR.fields_by_name:
                return value.requester  # type: ignore[attr-defined,no-any-return]
    return pb.Requester()


FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("method", list(SERVICE.methods), ids=lambda method: method.name)
@FUZZ_SETTINGS
@given(data=st.data())
def test_every_rpc_answers_a_documented_code(
    channel: grpc.Channel, seeded: Seeded, method: MethodDescriptor, data: st.DataObject
) -> None:
    """Half the examples change one field of a valid request, half build the whole request at random."""
    base = valid_requests(seeded)[method.name]
    if method.client_streaming:
        wholly_random = stream_strategy(method, seeded)
    else:
        wholly_random = message_strategy(method.input_type, seeded).map(lambda message: [message])
    requests = data.draw(st.one_of(one_bad_field(base, seeded), wholly_random))
    call(channel, method, requests if method.client_streaming else requests[0])


@pytest.mark.parametrize("method", list(SERVICE.methods), ids=lambda method: method.name)
def test_the_valid_requests_are_valid(channel: grpc.Channel, seeded: Seeded, method: MethodDescriptor) -> None:
    """The starting points of one_bad_field pass the edge: a refusal there would make the fuzzing shallow."""
    base = valid_requests(seeded)[method.name]
    code = call(channel, method, base if method.client_streaming else base[0])
    expected = {
        "CancelJob": {grpc.StatusCode.FAILED_PRECONDITION},  # the seeded job has finished
        # A stranger's delete: NOT_FOUND while the LoRA is private, PERMISSION_DENIED once fuzzing made it public.
        "DeleteLora": {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED},
        "ImportRegularization": {grpc.StatusCode.INVALID_ARGUMENT},  # three photos are too few
    }
    assert code in expected.get(method.name, {grpc.StatusCode.OK}), method.name


@pytest.mark.parametrize("method", list(SERVICE.methods), ids=lambda method: method.name)
def test_every_oneof_branch_and_an_empty_request(
    channel: grpc.Channel, seeded: Seeded, method: MethodDescriptor
) -> None:
    """The empty request, then each oneof branch (optional fields too) set alone to an empty or hostile value."""
    examples: list[Message] = [GetMessageClass(method.input_type)()]
    for path, holder in _holders(method.input_type, ()):
        for oneof in holder.oneofs:
            for branch in oneof.fields:
                if branch.type != FieldDescriptor.TYPE_MESSAGE:
                    examples.extend(
                        _with_branch(method.input_type, path, branch, value) for value in _values(branch)
                    )
    for example in examples:
        call(channel, method, [example] if method.client_streaming else example)


Path = tuple[FieldDescriptor, ...]


def _holders(descriptor: Descriptor, path: Path) -> list[tuple[Path, Descriptor]]:
    """Every message type inside a request, with the fields that lead to it (a repeated one: its first entry)."""
    found = [(path, descriptor)]
    for item in descriptor.fields:
        if item.message_type is not None and item not in path and not item.message_type.GetOptions().map_entry:
            found.extend(_holders(item.message_type, (*path, item)))
    return found


def _values(branch: FieldDescriptor) -> list[Any]:
    if branch.type == FieldDescriptor.TYPE_STRING:
        return ["", "\x00", "x" * 5000]
    if branch.type == FieldDescriptor.TYPE_BYTES:
        return [b"", b"junk"]
    if branch.type == FieldDescriptor.TYPE_BOOL:
        return [True, False]
    if branch.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return [math.nan, 0.0, -1.0]
    return [0, 2**32 - 1] if branch.type == FieldDescriptor.TYPE_UINT32 else [0]


def _with_branch(top: Descriptor, path: Path, branch: FieldDescriptor, value: Any) -> Message:
    """A ``top`` request with one branch set in the message at ``path``; every requester on the way is the real
    owner, so the branch itself is what the daemon judges."""
    request = GetMessageClass(top)()
    target = request
    for item in (None, *path):
        if item is not None:
            target = getattr(target, item.name).add() if item.is_repeated else getattr(target, item.name)
        if "requester" in target.DESCRIPTOR.fields_by_name:
            target.requester.CopyFrom(OWNER)  # type: ignore[attr-defined]
    setattr(target, branch.name, value)
    return request


STREAMS = {method.name: method for method in SERVICE.methods if method.client_streaming}


def _submit_cases(seed: Seeded) -> dict[str, list[Message]]:
    spec = pb.SubmitRequest(spec=pb.DistillSpec(upload=True, requester=OWNER))
    chunk = pb.SubmitRequest(chunk=b"\x89PNG\r\n\x1a\n")
    return {
        "no spec": [],
        "chunks before the spec": [chunk, spec],
        "the spec twice": [spec, spec, chunk],
        "oversized upload": [spec, *(pb.SubmitRequest(chunk=b"\0" * MIB) for _ in range(21))],
        "very many chunks": [spec, *(pb.SubmitRequest(chunk=b"\0") for _ in range(20_000))],
        "empty chunks": [spec, *(pb.SubmitRequest(chunk=b"") for _ in range(100))],
        "a url spec then chunks": [pb.SubmitRequest(spec=pb.DistillSpec(url="http://x", requester=OWNER)), chunk],
    }


def _import_cases(seed: Seeded) -> dict[str, list[Message]]:
    spec = pb.RegularizationUpload(
        spec=pb.RegularizationSpec(requester=pb.Requester(platform="cli", user="op"), subject_class=1)
    )
    photo = pb.RegularizationUpload(photo=seed.portrait)
    return {
        "no spec": [],
        "photos before the spec": [photo, spec],
        "the spec twice": [spec, spec, photo],
        "oversized photo": [spec, pb.RegularizationUpload(photo=b"\0" * (21 * MIB))],
        "very many photos": [spec, *(pb.RegularizationUpload(photo=b"\0") for _ in range(2000))],
        "too few photos": [spec, photo, photo],
    }


@pytest.mark.parametrize("method_name", ["Submit", "Distill"])
def test_submit_streams_in_every_wrong_order(channel: grpc.Channel, seeded: Seeded, method_name: str) -> None:
    for case, messages in _submit_cases(seeded).items():
        code = call(channel, STREAMS[method_name], messages)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, f"{method_name}, {case}: {code.name}"


def test_import_streams_in_every_wrong_order(channel: grpc.Channel, seeded: Seeded) -> None:
    for case, messages in _import_cases(seeded).items():
        code = call(channel, STREAMS["ImportRegularization"], messages)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, f"ImportRegularization, {case}: {code.name}"


def test_afterwards_the_daemon_is_healthy_and_stored_nothing_it_refused(
    daemon: RunningDaemon, channel: grpc.Channel, seeded: Seeded
) -> None:
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    lora = pb_grpc.DistilleryStub(channel).GetLora(pb.GetLoraRequest(name=seeded.lora_name, requester=OWNER))
    assert lora.name == seeded.lora_name
    print("\nrequests sent per RPC:", dict(sorted(TALLY.sent.items())), "total", sum(TALLY.sent.values()))
    print("codes per RPC:", {name: dict(codes) for name, codes in sorted(TALLY.codes.items())})
    assert daemon.stop(signal.SIGTERM) == 0, daemon.log_text()

    store = Store(StoreConfig(path=daemon.state_dir / "store"))
    try:
        jobs = {job.id: job for job in store.jobs()}
        loras = store.loras()
        assert set(jobs) == {seeded.job_id} | TALLY.accepted_jobs
        assert {lora.name for lora in loras} <= {jobs[job_id].lora_name for job_id in jobs}
        for job in jobs.values():
            for name in job.outputs:
                assert store.get_image_meta(name).job_id == job.id
    finally:
        store.close()
