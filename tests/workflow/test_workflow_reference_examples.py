"""The reference's own examples, run against ``nlsq_tasks.workflow``.

The reference page (``shared/reference/nlsq-workflow-api.txt``, next to the repository)
documents ``nlsq.core.workflow``; code written against it must run unchanged with
``nlsq_tasks.workflow`` in its place. Rather than copying its examples, this test reads
the page, extracts

- every ``>>>`` example (the page is flattened text: prompts may share one line and
  indentation is lost, so blocks are re-indented after ``:`` lines), checking the
  outputs it states (``1e-07``, ``True``, ``48``...), and
- the Quick Start and Adaptive Tolerances snippets that do not need ``fit`` (checking
  ``print(x)  # {...}`` comments against the printed values),

and runs them with the module namespace as globals, as doctest would.
"""

import ast
import contextlib
import io

import re
import tokenize
from pathlib import Path

import pytest

import nlsq_tasks.workflow as workflow

REFERENCE = Path(__file__).resolve().parents[2] / ".." / "shared" / "reference" / "nlsq-workflow-api.txt"
PROMPT = re.compile(r"(?:^|\s)(>>>|\.\.\.)(?=\s|$)")
BLOCK_CONTINUERS = ("elif ", "elif(", "else:", "except", "finally:")


@pytest.fixture(scope="module")
def reference_text():
    if not REFERENCE.is_file():
        pytest.skip(f"reference page not found at {REFERENCE}")
    return REFERENCE.read_text().replace("nlsq.core.workflow", "nlsq_tasks.workflow")


def _is_literal(text):
    try:
        ast.literal_eval(text.strip())
        return True
    except (ValueError, SyntaxError):
        return False


def _compiles(code, mode="exec"):
    try:
        compile(code, "<reference>", mode)
        return True
    except SyntaxError:
        return False


def _comment(code):
    """(code without comment, comment text) using the tokenizer, so '#' in strings is safe."""
    try:
        for tok in tokenize.generate_tokens(io.StringIO(code).readline):
            if tok.type == tokenize.COMMENT:
                return code[: tok.start[1]].rstrip(), tok.string[1:].strip()
    except (tokenize.TokenError, IndentationError):
        pass
    return code, ""


class Statement:
    def __init__(self, first):
        self.lines = [(0, first)]
        self.level = 1 if _opens_block(first) else 0
        self.expected = None

    def add(self, code, prompt):
        if code.startswith(BLOCK_CONTINUERS):
            self.level = max(self.level - 1, 0)
        if code:
            self.lines.append((self.level, code))
        if _opens_block(code):
            self.level += 1

    @property
    def source(self):
        return "\n".join("    " * lvl + c for lvl, c in self.lines)


def _opens_block(code):
    return _comment(code)[0].endswith(":")


def parse_doctest_examples(text):
    """A list of examples; each example is a list of Statements run in order."""
    examples, current = [], None
    lines = text.splitlines()
    for raw in lines:
        stripped = raw.strip()
        has_prompt = stripped.startswith(("...",)) and current is not None or ">>>" in stripped
        if not has_prompt:
            if current and current[-1].expected is None and stripped and _is_literal(stripped):
                current[-1].expected = stripped  # an output line under its statement
                continue
            if current:
                examples.append(current)
            current = None
            continue
        pieces = PROMPT.split(" " + stripped)
        for prompt, code in zip(pieces[1::2], pieces[2::2]):
            code = code.strip()
            if current is None:
                current = []
            if prompt == ">>>" and not (code.startswith(BLOCK_CONTINUERS) and current):
                current.append(Statement(code))
            elif current:
                current[-1].add(code, prompt)
    if current:
        examples.append(current)
    for example in examples:
        for st in example:
            _split_inline_output(st)
    return examples


def _split_inline_output(st):
    """Flattened pages put outputs after the code: ``>>> tols['gtol'] 1e-07`` or
    ``>>> tols['gtol'] # One tier tighter 1e-08``."""
    if st.expected is not None or len(st.lines) != 1:
        return
    code = st.lines[0][1]
    if not _compiles(code):
        head, _, tail = code.rpartition(" ")
        if _compiles(head, "eval") and _is_literal(tail):
            st.lines, st.expected = [(0, head)], tail
        return
    body, comment = _comment(code)
    last = comment.rsplit(" ", 1)[-1] if comment else ""
    if last and _is_literal(last) and _compiles(body, "eval") and not isinstance(ast.literal_eval(last), str):
        st.lines, st.expected = [(0, body)], last


def run_statement(st, ns, out):
    if st.expected is not None:
        value = eval(compile(st.source, "<reference>", "eval"), ns)
        assert value == ast.literal_eval(st.expected), f"{st.source!r} gave {value!r}, the reference says {st.expected}"
        return 1
    with contextlib.redirect_stdout(out):
        exec(compile(st.source, "<reference>", "exec"), ns)
    return 0


@pytest.mark.parametrize("environment", ["plain", "pbs"])
def test_doctest_examples_run_unchanged(reference_text, tmp_path, monkeypatch, environment):
    monkeypatch.chdir(tmp_path)  # create_checkpoint_directory() writes under ./nlsq_checkpoints
    for var in ("PBS_NODEFILE", "PBS_JOBID", "SLURM_JOB_NODELIST", "SLURM_NODELIST"):
        monkeypatch.delenv(var, raising=False)
    if environment == "pbs":  # so that the cluster examples take their "detected" branches
        nodefile = tmp_path / "nodefile"
        nodefile.write_text("cn01\ncn01\ncn02\ncn02\n")
        monkeypatch.setenv("PBS_NODEFILE", str(nodefile))
        monkeypatch.setenv("PBS_JOBID", "4242.pbs")
    examples = parse_doctest_examples(reference_text)
    ns = {k: getattr(workflow, k) for k in workflow.__all__}
    statements = checked = 0
    out = io.StringIO()
    for example in examples:
        for st in example:
            try:
                checked += run_statement(st, ns, out)
            except Exception as exc:  # noqa: BLE001 - re-raised with the example's source
                raise AssertionError(f"reference example failed:\n{st.source}\n-> {exc!r}") from exc
            statements += 1
    # The page has ~40 example statements and states 7 outputs; fewer means the parser broke.
    assert statements >= 35, statements
    assert checked >= 7, checked
    assert (tmp_path / "nlsq_checkpoints").is_dir()
    printed = out.getvalue()
    assert "Fits in memory: " in printed
    if environment == "pbs":
        assert "Cluster detected: 2 nodes" in printed and "PBS Job ID: 4242.pbs" in printed
        assert re.search(r"Chunk size: \d+", printed) and "Running on pbs with" in printed
    elif _nothing_detected():
        assert "Not in cluster environment" in printed


def _nothing_detected():
    return workflow.ClusterDetector().detect() is None


def _section(text, start, end):
    i = text.index(start)
    return text[i : text.index(end, i)]


def test_quick_start_without_fit(reference_text):
    section = _section(reference_text, "Quick Start", "Memory Budget Classes")
    keep = []
    for line in section.splitlines()[1:]:  # the section is all code after its title
        s = line.strip()
        if not s or s.startswith(("#", "def ", "return ", "from nlsq import")) or "fit(" in s:
            continue  # comments, the model (its indentation is lost) and the fit() calls
        keep.append(s)
    source = "\n".join(keep)
    assert "selector.select(" in source and "MemoryBudget.compute(" in source
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(source, "<quick start>", "exec"), {})
    printed = out.getvalue()
    # 1M points x 3 params against a 16 GB override: everything fits
    assert "Selected strategy: standard" in printed
    assert re.search(r"Peak memory: \d+\.\d\d GB", printed)
    assert "Fits in memory: " in printed


def test_adaptive_tolerance_snippet(reference_text):
    section = _section(reference_text, "Goal-Based Adjustments", "Memory Estimation Details")
    ns, compared = {}, 0
    for line in section.splitlines():
        s = line.strip()
        if not s.startswith(("from ", "import ", "tols", "print(")):
            continue
        m = re.match(r"^print\((.*)\)\s*#\s*(.+)$", s)
        if m:
            assert eval(m.group(1), ns) == ast.literal_eval(m.group(2)), s
            compared += 1
        else:
            exec(s, ns)
    assert compared == 2
