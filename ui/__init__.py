"""Dashboard pages (Streamlit scripts run through st.navigation in app.py) and their shared helpers."""
