"""``benchmarks/host_reads.py``: the host-read counter, and the report's rows."""

from __future__ import annotations

from pathlib import Path

import torch
from benchmark_scripts import loaded_script


def test_counter_sees_each_kind_of_host_read() -> None:
    with loaded_script("host_reads.py", "host_reads_script") as script:
        t = torch.tensor([1.5, -2.0], dtype=torch.float64)
        a = torch.eye(2, dtype=torch.float64)

        def reads() -> None:
            float(t[0])
            t[1].item()
            bool((t > 0).any())
            t[t > 0].sum()  # boolean-mask indexing: a nonzero inside
            t.tolist()
            torch.linalg.cholesky(a)  # checks its error code
            torch.linalg.cholesky_ex(a)  # does not
            torch.linalg.lu_factor_ex(a)  # does not
            t.nonzero()

        counts, cuda = script.count_host_reads(reads, torch.device("cpu"))
        assert cuda is None
        assert dict(counts) == {
            "__float__": 1, "item": 1, "__bool__": 1, "__getitem__[bool]": 1, "tolist": 1,
            "linalg_cholesky": 1, "nonzero": 1,
        }  # fmt: skip


def test_report_has_a_row_per_method_and_the_accelerator_paths_check_no_errors(
    tmp_path: Path,
) -> None:
    out = tmp_path / "host_reads.md"
    with loaded_script("host_reads.py", "host_reads_script") as script:
        assert script.main(["--ks", "5", "--device", "cpu", "--out", str(out)]) == 0
        methods = script.gramian_methods()
    text = out.read_text(encoding="utf-8")
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| call"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells
    for name in methods:
        assert f"{name}: weights(gram)" in rows and f"{name}: Balancer.backward step" in rows
    for name in ("imtl-g", "pcgrad", "sum", "mean"):  # no data-dependent branch at all
        assert rows[f"{name}: weights(gram)"][2] == "0"
    accelerator = [cells for what, cells in rows.items() if "accelerator path" in what]
    assert len(accelerator) == 4
    for cells in accelerator:  # no error-checking linear algebra (a sync per call)
        assert "linalg_" not in cells[3], cells
