"""bench.release's edit of the registry: the old default becomes decoder-only, the new model the default."""

import ast

import pytest

from aecodec.weights import DEFAULT_MODEL, RELEASES
from bench.release import REGISTRY, add_release


def entries(source: str) -> tuple[dict, str]:
    """name -> (positional args, keyword args) of each Release(...) in the source, and DEFAULT_MODEL."""
    tree = ast.parse(source)
    found, default = {}, None
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Release" and node.args \
                and isinstance(node.args[0], ast.Constant):
            args = [ast.literal_eval(arg) for arg in node.args]
            found[args[0]] = (args, {k.arg: ast.literal_eval(k.value) for k in node.keywords})
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "DEFAULT_MODEL":
            default = node.value.value
    return found, default


def test_add_release_supersedes_the_default_and_appends_the_new_model():
    source = REGISTRY.read_text()
    before, default = entries(source)
    assert default == DEFAULT_MODEL and set(before) == set(RELEASES)
    edited = add_release(source, DEFAULT_MODEL, "aec-next", "ab" * 32, "cd" * 32, 7, "9.9.9")
    after, new_default = entries(edited)
    assert new_default == "aec-next" and list(after) == [*before, "aec-next"]
    old_args, old_keywords = after[DEFAULT_MODEL]
    assert old_args == before[DEFAULT_MODEL][0] and old_keywords == {"decoder_sha256": "cd" * 32, "archive": 7}
    args, keywords = after["aec-next"]
    assert args == ["aec-next", "aec-next.pt", "ab" * 32, *before[DEFAULT_MODEL][0][3:6], "9.9.9"] and keywords == {}
    assert {name: after[name] for name in before if name != DEFAULT_MODEL} == \
           {name: before[name] for name in before if name != DEFAULT_MODEL}
    with pytest.raises(SystemExit, match="no whole-weights entry for aec-hp128"):
        add_release(source, "aec-hp128", "aec-next", "ab" * 32, "cd" * 32, 7, "9.9.9")  # already decoder-only
