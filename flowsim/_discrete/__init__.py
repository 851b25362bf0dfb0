"""The discrete counterpart of the flow: GD/SGD in each regime's raw coordinates (``sgd``), a real
batch-normalized network, and the stable rank of weights."""

from ._rank import stable_rank as stable_rank
from ._sgd import sgd as sgd
