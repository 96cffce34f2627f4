"""Which layer made a symbolic Keras tensor, and from which tensors: the one place that reads Keras'
private graph records (`tensor._keras_history`, `layer._inbound_nodes`), for which Keras 3 has no
public API (`layer.output` of a model nested in another is its inner graph's tensor, not the one the
outer graph passes on). Checked against keras 3.15.1; tests/test_keras_graph.py fails the day they change."""
from __future__ import annotations


def producer(tensor):
    """The layer (or nested model) whose call produced `tensor`; None for a tensor of no graph."""
    history = getattr(tensor, "_keras_history", None)
    return None if history is None else history.operation


def producer_inputs(tensor) -> list:
    """The tensors the call that produced `tensor` consumed: [] for a model's Input."""
    layer, node_index, _ = tensor._keras_history
    return list(layer._inbound_nodes[node_index].input_tensors)
