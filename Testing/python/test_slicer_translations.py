"""Every user-visible string of the module's GUI code goes through Slicer's translation
functions (issue 29, defect 7), and the module category is Slicer's translated one.

Slicer's `slicer.i18n` (`tr`, imported as `_`, and `translate`) looks strings up in the
installed translations; `lupdate` finds them only as literal arguments of those calls. So a
literal (or f-string) that reaches the user any other way stays English in a localized Slicer.
The check walks the module file's syntax tree: every string literal handed to a call or an
attribute that shows it to the user must be inside `_(...)` / `translate(...)` (with
`.format(...)` for the values). Log lines and the self-test's messages are not user-facing.
"""
from __future__ import annotations

import ast
from pathlib import Path

MODULE_PY = Path(__file__).resolve().parents[2] / "LCKDSegmentation" / "LCKDSegmentation.py"

#: Calls whose string arguments the user sees.
SINK_CALLS = ("errorDisplay", "infoDisplay", "warningDisplay", "confirmOkCancelDisplay", "confirmYesNoDisplay",
              "showStatusMessage", "tryWithErrorDisplay", "self.log", "appendPlainText", "setFormat", "addItem",
              "setItemData")
#: Attributes whose value the user sees.
SINK_ATTRIBUTES = ("text", "toolTip", "title", "helpText", "acknowledgementText", "categories", "placeholderText")
#: Classes whose strings are for developers (the self-test, run from Reload and Test or ctest).
NOT_GUI = ("LCKDSegmentationTest",)
TRANSLATORS = ("_", "translate")


def _has_words(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return any(c.isalpha() for c in node.value.replace("%p", ""))   # Qt's progress placeholder is no word
    if isinstance(node, ast.JoinedStr):
        return any(_has_words(v) for v in node.values if isinstance(v, ast.Constant))
    return False


def untranslated(node: ast.AST) -> list[ast.AST]:
    """String literals in `node` that reach the user without a translation call."""
    if isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Name) and func.id in TRANSLATORS:
            return []
        if isinstance(func, ast.Attribute) and func.attr in ("format", "join"):
            return untranslated(func.value) + [x for a in node.args for x in untranslated(a)]
        return []                                     # another call's result: not a literal here
    if isinstance(node, (ast.Constant, ast.JoinedStr)):
        return [node] if _has_words(node) else []
    if isinstance(node, ast.BinOp):
        return untranslated(node.left) + untranslated(node.right)
    if isinstance(node, ast.BoolOp):
        return [x for v in node.values for x in untranslated(v)]
    if isinstance(node, ast.IfExp):
        return untranslated(node.body) + untranslated(node.orelse)
    if isinstance(node, (ast.List, ast.Tuple)):
        return [x for e in node.elts for x in untranslated(e)]
    if isinstance(node, ast.Dict):
        return [x for v in node.values for x in untranslated(v)]
    if isinstance(node, ast.Subscript):
        return untranslated(node.value)
    return []


def gui_findings(source: str) -> list[str]:
    tree = ast.parse(source)
    skip = {id(n) for c in tree.body if isinstance(c, ast.ClassDef) and c.name in NOT_GUI for n in ast.walk(c)}
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        values: list = []
        if isinstance(node, ast.Call) and ast.unparse(node.func).endswith(SINK_CALLS):
            values = list(node.args) + [k.value for k in node.keywords]
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Attribute) and t.attr in SINK_ATTRIBUTES for t in targets):
                values = [node.value]
        elif isinstance(node, ast.FunctionDef) and node.name == "label":   # enum labels shown in combo boxes
            values = [r.value for r in ast.walk(node) if isinstance(r, ast.Return) and r.value is not None]
        for value in values:
            found += [f"line {s.lineno}: {ast.unparse(s)[:70]}" for s in untranslated(value)]
    return found


def test_the_checker_finds_what_it_should():
    assert gui_findings('w.text = "Loading"\nself.log(f"Done in {t} s")\nerrorDisplay("x: " + str(e))\n') == [
        "line 1: 'Loading'", "line 2: f'Done in {t} s'", "line 3: 'x: '"]
    assert gui_findings('w.text = _("Loading")\nself.log(_("Done in {t} s").format(t=t))\nw.text = ""\n'
                        'w.toolTip = problem or _("Segment")\nlogging.info("not for the user")\n') == []


def test_every_user_visible_string_of_the_module_is_translatable():
    found = gui_findings(MODULE_PY.read_text(encoding="utf-8"))
    assert not found, "wrap in _() (slicer.i18n.tr):\n" + "\n".join(found)


def test_the_category_is_slicers_translated_segmentation_category():
    source = MODULE_PY.read_text(encoding="utf-8")
    assert 'self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]' in source
    assert "from slicer.i18n import tr as _" in source and "from slicer.i18n import translate" in source
