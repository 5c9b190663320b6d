import logging

import orjson
import pytest
from transformers.utils import logging as hf_logging

from worker.logs import configure_logging


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    hf_logging.enable_default_handler()
    hf_logging.disable_propagation()


def test_json_lines_carry_extras_as_keys(capsys, restore_logging):
    configure_logging("json", "INFO")
    logging.getLogger("worker.test").warning("record dead-lettered", extra={"partition": 2, "offset": 41})
    [line] = capsys.readouterr().err.splitlines()
    entry = orjson.loads(line)
    assert (entry["level"], entry["logger"], entry["message"]) == ("warning", "worker.test", "record dead-lettered")
    assert (entry["partition"], entry["offset"]) == (2, 41)


def test_a_transformers_warning_comes_out_as_json_like_ours(capsys, restore_logging):
    configure_logging("json", "INFO")
    hf_logging.get_logger("transformers.modeling_utils").warning("a library speaks")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    entry = orjson.loads(lines[0])
    assert (entry["logger"], entry["message"]) == ("transformers.modeling_utils", "a library speaks")
