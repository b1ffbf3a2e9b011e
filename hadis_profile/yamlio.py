"""Reading YAML people write (the zoo, latency files): safe, bounded, no silent duplicates.

``yaml.safe_load`` alone is not enough for a file from anywhere:

* it builds whatever the aliases describe: a few hundred bytes of nested
  aliases ("billion laughs") is one object graph that validation, hashing and
  error messages then walk as 10^9 values;
* its composer recurses once per nesting level, so a deep enough ``[[[[...``
  is a ``RecursionError``;
* a repeated mapping key silently keeps the last value (a key that overrides
  one merged in with ``<<: *anchor`` is not a repeat: that is what merging is for);
* some scalars it resolves raise plain ``ValueError`` (a 5,000-digit integer,
  a timestamp on the 45th of a month).

:func:`load_yaml` first walks the event stream (flat, no recursion) counting
nesting depth and the node count with every alias expanded, refusing a
document over :data:`~hadis_profile.limits.MAX_YAML_DEPTH` or
:data:`~hadis_profile.limits.MAX_YAML_NODES` before any object is built; then it
constructs with a SafeLoader that rejects duplicate keys. Every problem is one
:class:`~hadis_profile.errors.InputError` sentence naming the file and line.
PyYAML is imported lazily.
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

from hadis_profile.errors import InputError
from hadis_profile.fileio import read_bytes
from hadis_profile.limits import MAX_YAML_BYTES, MAX_YAML_DEPTH, MAX_YAML_NODES, check_file_size

__all__ = ["load_yaml", "read_yaml_file"]


def _where(mark: Any) -> str:
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


class _UniqueKeyLoader:
    """Build (lazily, to keep imports light) a SafeLoader that rejects duplicate
    mapping keys, which plain YAML silently resolves to the last."""

    _cls: Any = None

    @classmethod
    def get(cls) -> Any:
        if cls._cls is None:
            import yaml

            class Loader(yaml.SafeLoader):
                pass

            def construct_mapping(loader: Any, node: Any, deep: bool = False) -> dict:
                seen: set[Any] = set()
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue  # "<<: *base" merges; the mapping's own keys override it
                    key = loader.construct_object(key_node, deep=deep)
                    if not isinstance(key, Hashable):
                        raise yaml.constructor.ConstructorError(
                            None, None, "a mapping key is a list or mapping", key_node.start_mark
                        )
                    if key in seen:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"duplicate key {key!r}", key_node.start_mark
                        )
                    seen.add(key)
                return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)

            Loader.add_constructor(
                yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping
            )
            cls._cls = Loader
        return cls._cls


def _check_shape(text: str, origin: str) -> None:
    """Refuse a document too deep, or too large once its aliases are expanded.

    One pass over the parser's events: a collection's expanded size is the
    count of nodes between its start and end events, an alias adds the
    expanded size of its anchor, and an alias to a collection still open is a
    recursive structure.
    """
    import yaml

    nodes = 0
    stack: list[tuple[str | None, int]] = []  # open collections: (anchor, nodes before it)
    sizes: dict[str, int] = {}  # anchor -> expanded node count
    open_anchors: set[str] = set()
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            if len(stack) >= MAX_YAML_DEPTH:
                raise InputError(
                    f"{origin} nests lists and mappings more than {MAX_YAML_DEPTH} levels deep"
                    f"{_where(event.start_mark)}."
                )
            stack.append((event.anchor, nodes))
            nodes += 1
            if event.anchor:
                open_anchors.add(event.anchor)
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            anchor, before = stack.pop()
            if anchor:
                sizes[anchor] = nodes - before
                open_anchors.discard(anchor)
        elif isinstance(event, yaml.ScalarEvent):
            nodes += 1
            if event.anchor:
                sizes[event.anchor] = 1
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor in open_anchors:
                raise InputError(
                    f"{origin} uses the alias *{event.anchor} inside its own anchor"
                    f"{_where(event.start_mark)}; a recursive structure is not allowed."
                )
            nodes += sizes.get(event.anchor, 1)  # an unknown alias: the loader says so
        if nodes > MAX_YAML_NODES:
            raise InputError(
                f"{origin} holds more than {MAX_YAML_NODES:,} values once its aliases are "
                f"expanded{_where(event.start_mark)}; write it out with fewer nested aliases."
            )


def load_yaml(text: str, origin: str) -> Any:
    """Parse YAML ``text`` (from ``origin``, for messages) within the documented bounds."""
    import yaml

    if len(text) > MAX_YAML_BYTES:
        raise InputError(
            f"{origin} is {len(text):,} characters, more than the limit of {MAX_YAML_BYTES:,}."
        )
    try:
        _check_shape(text, origin)
        return yaml.load(text, Loader=_UniqueKeyLoader.get())  # a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise InputError(f"{origin} is not valid YAML{_where(mark)}: {what}.") from None
    except (ValueError, OverflowError) as e:  # a scalar PyYAML resolves but cannot build
        raise InputError(f"{origin} holds a value that cannot be read: {e}.") from None


def read_yaml_file(path: str | Path, what: str) -> Any:
    """A YAML file as data: size-checked, decoded as UTF-8, then :func:`load_yaml`.

    ``what`` names the file in messages (``"zoo file"``).
    """
    p = Path(path)
    if p.exists() and not p.is_file():
        raise InputError(f"{what[:1].upper()}{what[1:]} {p} is not a file.")
    check_file_size(p, MAX_YAML_BYTES, what)
    data = read_bytes(p, what, MAX_YAML_BYTES)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{p} is not UTF-8 text (byte {e.start}).") from None
    return load_yaml(text, str(p))
