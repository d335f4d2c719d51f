from pathlib import Path

import pytest

from tasks.infra.errors import JobSpecError
from tasks.spec.job import build_job


def test_yaml_job_with_flag_overrides(tmp_path: Path) -> None:
    job_file = tmp_path / "j.yaml"
    job_file.write_text(
        "name: reviews\nmodel: grok-4.3\nprompt: 'Classify: {{ text }}'\n"
        "params: {temperature: 0.2, max_tokens: 50}\n"
    )
    job = build_job(
        job_file, {"model": "grok-4.20-0309-reasoning", "params": {"temperature": 0}, "system": None}
    )
    assert job.model == "grok-4.20-0309-reasoning"
    assert job.params == {"temperature": 0, "max_tokens": 50}  # flags merge into params
    assert job.name == "reviews"
    assert job.template.columns == ["text"]


def test_missing_field_is_named(tmp_path: Path) -> None:
    job_file = tmp_path / "j.yaml"
    job_file.write_text("model: grok-4.3\n")
    with pytest.raises(JobSpecError, match=r"field `prompt`: Field required") as info:
        build_job(job_file)
    assert str(job_file) in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"params": {"messages": []}}, r"field `params`: params.messages is not allowed"),
        ({"params": {"n": 2}}, r"n must stay 1"),
        ({"prompt": "{{ text "}, r"field `prompt`: template does not parse"),
        ({"max_attempts": 0}, r"field `max_attempts`"),
        ({"shard_max_lines": 60_000}, r"field `shard_max_lines`"),
        ({"temprature": 1}, r"field `temprature`: unknown field"),
    ],
)
def test_invalid_fields_name_the_field(overrides: dict, message: str) -> None:
    fields = {"model": "grok-4.3", "prompt": "{{ text }}", **overrides}
    with pytest.raises(JobSpecError, match=message):
        build_job(None, fields)


def test_malformed_yaml_names_the_file(tmp_path: Path) -> None:
    job_file = tmp_path / "bad.yaml"
    job_file.write_text("model: [unclosed\n")
    with pytest.raises(JobSpecError, match=r"bad.yaml is not valid YAML"):
        build_job(job_file)


def test_job_file_must_be_a_mapping(tmp_path: Path) -> None:
    job_file = tmp_path / "list.yaml"
    job_file.write_text("- a\n- b\n")
    with pytest.raises(JobSpecError, match="must hold a mapping"):
        build_job(job_file)


def test_fingerprint_ignores_output_but_not_prompt() -> None:
    base = {"model": "grok-4.3", "prompt": "{{ text }}"}
    a = build_job(None, base)
    assert a.fingerprint() == build_job(None, {**base, "output": "x.parquet"}).fingerprint()
    assert a.fingerprint() != build_job(None, {**base, "prompt": "Q: {{ text }}"}).fingerprint()
