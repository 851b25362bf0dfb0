"""The symbolic model definitions, one file per regime; installed as ``flowsim.models``.

A new regime is one small file here defining ``REGIME = flowsim.Regime(...)``; ``fs.load_model(name)``
finds it by its file name.
"""
