import pyarrow as pa
import pytest

from tasks.infra.errors import InputError
from tasks.spec.template import PromptTemplate


def batch(**columns: list) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(columns)


def test_simple_substitution_renders_column_wise() -> None:
    template = PromptTemplate("Review of {{ product }}: {{text}}!")
    assert template.simple_parts == ["Review of ", "product", ": ", "text", "!"]
    rendered = template.render(batch(product=["lamp", None], text=["ok", "bad"], other=[1, 2]))
    assert rendered.to_pylist() == ["Review of lamp: ok!", "Review of : bad!"]


def test_nulls_render_empty_not_none_or_nan() -> None:
    template = PromptTemplate("[{{ a }}|{{ b }}]")
    rendered = template.render(batch(a=pa.array([None, 1.5], pa.float64()), b=pa.array([None, "x"])))
    assert rendered.to_pylist() == ["[|]", "[1.5|x]"]


def test_jinja_logic_matches_and_values_are_never_rerendered() -> None:
    template = PromptTemplate("{% if text | trim %}Q: {{ text | upper }}{% endif %}")
    assert template.simple_parts is None
    rendered = template.render(batch(text=["{{ secret }}", "  ", None]))
    assert rendered.to_pylist() == ["Q: {{ SECRET }}", "", ""]


def test_cell_with_template_syntax_is_sent_literally_on_fast_path() -> None:
    rendered = PromptTemplate("{{ text }}").render(batch(text=["{{ 7*7 }} {% raw %}"]))
    assert rendered.to_pylist() == ["{{ 7*7 }} {% raw %}"]


def test_sandbox_blocks_python_internals() -> None:
    template = PromptTemplate("{{ text.__class__.__mro__ }}")
    with pytest.raises(Exception, match=r"unsafe|not safely|access"):
        template.render(batch(text=["x"]))


def test_missing_column_is_named() -> None:
    template = PromptTemplate("{{ txt }} and {{ product }}")
    with pytest.raises(InputError, match=r"'txt'.*Columns present: text, product"):
        template.check_schema(pa.schema([("text", pa.string()), ("product", pa.string())]), "in.csv")


def test_nested_column_in_template_is_refused() -> None:
    schema = pa.schema([("tags", pa.list_(pa.string()))])
    with pytest.raises(InputError, match=r"column 'tags' has type list<item: string>"):
        PromptTemplate("{{ tags }}").check_schema(schema, "in.parquet")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ 'x' * 10 ** 10 }}", r"\*\* operator is not allowed"),
        ("{{ text * 1000000000 }}", r"repeating text more than 100000 times"),
        ("{{ none.x }}", r"UndefinedError"),
    ],
)
def test_hostile_templates_fail_as_input_errors(source: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        PromptTemplate(source).render(batch(text=["x"]))
