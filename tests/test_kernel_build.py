"""The C++ ops' build sees, keys its cache on and ships every source file.

`lstm_kernels.cc` includes headers beside it (`packed_gemm.h`, ...): an
edit to any of them must rebuild the cached library, and the package must
ship them, or an installed copy could not compile.
"""

import configparser
import fnmatch
import os
import re
import shutil

import keras
import pytest

pytestmark = pytest.mark.tensorflow_only

if keras.backend.backend() == "tensorflow":
    from lstm_keras.backends.tensorflow import build

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _local_includes(path):
    with open(path) as source:
        return re.findall(r'^#include "([^"/]+\.h)"', source.read(), re.M)


def test_every_local_header_is_a_build_input():
    included = set()
    for path in (build.SOURCE, *build.HEADERS):
        included.update(_local_includes(path))
    assert included
    assert included <= {os.path.basename(h) for h in build.HEADERS}


def test_editing_a_header_changes_the_cached_library(tmp_path, monkeypatch):
    headers = []
    for header in build.HEADERS:
        copy = tmp_path / os.path.basename(header)
        shutil.copy(header, copy)
        headers.append(str(copy))
    monkeypatch.setattr(build, "HEADERS", tuple(headers))
    before = build.library_path()
    assert build.library_path() == before
    with open(headers[0], "a") as header:
        header.write("// an edit\n")
    assert build.library_path() != before


def test_the_package_ships_every_source_file():
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"))
    patterns = [
        p.strip()
        for p in config["options.package_data"][
            "lstm_keras.backends.tensorflow"
        ].split(",")
    ]
    for path in (build.SOURCE, *build.HEADERS):
        name = os.path.basename(path)
        assert any(fnmatch.fnmatch(name, p) for p in patterns), name
