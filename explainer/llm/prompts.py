"""Prompt templates: versioned YAML data files in ``prompts/``.

A template's identity is ``name@version#hash``, where the hash is the sha256 of the file's
bytes, so any edit (even one that forgets to bump the version) gives a new key and never
mixes explanations written from different prompts.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from explainer.errors import ConfigError

PROMPTS_DIR = Path(__file__).resolve().parents[2] / "prompts"


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    version: str
    sha256: str
    data: dict[str, Any] = field(repr=False, compare=False)

    @property
    def key(self) -> str:
        """Short display form ``name@version#hash8``."""
        return f"{self.name}@{self.version}#{self.sha256[:8]}"

    def __getitem__(self, item: str) -> Any:
        return self.data[item]

    def get(self, item: str, default: Any = None) -> Any:
        return self.data.get(item, default)

    def render(self, field_name: str, **values: Any) -> str:
        """Render one Jinja2 field of the template with ``values`` (compiled once per process)."""
        key = (self.sha256, field_name, self.data[field_name])
        if key not in _compiled:
            import jinja2

            env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False)
            _compiled[key] = env.from_string(self.data[field_name])
        return _compiled[key].render(**values)


_compiled: dict[tuple[str, str, str], Any] = {}


_parsed: dict[tuple[str, int, int], PromptTemplate] = {}


def load_template(name: str, directory: Path | None = None) -> PromptTemplate:
    """Load ``prompts/{name}.yaml`` (or a path to a YAML file). Parsed templates are kept per
    process, keyed by path, size and modification time, so an edited file is read again."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else (directory or PROMPTS_DIR) / f"{name}.yaml"
    try:
        st = path.stat()
    except OSError:
        st = None
    if st is None or not path.is_file():
        known = sorted(p.stem for p in (directory or PROMPTS_DIR).glob("*.yaml"))
        raise ConfigError(f"unknown prompt template {name!r}; known templates: {', '.join(known)}")
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _parsed:
        _parsed[key] = _parse(path, path.read_bytes())
    return _parsed[key]


def _parse(path: Path, raw: bytes) -> PromptTemplate:
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"prompt template {path} is not valid YAML: {exc}") from exc
    for key in ("name", "version"):
        if not isinstance(data, dict) or key not in data:
            raise ConfigError(f"prompt template {path} lacks the field {key!r}")
    return PromptTemplate(str(data["name"]), str(data["version"]), hashlib.sha256(raw).hexdigest(), data)
