"""core/ml/keras_graph.py reads Keras' private graph records (checked against keras 3.15.1): these
fail the day Keras changes them, on a model with a nested model inside, as Grad-CAM walks them."""
import keras

from core.ml import keras_graph


def model_with_a_nested_base():
    inner_input = keras.Input((8, 8, 4))
    base = keras.Model(inner_input, keras.layers.Conv2D(3, 3, strides=2, name="inner_conv")(inner_input), name="base")
    pixels = keras.Input((16, 16, 1), name="pixels")
    conv = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="stem")
    features = base(conv(pixels))
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(features)
    return keras.Model(pixels, keras.layers.Dense(2, name="logits")(pooled)), pixels, conv, base, features


def test_the_producer_of_each_tensor_and_what_it_consumed():
    model, pixels, conv, base, features = model_with_a_nested_base()
    stem_output = conv.output
    assert keras_graph.producer(stem_output) is conv
    assert keras_graph.producer_inputs(stem_output) == [pixels]
    assert keras_graph.producer(pixels).name == "pixels"
    assert keras_graph.producer_inputs(pixels) == []  # the walk ends at the model's input


def test_a_nested_models_outer_tensor_is_told_apart_from_its_inner_one():
    model, pixels, conv, base, features = model_with_a_nested_base()
    assert keras_graph.producer(features) is base  # the tensor the outer graph passes on
    assert keras_graph.producer_inputs(features) == [conv.output]
    assert keras_graph.producer(base.output).name == "inner_conv"  # what the public `output` gives
    assert base.output is not features


def test_a_tensor_of_no_graph_has_no_producer():
    assert keras_graph.producer(keras.ops.ones((1, 2))) is None
