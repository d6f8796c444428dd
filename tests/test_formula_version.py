"""The formula version moves with the formulas (SPEC §5: every row records the version of
the formulas that produced its derived values, so `tutormax refresh` can find old ones).

The digest below is of the source of every module that computes a derived field. Change a
formula and this test fails until you bump `fields.FORMULA_VERSION` and record the new
digest beside it (a change that does not alter any result, e.g. a comment, only needs the
digest updated)."""

from __future__ import annotations

import hashlib
import inspect

from tutormax_cli import fields
from tutormax_cli.fields import _arrow, base, feedback, sessions, tutors

FORMULA_MODULES = (base, _arrow, tutors, sessions, feedback)
RECORDED = {1: "8105143ffb1a3017"}  # FORMULA_VERSION → digest of FORMULA_MODULES' source


def digest() -> str:
    text = "\n".join(inspect.getsource(m) for m in FORMULA_MODULES)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def test_a_formula_change_comes_with_a_formula_version_bump() -> None:
    assert fields.FORMULA_VERSION in RECORDED, (
        f"record FORMULA_VERSION {fields.FORMULA_VERSION}: {digest()}"
    )
    assert RECORDED[fields.FORMULA_VERSION] == digest(), (
        "the formulas changed: bump fields.FORMULA_VERSION and record "
        f"{{{fields.FORMULA_VERSION + 1}: {digest()!r}}} here (or, if no result changed, "
        "update the digest of the current version)"
    )


def test_every_field_module_is_covered() -> None:
    computing = {f.compute.__module__ for f in fields.REGISTRY}
    assert computing <= {m.__name__ for m in FORMULA_MODULES}
