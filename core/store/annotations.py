"""What the user says of a run, apart from the config that defines it: display name, notes, tags and a
star (annotations.json), checked before they are saved."""
from __future__ import annotations

import re


ANNOTATION_KEYS = ("name", "notes", "tags", "starred")
MAX_NAME_CHARS, MAX_NOTES_CHARS, MAX_TAG_CHARS, MAX_TAGS = 120, 10_000, 32, 20
SHORT_NOTES_CHARS = 80  # the notes shown in the runs table
# A tag: one short word (lowercase letters, digits, - _ .), as W&B and TensorBoard users write them.
TAG = re.compile(r"[a-z0-9][a-z0-9_.-]*")


def check_annotations(values: dict) -> dict:
    """The annotations cleaned (name and notes stripped, tags lowercased without repeats), or
    ValueError saying which one is wrong and why."""
    checked = {}
    if "name" in values:
        checked["name"] = check_run_name(values["name"])
    if "notes" in values:
        checked["notes"] = check_notes(values["notes"])
    if "tags" in values:
        checked["tags"] = check_tags(values["tags"])
    if "starred" in values:
        if not isinstance(values["starred"], bool):
            raise ValueError(f"starred must be true or false, not {values['starred']!r}")
        checked["starred"] = values["starred"]
    return checked


def check_run_name(name) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError("a run's name must not be empty")
    name = name.strip()
    if len(name) > MAX_NAME_CHARS:
        raise ValueError(f"a run's name may have at most {MAX_NAME_CHARS} characters, not {len(name)}")
    return name


def check_notes(notes) -> str:
    if not isinstance(notes, str):
        raise ValueError(f"notes must be text, not {type(notes).__name__}")
    if len(notes) > MAX_NOTES_CHARS:
        raise ValueError(f"notes may have at most {MAX_NOTES_CHARS} characters, not {len(notes)}")
    return notes.strip()


def check_tags(tags) -> list[str]:
    """Tags as a list or a comma-separated text: lowercased, repeats dropped, order kept."""
    if isinstance(tags, str):
        tags = tags.split(",")
    if not isinstance(tags, (list, tuple)) or not all(isinstance(tag, str) for tag in tags):
        raise ValueError("tags must be a list of words (or words separated by commas)")
    cleaned = list(dict.fromkeys(tag.strip().lower() for tag in tags if tag.strip()))
    for tag in cleaned:
        if len(tag) > MAX_TAG_CHARS or not TAG.fullmatch(tag):
            raise ValueError(f"tag {tag!r}: a tag is one word of at most {MAX_TAG_CHARS} letters, digits, "
                             "'-', '_' or '.', starting with a letter or digit")
    if len(cleaned) > MAX_TAGS:
        raise ValueError(f"a run may have at most {MAX_TAGS} tags, not {len(cleaned)}")
    return cleaned


def short_text(text: str, limit: int = SHORT_NOTES_CHARS) -> str:
    """The first line of `text`, cut to `limit` characters with '…'."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    cut = first if len(first) <= limit else first[:limit - 1].rstrip() + "…"
    return cut + (" …" if first != text.strip() and cut == first else "")
