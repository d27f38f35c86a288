"""hybridpool.deprecation: the warning names the old name, its replacement and the release that
removes it, and points at the line of the caller's code that used the old name.

No public name or setting of 0.1.0 is accepted silently under another name in 0.2.0, so the
mechanism has no use in the package yet: these tests use it as a deprecated function, method and
module attribute (a module ``__getattr__``, through ``import`` too) would.
"""

from __future__ import annotations

import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from hybridpool.deprecation import HybridpoolDeprecationWarning, deprecation_message, warn_deprecated


def old_function() -> int:
    warn_deprecated("hybridpool.old_function()", "hybridpool.new_function()", "0.4")
    return 1


class Holder:
    def old_method(self) -> int:
        return self._helper()

    def _helper(self) -> int:  # one hybridpool frame between the user's call and the warning
        warn_deprecated("Holder.old_method()", "Holder.new_method()", "0.4", stacklevel=3)
        return 2


def _line_of(marker: str) -> int:
    """The line of this file that contains ``marker`` (a comment), where a warning must point."""
    lines = Path(__file__).read_text().splitlines()
    return next(number for number, line in enumerate(lines, 1) if line.rstrip().endswith(marker))


def test_a_deprecation_warning_subclass() -> None:
    assert issubclass(HybridpoolDeprecationWarning, DeprecationWarning)


def test_the_message_names_the_old_name_the_new_one_and_the_release() -> None:
    assert deprecation_message("OPTIONS['pool']['old']", "OPTIONS['pool']['new']", "0.4") == (
        "OPTIONS['pool']['old'] is deprecated and will be removed in hybridpool 0.4;"
        " use OPTIONS['pool']['new'] instead")
    assert deprecation_message("hybridpool.gone", None, "0.4") == (
        "hybridpool.gone is deprecated and will be removed in hybridpool 0.4")


def test_a_deprecated_function_warns_at_the_caller_s_line() -> None:
    with pytest.warns(HybridpoolDeprecationWarning) as record:
        assert old_function() == 1  # <- function call
    (warning,) = record
    assert str(warning.message) == ("hybridpool.old_function() is deprecated and will be removed in"
                                    " hybridpool 0.4; use hybridpool.new_function() instead")
    assert (warning.filename, warning.lineno) == (__file__, _line_of("# <- function call"))


def test_stacklevel_skips_hybridpool_s_own_frames() -> None:
    with pytest.warns(HybridpoolDeprecationWarning, match=r"Holder\.old_method\(\) is deprecated") as record:
        Holder().old_method()  # <- method call
    (warning,) = record
    assert (warning.filename, warning.lineno) == (__file__, _line_of("# <- method call"))


MODULE = '''
from hybridpool.deprecation import warn_deprecated

new_name = "the new object"

def __getattr__(name):
    if name == "old_name":
        warn_deprecated("{module}.old_name", "{module}.new_name", "0.4")
        return new_name
    raise AttributeError(name)
'''


@pytest.fixture
def renamed_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A package whose ``old_name`` is a deprecated alias of ``new_name`` (a module ``__getattr__``)."""
    name = f"hp_renamed_{id(tmp_path)}"
    (tmp_path / name).mkdir()
    (tmp_path / name / "__init__.py").write_text(textwrap.dedent(MODULE.format(module=name)))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_a_renamed_module_attribute_warns_at_the_access(renamed_module: str) -> None:
    module = __import__(renamed_module)
    with pytest.warns(HybridpoolDeprecationWarning, match=rf"{renamed_module}\.old_name is deprecated") as record:
        assert module.old_name == "the new object"  # <- attribute access
    assert {(w.filename, w.lineno) for w in record} == {(__file__, _line_of("# <- attribute access"))}


def test_a_renamed_module_attribute_warns_at_the_import(renamed_module: str) -> None:
    """``from package import old_name``: importlib's frames between the import and the module's
    ``__getattr__`` are not where the warning points."""
    with pytest.warns(HybridpoolDeprecationWarning) as record:
        exec(compile(f"from {renamed_module} import old_name", __file__, "exec"), {})
    assert record and all(w.filename == __file__ for w in record), [(w.filename, w.lineno) for w in record]
    assert "use " + renamed_module + ".new_name instead" in str(record[0].message)


def test_an_error_filter_makes_it_an_error() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", HybridpoolDeprecationWarning)
        with pytest.raises(HybridpoolDeprecationWarning):
            old_function()


@pytest.mark.parametrize("stacklevel", [0, -1, 1.5, True])
def test_a_wrong_stacklevel_is_refused(stacklevel: object) -> None:
    with pytest.raises(ValueError, match="stacklevel"):
        warn_deprecated("a", "b", "0.4", stacklevel=stacklevel)  # type: ignore[arg-type]
