"""The Bazel BUILD file mirrors the layout: every source has a target, deps mirror imports."""

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
RULE = re.compile(r"(py_library|py_binary|py_test)\(\s*name = \"(\w+)\",(.*?)\n\)", re.S)


def _targets():
  targets = {}
  for kind, name, body in RULE.findall((ROOT / "BUILD").read_text()):
    lists = {key: re.findall(r"\"([^\"]+)\"", value)
             for key, value in re.findall(r"(srcs|deps|data) = \[(.*?)\]", body, re.S)}
    single = re.search(r"srcs = \[\"([^\"]+)\"\]", body)
    srcs = lists.get("srcs", [single.group(1)] if single else [])
    targets[name] = dict(kind=kind, srcs=srcs, deps={d.lstrip(":") for d in lists.get("deps", [])})
  return targets


def _owner(targets):
  return {src: name for name, target in targets.items() for src in target["srcs"]}


def _internal_imports(path):
  """Project files a source imports: `tf_lti/x.py`, `tf_lti/inference/y.py`, `trainers/z.py`."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and node.module:
      for alias in node.names:
        for candidate in (f"{node.module}.{alias.name}", node.module):
          file = ROOT / (candidate.replace(".", "/") + ".py")
          if candidate.split(".")[0] in ("tf_lti", "trainers", "tests") and file.exists():
            found.add(str(file.relative_to(ROOT)))
            break
  return found


def test_every_source_file_belongs_to_one_target():
  owner = _owner(_targets())
  sources = sorted(str(p.relative_to(ROOT)) for folder in ("tf_lti", "trainers", "tests", "export")
                   for p in (ROOT / folder).rglob("*.py"))
  missing = [s for s in sources if s not in owner and not s.endswith("export/__init__.py")]
  assert not missing, f"BUILD has no target for {missing}"


def test_deps_mirror_imports():
  targets = _targets()
  owner = _owner(targets)
  problems = []
  for name, target in targets.items():
    for src in target["srcs"]:
      for imported in _internal_imports(ROOT / src):
        dependency = owner.get(imported)
        if dependency and dependency != name and dependency not in target["deps"]:
          problems.append(f"{name} imports {imported} but does not depend on :{dependency}")
  assert not problems, "\n".join(problems)


def test_each_test_file_is_a_py_test():
  targets = _targets()
  tests = {t["srcs"][0] for t in targets.values() if t["kind"] == "py_test"}
  files = {str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("*_test.py")}
  assert files == tests
