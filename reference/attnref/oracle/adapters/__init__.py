"""Adapters that present framework implementations to the oracle.

Each adapter module imports its framework, so import the one you need:
:mod:`attnref.oracle.adapters.torch`, :mod:`attnref.oracle.adapters.flex`
(PyTorch's ``flex_attention``), :mod:`attnref.oracle.adapters.jax`,
:mod:`attnref.oracle.adapters.keras`, :mod:`attnref.oracle.adapters.numpy`,
:mod:`attnref.oracle.adapters.onnxruntime` (the ONNX ``Attention`` operator).
"""
