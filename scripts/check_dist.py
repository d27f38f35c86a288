"""Check what ``python -m build`` made: ``python check_dist.py DIST_DIR``, from the repository root.

DIST_DIR holds one sdist and one wheel (``python -m build`` builds the wheel from the sdist). Their
version is ``hybridpool.__version__`` (read from ``src/hybridpool/__init__.py``, without importing
it); the wheel holds exactly the package's files in the source tree (every module and subpackage,
``py.typed``) and its metadata, nothing else (no tests, bench, examples); the wheel's metadata
matches ``pyproject.toml``; the sdist holds the same package files, ``pyproject.toml``,
``README.md`` and ``CHANGELOG.md``, and no tests. Prints the version; exits non-zero on any
mismatch, naming it.
"""

from __future__ import annotations

import ast
import email.parser
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

#: Files that must be in the wheel whatever the tree holds: the typing marker and the
#: subpackages the README documents.
REQUIRED = {
    "hybridpool/__init__.py",
    "hybridpool/py.typed",
    "hybridpool/asgi/__init__.py",
    "hybridpool/asgi/application.py",
    "hybridpool/backends/__init__.py",
    "hybridpool/backends/postgresql/__init__.py",
    "hybridpool/backends/postgresql/base.py",
    "hybridpool/backends/postgis/__init__.py",
    "hybridpool/backends/postgis/base.py",
    "hybridpool/green/__init__.py",
    "hybridpool/middleware.py",
    "hybridpool/deprecation.py",
}
DIST_INFO = {"METADATA", "WHEEL", "RECORD", "top_level.txt"}


def source_version(root: Path) -> str:
    tree = ast.parse((root / "src" / "hybridpool" / "__init__.py").read_text())
    for node in tree.body:
        if (isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["__version__"]
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
            return node.value.value
    raise SystemExit("src/hybridpool/__init__.py has no literal __version__")


def package_files(root: Path) -> set[str]:
    """The files of the package in the source tree, as the wheel names them."""
    src = root / "src"
    return {path.relative_to(src).as_posix() for path in (src / "hybridpool").rglob("*")
            if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo")}


def main() -> int:
    dist, root = Path(sys.argv[1]), Path.cwd()
    failures: list[str] = []

    def check(condition: object, what: str) -> None:
        print(f"{'ok  ' if condition else 'FAIL'} {what}", file=sys.stderr)  # stdout: the version only
        if not condition:
            failures.append(what)

    version = source_version(root)
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    check(len(wheels) == 1 and len(sdists) == 1, f"one wheel and one sdist in {dist}: {wheels + sdists}")
    if failures:
        return 1
    wheel, sdist = wheels[0], sdists[0]
    check(wheel.name == f"hybridpool-{version}-py3-none-any.whl", f"the wheel is pure Python, version {version}: {wheel.name}")
    check(sdist.name == f"hybridpool-{version}.tar.gz", f"the sdist has version {version}: {sdist.name}")

    expected = package_files(root)
    check(REQUIRED <= expected, f"the source tree has the required files (missing: {sorted(REQUIRED - expected)})")

    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = email.parser.Parser().parsestr(archive.read(f"hybridpool-{version}.dist-info/METADATA").decode())
    dist_info = f"hybridpool-{version}.dist-info/"
    in_package = {name for name in names if name.startswith("hybridpool/")}
    others = {name for name in names - in_package
              if not (name.startswith(dist_info) and (name[len(dist_info):] in DIST_INFO
                                                      or name[len(dist_info):].startswith("licenses/")))}
    check(in_package == expected, "the wheel holds exactly the package's files of the source tree"
          f" (missing: {sorted(expected - in_package)}, extra: {sorted(in_package - expected)})")
    check(f"{dist_info}licenses/LICENSE" in names, "the wheel carries the licence text")
    check(not others, f"nothing else in the wheel (tests, bench, examples...): {sorted(others)}")
    check(metadata["Name"] == "hybridpool" and metadata["Version"] == version,
          f"wheel metadata: {metadata['Name']} {metadata['Version']}")
    check(metadata["Requires-Python"] == pyproject["requires-python"], f"Requires-Python {metadata['Requires-Python']}")
    extras = set(metadata.get_all("Provides-Extra") or [])
    check(extras == set(pyproject["optional-dependencies"]), f"extras: {sorted(extras)}")
    requires = [r for r in metadata.get_all("Requires-Dist") or [] if "extra ==" not in r]
    check(len(requires) == len(pyproject["dependencies"]), f"{len(requires)} dependencies: {requires}")
    check(metadata.get_content_type() == "text/plain" and metadata["Description-Content-Type"] == "text/markdown"
          and "# hybridpool" in (metadata.get_payload() or ""), "the README is the long description (Markdown)")

    with tarfile.open(sdist) as tar:
        members = {member.name for member in tar.getmembers() if member.isfile()}
    top = f"hybridpool-{version}/"
    check(all(name.startswith(top) for name in members), f"the sdist unpacks into {top}")
    relative = {name[len(top):] for name in members}
    sdist_package = {name[len("src/"):] for name in relative if name.startswith("src/hybridpool/")}
    check(sdist_package == expected, "the sdist holds the package's files of the source tree"
          f" (missing: {sorted(expected - sdist_package)}, extra: {sorted(sdist_package - expected)})")
    check({"pyproject.toml", "README.md", "CHANGELOG.md", "LICENSE", "PKG-INFO"} <= relative,
          "the sdist has pyproject.toml, README.md, CHANGELOG.md, LICENSE and PKG-INFO")
    strays = sorted(name for name in relative if name.split("/")[0] in ("tests", "bench", "examples", "scripts", "docs")
                    or name.startswith("."))
    check(not strays, f"no tests, bench, examples, scripts or dotfiles in the sdist: {strays}")

    if failures:
        print(f"{len(failures)} check(s) failed", file=sys.stderr)
        return 1
    print(version)
    return 0


if __name__ == "__main__":
    sys.exit(main())
