"""neurosim: spiking neural networks that learn online with STDP, protect what they learned
with Fisher-weighted consolidation, and consolidate during sleep."""

__version__ = "0.1.0"
