"""Refuse names that would produce a broken project, before anything is written."""

import keyword
import re
import sys

CHECKS = {
    "project_slug": ("{{ cookiecutter.project_slug }}", r"[a-z0-9][a-z0-9\-]*"),
    "plugin_name": ("{{ cookiecutter.plugin_name }}", r"[a-z][a-z0-9_]*"),
    "module_name": ("{{ cookiecutter.module_name }}", r"[a-z][a-z0-9_]*"),
    "tool_name": ("{{ cookiecutter.tool_name }}", r"[a-z][a-z0-9_]*"),
}

problems = [
    f"{key} {value!r} must match {pattern} and not be a Python keyword"
    for key, (value, pattern) in CHECKS.items()
    if not re.fullmatch(pattern, value) or keyword.iskeyword(value)
]
if problems:
    print("error: " + "\nerror: ".join(problems), file=sys.stderr)
    sys.exit(1)
