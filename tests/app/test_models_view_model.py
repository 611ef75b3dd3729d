"""The Models view's table model: qtmodeltester, cell contents, in-place refresh."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from musaops.app.core import DeploymentInfo, MemoryEstimate, ModelEntry
from musaops.app.qt.models.models_model import (
    COL_DEPLOYMENT, COL_MEMORY, COL_NAME, COL_PARAMS, COL_SIZE, COL_STATE, EntryRole,
    ModelsTableModel, SortRole, human_bytes, human_count, memory_text,
)


def _entries(state: str = "available") -> list[ModelEntry]:
    est = (
        MemoryEstimate("bfloat16", weights_bytes=2 * 2**20, kv_bytes_per_token=1024, total_bytes=3 * 2**20),
        MemoryEstimate("float32", weights_bytes=4 * 2**20, kv_bytes_per_token=2048, total_bytes=6 * 2**20),
    )
    ready = DeploymentInfo(dtype="float32", device_indices=(0,), max_batch=8, max_context=512,
                           weights_bytes=4 * 2**20, kv_cache_bytes=2**20, kv_block_size=16,
                           kv_blocks_total=64)
    return [
        ModelEntry("demo", state=state, architecture="LlamaForCausalLM", parameters=1_234_567,
                   size_bytes=5 * 2**20, memory_estimates=est, max_position_embeddings=512,
                   deployment=ready if state == "ready" else None),
        ModelEntry("broken", state="error", reason="config.json is not valid JSON"),
    ]


def test_model_passes_qtmodeltester(qtmodeltester) -> None:
    model = ModelsTableModel()
    model.set_entries(_entries())
    qtmodeltester.check(model, force_py=True)
    # The tester stays attached and checks every change signal from here on.
    model.set_entries(_entries("ready"))
    model.set_entries([])
    model.set_entries(_entries())


def test_cells_show_sizes_states_and_reasons() -> None:
    model = ModelsTableModel()
    model.set_entries(_entries("ready"))
    cell = lambda r, c, role=Qt.ItemDataRole.DisplayRole: model.data(model.index(r, c), role)
    assert cell(0, COL_NAME) == "demo"
    assert cell(0, COL_STATE) == "Ready"
    assert cell(0, COL_PARAMS) == "1.2 M"
    assert cell(0, COL_SIZE) == "5.0 MiB"
    assert cell(0, COL_MEMORY) == "3.0 / 6.0 MiB"   # 16-bit (bf16; no fp16 given) / 32-bit totals
    assert "bfloat16: weights 2.0 MiB" in cell(0, COL_MEMORY, Qt.ItemDataRole.ToolTipRole)
    assert cell(0, COL_MEMORY, SortRole) == 3 * 2**20
    assert cell(1, COL_MEMORY) == "— / —"
    assert "batch 8" in cell(0, COL_DEPLOYMENT)
    assert cell(0, COL_DEPLOYMENT, Qt.ItemDataRole.ToolTipRole).startswith(cell(0, COL_DEPLOYMENT))   # elided: whole on hover
    assert cell(0, COL_PARAMS, SortRole) == 1_234_567
    assert cell(1, COL_STATE) == "Error"
    assert "not valid JSON" in cell(1, COL_STATE, Qt.ItemDataRole.ToolTipRole)
    assert cell(1, COL_NAME, EntryRole).name == "broken"


def test_refresh_with_same_names_updates_in_place(qtbot) -> None:
    model = ModelsTableModel()
    model.set_entries(_entries())
    with qtbot.assertNotEmitted(model.modelReset):
        with qtbot.waitSignal(model.dataChanged) as blocker:
            model.set_entries(_entries("ready"))
    assert blocker.args[0].row() == 0
    with qtbot.waitSignal(model.modelReset):
        model.set_entries(_entries()[:1])
    assert model.rowCount() == 1


@pytest.mark.parametrize("n, text", [(0, "0 B"), (1536, "1.5 KiB"), (3 * 2**30, "3.0 GiB")])
def test_human_bytes(n, text) -> None:
    assert human_bytes(n) == text


def test_human_count() -> None:
    assert human_count(0) == "—" and human_count(950) == "950" and human_count(7_000_000_000) == "7.0 B"


def test_memory_text_shares_a_unit_and_shows_fp16_only_when_it_differs() -> None:
    assert memory_text(3 * 2**20, 3 * 2**20, 6 * 2**20) == "3.0 / 6.0 MiB"
    assert memory_text(800 * 2**10, None, 3 * 2**19) == "800.0 KiB / 1.5 MiB"
    assert memory_text(None, 2**30, None) == "1.0 GiB / —"
    assert memory_text(2**30, 2**31, 2**32) == "1.0 / 2.0 / 4.0 GiB"
