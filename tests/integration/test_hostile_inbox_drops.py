"""Issue 17: a hostile drop fails alone, with a note, and the scan goes on to the next file."""

import os
import time
from pathlib import Path

import pytest

from emulator import RunningEmulator
from flows.scan_inbox import scan_inbox
from tasks.infra.errors import PassFailedError
from tests.helpers import write_csv

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.timeout(240)]
JOB = "model: grok-4.3\nprompt: 'Classify: {{ text }}'\n"
BOMB = (
    "model: grok-4.3\nprompt: '{{ text }}'\nparams:\n  x0: &a0 ["
    + ",".join(['"lol"'] * 9)
    + "]\n"
    + "".join(f"  x{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]\n" for i in range(1, 9))
)
HOSTILE = {
    "a-slow": (
        'model: grok-4.3\nprompt: "{% for a in range(10000) %}{% for b in range(10000) %}'
        '{% endfor %}{% endfor %}{{ text }}"\n',
        "a-slow.job.yaml: the prompt template failed on row 1 of a block of 3: "
        "TemplateLimitError: rendering one row took longer than 1 s",
    ),
    "b-huge": (
        'model: grok-4.3\nprompt: "{{ text * 100000 * 100000 }}"\n',
        "the * operator would make a value of",
    ),
    "c-format": (
        "model: grok-4.3\nprompt: \"{{ '%01000000000d'|format(1) }} {{ text }}\"\n",
        "the format filter would make a value of 1,000,000,014 characters",
    ),
    "d-lipsum": (
        'model: grok-4.3\nprompt: "{{ lipsum(100000000) }}"\n',
        "the prompt template uses column(s) 'lipsum' which the table lacks",
    ),
    "e-bomb": (BOMB, "is refused: it expands to more than 100,000 values once its aliases are followed"),
    "f-tokens": (
        JOB + 'params: {max_tokens: "ten"}\n',
        "params.max_tokens must be a whole number of at least 1",
    ),
    "g-temperature": (
        JOB + "params: {temperature: 5}\n",
        "params.temperature must be a number from 0 to 2, not 5",
    ),
    "h-self": ('model: grok-4.3\nprompt: "{{ self }}"\n', "{{ self }} does not read a column"),
}


def test_each_hostile_drop_fails_alone_with_a_note_and_the_good_one_is_sent(
    tmp_path: Path, emulator: RunningEmulator
) -> None:
    data = tmp_path / "data"
    inbox = data / "inbox"
    inbox.mkdir(parents=True)
    for name, (job, _note) in HOSTILE.items():
        write_csv(inbox / f"{name}.csv", [{"text": f"row {i}"} for i in range(3)])
        (inbox / f"{name}.job.yaml").write_text(job)
    write_csv(inbox / "z-good.csv", [{"unit price": "9.99", "range": "r", "text": "fine"}])
    good_prompt = '{% if text %}{{ row["unit price"] }} {{ row["range"] }} {{ text }}{% endif %}'
    (inbox / "z-good.job.yaml").write_text(
        f"model: grok-4.3\nprompt: '{good_prompt}'\nparams: {{temperature: 0, max_tokens: 20}}\n"
    )
    old = time.time() - 60
    for path in inbox.iterdir():
        os.utime(path, (old, old))
    with pytest.raises(PassFailedError) as failed:
        scan_inbox(data_dir=str(data), settle_s=5)
    outcome = failed.value.outcome
    assert sorted(outcome["failed"]) == sorted(f"{name}.csv" for name in HOSTILE)
    assert outcome["submitted"] == ["z-good.csv"]
    for name, (_job, note) in HOSTILE.items():
        assert note in (data / "failed" / f"{name}.error.md").read_text(), name
        assert (data / "failed" / f"{name}.csv").exists()
    assert list(inbox.iterdir()) == []
    assert emulator.state.count("POST", "/v1/files", 200) == 1  # the good drop's requests only
    (uploaded,) = emulator.state.files.values()
    assert b'"content":"9.99 r fine"' in uploaded.content
    assert emulator.state.count("POST", "/v1/batches", 200) == 1
