"""Trace and length-file loaders on small CSVs the tests write themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sloserve.workloads import load_azure_trace, load_lengths_csv

AZURE = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:15:46.6805900,374,44
2023-11-16 18:15:50.9951690,396,109
2023-11-16 18:15:51.2224670,879,55
2023-11-16 18:16:00.0000000,91,0
"""


def _write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_azure_trace_parses_times_lengths_and_window(tmp_path):
    tr = load_azure_trace(_write(tmp_path, AZURE))
    np.testing.assert_allclose(tr.arrival_s, [0.0, 4.314579, 4.541877, 13.31941], atol=1e-6)
    assert tr.prompt_tokens.tolist() == [374, 396, 879, 91]
    assert tr.output_tokens.tolist() == [44, 109, 55, 1]  # a 0-token output still costs one step
    assert tr.duration_s == pytest.approx(13.31941)
    assert tr.window(4.0, 5.0).tolist() == [1, 2]
    assert tr.window(0.0, 100.0).tolist() == [0, 1, 2, 3]  # a window past the end is clipped
    assert tr.native_rate_rps() == pytest.approx(3 / 13.31941)


def test_azure_window_errors(tmp_path):
    tr = load_azure_trace(_write(tmp_path, AZURE))
    with pytest.raises(ValueError, match="starts after the trace ends"):
        tr.window(100.0, 200.0)
    with pytest.raises(ValueError, match="holds no request"):
        tr.window(5.0, 13.0)
    with pytest.raises(ValueError, match="start < end"):
        tr.window(5.0, 5.0)


def test_azure_trace_unsorted_zone_and_numeric_timestamps(tmp_path):
    zoned = "TIMESTAMP,ContextTokens,GeneratedTokens\n2024-05-10 00:00:02+00:00,5,6\n2024-05-10 00:00:00.5+00:00,7,8\n"
    tr = load_azure_trace(_write(tmp_path, zoned))
    np.testing.assert_allclose(tr.arrival_s, [0.0, 1.5])
    assert tr.prompt_tokens.tolist() == [7, 5]  # sorted by time, lengths follow their rows
    numeric = "timestamp,contexttokens,generatedtokens\n3.0,10,2\n1.0,20,4\n"
    tr = load_azure_trace(_write(tmp_path, numeric, "n.csv"))
    np.testing.assert_allclose(tr.arrival_s, [0.0, 2.0])
    assert tr.output_tokens.tolist() == [4, 2]


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "is empty"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n", "no rows"),
        ("TIMESTAMP,ContextTokens\n2023-11-16 18:15:46,3\n", "lacks column.*GeneratedTokens"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,3\n", "line 2: 2 fields"),
        (
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,3,4\n2023-11-16 18:15:47,x,4\n",
            "line 3: column ContextTokens",
        ),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,3,-4\n", "line 2: column GeneratedTokens"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,3.5,4\n", "not a token count"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,3,4\n", "line 2: TIMESTAMP 'yesterday'"),
    ],
)
def test_azure_malformed(tmp_path, text, match):
    with pytest.raises(ValueError, match=match):
        load_azure_trace(_write(tmp_path, text))


def test_missing_files_raise_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="trace file not found"):
        load_azure_trace(tmp_path / "nope.csv")
    with pytest.raises(FileNotFoundError, match="lengths file not found"):
        load_lengths_csv(tmp_path / "nope.csv")


def test_lengths_csv_both_column_sets(tmp_path):
    vidur = "num_prefill_tokens,num_decode_tokens,num_total_tokens,pd_ratio\n100,20,120,5.0\n7,0,7,0\n"
    t = load_lengths_csv(_write(tmp_path, vidur))
    assert t.prompt_tokens.tolist() == [100, 7] and t.output_tokens.tolist() == [20, 1]
    t = load_lengths_csv(_write(tmp_path, AZURE, "a.csv"))
    assert t.prompt_tokens.tolist() == [374, 396, 879, 91]
    with pytest.raises(ValueError, match="lacks columns"):
        load_lengths_csv(_write(tmp_path, "a,b\n1,2\n", "bad.csv"))


def test_real_azure_traces_if_present():
    from sloserve.datadir import data_dir

    root = data_dir()
    path = root / "traces" / "AzureLLMInferenceTrace_conv.csv" if root else None
    if path is None or not path.exists():
        pytest.skip("shared data not available")
    tr = load_azure_trace(path)
    assert tr.arrival_s.size == 19366
    assert np.all(np.diff(tr.arrival_s) >= 0)
    assert 3000 < tr.duration_s < 3700  # ~59 minutes
    assert tr.window(900, 1200).size > 1000
