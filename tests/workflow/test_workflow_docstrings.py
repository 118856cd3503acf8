"""The examples in the workflow modules' own docstrings run and print what they say."""

import doctest
import importlib

import pytest

MODULES = ["__init__", "tolerances", "selector", "cluster"]


@pytest.mark.parametrize("name", MODULES)
def test_module_doctests(name):
    module = importlib.import_module("nlsq_tasks.workflow" + ("" if name == "__init__" else f".{name}"))
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{module.__name__} has no examples"
    assert result.failed == 0
