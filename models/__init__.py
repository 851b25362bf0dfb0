"""The symbolic model definitions, one file per regime; installed as ``flowsim.models``.

A new regime is one small file defining ``REGIME = flowsim.Regime(...)``: here, ``fs.load_model(name)`` finds it
by its file name; anywhere else, ``fs.load_model("path/to/file.py")`` loads it. Everything else follows from
the declaration: the flow (derived symbolically), its planar reduction and its GD/SGD counterpart.
"""
