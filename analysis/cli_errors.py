"""Bad input on the command line: one line, ``error: <what, the value, what is allowed>``, exit code 2, no traceback.

:func:`error_line` turns what bad input raises (our own checks, jsonargparse's parse errors, Lightning's
configuration errors) into that line, condensing jsonargparse's multi-line reports to the option and the problem and
adding the likely fix where there is one ("did you mean 0.9?", the closest option name). ``cli.py`` prints it;
``--debug`` or ``PRUNING_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import inspect
import re

from lightning.fabric.utilities.exceptions import MisconfigurationException

DEBUG_FLAG = "--debug"
DEBUG_ENV = "PRUNING_DEBUG"
EXIT_BAD_INPUT = 2
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
    argparse.ArgumentError,
    MisconfigurationException,
)
"""What bad input raises: our own checks (ValueError, FileNotFoundError, ...), jsonargparse and Lightning config errors.
Anything else is a bug and keeps its traceback."""

SILENT_PARSER = {"exit_on_error": False}
"""Parser options that make jsonargparse raise its errors instead of printing the usage and exiting."""


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.strip().splitlines() if line.strip())


def _accepted_options(class_path: str) -> list[str]:
    try:
        module, _, name = class_path.rpartition(".")
        target = getattr(importlib.import_module(module), name)
        return [p for p in inspect.signature(target).parameters if p not in ("self", "args", "kwargs")]
    except Exception:  # an unimportable class: no hint
        return []


def _close(word: str, options: list[str]) -> str:
    match = difflib.get_close_matches(word, options, n=1)
    return f"; did you mean {match[0]!r}?" if match else ""


_NON_FINITE = ("nan", ".nan", "inf", "+inf", "-inf", ".inf", "-.inf", "infinity", "-infinity")


def _type_phrase(expected: str) -> str:
    """``<class 'int'>`` -> ``an int``, ``typing.Literal['a', 'b']`` -> ``one of a, b``, NoneType -> ``null``."""
    literal = re.fullmatch(r"typing\.Literal\[(.*)\]", expected)
    if literal:
        return "one of " + ", ".join(choice.strip().strip("'\"") for choice in literal.group(1).split(","))
    named = re.fullmatch(r"<class '(?:[\w.]+\.)?(\w+)'>", expected)
    name = named.group(1) if named else expected
    return {"NoneType": "null", "int": "an int", "float": "a float", "bool": "true or false", "str": "a string"}.get(
        name, f"a {name}"
    )


def _expected_phrase(expected: list[str]) -> str:
    """Join what a value may be: every Literal's choices in one list, then the types, ``null`` last."""
    choices: list[str] = []
    types: list[str] = []
    for phrase in (_type_phrase(item) for item in expected):
        if phrase.startswith("one of "):
            choices.extend(choice for choice in phrase[len("one of ") :].split(", ") if choice not in choices)
        elif phrase not in types:
            types.append(phrase)
    parts = ([f"one of {', '.join(choices)}"] if choices else []) + sorted(types, key=lambda phrase: phrase == "null")
    return " or ".join(parts)


def _value_problem(block: list[str]) -> str | None:
    """``expected <what is allowed>, got <value>`` from a jsonargparse type error (single type or Union)."""
    if not block:
        return None
    single = re.fullmatch(r"Expected a (.+?)\. Got value: (.*)", block[0])
    if single:
        expected, value = [single.group(1)], single.group(2)
    elif block[0].startswith("Does not validate against any of the Union subtypes"):
        expected = [match.group(1) for line in block if (match := re.fullmatch(r"- Expected a (.+)", line))]
        given = next((line[len("Given value: ") :] for line in block if line.startswith("Given value: ")), None)
        if not expected or given is None:
            return None
        value = given
    else:
        return None
    note = " (NaN and infinity are not allowed)" if value.strip().lower() in _NON_FINITE else ""
    return f"expected {_expected_phrase(expected)}, got {value}{note}"


def _short(class_path: str) -> str:
    return class_path.rsplit(".", 1)[-1]


_OWNERS = {"model": "lit_modules.ResNet18Classifier", "data": "datamodules.CIFAR10DataModule"}
"""The class behind each config section whose options a misspelt name is matched against."""

PIECE_FOLDERS = ("model", "data", "trainer")
"""The folders of ``configs/`` that hold one section each, to name in a method config or pass as ``--<section>``."""


def _parser_message(text: str) -> str:
    """Condense a jsonargparse error (often a dozen lines) to the line that names the option and the problem."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    invalid = re.match(r"argument (\w+): invalid choice: '([^']*)' \(choose from (.*)\)", lines[0]) if lines else None
    if invalid:
        choices = re.findall(r"'([^']*)'", invalid.group(3))
        return f"{lines[0]}{_close(invalid.group(2), choices)}"
    unrecognized = re.match(r"unrecognized arguments: --(\w+)\.(\w+)", lines[0]) if lines else None
    if unrecognized:
        section, option = unrecognized.groups()
        owner = _OWNERS.get(section)
        options = _accepted_options(owner) if owner is not None else []
        match = difflib.get_close_matches(option, options, n=1)
        return f"{lines[0]}; did you mean --{section}.{match[0]}?" if match else lines[0]
    not_accepted = re.match(r"Subcommand '\w+' does not accept option '(model|data)\.(\w+)'", lines[0] if lines else "")
    if not_accepted:
        section, option = not_accepted.groups()
        return f"{lines[0]}{_close(option, _accepted_options(_OWNERS[section]))}"
    key = re.match(r'Parser key "([^"]+)":\s*(.*)', lines[0]) if lines else None
    if key is None:
        return _one_line(text)
    unloadable = re.fullmatch(r"Unable to load config '([^']+)'", lines[1]) if len(lines) > 1 else None
    if unloadable and not any(line.startswith("- while ") or " while " in line for line in lines[2:]):
        return (
            f"{key.group(1)}: cannot read the config file {unloadable.group(1)}; give an existing YAML file "
            "(a path inside a config file is relative to that file's folder)"
        )
    if len(lines) == 1:
        return f"{key.group(1)}: {_value_problem([key.group(2)]) or key.group(2)}"
    for index, line in enumerate(lines):
        problem = re.match(r"- Problem with given class_path '([^']+)':", line)
        if problem and not problem.group(1).startswith("lightning."):
            detail = lines[index + 1] if index + 1 < len(lines) else ""
            owner = f"{key.group(1)}: {_short(problem.group(1))}"
            rejected = re.match(r"Option '([^']+)' is not accepted", detail)
            if rejected:
                options = _accepted_options(problem.group(1))
                hint = _close(rejected.group(1), options) or (
                    f"; {_short(problem.group(1))} accepts: {', '.join(options)}" if options else ""
                )
                return f"{owner}: {detail}{hint}"
            nested = re.fullmatch(r'Parser key "([^"]+)":\s*(.*)', detail)
            if nested:
                # The block of the nested option: up to the next alternative of the outer Union.
                rest = lines[index + 2 :]
                end = next((i for i, item in enumerate(rest) if item.startswith("- Problem with given class_")), None)
                block = ([nested.group(2)] if nested.group(2) else []) + rest[:end]
                problem_text = _value_problem(block) or next(iter(block), "")
                return f"{owner}: {nested.group(1)}: {problem_text}"
            return f"{owner}: {detail}"
    problem_text = _value_problem(lines[1:])
    if problem_text:
        return f"{key.group(1)}: {problem_text}"
    details = [line for line in lines[1:] if not line.startswith(("Given value type:", "Subtypes:", "Errors:"))]
    return f"{key.group(1)}: {' '.join(details[:2])}"


def _union_message(text: str) -> str | None:
    """The first real error in jsonargparse's "Does not validate against any of the Union subtypes" report."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines or not lines[0].startswith("Does not validate against any of the Union subtypes"):
        return None
    boilerplate = ("- Not a valid subclass of", "- Expected a <class 'NoneType'>", "- Problem with given class_path")
    first = next((line[2:] for line in lines if line.startswith("- ") and not line.startswith(boilerplate)), None)
    if first is None:
        return None
    owner = re.search(r"class_path='(?:[\w.]+\.)?(\w+)'", text)
    return f"trainer.callbacks: {owner.group(1)}: {first}" if owner else first


def _with_hint(message: str) -> str:
    """Add the likely fix where there is one: a percentage given for a fraction."""
    found = re.search(
        r"(sparsity|fraction)\w*(?:\['[^']*'\])? must be in [\[(]0, 1[)\]],? got (-?[0-9]+(?:\.[0-9]+)?)", message
    )
    if found and "did you mean" not in message:
        value = float(found.group(2))
        if 1 < value <= 100:
            message = f"{message.rstrip('.')}; did you mean {value / 100:g}?"
    return message


def _config_files(argv: list[str]) -> list[str]:
    files = []
    for index, arg in enumerate(argv):
        if arg in ("--config", "-c") and index + 1 < len(argv):
            files.append(argv[index + 1])
        elif arg.startswith("--config="):
            files.append(arg.split("=", 1)[1])
    return files


def _not_a_mapping(argv: list[str]) -> str | None:
    """Name the config file that is not a YAML mapping (jsonargparse only says "Unexpected config")."""
    import yaml

    for path in _config_files(argv):
        try:
            with open(path) as file:
                content = yaml.safe_load(file)
        except (OSError, yaml.YAMLError):
            continue
        if not isinstance(content, dict):
            return (
                f"config file {path} must be a YAML mapping of options (trainer:, model:, data:, ...), "
                f"got a {type(content).__name__}"
            )
    return None


def _piece_as_config(argv: list[str]) -> str | None:
    """Name a one-section file (``configs/model/*.yaml``) given as ``--config``, and how to pass it instead."""
    from pathlib import Path

    import yaml

    for path in _config_files(argv):
        section = Path(path).parent.name
        if section not in PIECE_FOLDERS:
            continue
        try:
            content = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(content, dict) and not {section, "trainer", "model", "data"} & set(content):
            return (
                f"config file {path} holds {section} options only, not a whole config; pass it as --{section} {path} "
                f"after a method's --config (or name it as '{section}: {section}/{Path(path).name}' in a method config)"
            )
    return None


def error_line(error: BaseException, argv: list[str] | None = None) -> str:
    """The one line a user sees for ``error``: ``error: <what, the value, what is allowed>``."""
    if isinstance(error, argparse.ArgumentError) and str(error).startswith("Unexpected config"):
        named = _not_a_mapping(argv or [])
        if named:
            return f"error: {named}"
    piece = _piece_as_config(argv or []) if isinstance(error, argparse.ArgumentError) else None
    if piece:
        return f"error: {piece}"
    if isinstance(error, argparse.ArgumentError):
        text = _parser_message(str(error))
    else:
        text = _union_message(str(error)) or _one_line(str(error))
    if isinstance(error, OSError) and error.filename and error.strerror and str(error.filename) not in text:
        text = f"{error.strerror}: {error.filename}"
    text = text or type(error).__name__
    return f"error: {_with_hint(text)}"
