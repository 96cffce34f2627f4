"""The dashboard, the only place Streamlit lives: pages/ holds one script per page (listed by
app.py's st.Page calls), this package the components those pages share."""
