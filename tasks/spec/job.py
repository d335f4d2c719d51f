"""The job spec: what to ask of every row. Loadable from YAML; CLI flags override fields."""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from tasks.infra.errors import JobSpecError
from tasks.infra.records import OUTPUT_RESULT_COLUMNS
from tasks.spec.answer_schema import check_schema, response_format, schema_from_columns
from tasks.spec.template import PromptTemplate

# Request fields that grok-batch owns; a job may not set them through `params`.
_RESERVED_PARAMS = {
    "model": "set `model` at the top level of the job",
    "messages": "messages are built from `system` and `prompt`",
    "stream": "batch requests cannot stream",
    "n": "one answer per row: n must stay 1",
}
# Job files may come from the inbox (untrusted): bounded in size and in what aliases expand to.
MAX_JOB_FILE_BYTES = 1_000_000
MAX_YAML_ALIASES = 100  # `*name` references in one job file
MAX_YAML_NODES = 100_000  # values in the document once every alias is expanded


def _number(low: float, high: float) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high:
            return None
        return f"must be a number from {low:g} to {high:g}"

    return check


def _whole(low: int, high: int | None = None) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        whole = isinstance(value, int) and not isinstance(value, bool)
        if whole and value >= low and (high is None or value <= high):
            return None
        if high is None:
            return f"must be a whole number of at least {low}"
        return f"must be a whole number from {low} to {high}"

    return check


def _kind(*kinds: type, described: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool)):
            return None
        return f"must be {described}"

    return check


def _stop(value: Any) -> str | None:
    if isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        return None
    return "must be a string or a list of strings"


# Chat-completions request fields with the values xAI and OpenAI accept (the wider of the two
# where they differ, e.g. top_logprobs); checked before anything is uploaded. Other fields pass.
_PARAM_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "max_tokens": _whole(1),
    "max_completion_tokens": _whole(1),
    "temperature": _number(0, 2),
    "top_p": _number(0, 1),
    "frequency_penalty": _number(-2, 2),
    "presence_penalty": _number(-2, 2),
    "seed": _whole(-(2**63), 2**63 - 1),
    "logprobs": _kind(bool, described="true or false"),
    "top_logprobs": _whole(0, 20),
    "stop": _stop,
    "user": _kind(str, described="a string"),
    "reasoning_effort": _kind(str, described="a string, e.g. low or high"),
    "parallel_tool_calls": _kind(bool, described="true or false"),
    "tools": _kind(list, described="a list"),
    "tool_choice": _kind(str, dict, described="a string or a mapping"),
    "response_format": _kind(dict, described="a mapping"),
    "logit_bias": _kind(dict, described="a mapping"),
    "search_parameters": _kind(dict, described="a mapping"),
}

# xAI caps a file at 50,000 requests; the Files API at 48-50 MB (reference §1.1, §3).
MAX_SHARD_LINES = 50_000
DEFAULT_SHARD_BYTES = 45 * 1024 * 1024
_NOT_FINGERPRINTED = {
    "output",
    "name",
    "max_cost_usd",
    "catalog",
    "auto_sync_max_rows",
    "sync_concurrency",
    "sync_requests_per_minute",
    "sync_tokens_per_minute",
    "keep_service_files",
    "output_formats",  # copies of the output written after the run; the requests are the same
}
OUTPUT_FORMATS = ("csv", "xlsx")  # besides the Parquet, which is always written


class JobSpec(BaseModel):
    """One question for every row of a table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        default="job",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="Shown in Prefect, reports and status",
    )
    model: str = Field(min_length=1, description="The model every row is sent to, e.g. grok-4.3")
    system: str | None = Field(default=None, description="System message sent with every row")
    prompt: str = Field(min_length=1, description="Template with {{ column }} placeholders")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Request fields, e.g. {temperature: 0, max_tokens: 200}"
    )
    id_column: str | None = Field(default=None, description="Column with unique row ids (else row position)")
    provider: Literal["xai", "openai"] = Field(
        default="xai", description="xai, or openai for any OpenAI-compatible Batch API"
    )
    base_url: str | None = Field(
        default=None, description="The provider's API root; default from XAI_BASE_URL / OPENAI_BASE_URL"
    )
    mode: Literal["batch", "sync", "auto"] = Field(
        default="batch",
        description="batch (cheaper, hours), sync (chat completions now), auto (sync for small)",
    )
    auto_sync_max_rows: int = Field(default=500, ge=0, description="mode auto: sync up to this many rows")
    sync_concurrency: int = Field(default=8, ge=1, le=256, description="mode sync: requests in flight")
    sync_requests_per_minute: int = Field(default=300, ge=1, description="mode sync: request rate limit")
    sync_tokens_per_minute: int = Field(default=1_000_000, ge=1, description="mode sync: token rate limit")
    columns: dict[str, Any] | None = Field(
        default=None,
        description="Structured output, short form: {name: string|integer|number|boolean|[values]}",
    )
    json_schema: dict[str, Any] | None = Field(default=None, description="Structured output as a JSON Schema")
    retry_invalid_output: bool = Field(default=False, description="Send answers that miss the schema again")
    max_cost_usd: float | None = Field(default=None, gt=0, description="Refuse to submit above this estimate")
    catalog: str | None = Field(default=None, description="Model catalog YAML (default: the built-in one)")
    cache: bool = Field(default=True, description="Reuse answers to identical requests from earlier runs")
    keep_service_files: bool = Field(
        default=False,
        description="Keep the run's files at the service (requests, results); else deleted once collected",
    )
    # A job file's output path for the CLI; hidden from Prefect's form, whose own `output`
    # parameter is the one output setting there.
    output: SkipJsonSchema[str | None] = None
    max_attempts: int = Field(default=3, ge=1, le=10, description="Rounds per row, counting the first")
    shard_max_lines: int = Field(
        default=MAX_SHARD_LINES, ge=1, le=MAX_SHARD_LINES, description="Requests per batch file"
    )
    shard_max_bytes: int = Field(
        default=DEFAULT_SHARD_BYTES, ge=1024, le=200 * 1024 * 1024, description="Bytes per batch file"
    )
    result_prefix: str = Field(default="", description="Prefix for the added columns, e.g. grok_")
    sheet: str | None = Field(
        default=None, min_length=1, description="An Excel input's sheet to read (default: the first)"
    )
    output_formats: list[Literal["csv", "xlsx"]] = Field(
        default_factory=list,
        description="Also write the output as NAME.csv and/or NAME.xlsx beside NAME.parquet",
    )

    @field_validator("prompt")
    @classmethod
    def _prompt_parses(cls, value: str) -> str:
        _template(value)  # raises ValueError with the template's own complaint
        return value

    @field_validator("output_formats", mode="before")
    @classmethod
    def _formats_listed_once(cls, value: Any) -> Any:
        """`output_formats: xlsx` is a list of one; each format is written once."""
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            value = list(dict.fromkeys(v.lower() if isinstance(v, str) else v for v in value))
        return value

    @field_validator("params")
    @classmethod
    def _params_are_request_fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key, item in value.items():
            if key in _RESERVED_PARAMS:
                raise ValueError(f"params.{key} is not allowed: {_RESERVED_PARAMS[key]}")
            problem = _PARAM_CHECKS[key](item) if key in _PARAM_CHECKS else None
            if problem is not None:
                raise ValueError(f"params.{key} {problem}, not {item!r}")
            _check_json_value(item, f"params.{key}")
        return value

    @field_validator("columns")
    @classmethod
    def _columns_form_a_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            schema_from_columns(value)  # raises ValueError naming the column
        return value

    @field_validator("json_schema")
    @classmethod
    def _schema_is_usable(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            check_schema(value)
        return value

    @model_validator(mode="after")
    def _one_answer_shape(self) -> JobSpec:
        if self.columns is not None and self.json_schema is not None:
            raise ValueError("give either `columns` or `json_schema`, not both")
        schema = self.answer_schema
        if schema is not None and "response_format" in self.params:
            raise ValueError("params.response_format is set from `columns`/`json_schema`; remove one of them")
        taken = sorted(set(schema.get("properties") or {}) & set(OUTPUT_RESULT_COLUMNS)) if schema else []
        if taken:
            raise ValueError(
                f"answer field(s) {', '.join(map(repr, taken))} would clash with the result columns "
                f"grok-batch adds ({', '.join(OUTPUT_RESULT_COLUMNS)}); rename them"
            )
        return self

    @property
    def answer_schema(self) -> dict[str, Any] | None:
        """The JSON Schema every answer must fit, when the job asks for structured output."""
        if self.columns is not None:
            return schema_from_columns(self.columns)
        return self.json_schema

    @property
    def request_params(self) -> dict[str, Any]:
        """Request fields beside model and messages, response_format included."""
        schema = self.answer_schema
        if schema is None:
            return dict(self.params)
        return {**self.params, "response_format": response_format(schema, "answer")}

    @property
    def catalog_path(self) -> Path | None:
        return Path(self.catalog) if self.catalog else None

    @property
    def template(self) -> PromptTemplate:
        return _template(self.prompt)

    @field_validator("base_url")
    @classmethod
    def _base_url_is_http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/") if value else value

    def resolve_mode(self, sendable_rows: int, batch_accepted: bool = True) -> Literal["batch", "sync"]:
        """`auto` sends small tables synchronously (answers in seconds, standard prices)
        and large ones as batches (cheaper where discounted, no rate limits); a model the
        batch endpoint refuses always goes sync."""
        if self.mode == "auto":
            return "sync" if sendable_rows <= self.auto_sync_max_rows or not batch_accepted else "batch"
        return self.mode

    def fingerprint(self) -> str:
        """Hash of everything that changes the requests sent or how (not where output
        goes, nor client-side pacing, which may be tuned on a rerun)."""
        # The sheet read is part of the input (another sheet, another run); a job naming none
        # keeps the fingerprint it had before the field existed.
        unset = {"sheet"} if self.sheet is None else set()
        relevant = self.model_dump(exclude=_NOT_FINGERPRINTED | unset)
        canonical = json.dumps(relevant, sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@functools.lru_cache(maxsize=32)
def _template(prompt: str) -> PromptTemplate:
    """Parsed (and compiled) once per prompt: prepare asks for it for every block."""
    return PromptTemplate(prompt)


def _format_validation_error(source: str, error: ValidationError) -> str:
    lines = [f"{source} is not a valid job:"]
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field (allowed: " + ", ".join(JobSpec.model_fields) + ")"
        lines.append(f"  - field `{field}`: {message}")
    return "\n".join(lines)


def _check_json_value(value: Any, where: str) -> None:
    """A request field goes into JSON as it is: only JSON's own values (no dates, bytes, NaN)."""
    stack = [(value, where)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"{at} must be a finite number, not {item!r}")
        if isinstance(item, dict):
            for key, entry in item.items():
                if not isinstance(key, str):
                    raise ValueError(f"{at} has a key {key!r}; keys must be strings")
                stack.append((entry, f"{at}.{key}"))
        elif isinstance(item, list):
            stack.extend((entry, f"{at}[{i}]") for i, entry in enumerate(item))
        elif not (item is None or isinstance(item, str | int | float | bool)):
            raise ValueError(f"{at} is a {type(item).__name__}; a request field holds JSON values only")


class _BoundedLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing alias bombs: a few aliases, a bounded expanded size."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_YAML_ALIASES:
                raise _TooLargeError(f"it uses more than {MAX_YAML_ALIASES} aliases (*name)")
        return super().compose_node(parent, index)

    def compose_document(self) -> yaml.Node | None:
        node = super().compose_document()
        if node is not None:
            _check_expanded_size(node)
        return node


class _TooLargeError(Exception):
    pass


def _check_expanded_size(root: yaml.Node) -> None:
    """Count the values of the document as if every alias were written out (each shared node
    counted once per reference), without expanding anything; refuse a recursive alias."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = _children(node)
        if done:
            on_path.discard(key)
            sizes[key] = min(1 + sum(sizes[id(c)] for c in children), MAX_YAML_NODES + 1)
            if sizes[key] > MAX_YAML_NODES:
                raise _TooLargeError(
                    f"it expands to more than {MAX_YAML_NODES:,} values once its aliases are followed"
                )
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise _TooLargeError("an alias refers to a value that contains it")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def read_job_file(path: Path) -> dict[str, Any]:
    """Raw mapping from a YAML job file, with errors that name the file. A job file is
    at most MAX_JOB_FILE_BYTES, and its aliases may not expand past MAX_YAML_NODES values."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_JOB_FILE_BYTES + 1)
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise JobSpecError(f"job file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise JobSpecError(f"job file {path} cannot be read: {exc}") from None
    if len(raw) > MAX_JOB_FILE_BYTES:
        raise JobSpecError(
            f"job file {path} is larger than {MAX_JOB_FILE_BYTES:,} bytes; a job file is a few lines"
        )
    try:
        data = yaml.load(text, Loader=_BoundedLoader)  # a SafeLoader with limits
    except _TooLargeError as exc:
        raise JobSpecError(f"job file {path} is refused: {exc}") from None
    except RecursionError:
        raise JobSpecError(f"job file {path} is refused: its values are nested too deeply") from None
    except (yaml.YAMLError, ValueError, TypeError) as exc:
        raise JobSpecError(f"job file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise JobSpecError(f"job file {path} must hold a mapping of fields, not {type(data).__name__}")
    return data


def build_job(
    job_file: Path | None = None, overrides: dict[str, Any] | None = None, *, source: str = ""
) -> JobSpec:
    """The job from a YAML file (optional) with non-None `overrides` on top."""
    fields: dict[str, Any] = read_job_file(job_file) if job_file else {}
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key == "params":
            fields["params"] = {**(fields.get("params") or {}), **value}
        else:
            fields[key] = value
    label = source or (f"job file {job_file}" if job_file else "the job given by flags")
    try:
        return JobSpec.model_validate(fields)
    except ValidationError as exc:
        raise JobSpecError(_format_validation_error(label, exc)) from None
