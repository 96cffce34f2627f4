"""CXR Lab engine: datasets, models, training jobs, run store and metrics (no Streamlit here)."""
import os

# Keep TensorFlow's C++ start-up chatter (CUDA probes, CPU feature notes) out of the UI and CLI.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
