import os

from ttt_mm.processes.environment import environment


def test_each_key_gets_back_the_value_it_had_and_other_keys_stay_as_they_are_then(monkeypatch):
    monkeypatch.setenv("TTT_MM_TEST_HAD", "before")
    monkeypatch.delenv("TTT_MM_TEST_NEW", raising=False)
    monkeypatch.delenv("TTT_MM_TEST_SET_MEANWHILE", raising=False)
    with environment({"TTT_MM_TEST_HAD": "1", "TTT_MM_TEST_NEW": "2"}):
        assert os.environ["TTT_MM_TEST_HAD"] == "1" and os.environ["TTT_MM_TEST_NEW"] == "2"
        os.environ["TTT_MM_TEST_SET_MEANWHILE"] = "3"  # (as Lightning does while it fits)
    assert os.environ["TTT_MM_TEST_HAD"] == "before" and "TTT_MM_TEST_NEW" not in os.environ
    assert os.environ.pop("TTT_MM_TEST_SET_MEANWHILE") == "3"
