"""What `pip install` puts in site-packages: names of this project's own only.

A top-level `trainers` or `export` would clash with a user's own module of that
name, so setup.py installs the repository's folders under distinct names, and
their modules never import a folder by its repository name (which exists only
when running from the repository root).
"""

import ast
import contextlib
import pathlib
import re
import runpy
from unittest import mock

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
FOLDERS = ("trainers", "export")  # Repository folders installed under other names.


@pytest.fixture(scope="module")
def setup_arguments():
  """The keyword arguments setup.py passes to `setuptools.setup`, run from the repository root."""
  with mock.patch("setuptools.setup") as setup, contextlib.chdir(ROOT):
    runpy.run_path(str(ROOT / "setup.py"))
  return setup.call_args.kwargs


def _folder(package, package_dir):
  """The repository folder `package` (dotted, as installed) installs from."""
  top, *rest = package.split(".")
  return ROOT.joinpath(package_dir.get(top, top), *rest)


def test_installed_top_level_names_are_the_projects_own(setup_arguments):
  top_level = {package.split(".")[0] for package in setup_arguments["packages"]}
  generic = sorted(name for name in top_level
                   if name != "tf_lti" and not name.startswith("tf_lti_"))
  assert not generic, f"setup.py installs top-level packages {generic}; name them tf_lti_*"
  assert set(setup_arguments["package_dir"].values()) == set(FOLDERS)


def test_every_package_folder_installs(setup_arguments):
  """No folder with an `__init__.py` is left out (e.g. a new `tf_lti` subpackage)."""
  package_dir = setup_arguments["package_dir"]
  installed = {_folder(package, package_dir) for package in setup_arguments["packages"]}
  folders = {init.parent for top in ("tf_lti", *FOLDERS)
             for init in (ROOT / top).rglob("__init__.py")}
  assert installed == folders, (
      f"installed but no package: {sorted(map(str, installed - folders))}; "
      f"not installed: {sorted(map(str, folders - installed))}")


def test_console_scripts_name_installed_functions(setup_arguments):
  package_dir = setup_arguments["package_dir"]
  installed = set(setup_arguments["packages"])
  for script in setup_arguments["entry_points"]["console_scripts"]:
    name, module, function = re.fullmatch(r"([\w-]+)=([\w.]+):(\w+)", script).groups()
    package, _, basename = module.rpartition(".")
    assert package in installed, f"{name}: {module!r} is not in an installed package"
    tree = ast.parse((_folder(package, package_dir) / f"{basename}.py").read_text())
    functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert function in functions, f"{name}: {module!r} defines no function {function!r}"


def _folder_references(path):
  """`(line, text)` of each place `path` names a folder of `FOLDERS` as a module: an absolute
  import, lazy ones in functions included, or a string such as `-m trainers.benchmark`'s."""
  found = []
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and not node.level:
      names = [node.module]
    elif isinstance(node, ast.Constant) and isinstance(node.value, str):
      names = [node.value] if re.fullmatch(r"\w+(\.\w+)+", node.value) else []
    else:
      continue
    found += [(node.lineno, name) for name in names if name.split(".")[0] in FOLDERS]
  return found


def test_folders_name_no_folder_by_its_repository_name():
  problems = [f"{path.relative_to(ROOT)}:{line} names {name!r}"
              for folder in FOLDERS for path in sorted((ROOT / folder).glob("*.py"))
              for line, name in _folder_references(path)]
  assert not problems, ("import within a folder relatively (`from . import versions`), share "
                        "code through tf_lti.cli:\n" + "\n".join(problems))
