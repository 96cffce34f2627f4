"""Which session-state keys of the dashboard are kept across page changes, and which are also saved
to disk (core.store.ui_state) to come back after a browser reload. Plain Python: pages/common.py
applies it to st.session_state."""
from __future__ import annotations

DATASET_SETTINGS_KEY = "dataset_settings"
WIDGET_PREFIXES = ("ds_", "train_", "sweep_", "runs_", "eval_", "diag_")
# Widgets whose value cannot be set through session state: buttons (download buttons too), table
# selections; uploaders are recognised by "_upload" in their key.
UNSETTABLE_SUFFIXES = ("_button", "_table")
# Forms whose settings are saved to disk and come back after a browser reload; choices of a run or
# sweep and internal flags are not worth keeping.
SAVED_PREFIXES = ("ds_", "train_", "sweep_")
NOT_SAVED = ("train_from_run", "train_queue_was_active", "sweep_base_run", "sweep_view_id", "sweep_launched_id")
# The Runs page's filters are saved too; its other keys (selections, confirmations) are not.
RUNS_FILTER_KEYS = ("runs_filter_states", "runs_filter_archs", "runs_filter_text", "runs_filter_query",
                    "runs_filter_tags", "runs_filter_starred", "runs_filter_sweep")


def is_kept(key) -> bool:
    """Our widgets whose value survives page changes; buttons, uploads and table selections cannot be
    set through session state, so their keys end in one of UNSETTABLE_SUFFIXES or contain '_upload'."""
    return (isinstance(key, str) and key.startswith(WIDGET_PREFIXES)
            and not key.endswith(UNSETTABLE_SUFFIXES) and "_upload" not in key)


def is_saved(key) -> bool:
    """Settings that also survive a browser reload and a server restart: the Dataset, Train and
    Sweeps forms and the Runs page's filters."""
    return key == DATASET_SETTINGS_KEY or key in RUNS_FILTER_KEYS or (
        is_kept(key) and key.startswith(SAVED_PREFIXES) and key not in NOT_SAVED)
