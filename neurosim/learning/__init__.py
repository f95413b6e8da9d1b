"""Learning: STDP rules, surrogate gradients, the online learner, readouts, Fisher
estimation, EWC, synaptic intelligence and sleep consolidation."""

from neurosim.learning.learner import NoGradientSource, STDPOnlineLearner
from neurosim.learning.readout import LinearReadout, VotingReadout
from neurosim.learning.stdp import (
    PairSTDP,
    RewardSTDP,
    TraceMode,
    TripletSTDP,
    WeightDependence,
)
from neurosim.learning.surrogate import Surrogate, SurrogateKind

__all__ = [
    "LinearReadout",
    "NoGradientSource",
    "PairSTDP",
    "RewardSTDP",
    "STDPOnlineLearner",
    "Surrogate",
    "SurrogateKind",
    "TraceMode",
    "TripletSTDP",
    "VotingReadout",
    "WeightDependence",
]
