"""bench.release's edits, worked out on the real source tree (nothing is written): the old default becomes
decoder-only, the new model the default, the versions move on, the Kodak results are taken over."""

import ast
import json
import shutil

import pytest

import aecodec
from aecodec.weights import DEFAULT_MODEL, RELEASES
from bench import release
from bench.release import KODAK_CACHE, REGISTRY, add_release, archive_version_in, plan_results, plan_sources


def entries(source: str) -> tuple[dict, str]:
    """name -> (positional args, keyword args) of each Release(...) in the source, and DEFAULT_MODEL."""
    found, default = {}, None
    for node in ast.walk(ast.parse(source)):
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
    edited = add_release(source, DEFAULT_MODEL, "aec-next", "ab" * 32, "cd" * 32, 7, "9.9.9", 160, 256)
    after, new_default = entries(edited)
    assert new_default == "aec-next" and list(after) == [*before, "aec-next"]
    old_args, old_keywords = after[DEFAULT_MODEL]
    assert old_args == before[DEFAULT_MODEL][0] and old_keywords == {"decoder_sha256": "cd" * 32, "archive_version": 7}
    args, keywords = after["aec-next"]
    assert args == ["aec-next", "aec-next.pt", "ab" * 32, 160, 256, before[DEFAULT_MODEL][0][5], "9.9.9"] and keywords == {}
    assert {name: after[name] for name in before if name != DEFAULT_MODEL} == \
           {name: before[name] for name in before if name != DEFAULT_MODEL}
    with pytest.raises(SystemExit, match="no whole-weights entry for aec-hp128"):
        add_release(source, "aec-hp128", "aec-next", "ab" * 32, "cd" * 32, 7, "9.9.9", 128, 192)  # already decoder-only


def test_plan_sources_edits_each_file_once_and_refuses_an_old_version():
    plan = plan_sources(DEFAULT_MODEL, "aec-next", "ab" * 32, "cd" * 32, "99.0.0", 128, 192)
    archive = archive_version_in() + 1
    assert plan[release.ROOT / "aecodec" / "__init__.py"].count('__version__ = "99.0.0"') == 1
    assert plan[release.ARCHIVE_INIT].count(f'__version__ = "{archive}"') == 1
    assert f'"aecodec-archive>={archive}"' in plan[release.ROOT / "pyproject.toml"]
    assert entries(plan[REGISTRY])[0][DEFAULT_MODEL][1]["archive_version"] == archive
    for name in ("README.md", "bench/device_train.py"):
        text = plan[release.ROOT / name]
        assert "--init aec-next" in text or "--init-from aec-next" in text
        assert f"--init {DEFAULT_MODEL}" not in text and f"--init-from {DEFAULT_MODEL}" not in text
    assert all(path.read_text() != text for path, text in plan.items())
    with pytest.raises(SystemExit, match="not newer"):
        plan_sources(DEFAULT_MODEL, "aec-next", "ab" * 32, "cd" * 32, aecodec.__version__, 128, 192)


def test_plan_results_takes_a_whole_kodak_run_of_the_released_weights_only(tmp_path):
    model_id = "ab" * 8
    for path in KODAK_CACHE.glob("*/aecodec.json"):
        data = json.loads(path.read_text())
        data["version"] = f"aecodec 0.0.1 model {model_id}"  # as bench.rd --weights FILE labels it
        (tmp_path / "cache" / path.parent.name).mkdir(parents=True)
        (tmp_path / "cache" / path.parent.name / "aecodec.json").write_text(json.dumps(data))
    plan = plan_results(tmp_path, "99.0.0", model_id)
    assert set(plan) == set(KODAK_CACHE.glob("*/aecodec.json")) and len(plan) == 24
    assert all(json.loads(text)["version"] == f"aecodec 99.0.0 model {model_id}" for text in plan.values())
    with pytest.raises(SystemExit, match="not for model"):
        plan_results(tmp_path, "99.0.0", "cd" * 8)
    shutil.rmtree(next((tmp_path / "cache").iterdir()))  # a run on part of Kodak
    with pytest.raises(SystemExit, match="exactly the Kodak images"):
        plan_results(tmp_path, "99.0.0", model_id)
