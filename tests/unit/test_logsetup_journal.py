import logging
import os

from cri import logsetup


def test_journal_stream_is_recognised_only_for_the_stream_it_names(tmp_path):
    f = open(tmp_path / "log", "w")
    other = open(tmp_path / "other", "w")
    try:
        st = os.fstat(f.fileno())
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert logsetup.under_journald(env, f)
        assert not logsetup.under_journald(env, other)  # stderr redirected elsewhere: keep timestamps
        assert not logsetup.under_journald({}, f)
        assert not logsetup.under_journald({"JOURNAL_STREAM": "garbage"}, f)
    finally:
        f.close()
        other.close()


def test_text_lines_drop_the_timestamp_under_journald():
    rec = logging.LogRecord("crispy", logging.INFO, __file__, 1, "hello", None, None)
    with_ts = logsetup._TextFormatter().format(rec)
    without = logsetup._TextFormatter(timestamps=False).format(rec)
    assert without == "info  crispy: hello"
    assert with_ts.endswith(" " + without) and with_ts[:4].isdigit()
