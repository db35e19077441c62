"""The job spec: strict validation at the trust boundary, canonical bytes, loading from a real store."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chain_scheduler import (
    Executor,
    InputRef,
    JobSpec,
    JobTerms,
    Limits,
    SafetyClass,
    load_spec,
)
from chain_scheduler._spec import WASM_FUEL_PER_SECOND
from chain_scheduler.errors import SpecError
from storage import ContentStore, open_store

MODULE = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
# The same CID written as CIDv0 and as upper-case base32 CIDv1; specs normalise both.
DIR_V0 = "QmbWqxBEKC3P8tqsKc98xmWNzrzDtRLMiMPL8wBuTGsMnR"
DIR_V1 = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"
CLIENT = "0x" + "11" * 20


def full_spec() -> dict[str, Any]:
    return {
        "version": 1,
        "executor": "docker",
        "artifact": MODULE,
        "inputs": [{"cid": DIR_V1, "path": "corpus"}, {"parent": 7, "path": "counts"}],
        "args": ["--top", "10", "{braces} are fine"],
        "env": {"LANG": "C", "_X1": "é"},
        "limits": {"memory_mb": 512, "timeout_s": 30, "cpus": 0.5},
        "network": True,
        "description": "word count",
    }


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ContentStore]:
    with open_store(f"local:{tmp_path / 'store'}") as s:
        yield s


# ------------------------------------------------------------------ round trips


def test_full_spec_round_trips_through_bytes() -> None:
    spec = JobSpec.model_validate(full_spec())

    again = JobSpec.from_bytes(spec.to_bytes())

    assert again == spec
    assert again.inputs[0] == InputRef(cid=DIR_V1, path="corpus")
    assert again.inputs[1].parent == 7 and again.inputs[1].cid is None
    assert again.parents == (7,)
    assert again.limits == Limits(memory_mb=512, timeout_s=30, cpus=0.5)


def test_defaults_are_written_out_in_canonical_form() -> None:
    spec = JobSpec(version=1, executor="wasm", artifact=MODULE)

    data = json.loads(spec.to_bytes())

    assert data == {
        "version": 1,
        "executor": "wasm",
        "artifact": MODULE,
        "inputs": [],
        "args": [],
        "env": {},
        "limits": {"memory_mb": 256, "timeout_s": 30, "cpus": 1.0, "output_mb": 256},
        "network": False,
        "description": "",
    }
    assert b" " not in spec.to_bytes()
    assert list(data) == sorted(data)


def test_equal_specs_written_differently_get_one_cid(store: ContentStore) -> None:
    # Given the same spec written three ways: keys reordered and spaced, defaults
    # omitted, the directory CID as CIDv0.
    canonical = JobSpec.model_validate(full_spec()).to_bytes()
    shuffled = full_spec()
    shuffled["inputs"][0]["cid"] = DIR_V0
    reordered = json.dumps(dict(reversed(list(shuffled.items()))), indent=2).encode()
    minimal = {"version": 1, "executor": "wasm", "artifact": MODULE}
    explicit = {**minimal, "limits": {"memory_mb": 256, "timeout_s": 30, "cpus": 1}, "network": False, "args": []}

    # When each is parsed and stored in canonical form
    cids = {
        str(store.put_bytes(JobSpec.from_bytes(raw).to_bytes()))
        for raw in (canonical, reordered, json.dumps(full_spec()).encode())
    }
    small = {str(store.put_bytes(JobSpec.model_validate(d).to_bytes())) for d in (minimal, explicit)}

    # Then each spec has one CID, and it is the CID of the canonical bytes
    assert cids == {str(store.put_bytes(canonical))}
    assert len(small) == 1
    assert small != cids


def test_load_spec_reads_and_validates_from_the_store(store: ContentStore) -> None:
    spec = JobSpec.model_validate(full_spec())
    cid = store.put_bytes(spec.to_bytes())

    assert load_spec(store, cid) == spec


# -------------------------------------------------------------- every validation error

# (what to change, the message fragment: field path and problem)
INVALID: list[tuple[str, Any, str]] = [
    ("version", 2, "version: input should be 1"),
    ("executor", "k8s", "executor: input should be 'wasm' or 'docker'"),
    ("artifact", "not-a-cid", "artifact: 'not-a-cid' is not a CID"),
    ("artifact", 5, "artifact: input should be a valid string"),
    ("surprise", 1, "surprise: is not a field of a version 1 spec"),
    ("inputs", [{"cid": "bafkrei", "path": "x"}], "inputs.0.cid: 'bafkrei' is not a CID"),
    ("inputs", [{"cid": MODULE, "path": "a/b"}], "inputs.0.path: 'a/b' must be a single name under /inputs"),
    ("inputs", [{"cid": MODULE, "path": "a\\b"}], "inputs.0.path: 'a\\\\b' must be a single name"),
    ("inputs", [{"cid": MODULE, "path": ".."}], "inputs.0.path: '..' must not start with '.'"),
    ("inputs", [{"cid": MODULE, "path": ".hidden"}], "inputs.0.path: '.hidden' must not start with '.'"),
    ("inputs", [{"cid": MODULE, "path": ""}], "inputs.0.path: must be a file name, not empty"),
    ("inputs", [{"cid": MODULE, "path": "a\nb"}], "inputs.0.path: 'a\\nb' must not contain control characters"),
    ("inputs", [{"cid": MODULE, "path": "x" * 256}], "inputs.0.path: must be at most 255 bytes"),
    ("inputs", [{"cid": MODULE}], "inputs.0.path: is required"),
    ("inputs", [{"path": "a"}], "inputs.0: needs exactly one of 'cid' (stored content) or 'parent'"),
    ("inputs", [{"cid": MODULE, "parent": 1, "path": "a"}], "inputs.0: needs exactly one of 'cid'"),
    ("inputs", [{"parent": 0, "path": "a"}], "inputs.0.parent: input should be greater than or equal to 1"),
    ("inputs", [{"parent": True, "path": "a"}], "inputs.0.parent: input should be a valid integer"),
    ("inputs", [{"parent": "3", "path": "a"}], "inputs.0.parent: input should be a valid integer"),
    ("inputs", [{"cid": MODULE, "path": "a", "mode": "rw"}], "inputs.0.mode: is not a field"),
    ("inputs", [{"cid": MODULE, "path": "a"}, {"parent": 2, "path": "a"}], "inputs: two inputs are named 'a'"),
    ("inputs", [{"cid": MODULE, "path": f"f{i}"} for i in range(65)], "inputs: list should have at most 64 items"),
    ("inputs", {"cid": MODULE, "path": "a"}, "inputs: input should be a valid list"),
    ("args", ["ok", 3], "args.1: input should be a valid string"),
    ("args", ["a\x00b"], "args.0: must not contain a NUL character"),
    ("args", ["x" * 4097], "args.0: string should have at most 4096 characters"),
    ("args", ["x"] * 257, "args: list should have at most 256 items"),
    ("args", ["x" * 4000] * 40, "args and env add up to 1600"),
    ("env", {"1BAD": "x"}, "env.1BAD.[key]: '1BAD' is not a variable name"),
    ("env", {"A=B": "x"}, "env.A=B.[key]: 'A=B' is not a variable name"),
    ("env", {"A": 1}, "env.A: input should be a valid string"),
    ("env", {"A": "\x00"}, "env.A: must not contain a NUL character"),
    ("env", {f"V{i}": "x" for i in range(129)}, "env: dictionary should have at most 128 items"),
    ("limits", {"memory_mb": 65537}, "limits.memory_mb: input should be less than or equal to 65536"),
    ("limits", {"memory_mb": 0}, "limits.memory_mb: input should be greater than or equal to 1"),
    ("limits", {"memory_mb": 1.5}, "limits.memory_mb: input should be a valid integer"),
    ("limits", {"timeout_s": 0}, "limits.timeout_s: input should be greater than or equal to 1"),
    ("limits", {"cpus": 0}, "limits.cpus: input should be greater than 0"),
    ("limits", {"cpus": "2"}, "limits.cpus: input should be a valid number"),
    ("limits", {"gpus": 1}, "limits.gpus: is not a field of a version 1 spec"),
    ("network", "yes", "network: input should be a valid boolean"),
    ("description", "d" * 1001, "description: string should have at most 1000 characters"),
]


@pytest.mark.parametrize(
    ("field", "value", "message"), INVALID, ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(INVALID)]
)
def test_invalid_spec_names_the_field_and_the_problem(field: str, value: Any, message: str) -> None:
    raw = full_spec()
    raw[field] = copy.deepcopy(value)

    with pytest.raises(SpecError) as caught:
        JobSpec.from_bytes(json.dumps(raw).encode(), source="Job spec bafk-test")

    text = str(caught.value)
    assert text.startswith("Job spec bafk-test is invalid: ")
    assert message in text
    assert "\n" not in text


def test_missing_fields_are_each_named() -> None:
    with pytest.raises(SpecError, match=r"is invalid: version: is required; artifact: is required\.$"):
        JobSpec.from_bytes(b'{"executor": "wasm"}')


def test_network_needs_a_docker_job() -> None:
    raw = {**full_spec(), "executor": "wasm"}
    with pytest.raises(SpecError, match=r"network: only a docker job may ask for network access"):
        JobSpec.from_bytes(json.dumps(raw).encode())


def test_many_errors_are_summarised_on_one_line() -> None:
    raw = {"version": 1, "executor": "wasm", "artifact": MODULE, "args": [1, 2, 3, 4, 5, 6, 7]}
    with pytest.raises(SpecError) as caught:
        JobSpec.from_bytes(json.dumps(raw).encode())
    assert str(caught.value).endswith("(and 2 more).")


def test_python_construction_is_validated_too() -> None:
    with pytest.raises(ValueError, match="must not start with"):
        InputRef(cid=MODULE, path=".x")
    with pytest.raises(ValueError, match="unable to parse raw data as a unicode string"):
        JobSpec(version=1, executor="wasm", artifact=MODULE, args=["\ud800"])


# ------------------------------------------------------------------- not JSON


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "is not JSON: EOF while parsing"),
        (b"{", "is not JSON: EOF while parsing an object"),
        (b"\xff\xfe{}", "is not JSON: not UTF-8 text (byte 0)"),
        (b'{"version": 1, "version": 1}', "is not JSON: duplicate key 'version'"),
        (b'{"version": NaN}', "is not JSON: expected value"),
        (b'{"a": "\\ud800"}', "is not JSON: unexpected end of hex escape"),
        (b"[" * 100_000, "is not JSON: recursion limit exceeded"),
        (b"[1, 2]", "must be a JSON object, got an array"),
        (b'"spec"', "must be a JSON object, got a string"),
        (b"null", "must be a JSON object, got null"),
    ],
)
def test_bytes_that_are_not_a_json_object(raw: bytes, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        JobSpec.from_bytes(raw)
    assert message in str(caught.value)


# --------------------------------------------------------------- from the store


def test_unknown_cid(store: ContentStore) -> None:
    absent = "bafkreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"
    with pytest.raises(SpecError, match=rf"^Job spec {absent} is not in the content store; upload it"):
        load_spec(store, absent)


def test_malformed_cid(store: ContentStore) -> None:
    with pytest.raises(SpecError, match=r"^Job spec CID 'hello' is not a CID: "):
        load_spec(store, "hello")


def test_stored_bytes_that_are_not_json(store: ContentStore) -> None:
    cid = store.put_bytes(b"#!/bin/sh\necho hi\n")
    with pytest.raises(SpecError, match=rf"^Job spec {cid} is not JSON: "):
        load_spec(store, cid)


def test_stored_invalid_spec_names_the_cid_and_field(store: ContentStore) -> None:
    cid = store.put_bytes(json.dumps({**full_spec(), "limits": {"memory_mb": 10**6}}).encode())
    with pytest.raises(SpecError, match=rf"^Job spec {cid} is invalid: limits.memory_mb: "):
        load_spec(store, cid)


def test_oversized_spec_is_refused_before_reading(store: ContentStore) -> None:
    spec = JobSpec.model_validate(full_spec())
    cid = store.put_bytes(spec.to_bytes())
    size = len(spec.to_bytes())

    with pytest.raises(SpecError, match=rf"is {size} bytes, over the {size - 1}-byte limit for a spec"):
        load_spec(store, cid, max_size=size - 1)
    assert load_spec(store, cid, max_size=size) == spec


def test_default_limit_refuses_a_two_megabyte_spec(store: ContentStore) -> None:
    cid = store.put_bytes(b" " * 2_000_000)
    with pytest.raises(SpecError, match="over the 1000000-byte limit"):
        load_spec(store, cid)


def test_a_directory_is_not_a_spec(store: ContentStore, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "spec.json").write_bytes(JobSpec(version=1, executor="wasm", artifact=MODULE).to_bytes())
    cid = store.put_directory(tmp_path / "d")
    with pytest.raises(SpecError, match=rf"^Job spec {cid} is a directory, not a JSON file"):
        load_spec(store, cid)


# --------------------------------------------------------------- against terms


def test_check_terms() -> None:
    spec = JobSpec.model_validate(full_spec())  # docker, network, parent 7
    docker = dict(client=CLIENT, spec_cid="x", max_price=1, max_units=1, collateral=1, executor=Executor.DOCKER)

    spec.check_terms(JobTerms.create(**docker, safety=SafetyClass.DESTRUCTIVE, parents=(7,)))  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="asks for network access but the job is nondestructive"):
        spec.check_terms(JobTerms.create(**docker, parents=(7,)))  # type: ignore[arg-type]
    with pytest.raises(SpecError, match=r"name parent job\(s\) \[7\] that the job's terms do not list"):
        spec.check_terms(JobTerms.create(**docker, safety=SafetyClass.DESTRUCTIVE))  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="executor is 'docker' but the job's terms say 'wasm'"):
        spec.check_terms(JobTerms.create(client=CLIENT, spec_cid="x", max_price=1, max_units=1, collateral=1))


def test_the_fuel_limit_is_the_time_limit_in_fuel_capped_by_max_units() -> None:
    wasm = JobSpec(version=1, executor="wasm", artifact=MODULE, limits=Limits(timeout_s=4))
    docker = JobSpec(version=1, executor="docker", artifact=MODULE, limits=Limits(timeout_s=4))

    def terms(max_units: int) -> JobTerms:
        return JobTerms.create(client=CLIENT, spec_cid="x", max_price=1, max_units=max_units, collateral=1)

    assert Limits.FUEL_PER_SECOND == WASM_FUEL_PER_SECOND == 500_000_000
    assert wasm.unit_limit(terms(10**12)) == 4 * WASM_FUEL_PER_SECOND  # the time limit binds
    assert wasm.unit_limit(terms(10**6)) == 10**6  # max_units binds
    assert docker.unit_limit(terms(10**12)) == 10**12  # Docker: CPU ms, its time limit is the clock


@pytest.mark.parametrize(
    ("executor", "timeout_s", "max_units", "exec_timeout", "message"),
    [
        # the job: a 30 s limit in a 10 s commit window
        (
            "docker",
            30,
            10**6,
            10,
            r"limits.timeout_s=30 s may take at most half of exec_timeout=10 s. "
            r"Lower limits.timeout_s to 5 or raise exec_timeout to 60\.$",
        ),
        ("docker", 6, 10**6, 10, r"Lower limits.timeout_s to 5"),
        (
            "wasm",
            30,
            10**12,
            10,
            r"a wasm run may burn 15,000,000,000 fuel .* more than half of exec_timeout=10 s "
            r".* to 2,500,000,000 fuel at most, or raise exec_timeout to 60\.$",
        ),
        ("wasm", 30, 2_500_000_001, 10, r"may burn 2,500,000,001 fuel"),
    ],
    ids=["docker-issue", "docker-just-over", "wasm-time-binds", "wasm-units-bind"],
)
def test_limits_that_do_not_fit_half_the_commit_window_are_refused(
    executor: str, timeout_s: int, max_units: int, exec_timeout: int, message: str
) -> None:
    spec = JobSpec(version=1, executor=executor, artifact=MODULE, limits=Limits(timeout_s=timeout_s))  # type: ignore[arg-type]
    kind = Executor.WASM if executor == "wasm" else Executor.DOCKER

    def terms(**overrides: int) -> JobTerms:
        fields: dict[str, Any] = dict(max_units=max_units, exec_timeout=exec_timeout) | overrides
        return JobTerms.create(client=CLIENT, spec_cid="x", executor=kind, max_price=1, collateral=1, **fields)

    with pytest.raises(SpecError, match=message):
        spec.check_terms(terms())
    # What the message proposes fits
    spec.check_terms(terms(exec_timeout=2 * timeout_s if executor == "docker" else 60))
    fitting = spec.model_copy(update={"limits": Limits(timeout_s=5)})
    fitting.check_terms(terms())
    if executor == "wasm":
        spec.check_terms(terms(max_units=2_500_000_000))  # exactly half the window on the reference machine


def test_output_limit_is_bounded_and_in_bytes() -> None:
    assert Limits().output_mb == 256 and Limits(output_mb=1).output_bytes == 1 << 20
    for bad in (0, 4097):
        with pytest.raises(SpecError, match=r"limits\.output_mb"):
            JobSpec.from_bytes(
                json.dumps(
                    {"version": 1, "executor": "wasm", "artifact": MODULE, "limits": {"output_mb": bad}}
                ).encode()
            )
