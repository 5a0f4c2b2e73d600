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


# The tf_lti packages, lowest first: a package may import only packages of earlier tiers
# (and its own modules). Data flows data -> inference -> posterior params -> family -> bound
# <- model (docs/architecture.md); `cli` is what the binaries (trainers/, export/) share;
# `tf_lti/__init__.py` sits above all (lazy imports only).
LAYERS = [
    ("config", "reporting", "saving"),
    ("distributions",),
    ("data",),
    ("posteriors",),
    ("models",),
    ("objectives",),
    ("inference",),
    ("evaluation",),
    ("training",),
    ("experiments",),
    ("cli",),
]


def _resolve(dotted):
  """The project file of a dotted module or package name, or None."""
  for file in (ROOT / (dotted.replace(".", "/") + ".py"),
               ROOT / dotted.replace(".", "/") / "__init__.py"):
    if file.exists():
      return file
  return None


def _module(node, path):
  """The dotted module of `from ... import` statement `node` in `path`, a relative one
  (`from . import versions` in `export/exporter.py` -> `export`) resolved against its folder."""
  if not node.level:
    return node.module
  folders = path.relative_to(ROOT).parent.parts
  package = folders[:len(folders) - node.level + 1]
  return ".".join(package + ((node.module,) if node.module else ()))


def _internal_imports(path):
  """Project files a source imports: modules (`tf_lti/x/y.py`, `trainers/z.py`, `export/e.py`,
  also relatively: `from . import versions`) and packages (`from tf_lti import posteriors` ->
  `tf_lti/posteriors/__init__.py`)."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom):
      module = _module(node, path)
      for alias in node.names:
        for candidate in (f"{module}.{alias.name}", module):
          file = _resolve(candidate)
          if candidate.split(".")[0] in ("tf_lti", "trainers", "tests", "export") and file:
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


def _package(module):
  """`tf_lti.training.loop` -> "training"; `tf_lti` itself -> None."""
  parts = module.split(".")
  return parts[1] if len(parts) > 1 and parts[0] == "tf_lti" else None


def test_packages_import_only_lower_layers():
  tier = {package: i for i, packages in enumerate(LAYERS) for package in packages}
  sources = sorted((ROOT / "tf_lti").rglob("*.py"))
  assert {p.parent.name for p in sources if p.parent != ROOT / "tf_lti"} == set(tier)
  problems = []
  for path in sources:
    relative = path.relative_to(ROOT)
    if len(relative.parts) < 3:
      continue  # tf_lti/__init__.py: lazy exports of every package.
    own = relative.parts[1]
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tf_lti"):
        imported = ([_package(f"{node.module}.{a.name}") for a in node.names]
                    if node.module == "tf_lti" else [_package(node.module)])
      elif isinstance(node, ast.Import):
        imported = [_package(a.name) for a in node.names if a.name.startswith("tf_lti")]
      else:
        continue
      for package in imported:
        if package != own and not (package in tier and tier[package] < tier[own]):
          problems.append(f"{relative}:{node.lineno} ({own}) imports tf_lti.{package}")
  assert not problems, "\n".join(problems)
