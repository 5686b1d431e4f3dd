"""hatchling's build hook (pyproject.toml): the optional C extensions (MODULES): openkvs/datasets/_ccsv.c (csv
exports' fast path), openkvs/datasets/_cpush.c (pushes') and openkvs/storage/postgres/_copyrows.c (PostgreSQL
exports' rows of a binary COPY joined).

Compiled by setuptools' ``build_ext`` (it knows each platform's compiler and flags) as optional extensions: where
one can't be built (no compiler, no Python headers) setuptools says so and the install goes on without it;
openkvs/datasets/formats.py then renders every csv row in Python, api/items.py parses every push in Python,
openkvs/storage/postgres/datasets.py reads an export's items row by row, as before the extensions.

An editable install (``make install``) imports the package from the source tree, so the module is built there (it is
in .gitignore); a wheel gets it from a temporary directory, and is then tagged for this platform and Python.
``python hatch_build.py`` builds it in place alone (after a change to the C, or in a git worktree that an
editable install elsewhere doesn't build), with setuptools and no hatchling. Each module is built or not on its own.
``python hatch_build.py --sanitize DIR`` builds them instead under DIR with AddressSanitizer and UndefinedBehavior
Sanitizer (SANITIZE), for tests/datasets/test_c_fuzz.py: they are loaded from there only in a process started with
ASan's runtime preloaded (that test module says how)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

# module: source, and what is slower without it
MODULES = {
    "openkvs.datasets._ccsv": ("openkvs/datasets/_ccsv.c", "csv exports render in Python (slower)"),
    "openkvs.datasets._cpush": ("openkvs/datasets/_cpush.c", "pushes are parsed in Python (slower)"),
    "openkvs.storage.postgres._copyrows": (
        "openkvs/storage/postgres/_copyrows.c",
        "PostgreSQL exports read items row by row (slower)",
    ),
}

HEADER = "openkvs/datasets/_jsonbytes.h"  # what _ccsv.c and _cpush.c share
# --sanitize: a report stops the process (no recovery), frames are kept for the report, -O1 as ASan advises
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g", "-O1"]


def build(root: str, inplace: bool, temp: str, flags: list[str] | None = None) -> dict[str, Path]:
    """Compile the extensions (in place, or under ``temp``; with ``flags`` for the compiler and the linker too);
    the path each would have (it may not exist: a failure)."""
    from setuptools import Distribution, Extension

    # (depends: a change to the shared header compiles again; build_ext compares the files' times with the module's)
    exts = [
        Extension(module, [source], depends=[HEADER], optional=True, extra_compile_args=flags or [],
                  extra_link_args=flags or [])
        for module, (source, _) in MODULES.items()
    ]
    dist = Distribution({"name": "openkvs", "ext_modules": exts})
    cmd: Any = dist.get_command_obj("build_ext")
    cmd.inplace = inplace
    cmd.build_lib = os.path.join(temp, "lib")
    cmd.build_temp = os.path.join(temp, "temp")
    cwd = os.getcwd()
    os.chdir(root)  # setuptools takes the source's path and the in-place target relative to here
    try:
        cmd.ensure_finalized()
        cmd.run()
        return {module: Path(root, cmd.get_ext_fullpath(module)) for module in MODULES}
    finally:
        os.chdir(cwd)


if __name__ == "__main__":
    import sys

    root = str(Path(__file__).parent)
    if sys.argv[1:2] == ["--sanitize"] and len(sys.argv) == 3:
        built_all = build(root, False, os.path.abspath(sys.argv[2]), SANITIZE)
    else:
        with tempfile.TemporaryDirectory() as temp:
            built_all = build(root, True, temp)
    for module, built in built_all.items():
        print(built if built.exists() else f"{MODULES[module][0]}: not built")
    raise SystemExit(0)

from hatchling.builders.hooks.plugin.interface import BuildHookInterface  # noqa: E402  (not needed by the script)


class CustomBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        editable = version == "editable"
        self._temp = tempfile.mkdtemp(prefix="openkvs-build-")
        for module, built in build(self.root, editable, self._temp).items():
            source, without = MODULES[module]
            if not built.exists():
                self.app.display_warning(f"{source} was not compiled: {without}")
            elif not editable:
                package = module.rpartition(".")[0].replace(".", "/")
                build_data["force_include"][str(built)] = f"{package}/{built.name}"
                build_data["pure_python"] = False
                build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        shutil.rmtree(self._temp, ignore_errors=True)
