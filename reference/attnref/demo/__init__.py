"""The tutorial's demonstrations: a toy seq2seq model, its bottleneck, its gradient flow.

Nothing in the reference core imports this package; it imports the core.

- :mod:`attnref.demo.running_example` -- the numbers of the tutorial's *I am a student*.
- :mod:`attnref.demo.seq2seq` -- the encoder-decoder of the tutorial, in NumPy.
- :mod:`attnref.demo.seq2seq_torch` -- the same model on :mod:`attnref.torch`, for autograd.
- :mod:`attnref.demo.bottleneck` -- how much of the source a fixed-size state keeps.
- :mod:`attnref.demo.gradient_flow` -- how far back a decoder output's gradient reaches.
- :mod:`attnref.demo.command` -- ``attnspec demo`` and ``attnspec gradient-flow``.
"""
