"""Issue 17: hostile templates and job files fail alone, with a message, within bounds.

Templates that could allocate gigabytes or loop for hours are rendered in a child Python
with an address-space limit and a timeout, so a regression fails the test instead of
taking the machine down."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest

from tasks.infra.errors import InputError, JobSpecError
from tasks.spec.job import build_job
from tasks.spec.template import PromptTemplate

ROOT = Path(__file__).resolve().parents[2]

_CHILD = textwrap.dedent(
    """
    import json, resource, sys
    import pyarrow as pa
    from tasks.spec.template import PromptTemplate
    with open("/proc/self/statm") as statm:
        now = int(statm.read().split()[0]) * resource.getpagesize()
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    limit = now + (1 << 30) if hard == resource.RLIM_INFINITY else min(now + (1 << 30), hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    for line in sys.stdin:
        source, cells = json.loads(line)
        try:
            template = PromptTemplate(source)
            rendered = template.render(pa.RecordBatch.from_pydict(cells)).to_pylist()[0]
            answer = {"ok": len(rendered)}
        except BaseException as exc:
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(answer), flush=True)
    """
)


def render_limited(cases: list[tuple[str, dict[str, list[str]]]]) -> list[dict]:
    """Render each (template, cells) in one child with 1 GB more address space and 120 s in all."""
    lines = "".join(json.dumps([source, cells]) + "\n" for source, cells in cases)
    done = subprocess.run(
        [sys.executable, "-c", _CHILD],
        input=lines,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    answers = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(answers) == len(cases), done.stderr[-2000:]
    return answers


TEXT = {"text": ["hello world"]}
DOUBLING_TILDE = "{% set a = 'x' * 100000 %}" + "".join(
    f"{{% set {b} = {a} ~ {a} %}}" for a, b in zip("abcdefghij", "bcdefghijk", strict=True)
)
DOUBLING_PLUS = DOUBLING_TILDE.replace("~", "+")
TEN = ",".join(["a"] * 10)
ALIASED = (
    "{% set a = ['x' * 100000] %}"
    + f"{{% set b = [{TEN}] %}}"
    + f"{{% set c = [{TEN.replace('a', 'b')}] %}}"
    + f"{{% set d = [{TEN.replace('a', 'c')}] %}}"
    + "{{ d }}"
)
REPLACES = "{{ 'x'" + ".replace('', 'yyyyyyyyyy')" * 7 + " }}"

HOSTILE = [
    ("chained *", "{{ 'x' * 100000 * 100000 }}", r"the \* operator would make a value of 10,000,000,000"),
    (
        "chained * on a cell",
        "{{ text * 100000 * 100000 }}",
        r"the \* operator would make a value of 1,100,000",
    ),
    ("list *", "{{ [1] * 100000 * 100000 }}", r"the \* operator would make a value of 10,000,000,000"),
    ("center method", "{{ text.center(1000000000) }}", r"center\(\) would make a value of 1,000,000,000"),
    ("ljust method", "{{ text.ljust(1000000000) }}", r"ljust\(\) would make a value of 1,000,000,000"),
    ("center filter", "{{ text|center(1000000000) }}", r"center filter's argument 1000000000 is too large"),
    (
        "indent filter",
        "{{ ((text ~ '\\n') * 50000) | indent(100) }}",
        r"the indent filter would make a value",
    ),
    (
        "format filter",
        "{{ '%01000000000d'|format(1) }}",
        r"format filter would make a value of 1,000,000,014",
    ),
    ("% operator", "{{ '%01000000000d' % 1 }}", r"% formatting would make a value of 1,000,000,014"),
    ("str.format", "{{ '{:>1000000000}'.format(1) }}", r"format\(\) would make a value of 1,000,000,001"),
    ("doubling with ~", DOUBLING_TILDE, r"the ~ operator would make a value of 1,600,000"),
    ("doubling with +", DOUBLING_PLUS, r"the \+ operator would make a value of 1,600,000"),
    (
        "big range",
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
        r"range\(\) of more than 10000 numbers",
    ),
    ("aliased lists", ALIASED, r"the output would make a value of 1,000,106 characters"),
    ("replace chain", REPLACES, r"replace\(\) would make a value of 3,543,121"),
    (
        "int.to_bytes",
        "{{ (1).to_bytes(1000000000, 'big') }}",
        r"attribute 'to_bytes' of 'int' object is unsafe",
    ),
    ("list.append", "{% set l = [1] %}{{ l.append(2) }}", r"attribute 'append' of 'list' object is unsafe"),
    (
        "round precision",
        "{{ 5|round(1000000000, 'floor') }}",
        r"round filter's argument 1000000000 is too large",
    ),
    (
        "values held in a macro",
        "{% macro m() %}{% for i in range(10000) %}{{ 'x' * 100000 }}{% endfor %}{% endmacro %}"
        "{% set y = m() %}",
        r"made more than 10,000,000 characters of values for one row",
    ),
    (
        "literal text in loops",
        "{% for i in range(10000) %}{% for j in range(10000) %}LITERAL{% endfor %}{% endfor %}",
        r"the rendered prompt is longer than 1,000,000 characters \(1,000,000 plus the row's own text\)",
    ),
]


def test_hostile_templates_fail_with_a_message_within_bounds() -> None:
    answers = render_limited([(source, TEXT) for _name, source, _message in HOSTILE])
    wrong = []
    for (name, _source, message), answer in zip(HOSTILE, answers, strict=True):
        error = answer.get("error", "")
        if not (
            error.startswith("InputError: the prompt template failed on row 1") and re.search(message, error)
        ):
            wrong.append(f"{name}: {answer}")
    assert not wrong, "\n".join(wrong)


def test_a_row_that_runs_too_long_stops_with_a_note() -> None:
    nested = "{% for a in range(10000) %}{% for b in range(10000) %}{% endfor %}{% endfor %}"
    recursion = "{% macro f(n) %}{% if n < 40 %}{{ f(n+1) }}{{ f(n+1) }}{% endif %}{% endmacro %}{{ f(0) }}"
    text_loops = (
        "{% set s = text * 100 %}"
        "{% for a in s %}{% for b in s %}{% for c in s %}{% endfor %}{% endfor %}{% endfor %}"
    )
    for answer in render_limited([(nested, TEXT), (recursion, TEXT), (text_loops, TEXT)]):
        error = answer.get("error", "")
        assert re.search(r"TemplateLimitError: rendering one row took longer than 1 s", error), answer


def test_nothing_of_the_template_runs_while_it_compiles() -> None:
    """Jinja folds constants at compile time; a filter folded there would run unbounded."""
    from tasks.spec.template import _ENV

    code = _ENV.compile("{{ 'abc'|upper }}{{ 'x' ~ 'y' }}{{ '%05d'|format(1) }}", raw=True)
    assert "ABC" not in code and "00001" not in code  # Jinja alone folds them to 'ABCxy00001'
    assert PromptTemplate("{{ 'abc'|upper }} {{ '%05d'|format(1) }}").render(
        pa.RecordBatch.from_pydict(TEXT)
    ).to_pylist() == ["ABC 00001"]


def test_only_allow_listed_globals_and_filters_exist() -> None:
    from tasks.spec.template import _ENV

    assert set(_ENV.globals) == {"range", "dict"}
    for dropped in ("random", "pprint", "urlize", "xmlattr", "striptags"):
        with pytest.raises(ValueError, match=f"No filter named '{dropped}'"):
            PromptTemplate(f"{{{{ text|{dropped} }}}}")
    # lipsum, cycler, joiner, namespace are no globals: a template naming them reads a column
    template = PromptTemplate("{{ lipsum(100000000) }}{{ cycler(1) }}{{ namespace() }}{{ joiner() }}")
    with pytest.raises(
        InputError, match=r"column\(s\) 'cycler', 'joiner', 'lipsum', 'namespace' which the table"
    ):
        template.check_schema(pa.schema([("text", pa.string())]), "in.csv")


def test_a_big_cell_still_renders_through_logic() -> None:
    """The limits grow with the row's own text: a 3 MB document passes through a filter."""
    big = "word " * 600_000
    template = PromptTemplate("{% if text %}{{ text | trim }}{% endif %} / {{ text | length }}")
    rendered = template.render(pa.RecordBatch.from_pydict({"text": [big]})).to_pylist()
    assert rendered == [big.strip() + " / 3000000"]


def test_plain_templates_keep_the_column_wise_path_and_reach_any_column() -> None:
    template = PromptTemplate(
        '{{ row["unit price"] }} | {{ row[\'a.b\'] }} | {{ row["range"] }} | {{ text }}'
    )
    assert template.simple_parts == ["", "unit price", " | ", "a.b", " | ", "range", " | ", "text", ""]
    cells = {"unit price": ["9.99"], "a.b": ["x"], "range": ["r"], "text": ["t"]}
    assert template.render(pa.RecordBatch.from_pydict(cells)).to_pylist() == ["9.99 | x | r | t"]


@pytest.mark.parametrize("name", ["range", "self", "loop", "dict", "unit price", "a.b", "row", "none"])
def test_any_column_name_is_reachable_through_row(name: str) -> None:
    cells = {name: ["v"], "text": ["t"]}
    batch = pa.RecordBatch.from_pydict(cells)
    logic = PromptTemplate(
        f'{{% for i in range(2) %}}{{{{ row["{name}"] | upper }}}}{{% endfor %}}-{{{{ text }}}}'
    )
    assert logic.columns == [name, "text"] or set(logic.columns) == {name, "text"}
    assert logic.render(batch).to_pylist() == ["VV-t"]
    plain = PromptTemplate(f'{{{{ row["{name}"] }}}}')
    assert plain.render(batch).to_pylist() == ["v"]


@pytest.mark.parametrize("name", ["range", "self", "dict", "row"])
def test_a_bare_template_name_is_refused_with_the_row_syntax(name: str) -> None:
    with pytest.raises(JobSpecError, match=rf'field `prompt`: .*{name}.*row\["'):
        build_job(None, {"model": "grok-4.3", "prompt": f"{{{{ {name} }}}}"})


def test_names_jinja_reads_itself_never_end_in_a_traceback() -> None:
    batch = pa.RecordBatch.from_pydict(TEXT)
    assert PromptTemplate("{{ none }}/{{ text }}").render(batch).to_pylist() == ["None/hello world"]
    assert PromptTemplate("{{ loop }}").columns == ["loop"]  # outside a loop: a column
    with pytest.raises(ValueError, match=r"row\.name, row\[variable\] and a bare row are not supported"):
        PromptTemplate("{{ row.text }}")
    with pytest.raises(ValueError, match="use another name for a variable"):
        PromptTemplate("{% for row in rows %}{% endfor %}")
    with pytest.raises(ValueError, match="cannot extend, include or import"):
        PromptTemplate("{% include 'secrets.txt' %}")
    with pytest.raises(InputError, match=r"column\(s\) 'unit price' which the table lacks"):
        PromptTemplate('{{ row["unit price"] }}').check_schema(pa.schema([("text", pa.string())]), "in.csv")


# -- job files -----------------------------------------------------------------------------
BASE = "model: grok-4.3\nprompt: '{{ text }}'\n"


def alias_bomb(levels: int) -> str:
    text = BASE + "params:\n  x0: &a0 [" + ",".join(['"lol"'] * 9) + "]\n"
    for i in range(1, levels):
        text += f"  x{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]\n"
    return text


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("text", "message"),
    [
        (alias_bomb(7), r"is refused: it expands to more than 100,000 values once its aliases are followed"),
        (BASE + "params: &a {x: *a}\n", r"is refused: an alias refers to a value that contains it"),
        (
            BASE + "params:\n  a: &a 1\n" + "".join(f"  b{i}: *a\n" for i in range(101)),
            r"is refused: it uses more than 100 aliases",
        ),
        (BASE + "# " + "x" * 1_000_000 + "\n", r"is larger than 1,000,000 bytes"),
        (
            BASE + "params: {x: " + "[" * 50_000 + "]" * 50_000 + "}\n",
            r"is refused: its values are nested too deeply",
        ),
        (BASE + "params: {x: " + "9" * 5000 + "}\n", r"is not valid YAML: Exceeds the limit"),
    ],
    ids=["alias bomb", "recursive alias", "many aliases", "over 1 MB", "deep nesting", "huge integer"],
)
def test_hostile_job_files_are_refused_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    job_file = tmp_path / "evil.job.yaml"
    job_file.write_text(text)
    with pytest.raises(JobSpecError, match=rf"job file {re.escape(str(job_file))} {message}"):
        build_job(job_file)


def test_a_few_anchors_still_work(tmp_path: Path) -> None:
    job_file = tmp_path / "ok.job.yaml"
    job_file.write_text(BASE + "params: &p {max_tokens: 5}\ncolumns: {a: string}\nsystem: &s hi\n")
    assert build_job(job_file).params == {"max_tokens": 5}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"max_tokens": "ten"}, r"params.max_tokens must be a whole number of at least 1, not 'ten'"),
        ({"max_tokens": 0}, r"params.max_tokens must be a whole number of at least 1, not 0"),
        ({"max_tokens": True}, r"params.max_tokens must be a whole number of at least 1, not True"),
        ({"max_tokens": 2.5}, r"params.max_tokens must be a whole number"),
        ({"temperature": 5}, r"params.temperature must be a number from 0 to 2, not 5"),
        ({"temperature": "hot"}, r"params.temperature must be a number from 0 to 2, not 'hot'"),
        ({"top_p": 1.5}, r"params.top_p must be a number from 0 to 1, not 1.5"),
        ({"presence_penalty": -3}, r"params.presence_penalty must be a number from -2 to 2"),
        ({"frequency_penalty": 2.1}, r"params.frequency_penalty must be a number from -2 to 2"),
        ({"max_completion_tokens": -1}, r"params.max_completion_tokens must be a whole number"),
        ({"top_logprobs": 50}, r"params.top_logprobs must be a whole number from 0 to 20"),
        ({"logprobs": "yes"}, r"params.logprobs must be true or false"),
        ({"stop": [1, 2]}, r"params.stop must be a string or a list of strings"),
        ({"seed": 1.5}, r"params.seed must be a whole number"),
        ({"response_format": "json"}, r"params.response_format must be a mapping"),
        ({"extra": float("nan")}, r"params.extra must be a finite number"),
        ({"extra": {"when": __import__("datetime").date(2024, 1, 1)}}, r"params.extra.when is a date"),
    ],
)
def test_request_fields_are_checked_before_upload_naming_the_field(params: dict, message: str) -> None:
    with pytest.raises(JobSpecError, match=rf"field `params`: {message}"):
        build_job(None, {"model": "grok-4.3", "prompt": "{{ text }}", "params": params})


def test_good_request_fields_pass(tmp_path: Path) -> None:
    params = {
        "max_tokens": 200,
        "temperature": 0,
        "top_p": 0.9,
        "stop": ["\n"],
        "seed": 7,
        "logprobs": True,
        "top_logprobs": 3,
        "reasoning_effort": "low",
        "custom_field": {"a": [1, "b", None]},
    }
    assert build_job(None, {"model": "grok-4.3", "prompt": "{{ text }}", "params": params}).params == params


# -- the killable check of an inbox template ----------------------------------------------
SLOW = "{% for a in range(10000) %}{% for b in range(10000) %}{% endfor %}{% endfor %}{{ text }}"


@pytest.fixture
def table(tmp_path: Path) -> Path:
    path = tmp_path / "drop.csv"
    path.write_text("text\n\U0001f600\U0001f600\U0001f600\U0001f600\U0001f600\nb\nc\n", encoding="utf-8")
    return path


@pytest.mark.timeout(60)
def test_the_check_reports_a_template_that_runs_too_long(table: Path) -> None:
    from tasks.spec.template_check import check_template_in_child

    with pytest.raises(
        JobSpecError,
        match=r"^evil.job.yaml: the prompt template failed on row 1 of a block of 3: "
        r"TemplateLimitError: rendering one row took longer than 1 s$",
    ):
        check_template_in_child(SLOW, table, label="evil.job.yaml")


@pytest.mark.timeout(60)
def test_the_check_kills_its_child_at_the_wall_clock(table: Path) -> None:
    from tasks.spec.template_check import check_template_in_child

    with pytest.raises(
        JobSpecError,
        match=r"^evil.job.yaml: the prompt template did not finish rendering the first 3 row\(s\) "
        r"within 0.5 s and was stopped; simplify its loops or recursion$",
    ):
        check_template_in_child(SLOW, table, label="evil.job.yaml", timeout_s=0.5)


@pytest.mark.timeout(60)
def test_the_check_holds_its_child_to_a_memory_limit(table: Path) -> None:
    """17 values of 500,000 emoji (2 MB each) fit the sandbox's limits but not 16 MB."""
    from tasks.spec.template_check import check_template_in_child

    held = ", ".join(f"a ~ {i}" for i in range(17))
    hungry = "{% set a = text * 100000 %}{% set l = [" + held + "] %}{{ l|length }}"
    check_template_in_child(hungry, table, label="ok.job.yaml")  # within the default 1 GB
    with pytest.raises(JobSpecError, match=r"^evil.job.yaml: .*(MemoryError: it ran out of memory|16 MB)"):
        check_template_in_child(hungry, table, label="evil.job.yaml", memory_bytes=16 << 20)


def test_plain_templates_and_unreadable_tables_start_no_child(
    table: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tasks.spec import template_check

    def no_child(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a child process was started")

    monkeypatch.setattr(template_check.subprocess, "run", no_child)
    template_check.check_template_in_child('{{ text }} {{ row["text"] }}', table, label="j")
    template_check.check_template_in_child(
        SLOW.replace("text", "missing"), table, label="j"
    )  # prepare explains
    empty = tmp_path / "empty.csv"
    empty.write_text("text\n")
    template_check.check_template_in_child(SLOW, empty, label="j")
