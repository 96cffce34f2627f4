"""Sweeps: the ablation table in one click. Vary one, two or three settings over a list of values, repeat
every point over seeds or patient-grouped k-fold cross-validation, and read mean ± std per point
as a table and a chart with error bars; optionally stop the worst runs early (successive halving) and
read which were stopped, at which epoch. Also: export a sweep as a zip, and import runs or sweeps.

The form is pages/sweep_form.py, the results pages/sweep_results.py; their logic is in
core.present (sweep_plan, sweeps, estimate).
"""
import streamlit as st

from ui import common, sweep_form, sweep_results

common.enter_through_app()  # a page Streamlit ran on its own runs again through app.py


def main() -> None:
    st.title("Sweeps")
    st.caption("Vary one, two or three settings, repeat every point over seeds or folds, and read the "
               "ablation table with error bars.")
    store = common.run_store()
    with st.container(border=True):
        st.subheader("New sweep")
        sweep_form.new_sweep(store)
    with st.expander("Import runs or a sweep (zip)"):
        sweep_results.import_section(store)
    st.subheader("Results")
    sweep_results.view(store)


main()
